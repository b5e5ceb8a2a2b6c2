// qcopglobal.h: export macro and constants of the Qt QCOP library (libqcop-qt5 / libqcop-qt6).
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef QCOPGLOBAL_H
#define QCOPGLOBAL_H

#include <QtCore/qglobal.h>
#include <QtCore/qdatastream.h>

#if defined(QCOP_QT_BUILD)
#  define QCOP_QT_EXPORT Q_DECL_EXPORT
#else
#  define QCOP_QT_EXPORT Q_DECL_IMPORT
#endif

// QMF's spelling of the export macro, for code that names it.
#ifndef Q_QCOP_EXPORT
#  define Q_QCOP_EXPORT QCOP_QT_EXPORT
#endif

namespace QCop {
// The QDataStream version payloads are written and read with: Qt 4.8's (whose encodings
// of the types QCOP messages carry are also those of every Qt 4 release, and those the
// qcop tool and libqcop read and write). Set it on your own streams:
//     QDataStream out(&data, QIODevice::WriteOnly);
//     out.setVersion(QCop::DataStreamVersion);
constexpr QDataStream::Version DataStreamVersion = QDataStream::Qt_4_8;
}

#endif

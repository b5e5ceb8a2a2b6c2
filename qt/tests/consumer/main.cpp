// Includes every public header under the names Qt 4, QMF and Qtopia code uses, and links.
// SPDX-License-Identifier: MIT OR Apache-2.0
#include <QCopAdaptor>
#include <QCopAdaptorEnvelope>
#include <QCopApplicationChannel>
#include <QCopChannel>
#include <QCopChannelMonitor>
#include <QCopEnvelope>
#include <QCopReply>
#include <qcopchannel_qws.h>
#include <qcopenvelope_qws.h>
#include <QtCore/qcoreapplication.h>
#include <cstdio>

int main(int argc, char **argv)
{
    QCoreApplication app(argc, argv);
    std::printf("%s\n", qPrintable(QCopApplicationChannel::channelFor(QStringLiteral("consumer"))));
    return QCop::DataStreamVersion == QDataStream::Qt_4_8 ? 0 : 1;
}

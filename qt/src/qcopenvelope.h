// qcopenvelope.h: QCopEnvelope, Qtopia's message-with-arguments that sends itself.
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef QCOPENVELOPE_H
#define QCOPENVELOPE_H

#include "qcopglobal.h"
#include <QtCore/qdatastream.h>
#include <QtCore/qstring.h>

class QCopEnvelopePrivate;

// A QDataStream (version QCop::DataStreamVersion) whose contents are sent to `channel`
// as `message` when the envelope is destroyed:
//     QCopEnvelope e("QPE/System", "setVolume(int)");
//     e << 42;
class QCOP_QT_EXPORT QCopEnvelope : public QDataStream
{
public:
    QCopEnvelope(const QString &channel, const QString &message);
    ~QCopEnvelope();

    QString channel() const;
    QString message() const;
    // The arguments written so far.
    QByteArray data() const;
    // Sends now instead of on destruction; returns QCopChannel::send's result. An envelope
    // is sent once.
    bool send();
    // Not sent at all.
    void cancel();

private:
    QCopEnvelopePrivate *d;
    Q_DISABLE_COPY(QCopEnvelope)
};

#endif

// qcopenvelope.cpp: QCopEnvelope.
// SPDX-License-Identifier: MIT OR Apache-2.0
#include "qcopenvelope.h"
#include "qcopchannel.h"

#include <QtCore/qbuffer.h>

class QCopEnvelopePrivate
{
public:
    QString channel;
    QString message;
    QBuffer buffer;
    bool done = false;
};

QCopEnvelope::QCopEnvelope(const QString &channel, const QString &message)
    : d(new QCopEnvelopePrivate)
{
    d->channel = channel;
    d->message = message;
    d->buffer.open(QIODevice::WriteOnly);
    setDevice(&d->buffer);
    setVersion(QCop::DataStreamVersion);
}

QCopEnvelope::~QCopEnvelope()
{
    send();
    setDevice(nullptr);
    delete d;
}

QString QCopEnvelope::channel() const
{
    return d->channel;
}

QString QCopEnvelope::message() const
{
    return d->message;
}

QByteArray QCopEnvelope::data() const
{
    return d->buffer.data();
}

bool QCopEnvelope::send()
{
    if (d->done)
        return false;
    d->done = true;
    return QCopChannel::send(d->channel, d->message, d->buffer.data());
}

void QCopEnvelope::cancel()
{
    d->done = true;
}

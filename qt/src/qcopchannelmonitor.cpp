// qcopchannelmonitor.cpp: QCopChannelMonitor.
// SPDX-License-Identifier: MIT OR Apache-2.0
#include "qcopchannelmonitor.h"
#include "qcopchannel.h"

#include <QtCore/qdatastream.h>
#include <QtCore/qtimer.h>

class QCopChannelMonitorPrivate
{
public:
    QString channel;
    QCopChannelMonitor::State state = QCopChannelMonitor::Unknown;
    QCopChannel *daemon = nullptr;
};

QCopChannelMonitor::QCopChannelMonitor(const QString &channel, QObject *parent)
    : QObject(parent), d(new QCopChannelMonitorPrivate)
{
    d->channel = channel;
    // Subscribed before asking, so no change between the answer and the notices is missed.
    d->daemon = new QCopChannel(QStringLiteral("qcop/daemon"), this);
    connect(d->daemon, &QCopChannel::received, this,
            [this](const QString &msg, const QByteArray &data) {
                QDataStream s(data);
                s.setVersion(QCop::DataStreamVersion);
                QString name;
                s >> name;
                if (name != d->channel)
                    return;
                if (msg == QLatin1String("newChannel(QString)"))
                    update(Registered);
                else if (msg == QLatin1String("removedChannel(QString)"))
                    update(Unregistered);
            });
    // After a reconnect the channel's state may have changed while the daemon was away.
    connect(d->daemon, &QCopChannel::connected, this, &QCopChannelMonitor::query);
    connect(d->daemon, &QCopChannel::connectionDown, this, [this] { d->state = Unknown; });
    if (d->daemon->isConnected()) {
        d->state = QCopChannel::isRegistered(channel) ? Registered : Unregistered;
        const State first = d->state;
        QTimer::singleShot(0, this, [this, first] {
            if (d->state == first)
                Q_EMIT(first == Registered ? registered() : unregistered());
        });
    }
}

QCopChannelMonitor::~QCopChannelMonitor()
{
    delete d;
}

QString QCopChannelMonitor::channel() const
{
    return d->channel;
}

QCopChannelMonitor::State QCopChannelMonitor::state() const
{
    return d->state;
}

void QCopChannelMonitor::query()
{
    update(QCopChannel::isRegistered(d->channel) ? Registered : Unregistered);
}

void QCopChannelMonitor::update(State state)
{
    if (state == d->state)
        return;
    d->state = state;
    if (state == Registered)
        Q_EMIT registered();
    else if (state == Unregistered)
        Q_EMIT unregistered();
}

// qcopchannelmonitor.h: QCopChannelMonitor (QMF's API): whether a channel has subscribers.
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef QCOPCHANNELMONITOR_H
#define QCOPCHANNELMONITOR_H

#include "qcopglobal.h"
#include <QtCore/qobject.h>
#include <QtCore/qstring.h>

class QCopChannelMonitorPrivate;

// Follows the registered state of `channel` (at least one exact subscriber anywhere on
// the bus) from qcopd's newChannel/removedChannel notices on `qcop/daemon`; a subscriber
// that dies (even SIGKILLed) unregisters at once. The state is known when the
// constructor returns (it asks the daemon); registered() or unregistered() follow, first
// for that state, then for every change. Unknown while qcopd cannot be reached.
class QCOP_QT_EXPORT QCopChannelMonitor : public QObject
{
    Q_OBJECT
public:
    explicit QCopChannelMonitor(const QString &channel, QObject *parent = nullptr);
    ~QCopChannelMonitor() override;

    QString channel() const;

    enum State { Unknown, Registered, Unregistered };
    State state() const;

Q_SIGNALS:
    void registered();
    void unregistered();

private:
    QCopChannelMonitorPrivate *d;
    void update(State state);
    void query();
    Q_DISABLE_COPY(QCopChannelMonitor)
};

#endif

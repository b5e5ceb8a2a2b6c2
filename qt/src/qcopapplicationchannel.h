// qcopapplicationchannel.h: QCopApplicationChannel, the application's own channel.
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef QCOPAPPLICATIONCHANNEL_H
#define QCOPAPPLICATIONCHANNEL_H

#include "qcopchannel.h"

// The channel QPE/Application/<name> (name: QCoreApplication::applicationName() unless
// given). qcopd's activation starts the program configured for that channel when a
// message comes for it and delivers the queued messages in order once this object
// subscribes, so create it early (before the event loop runs).
class QCOP_QT_EXPORT QCopApplicationChannel : public QCopChannel
{
    Q_OBJECT
public:
    explicit QCopApplicationChannel(QObject *parent = nullptr);
    explicit QCopApplicationChannel(const QString &application, QObject *parent = nullptr);
    ~QCopApplicationChannel() override;

    // "QPE/Application/<application>".
    static QString channelFor(const QString &application);

    // QMF: true once the channel is registered with qcopd (from the first turn of the
    // event loop after the object is made, or after the connection came up); messages
    // queued for the application then follow in order.
    bool isStartupComplete() const;

Q_SIGNALS:
    void startupComplete();

private:
    void complete();
    bool m_complete = false;
};

#endif

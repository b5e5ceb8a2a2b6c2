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
};

#endif

// qcopapplicationchannel.cpp: QCopApplicationChannel.
// SPDX-License-Identifier: MIT OR Apache-2.0
#include "qcopapplicationchannel.h"

#include <QtCore/qcoreapplication.h>
#include <QtCore/qtimer.h>

QCopApplicationChannel::QCopApplicationChannel(QObject *parent)
    : QCopApplicationChannel(QCoreApplication::applicationName(), parent)
{
}

QCopApplicationChannel::QCopApplicationChannel(const QString &application, QObject *parent)
    : QCopChannel(channelFor(application), parent)
{
    // Subscribed in QCopChannel's constructor when connected, else once connected.
    if (isConnected())
        QTimer::singleShot(0, this, &QCopApplicationChannel::complete);
    connect(this, &QCopChannel::connected, this, &QCopApplicationChannel::complete);
}

bool QCopApplicationChannel::isStartupComplete() const
{
    return m_complete;
}

void QCopApplicationChannel::complete()
{
    if (m_complete)
        return;
    m_complete = true;
    Q_EMIT startupComplete();
}

QCopApplicationChannel::~QCopApplicationChannel() = default;

QString QCopApplicationChannel::channelFor(const QString &application)
{
    return QStringLiteral("QPE/Application/") + application;
}

// qcopapplicationchannel.cpp: QCopApplicationChannel.
// SPDX-License-Identifier: MIT OR Apache-2.0
#include "qcopapplicationchannel.h"

#include <QtCore/qcoreapplication.h>

QCopApplicationChannel::QCopApplicationChannel(QObject *parent)
    : QCopChannel(channelFor(QCoreApplication::applicationName()), parent)
{
}

QCopApplicationChannel::QCopApplicationChannel(const QString &application, QObject *parent)
    : QCopChannel(channelFor(application), parent)
{
}

QCopApplicationChannel::~QCopApplicationChannel() = default;

QString QCopApplicationChannel::channelFor(const QString &application)
{
    return QStringLiteral("QPE/Application/") + application;
}

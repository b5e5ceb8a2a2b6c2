// qcopchannel.h: QCopChannel, Qt 4's channel class (and QMF's additions) on qcopd.
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef QCOPCHANNEL_H
#define QCOPCHANNEL_H

#include "qcopglobal.h"
#include <QtCore/qobject.h>
#include <QtCore/qstring.h>
#include <QtCore/qbytearray.h>

class QCopChannelPrivate;

// A subscription to a channel (or a wildcard pattern such as "QPE/*") of qcopd, and the
// static functions that send. The process has one connection to qcopd, made on first use
// and watched by a QSocketNotifier in that thread's event loop: use the QCop classes from
// that thread (normally the GUI thread). QCOP_SOCKET chooses the daemon's socket. When
// qcopd goes away the library emits connectionDown(), reconnects with a backoff, restores
// every subscription and emits connected(); sends made meanwhile fail at once (false and
// lastError()), they are not queued.

class QCOP_QT_EXPORT QCopChannel : public QObject
{
    Q_OBJECT
public:
    explicit QCopChannel(const QString &channel, QObject *parent = nullptr);
    ~QCopChannel() override;

    QString channel() const;

    // Whether `channel` has at least one exact subscriber on the bus. Waits for the
    // daemon's answer (at most the connection timeout, 5 s); false when not connected.
    static bool isRegistered(const QString &channel);

    // Send `msg` (a signature such as "setVolume(int)") with `data` (QDataStream
    // arguments) to every subscriber of `channel`, this process included. Returns false,
    // with the reason in lastError() and a warning, when the message was refused (too
    // large, bad name, a pattern as channel, access denied) or qcopd is not reachable.
    static bool send(const QString &channel, const QString &msg);
    static bool send(const QString &channel, const QString &msg, const QByteArray &data);

    // Waits until qcopd routed every message sent so far (at most the connection
    // timeout); false, with lastError(), if the daemon refused one of them.
    static bool flush();

    // The text of the last failure of send(), flush(), isRegistered() or a subscription.
    static QString lastError();

    // Qt 4 / QMF compatibility: delivers a message to this process's channel objects only.
    static void sendLocally(const QString &channel, const QString &msg, const QByteArray &data);
    // QMF compatibility: subscriptions are restored by the library on reconnect; this
    // does nothing.
    static void reregisterAll();

    // While a call (QCopReply on the caller's side, `qcop call`) is being delivered to
    // receive(), isCall() is true and reply() / replyError() answer it. The first answer
    // from any process reaches the caller.
    static bool isCall();
    static bool reply(const QString &msg, const QByteArray &data = QByteArray());
    static bool replyError(const QString &text);

    virtual void receive(const QString &msg, const QByteArray &data);

    // QMF: whether the process is connected to qcopd.
    bool isConnected() const;
    // QMF compatibility: the connection is re-established automatically; these do
    // nothing beyond starting a connection attempt.
    void connectRepeatedly();
    void disconnectFromServer();

Q_SIGNALS:
    void received(const QString &msg, const QByteArray &data);
    // For a wildcard channel: a message sent to `channel`, matching the pattern.
    void forwarded(const QString &msg, const QByteArray &data, const QString &channel);
    void connected();
    void connectionFailed();
    void reconnectionTimeout();
    void connectionDown();

private:
    QCopChannelPrivate *d;
    friend class QCopClient;
    Q_DISABLE_COPY(QCopChannel)
};

#endif

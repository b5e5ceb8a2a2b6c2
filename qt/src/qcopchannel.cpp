// qcopchannel.cpp: QCopChannel and the process's connection to qcopd (over libqcop).
// SPDX-License-Identifier: MIT OR Apache-2.0
#include "qcopchannel.h"
#include "qcopclient_p.h"

#include <QtCore/qcoreapplication.h>
#include <QtCore/qdatastream.h>
#include <QtCore/qiodevice.h>
#include <QtCore/qsocketnotifier.h>

class QCopChannelPrivate
{
public:
    QString channel;
    bool pattern = false;
};

QCopClient *QCopClient::s_instance = nullptr;

QCopClient *QCopClient::instance()
{
    if (!s_instance) {
        s_instance = new QCopClient;
        // Closed with the application object, while its event dispatcher still exists.
        qAddPostRoutine(&QCopClient::destroy);
    }
    return s_instance;
}

void QCopClient::destroy()
{
    delete s_instance;
    s_instance = nullptr;
}

QCopClient::QCopClient()
{
    m_retry.setSingleShot(true);
    connect(&m_retry, &QTimer::timeout, this, &QCopClient::retry);
}

QCopClient::~QCopClient()
{
    delete m_notifier;
    m_notifier = nullptr;
    // Sends are written when they are made; disconnecting writes any left over.
    qcop_disconnect(m_conn);
    m_conn = nullptr;
}

void QCopClient::setError(const QString &text)
{
    m_error = text;
}

bool QCopClient::failed(int rc, const QString &what)
{
    setError(QStringLiteral("%1: %2 (%3)")
                 .arg(what, QString::fromUtf8(qcop_strerror(m_conn)),
                      QString::fromLatin1(qcop_error_name(rc))));
    if (rc == QCOP_E_DISCONNECTED || rc == QCOP_E_IO || rc == QCOP_E_CONNECT
        || rc == QCOP_E_PROTOCOL || rc == QCOP_E_INTERNAL)
        lost(m_error);  // warns once
    else
        qWarning("QCop: %s", qPrintable(m_error));
    return false;
}

bool QCopClient::ensure()
{
    if (m_up)
        return true;
    if (m_conn || m_retry.isActive())
        return false;  // down: the retry timer reconnects
    const QByteArray name = QCoreApplication::applicationName().toUtf8();
    int rc = qcop_connect(&m_conn, nullptr, name.isEmpty() ? nullptr : name.constData(), 0,
                          QCOP_RECONNECT);
    if (rc != QCOP_OK) {
        m_conn = nullptr;
        setError(QStringLiteral("cannot connect to qcopd: %1")
                     .arg(QString::fromUtf8(qcop_strerror(nullptr))));
        if (!m_failedOnce)
            qWarning("QCop: %s; retrying", qPrintable(m_error));
        m_failedOnce = true;
        m_backoff = qMin(m_backoff * 2, 2000);
        m_retry.start(m_backoff);
        Q_EMIT connectionFailed();
        return false;
    }
    m_reconnects = qcop_reconnects(m_conn);
    m_up = true;
    m_failedOnce = false;
    m_lib.clear();
    reconcile();
    arm();
    Q_EMIT connected();
    return m_up;
}

void QCopClient::arm()
{
    delete m_notifier;
    m_notifier = new QSocketNotifier(qcop_fd(m_conn), QSocketNotifier::Read, this);
    connect(m_notifier, &QSocketNotifier::activated, this, &QCopClient::readable);
    // Messages may already wait in libqcop's buffer (read during a request).
    QTimer::singleShot(0, this, &QCopClient::drain);
}

void QCopClient::lost(const QString &why)
{
    if (!m_up)
        return;
    m_up = false;
    delete m_notifier;
    m_notifier = nullptr;
    qWarning("QCop: connection to qcopd lost (%s); reconnecting", qPrintable(why));
    Q_EMIT connectionDown();
    m_backoff = 100;
    m_retry.start(m_backoff);
}

void QCopClient::retry()
{
    if (!m_conn) {
        ensure();  // schedules the next attempt if this one fails
        return;
    }
    // libqcop reconnects inside a receive; with timeout 0 it tries once.
    qcop_message *m = nullptr;
    int rc = qcop_recv(m_conn, 0, &m);
    if (rc >= 0 || qcop_reconnects(m_conn) != m_reconnects) {
        m_reconnects = qcop_reconnects(m_conn);
        m_up = true;
        reconcile();
        arm();
        Q_EMIT connected();
        if (rc == 1)
            dispatch(m);
        qcop_message_free(m);
        return;
    }
    m_backoff = qMin(m_backoff * 2, 2000);
    m_retry.start(m_backoff);
}

void QCopClient::checkReconnected()
{
    if (m_up && m_conn && qcop_reconnects(m_conn) != m_reconnects) {
        // libqcop reconnected inside a call (the daemon restarted between two events).
        m_reconnects = qcop_reconnects(m_conn);
        Q_EMIT connectionDown();
        reconcile();
        arm();
        Q_EMIT connected();
    }
}

void QCopClient::readable()
{
    drain();
}

void QCopClient::drain()
{
    // Bounded per turn of the event loop, so a flood cannot starve the GUI.
    for (int budget = 256; m_up && budget > 0; --budget) {
        qcop_message *m = nullptr;
        int rc = qcop_recv(m_conn, 0, &m);
        if (rc == 0)
            break;
        if (rc < 0) {
            failed(rc, QStringLiteral("receive"));
            return;
        }
        checkReconnected();
        dispatch(m);
        qcop_message_free(m);
        if (budget == 1)
            QTimer::singleShot(0, this, &QCopClient::drain);
    }
    checkReconnected();
}

void QCopClient::reconcile()
{
    // libqcop restores its own subscriptions after a reconnect; names added or dropped
    // while the daemon was away are brought in line here (a request to a dead daemon
    // would wait for the reconnect).
    const QList<QString> wanted = m_subscribed.keys();
    for (const QString &name : wanted) {
        if (!m_up)
            return;
        if (m_lib.contains(name))
            continue;
        int rc = qcop_subscribe(m_conn, name.toUtf8().constData(), 0);
        if (rc < 0) {
            failed(rc, QStringLiteral("subscribe to \"%1\"").arg(name));
            continue;
        }
        m_lib.insert(name);
    }
    const QList<QString> held = m_lib.values();
    for (const QString &name : held) {
        if (!m_up)
            return;
        if (m_subscribed.contains(name))
            continue;
        m_lib.remove(name);
        int rc = qcop_unsubscribe(m_conn, name.toUtf8().constData());
        if (rc < 0 && rc != QCOP_E_NOTSUBSCRIBED)
            failed(rc, QStringLiteral("unsubscribe from \"%1\"").arg(name));
    }
}

void QCopClient::addChannel(QCopChannel *channel)
{
    m_channels.append(channel);
    if (m_subscribed[channel->channel()]++ == 0 && ensure()) {
        reconcile();
        checkReconnected();
        QTimer::singleShot(0, this, &QCopClient::drain);
    }
}

void QCopClient::removeChannel(QCopChannel *channel)
{
    m_channels.removeOne(channel);
    auto it = m_subscribed.find(channel->channel());
    if (it == m_subscribed.end() || --*it > 0)
        return;
    m_subscribed.erase(it);
    if (m_up)
        reconcile();
}

bool QCopClient::send(const QString &channel, const QString &msg, const QByteArray &data)
{
    if (!ensure()) {
        setError(QStringLiteral("%1 %2 not sent: not connected to qcopd").arg(channel, msg));
        qWarning("QCop: %s", qPrintable(m_error));
        return false;
    }
    int rc = qcop_send(m_conn, channel.toUtf8().constData(), msg.toUtf8().constData(),
                       data.constData(), size_t(data.size()));
    checkReconnected();
    if (rc < 0)
        return failed(rc, QStringLiteral("send %1 to \"%2\"").arg(msg, channel));
    return true;
}

bool QCopClient::flush()
{
    if (!ensure()) {
        setError(QStringLiteral("flush: not connected to qcopd"));
        return false;
    }
    int rc = qcop_flush(m_conn);
    checkReconnected();
    QTimer::singleShot(0, this, &QCopClient::drain);
    if (rc < 0)
        return failed(rc, QStringLiteral("flush"));
    return true;
}

bool QCopClient::isRegistered(const QString &channel)
{
    if (!ensure())
        return false;
    int rc = qcop_is_registered(m_conn, channel.toUtf8().constData());
    checkReconnected();
    QTimer::singleShot(0, this, &QCopClient::drain);
    if (rc < 0)
        return failed(rc, QStringLiteral("isRegistered(\"%1\")").arg(channel));
    return rc == 1;
}

bool QCopClient::reply(const QString &msg, const QByteArray &data)
{
    if (!m_call || !m_up) {
        setError(QStringLiteral("reply: no call is being delivered"));
        return false;
    }
    int rc = qcop_reply(m_conn, m_call, msg.toUtf8().constData(), data.constData(),
                        size_t(data.size()));
    if (rc < 0)
        return failed(rc, QStringLiteral("reply %1").arg(msg));
    return true;
}

bool QCopClient::replyError(const QString &text)
{
    if (!m_call || !m_up) {
        setError(QStringLiteral("replyError: no call is being delivered"));
        return false;
    }
    int rc = qcop_reply_error(m_conn, m_call, text.toUtf8().constData());
    if (rc < 0)
        return failed(rc, QStringLiteral("replyError"));
    return true;
}

static QByteArray forwardedPayload(const QString &channel, const QString &msg,
                                   const QByteArray &data)
{
    QByteArray out;
    QDataStream s(&out, QIODevice::WriteOnly);
    s.setVersion(QCop::DataStreamVersion);
    s << channel << msg << data;
    return out;
}

void QCopClient::deliverLocally(const QString &channel, const QString &msg,
                                const QByteArray &data)
{
    // Guarded: a receiver may delete channel objects (itself included).
    QList<QPointer<QCopChannel>> exact, patterns;
    for (QCopChannel *c : qAsConst(m_channels)) {
        if (c->d->pattern) {
            if (matches(c->d->channel, channel))
                patterns.append(c);
        } else if (c->d->channel == channel) {
            exact.append(c);
        }
    }
    for (const QPointer<QCopChannel> &c : qAsConst(exact)) {
        if (c)
            c->receive(msg, data);
    }
    if (patterns.isEmpty())
        return;
    // As Qt 4 delivered it to a wildcard channel.
    const QByteArray wrapped = forwardedPayload(channel, msg, data);
    const QString forwarded = QStringLiteral("forwardedMessage(QString,QString,QByteArray)");
    for (const QPointer<QCopChannel> &c : qAsConst(patterns)) {
        if (c)
            c->receive(forwarded, wrapped);
        if (c)
            Q_EMIT c->forwarded(msg, data, channel);
    }
}

void QCopClient::dispatch(qcop_message *m)
{
    size_t len = 0;
    const uint8_t *bytes = qcop_message_data(m, &len);
    const QString channel = QString::fromUtf8(qcop_message_channel(m));
    const QString msg = QString::fromUtf8(qcop_message_name(m));
    const QByteArray data(reinterpret_cast<const char *>(bytes), int(len));
    const qcop_message *outer = m_call;
    m_call = qcop_message_is_call(m) == 1 ? m : nullptr;
    deliverLocally(channel, msg, data);
    m_call = outer;
}

// The daemon's own name rules, from libqcop: only `*` makes a pattern (as Qt's QCOP), and
// `?` / `[...]` are wildcards inside one.
bool QCopClient::isPattern(const QString &name)
{
    return qcop_is_pattern(name.toUtf8().constData()) == 1;
}

bool QCopClient::matches(const QString &pattern, const QString &channel)
{
    return qcop_pattern_matches(pattern.toUtf8().constData(), channel.toUtf8().constData()) == 1;
}

// ----- QCopChannel -----------------------------------------------------------------------

QCopChannel::QCopChannel(const QString &channel, QObject *parent)
    : QObject(parent), d(new QCopChannelPrivate)
{
    d->channel = channel;
    d->pattern = QCopClient::isPattern(channel);
    QCopClient *client = QCopClient::instance();
    connect(client, &QCopClient::connected, this, &QCopChannel::connected);
    connect(client, &QCopClient::connectionDown, this, &QCopChannel::connectionDown);
    connect(client, &QCopClient::connectionFailed, this, &QCopChannel::connectionFailed);
    client->addChannel(this);
}

QCopChannel::~QCopChannel()
{
    if (QCopClient *client = QCopClient::existing())
        client->removeChannel(this);
    delete d;
}

QString QCopChannel::channel() const
{
    return d->channel;
}

bool QCopChannel::isRegistered(const QString &channel)
{
    return QCopClient::instance()->isRegistered(channel);
}

bool QCopChannel::send(const QString &channel, const QString &msg)
{
    return QCopClient::instance()->send(channel, msg, QByteArray());
}

bool QCopChannel::send(const QString &channel, const QString &msg, const QByteArray &data)
{
    return QCopClient::instance()->send(channel, msg, data);
}

bool QCopChannel::flush()
{
    return QCopClient::instance()->flush();
}

QString QCopChannel::lastError()
{
    return QCopClient::instance()->lastError();
}

void QCopChannel::sendLocally(const QString &channel, const QString &msg, const QByteArray &data)
{
    QCopClient::instance()->deliverLocally(channel, msg, data);
}

void QCopChannel::reregisterAll()
{
}

bool QCopChannel::isCall()
{
    return QCopClient::instance()->isCall();
}

bool QCopChannel::reply(const QString &msg, const QByteArray &data)
{
    return QCopClient::instance()->reply(msg, data);
}

bool QCopChannel::replyError(const QString &text)
{
    return QCopClient::instance()->replyError(text);
}

void QCopChannel::receive(const QString &msg, const QByteArray &data)
{
    Q_EMIT received(msg, data);
}

bool QCopChannel::isConnected() const
{
    return QCopClient::instance()->isUp();
}

void QCopChannel::connectRepeatedly()
{
    QCopClient::instance()->ensure();
}

void QCopChannel::disconnectFromServer()
{
}

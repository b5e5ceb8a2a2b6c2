// qcopclient_p.h: the process's one connection to qcopd, driven by the event loop.
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef QCOPCLIENT_P_H
#define QCOPCLIENT_P_H

#include "qcopchannel.h"
#include <QtCore/qhash.h>
#include <QtCore/qset.h>
#include <QtCore/qlist.h>
#include <QtCore/qobject.h>
#include <QtCore/qpointer.h>
#include <QtCore/qtimer.h>

#include <qcop.h>

class QSocketNotifier;

// One libqcop connection per process (QCOP_RECONNECT: libqcop re-registers every
// subscription after the daemon comes back), watched by a QSocketNotifier in the thread
// that first used it. Messages are dispatched to the local QCopChannel objects, a pattern
// object getting every message whose channel it matches.
class QCopClient : public QObject
{
    Q_OBJECT
public:
    static QCopClient *instance();
    // The client if one was created (nullptr after the application ended).
    static QCopClient *existing() { return s_instance; }

    bool isUp() const { return m_up; }
    qcop_conn *conn() const { return m_conn; }
    QString lastError() const { return m_error; }
    void setError(const QString &text);

    void addChannel(QCopChannel *channel);
    void removeChannel(QCopChannel *channel);

    bool send(const QString &channel, const QString &msg, const QByteArray &data);
    bool flush();
    bool isRegistered(const QString &channel);
    void deliverLocally(const QString &channel, const QString &msg, const QByteArray &data);

    bool isCall() const { return m_call != nullptr; }
    bool reply(const QString &msg, const QByteArray &data);
    bool replyError(const QString &text);

    // Connects now if not connected (a failed attempt schedules retries).
    bool ensure();

    // Whether `name` is a pattern, and whether `pattern` matches `channel` (the daemon's
    // shell-glob rules: `*` crosses `/`, `?`, `[a-z]`, `[!a-z]`).
    static bool isPattern(const QString &name);
    static bool matches(const QString &pattern, const QString &channel);

Q_SIGNALS:
    void connected();
    void connectionDown();
    void connectionFailed();

private Q_SLOTS:
    void readable();
    void retry();

private:
    QCopClient();
    ~QCopClient() override;
    static void destroy();

    void reconcile();
    void drain();
    void dispatch(qcop_message *m);
    // After any libqcop call: a changed reconnect count means a new descriptor.
    void checkReconnected();
    void arm();
    void lost(const QString &why);
    bool failed(int rc, const QString &what);

    qcop_conn *m_conn = nullptr;
    QSocketNotifier *m_notifier = nullptr;
    quint64 m_reconnects = 0;
    bool m_up = false;
    bool m_draining = false;
    QTimer m_retry;
    int m_backoff = 50;
    bool m_failedOnce = false;
    QString m_error;
    // Every channel object in creation order (delivery order), and how many objects
    // share each subscribed name.
    QList<QCopChannel *> m_channels;
    QHash<QString, int> m_subscribed;
    // The names subscribed through libqcop (restored by it after a reconnect).
    QSet<QString> m_lib;
    const qcop_message *m_call = nullptr;
    static QCopClient *s_instance;
};

#endif

// qcopreply.cpp: QCopReply (libqcop's qcop_call on a worker thread's own connection).
// SPDX-License-Identifier: MIT OR Apache-2.0
#include "qcopreply.h"
#include "qcoptypes_p.h"

#include <QtCore/qcoreapplication.h>
#include <QtCore/qpointer.h>
#include <QtCore/qthreadpool.h>

#include <qcop.h>

class QCopReplyPrivate
{
public:
    QString channel, request, message, errorString;
    QByteArray data;
    QCopReply::Error error = QCopReply::NoError;
    bool finished = false;
};

struct CallResult
{
    QCopReply::Error error = QCopReply::NoError;
    QString message, errorString;
    QByteArray data;
};

static CallResult runCall(const QByteArray &channel, const QByteArray &msg,
                          const QByteArray &data, int timeoutMs)
{
    CallResult r;
    qcop_conn *conn = nullptr;
    const QByteArray name = QCoreApplication::applicationName().toUtf8() + "-call";
    int rc = qcop_connect(&conn, nullptr, name.constData(), 0, 0);
    if (rc != QCOP_OK) {
        r.error = QCopReply::ConnectionError;
        r.errorString = QString::fromUtf8(qcop_strerror(nullptr));
        return r;
    }
    qcop_message *reply = nullptr;
    rc = qcop_call(conn, channel.constData(), msg.constData(), data.constData(),
                   size_t(data.size()), timeoutMs, &reply);
    if (rc == QCOP_OK) {
        size_t len = 0;
        const uint8_t *bytes = qcop_message_data(reply, &len);
        r.message = QString::fromUtf8(qcop_message_name(reply));
        r.data = QByteArray(reinterpret_cast<const char *>(bytes), int(len));
        qcop_message_free(reply);
    } else {
        switch (rc) {
        case QCOP_E_TIMEOUT: r.error = QCopReply::TimeoutError; break;
        case QCOP_E_NORESPONDER: r.error = QCopReply::NoResponderError; break;
        case QCOP_E_RESPONDERGONE: r.error = QCopReply::ResponderGoneError; break;
        case QCOP_E_REMOTE: r.error = QCopReply::RemoteError; break;
        case QCOP_E_DISCONNECTED:
        case QCOP_E_CONNECT:
        case QCOP_E_IO: r.error = QCopReply::ConnectionError; break;
        default: r.error = QCopReply::OtherError; break;
        }
        r.errorString = QString::fromUtf8(qcop_strerror(conn));
    }
    qcop_disconnect(conn);
    return r;
}

// Calls in flight, bounded: each holds a connection and a thread while it waits.
static QThreadPool *callPool()
{
    static QThreadPool *pool = [] {
        auto *p = new QThreadPool;
        p->setMaxThreadCount(4);
        qAddPostRoutine([] {
            callPool()->waitForDone();
            delete callPool();
        });
        return p;
    }();
    return pool;
}

QCopReply::QCopReply(QObject *parent) : QObject(parent), d(new QCopReplyPrivate) {}

QCopReply::~QCopReply()
{
    delete d;
}

QCopReply *QCopReply::call(const QString &channel, const QString &msg, const QByteArray &data,
                           int timeoutMs, QObject *parent)
{
    auto *reply = new QCopReply(parent);
    reply->d->channel = channel;
    reply->d->request = msg;
    QPointer<QCopReply> guard(reply);
    QObject *home = QCoreApplication::instance();
    const QByteArray ch = channel.toUtf8(), m = msg.toUtf8();
    callPool()->start([guard, home, ch, m, data, timeoutMs] {
        const CallResult r = runCall(ch, m, data, timeoutMs);
        QMetaObject::invokeMethod(home, [guard, r] {
            if (!guard)
                return;
            guard->d->error = r.error;
            guard->d->errorString = r.errorString;
            guard->d->message = r.message;
            guard->d->data = r.data;
            guard->d->finished = true;
            Q_EMIT guard->finished();
        }, Qt::QueuedConnection);
    });
    return reply;
}

QString QCopReply::channel() const { return d->channel; }
QString QCopReply::request() const { return d->request; }
bool QCopReply::isFinished() const { return d->finished; }
QCopReply::Error QCopReply::error() const { return d->error; }
QString QCopReply::errorString() const { return d->errorString; }
QString QCopReply::message() const { return d->message; }
QByteArray QCopReply::data() const { return d->data; }

QList<QVariant> QCopReply::arguments() const
{
    QList<QVariant> out;
    QDataStream s(d->data);
    s.setVersion(QCop::DataStreamVersion);
    for (const QByteArray &t : QCopTypes::parameterTypes(d->message.toUtf8())) {
        const int type = QCopTypes::typeId(t);
        QVariant v = type ? QCopTypes::load(s, type) : QVariant();
        if (!v.isValid())
            break;
        out.append(v);
    }
    return out;
}

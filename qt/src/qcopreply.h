// qcopreply.h: QCopReply, a call whose reply comes back through the event loop.
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef QCOPREPLY_H
#define QCOPREPLY_H

#include "qcopglobal.h"
#include <QtCore/qbytearray.h>
#include <QtCore/qlist.h>
#include <QtCore/qobject.h>
#include <QtCore/qstring.h>
#include <QtCore/qvariant.h>

class QCopReplyPrivate;

// A request to the subscribers of a channel; the first reply (a responder answers with
// QCopChannel::reply() inside receive(), or `qcop serve`) finishes it:
//     QCopReply *r = QCopReply::call("svc/clock", "now()", {}, 2000, this);
//     connect(r, &QCopReply::finished, this, [r] { ...; r->deleteLater(); });
// The call waits on a connection of its own in a worker thread, so the GUI thread never
// blocks and the process's channels keep receiving; finished() is emitted in the
// application's main thread (a QCoreApplication must exist) once the reply, an error or
// the timeout came. At most 4 calls wait at once; more queue behind them.
class QCOP_QT_EXPORT QCopReply : public QObject
{
    Q_OBJECT
public:
    enum Error {
        NoError,
        TimeoutError,        // no reply within the timeout
        NoResponderError,    // nobody subscribed to the channel
        ResponderGoneError,  // every recipient left without replying
        RemoteError,         // the responder answered with replyError(); see errorString()
        ConnectionError,     // qcopd cannot be reached
        OtherError           // refused (bad name, too large, access denied): errorString()
    };
    Q_ENUM(Error)

    // `timeoutMs` must be positive.
    static QCopReply *call(const QString &channel, const QString &msg,
                           const QByteArray &data = QByteArray(), int timeoutMs = 5000,
                           QObject *parent = nullptr);
    ~QCopReply() override;

    QString channel() const;
    QString request() const;
    bool isFinished() const;
    Error error() const;
    QString errorString() const;
    // The reply's signature and payload.
    QString message() const;
    QByteArray data() const;
    // The payload decoded by the types of message()'s signature.
    QList<QVariant> arguments() const;

Q_SIGNALS:
    void finished();

private:
    explicit QCopReply(QObject *parent);
    QCopReplyPrivate *d;
    friend class QCopReplyPrivate;
    Q_DISABLE_COPY(QCopReply)
};

#endif

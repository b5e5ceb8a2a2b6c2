// qcopadaptor.h: QCopAdaptor (QMF's API): signals of one process invoke slots of another.
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef QCOPADAPTOR_H
#define QCOPADAPTOR_H

#include "qcopglobal.h"
#include <QtCore/qbytearray.h>
#include <QtCore/qlist.h>
#include <QtCore/qobject.h>
#include <QtCore/qstring.h>
#include <QtCore/qstringlist.h>
#include <QtCore/qvariant.h>

class QCopAdaptorPrivate;
class QCopAdaptorEnvelopePrivate;

// Arguments for one message, sent when the last copy is destroyed:
//     adaptor->send(MESSAGE(setVolume(int,QString))) << 42 << "speaker";
class QCOP_QT_EXPORT QCopAdaptorEnvelope
{
    friend class QCopAdaptor;
    QCopAdaptorEnvelope(const QStringList &channels, const QString &message);

public:
    QCopAdaptorEnvelope();
    QCopAdaptorEnvelope(const QCopAdaptorEnvelope &other);
    ~QCopAdaptorEnvelope();
    QCopAdaptorEnvelope &operator=(const QCopAdaptorEnvelope &other);

    template <class T>
    QCopAdaptorEnvelope &operator<<(const T &value)
    {
        addArgument(QVariant::fromValue(value));
        return *this;
    }
    QCopAdaptorEnvelope &operator<<(const char *value)
    {
        addArgument(QVariant(QString::fromUtf8(value)));
        return *this;
    }

private:
    QCopAdaptorEnvelopePrivate *d;
    void addArgument(const QVariant &value);
};

class QCOP_QT_EXPORT QCopAdaptor : public QObject
{
    Q_OBJECT
    friend class QCopAdaptorPrivate;
    friend class QCopAdaptorEnvelope;
    friend class QCopSignalRelay;

public:
    // Messages of `channel` (empty: the application channel QPE/Application/<name>).
    explicit QCopAdaptor(const QString &channel, QObject *parent = nullptr);
    ~QCopAdaptor() override;

    QString channel() const;

    // Like QObject::connect, and:
    //  - `receiver` an adaptor, `member` MESSAGE(msg(types)): emitting `signal` sends msg
    //    with the signal's arguments on the adaptor's channel;
    //  - `sender` an adaptor, `signal` MESSAGE(msg(types)): msg arriving on the adaptor's
    //    channel invokes `member` (a slot or signal) with the message's arguments.
    static bool connect(QObject *sender, const QByteArray &signal, QObject *receiver,
                        const QByteArray &member);

    QCopAdaptorEnvelope send(const QByteArray &member);
    void send(const QByteArray &member, const QVariant &arg1);
    void send(const QByteArray &member, const QVariant &arg1, const QVariant &arg2);
    void send(const QByteArray &member, const QVariant &arg1, const QVariant &arg2,
              const QVariant &arg3);
    void send(const QByteArray &member, const QList<QVariant> &args);

    // Whether a message for `signal` (MESSAGE(...) or SIGNAL(...)) is connected to a
    // local slot of this adaptor.
    bool isConnected(const QByteArray &signal);

Q_SIGNALS:
    void connectionDown();
    void reconnectionTimeout();

protected:
    enum PublishType { Signals, Slots, SignalsAndSlots };

    bool publish(const QByteArray &member);
    void publishAll(QCopAdaptor::PublishType type);
    virtual QString memberToMessage(const QByteArray &member);
    virtual QStringList sendChannels(const QString &channel);
    virtual QString receiveChannel(const QString &channel);

private Q_SLOTS:
    void received(const QString &msg, const QByteArray &data);

private:
    QCopAdaptorPrivate *d;

    bool connectLocalToRemote(QObject *sender, const QByteArray &signal,
                              const QByteArray &member);
    bool connectRemoteToLocal(const QByteArray &signal, QObject *receiver,
                              const QByteArray &member);
    void sendMessage(const QString &msg, const QList<QVariant> &args);
    static void send(const QStringList &channels, const QString &msg,
                     const QList<QVariant> &args);
};

// Marks a member of QCopAdaptor::connect as a message on the adaptor's channel.
#define MESSAGE(x) "3" #x
#define QMESSAGE_CODE 3

#endif

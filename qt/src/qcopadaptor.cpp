// qcopadaptor.cpp: QCopAdaptor and QCopAdaptorEnvelope.
// SPDX-License-Identifier: MIT OR Apache-2.0
#include "qcopadaptor.h"
#include "qcopchannel.h"
#include "qcopclient_p.h"
#include "qcoptypes_p.h"

#include <QtCore/qcoreapplication.h>
#include <QtCore/qmetaobject.h>
#include <QtCore/qhash.h>
#include <QtCore/qpointer.h>
#include <QtCore/qset.h>
#include <QtCore/qvarlengtharray.h>

#include <memory>

// ----- marshalling -----------------------------------------------------------------------

// Encodes `args` as the types the signature `msg` names; false (with a warning) if a type
// cannot be streamed or a value not converted.
static bool encodeArguments(const QString &msg, const QList<QVariant> &args, QByteArray &out)
{
    const QList<QByteArray> types = QCopTypes::parameterTypes(msg.toUtf8());
    if (types.size() != args.size())
        qWarning("QCopAdaptor: %s sent with %d arguments", qPrintable(msg), int(args.size()));
    QDataStream s(&out, QIODevice::WriteOnly);
    s.setVersion(QCop::DataStreamVersion);
    for (int i = 0; i < types.size() && i < args.size(); ++i) {
        const int type = QCopTypes::typeId(types[i]);
        if (type == 0 || !QCopTypes::save(s, type, args[i])) {
            qWarning("QCopAdaptor: %s: cannot send argument %d as %s", qPrintable(msg), i + 1,
                     types[i].constData());
            return false;
        }
    }
    return true;
}

// ----- QCopAdaptorEnvelope ---------------------------------------------------------------

class QCopAdaptorEnvelopePrivate
{
public:
    QAtomicInt ref{1};
    QStringList channels;
    QString message;
    QList<QVariant> args;
};

QCopAdaptorEnvelope::QCopAdaptorEnvelope(const QStringList &channels, const QString &message)
    : d(new QCopAdaptorEnvelopePrivate)
{
    d->channels = channels;
    d->message = message;
}

QCopAdaptorEnvelope::QCopAdaptorEnvelope() : d(new QCopAdaptorEnvelopePrivate) {}

QCopAdaptorEnvelope::QCopAdaptorEnvelope(const QCopAdaptorEnvelope &other) : d(other.d)
{
    d->ref.ref();
}

QCopAdaptorEnvelope::~QCopAdaptorEnvelope()
{
    if (!d->ref.deref()) {
        if (!d->message.isEmpty())
            QCopAdaptor::send(d->channels, d->message, d->args);
        delete d;
    }
}

QCopAdaptorEnvelope &QCopAdaptorEnvelope::operator=(const QCopAdaptorEnvelope &other)
{
    if (other.d == d)
        return *this;
    other.d->ref.ref();
    QCopAdaptorEnvelopePrivate *old = d;
    d = other.d;
    if (!old->ref.deref()) {
        if (!old->message.isEmpty())
            QCopAdaptor::send(old->channels, old->message, old->args);
        delete old;
    }
    return *this;
}

void QCopAdaptorEnvelope::addArgument(const QVariant &value)
{
    d->args.append(value);
}

// ----- the adaptor's private parts -------------------------------------------------------

// A local slot (or signal) invoked by a message.
struct QCopInvoker
{
    QPointer<QObject> receiver;
    int method = -1;
    QList<int> slotTypes;
};

// Catches one signal of a local object and sends it as a message. It has no Q_OBJECT:
// its single extra method (index QObject's method count) is handled in qt_metacall.
class QCopSignalRelay : public QObject
{
public:
    QCopSignalRelay(QCopAdaptor *adaptor, const QString &message, const QList<int> &types)
        : QObject(adaptor), m_adaptor(adaptor), m_message(message), m_types(types) {}

    static int slotIndex() { return QObject::staticMetaObject.methodCount(); }

    int qt_metacall(QMetaObject::Call c, int id, void **a) override
    {
        id = QObject::qt_metacall(c, id, a);
        if (id < 0)
            return id;
        if (c == QMetaObject::InvokeMetaMethod) {
            if (id == 0) {
                QList<QVariant> args;
                for (int i = 0; i < m_types.size(); ++i)
                    args.append(QCopTypes::fromData(m_types[i], a[i + 1]));
                m_adaptor->sendMessage(m_message, args);
            }
            --id;
        }
        return id;
    }

private:
    QCopAdaptor *m_adaptor;
    QString m_message;
    QList<int> m_types;
};

class QCopAdaptorPrivate
{
public:
    QString channel;
    QCopChannel *receiver = nullptr;  // created with the first remote-to-local connection
    QSet<int> published;  // method indexes publishAll() handled
    QMultiHash<QString, QCopInvoker> invokers;
};

static QByteArray normalized(const QByteArray &member)
{
    QByteArray m = member;
    if (!m.isEmpty() && m[0] >= '0' && m[0] <= '9')
        m.remove(0, 1);
    return QMetaObject::normalizedSignature(m.constData());
}

QCopAdaptor::QCopAdaptor(const QString &channel, QObject *parent)
    : QObject(parent), d(new QCopAdaptorPrivate)
{
    d->channel = channel.isEmpty()
        ? QStringLiteral("QPE/Application/") + QCoreApplication::applicationName()
        : channel;
    QCopClient *client = QCopClient::instance();
    QObject::connect(client, &QCopClient::connectionDown, this, &QCopAdaptor::connectionDown);
}

QCopAdaptor::~QCopAdaptor()
{
    delete d;
}

QString QCopAdaptor::channel() const
{
    return d->channel;
}

bool QCopAdaptor::connect(QObject *sender, const QByteArray &signal, QObject *receiver,
                          const QByteArray &member)
{
    if (!sender || signal.isEmpty() || !receiver || member.isEmpty())
        return false;
    auto *senderAdaptor = qobject_cast<QCopAdaptor *>(sender);
    auto *receiverAdaptor = qobject_cast<QCopAdaptor *>(receiver);
    const char code = '0' + QMESSAGE_CODE;
    if (!member.startsWith(code))
        receiverAdaptor = nullptr;
    if (!signal.startsWith(code))
        senderAdaptor = nullptr;
    if (!senderAdaptor && !receiverAdaptor)
        return QObject::connect(sender, signal.constData(), receiver, member.constData());
    if (senderAdaptor && receiverAdaptor) {
        qWarning("QCopAdaptor::connect: cannot connect a MESSAGE() to a MESSAGE()");
        return false;
    }
    if (receiverAdaptor)
        return receiverAdaptor->connectLocalToRemote(sender, signal, member);
    return senderAdaptor->connectRemoteToLocal(signal, receiver, member);
}

bool QCopAdaptor::connectLocalToRemote(QObject *sender, const QByteArray &signal,
                                       const QByteArray &member)
{
    const QByteArray sig = normalized(signal);
    const QMetaObject *meta = sender->metaObject();
    const int index = meta->indexOfSignal(sig.constData());
    if (index < 0) {
        qWarning("QCopAdaptor::connect: no signal %s in %s", sig.constData(), meta->className());
        return false;
    }
    const QMetaMethod method = meta->method(index);
    QList<int> types;
    for (int i = 0; i < method.parameterCount(); ++i) {
        const int type = method.parameterType(i);
        if (type == QMetaType::UnknownType) {
            qWarning("QCopAdaptor::connect: %s: type %s is not registered", sig.constData(),
                     method.parameterTypes().at(i).constData());
            return false;
        }
        types.append(type);
    }
    auto *relay = new QCopSignalRelay(this, memberToMessage(member), types);
    if (!QMetaObject::connect(sender, index, relay, QCopSignalRelay::slotIndex())) {
        delete relay;
        return false;
    }
    return true;
}

bool QCopAdaptor::connectRemoteToLocal(const QByteArray &signal, QObject *receiver,
                                       const QByteArray &member)
{
    const QByteArray slot = normalized(member);
    const QMetaObject *meta = receiver->metaObject();
    QCopInvoker invoker;
    invoker.receiver = receiver;
    invoker.method = meta->indexOfMethod(slot.constData());
    if (invoker.method < 0) {
        qWarning("QCopAdaptor::connect: no slot or signal %s in %s", slot.constData(),
                 meta->className());
        return false;
    }
    const QString message = memberToMessage(signal);
    if (!QMetaObject::checkConnectArgs(message.toUtf8().constData(), slot.constData())) {
        qWarning("QCopAdaptor::connect: %s does not take the arguments of %s", slot.constData(),
                 qPrintable(message));
        return false;
    }
    const QMetaMethod method = meta->method(invoker.method);
    for (int i = 0; i < method.parameterCount(); ++i)
        invoker.slotTypes.append(method.parameterType(i));
    d->invokers.insert(message, invoker);
    if (!d->receiver) {
        d->receiver = new QCopChannel(receiveChannel(d->channel), this);
        QObject::connect(d->receiver, &QCopChannel::received, this, &QCopAdaptor::received);
    }
    return true;
}

void QCopAdaptor::received(const QString &msg, const QByteArray &data)
{
    const QList<QCopInvoker> targets = d->invokers.values(msg);
    if (targets.isEmpty())
        return;
    // The message's own types decode it; each slot then takes as many as it declares.
    const QList<QByteArray> types = QCopTypes::parameterTypes(msg.toUtf8());
    QList<QVariant> args;
    QDataStream s(data);
    s.setVersion(QCop::DataStreamVersion);
    for (const QByteArray &t : types) {
        const int type = QCopTypes::typeId(t);
        QVariant v = type ? QCopTypes::load(s, type) : QVariant();
        if (!v.isValid()) {
            qWarning("QCopAdaptor: %s on %s: argument %d (%s) does not decode; not delivered",
                     qPrintable(msg), qPrintable(d->channel), int(args.size()) + 1, t.constData());
            return;
        }
        args.append(v);
    }
    // Invoked in the order (QMultiHash::values lists the latest first).
    for (int k = targets.size() - 1; k >= 0; --k) {
        const QCopInvoker &inv = targets[k];
        if (!inv.receiver)
            continue;
        QVarLengthArray<void *, 8> argv;
        std::vector<QVariant> held;
        held.reserve(inv.slotTypes.size());
        argv.append(nullptr);
        for (int i = 0; i < inv.slotTypes.size() && i < args.size(); ++i) {
            const int want = inv.slotTypes[i];
            if (want == QMetaType::QVariant) {
                held.push_back(args[i]);
                argv.append(&held.back());
            } else {
                QVariant v = args[i];
                if (QCopTypes::variantType(v) != want)
                    QCopTypes::convert(v, want);
                held.push_back(v);
                argv.append(held.back().data());
            }
        }
        QMetaObject::metacall(inv.receiver, QMetaObject::InvokeMetaMethod, inv.method,
                              argv.data());
    }
}

QCopAdaptorEnvelope QCopAdaptor::send(const QByteArray &member)
{
    return QCopAdaptorEnvelope(sendChannels(d->channel), memberToMessage(member));
}

void QCopAdaptor::send(const QByteArray &member, const QVariant &arg1)
{
    sendMessage(memberToMessage(member), QList<QVariant>{arg1});
}

void QCopAdaptor::send(const QByteArray &member, const QVariant &arg1, const QVariant &arg2)
{
    sendMessage(memberToMessage(member), QList<QVariant>{arg1, arg2});
}

void QCopAdaptor::send(const QByteArray &member, const QVariant &arg1, const QVariant &arg2,
                       const QVariant &arg3)
{
    sendMessage(memberToMessage(member), QList<QVariant>{arg1, arg2, arg3});
}

void QCopAdaptor::send(const QByteArray &member, const QList<QVariant> &args)
{
    sendMessage(memberToMessage(member), args);
}

void QCopAdaptor::sendMessage(const QString &msg, const QList<QVariant> &args)
{
    send(sendChannels(d->channel), msg, args);
}

void QCopAdaptor::send(const QStringList &channels, const QString &msg,
                       const QList<QVariant> &args)
{
    QByteArray data;
    if (!encodeArguments(msg, args, data))
        return;
    for (const QString &channel : channels)
        QCopChannel::send(channel, msg, data);
}

bool QCopAdaptor::isConnected(const QByteArray &signal)
{
    return d->invokers.contains(memberToMessage(signal));
}

bool QCopAdaptor::publish(const QByteArray &member)
{
    if (member.size() >= 1 && member[0] == '0' + QSLOT_CODE)
        return connectRemoteToLocal("3" + member.mid(1), this, member);
    return connectLocalToRemote(this, member, member);
}

void QCopAdaptor::publishAll(QCopAdaptor::PublishType type)
{
    // Each member once, however often and with whichever types this is called.
    const QMetaObject *meta = metaObject();
    for (int index = QCopAdaptor::staticMetaObject.methodCount(); index < meta->methodCount();
         ++index) {
        if (d->published.contains(index))
            continue;
        const QMetaMethod method = meta->method(index);
        const QByteArray name = method.methodSignature();
        if (method.methodType() == QMetaMethod::Slot && method.access() == QMetaMethod::Public
            && (type == Slots || type == SignalsAndSlots)) {
            d->published.insert(index);
            connectRemoteToLocal("3" + name, this, "1" + name);
        } else if (method.methodType() == QMetaMethod::Signal
                   && (type == Signals || type == SignalsAndSlots)) {
            d->published.insert(index);
            connectLocalToRemote(this, "2" + name, "3" + name);
        }
    }
}

QString QCopAdaptor::memberToMessage(const QByteArray &member)
{
    return QString::fromUtf8(normalized(member));
}

QStringList QCopAdaptor::sendChannels(const QString &channel)
{
    return QStringList{channel};
}

QString QCopAdaptor::receiveChannel(const QString &channel)
{
    return channel;
}

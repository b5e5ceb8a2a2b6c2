// qcop-qt-peer: the other process of the QtTest suite.
//   subscribe CHANNEL   a QCopChannel on CHANNEL; prints "ready"; quits on quit()
//   adaptor             QCopAdaptor slots on test/adaptor, answered on test/adaptor/back
//   responder CHANNEL   answers add(int,int) calls with sum(int), fail() with an error
//   late CHANNEL        started before its qcopd: prints "down", "failed" (a connection
//                       attempt failed), "up" once connected, "got MSG" per message
//   app                 QCopApplicationChannel (started by qcopd's activation): echoes
//                       hello(QString) to test/app/back, then quits
// SPDX-License-Identifier: MIT OR Apache-2.0
#include <QCopAdaptor>
#include <QCopApplicationChannel>
#include <QCopChannel>
#include <QtCore/qcoreapplication.h>
#include <QtCore/qdatastream.h>
#include <QtCore/qdatetime.h>
#include <QtCore/qiodevice.h>
#include <QtCore/qstringlist.h>

#include <cstdio>

static void ready()
{
    std::printf("ready\n");
    std::fflush(stdout);
}

// Published slots (QMF style): every public slot is a message of the channel.
class Service : public QCopAdaptor
{
    Q_OBJECT
public:
    explicit Service(QObject *parent = nullptr) : QCopAdaptor(QStringLiteral("test/adaptor"), parent)
    {
        publishAll(SignalsAndSlots);
    }

public Q_SLOTS:
    void setValue(int value, const QString &text) { Q_EMIT valueSet(value * 2, text + QStringLiteral("!")); }
    void setMany(bool b, qlonglong ll, double d, const QStringList &list, const QByteArray &bytes,
                 const QDateTime &when, const QVariant &any)
    {
        Q_EMIT gotMany(b, ll, d, list, bytes, when, any);
    }
    void quit() { QCoreApplication::quit(); }

Q_SIGNALS:
    void valueSet(int value, const QString &text);
    void gotMany(bool b, qlonglong ll, double d, const QStringList &list, const QByteArray &bytes,
                 const QDateTime &when, const QVariant &any);
};

// The answers go back through another adaptor, connected signal-to-message.
class Back : public QObject
{
    Q_OBJECT
public:
    Back(Service *service, QObject *parent = nullptr)
        : QObject(parent), m_back(QStringLiteral("test/adaptor/back"), this)
    {
        QCopAdaptor::connect(service, SIGNAL(valueSet(int,QString)), &m_back,
                             MESSAGE(valueSet(int,QString)));
        QCopAdaptor::connect(service,
                             SIGNAL(gotMany(bool,qlonglong,double,QStringList,QByteArray,QDateTime,QVariant)),
                             &m_back,
                             MESSAGE(gotMany(bool,qlonglong,double,QStringList,QByteArray,QDateTime,QVariant)));
    }

private:
    QCopAdaptor m_back;
};

class Responder : public QCopChannel
{
public:
    using QCopChannel::QCopChannel;
    void receive(const QString &msg, const QByteArray &data) override
    {
        if (!isCall())
            return;
        if (msg == QLatin1String("add(int,int)")) {
            QDataStream in(data);
            in.setVersion(QCop::DataStreamVersion);
            qint32 a = 0, b = 0;
            in >> a >> b;
            QByteArray out;
            QDataStream s(&out, QIODevice::WriteOnly);
            s.setVersion(QCop::DataStreamVersion);
            s << qint32(a + b);
            reply(QStringLiteral("sum(int)"), out);
        } else if (msg == QLatin1String("fail()")) {
            replyError(QStringLiteral("cannot do that"));
        } else {
            // Left unanswered: the caller times out (or sees this process die).
            std::printf("pending\n");
            std::fflush(stdout);
        }
    }
};

int main(int argc, char **argv)
{
    QCoreApplication app(argc, argv);
    const QStringList args = app.arguments();
    const QString mode = args.value(1);
    if (mode == QLatin1String("subscribe")) {
        QCopChannel channel(args.value(2));
        QObject::connect(&channel, &QCopChannel::received, &app, [](const QString &msg) {
            if (msg == QLatin1String("quit()"))
                QCoreApplication::quit();
        });
        ready();
        return app.exec();
    }
    if (mode == QLatin1String("late")) {
        QCopChannel channel(args.value(2));
        auto say = [](const QString &what) {
            std::printf("%s\n", qPrintable(what));
            std::fflush(stdout);
        };
        say(channel.isConnected() ? QStringLiteral("up") : QStringLiteral("down"));
        bool failed = false;
        QObject::connect(&channel, &QCopChannel::connectionFailed, &app, [&] {
            if (!failed)
                say(QStringLiteral("failed"));
            failed = true;
        });
        QObject::connect(&channel, &QCopChannel::connected, &app, [&] { say(QStringLiteral("up")); });
        QObject::connect(&channel, &QCopChannel::received, &app,
                         [&](const QString &msg) { say(QStringLiteral("got ") + msg); });
        return app.exec();
    }
    if (mode == QLatin1String("adaptor")) {
        Service service;
        Back back(&service);
        ready();
        return app.exec();
    }
    if (mode == QLatin1String("responder")) {
        Responder responder(args.value(2));
        ready();
        return app.exec();
    }
    if (mode == QLatin1String("app")) {
        QCoreApplication::setApplicationName(QStringLiteral("qcopqtpeer"));
        QCopApplicationChannel channel;
        QObject::connect(&channel, &QCopChannel::received, &app,
                         [](const QString &msg, const QByteArray &data) {
                             if (msg != QLatin1String("hello(QString)"))
                                 return;
                             QCopChannel::send(QStringLiteral("test/app/back"),
                                               QStringLiteral("appGot(QString)"), data);
                             QCopChannel::flush();
                             QCoreApplication::quit();
                         });
        return app.exec();
    }
    std::fprintf(stderr, "usage: qcop-qt-peer subscribe CHANNEL | late CHANNEL | adaptor | responder CHANNEL | app\n");
    return 2;
}

#include "peer.moc"

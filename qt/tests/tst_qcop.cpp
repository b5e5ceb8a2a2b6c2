// tst_qcop: the Qt QCOP library against a real qcopd (started here on a private socket),
// the qcop tool and a second process (qcop-qt-peer). Built and run for Qt 5 and Qt 6 by
// qt/tests/run.sh. Needs QCOP_BIN_DIR (qcopd, qcop) and QCOP_QT_PEER (the peer program).
// SPDX-License-Identifier: MIT OR Apache-2.0
#include <QCopAdaptor>
#include <QCopApplicationChannel>
#include <QCopChannel>
#include <QCopChannelMonitor>
#include <QCopEnvelope>
#include <QCopReply>
#include <QtCore/qdatetime.h>
#include <QtCore/qdir.h>
#include <QtCore/qfile.h>
#include <QtCore/qprocess.h>
#include <QtCore/qtemporarydir.h>
#include <QtCore/quuid.h>
#include <QtTest/QSignalSpy>
#include <QtTest/QtTest>

#include <qcop.h>

#include <signal.h>

using Message = QPair<QString, QByteArray>;

template <typename... T>
static QByteArray stream(const T &...values)
{
    QByteArray out;
    QDataStream s(&out, QIODevice::WriteOnly);
    s.setVersion(QCop::DataStreamVersion);
    (void)std::initializer_list<int>{((s << values), 0)...};
    return out;
}

// Collects what a channel object gets through receive().
class Recorder : public QCopChannel
{
public:
    using QCopChannel::QCopChannel;
    QList<Message> got;
    void receive(const QString &msg, const QByteArray &data) override
    {
        got.append(qMakePair(msg, data));
        QCopChannel::receive(msg, data);
    }
};

// Answers calls in this process: add(int,int) -> sum(int); fail() -> an error.
class LocalResponder : public QCopChannel
{
public:
    using QCopChannel::QCopChannel;
    int calls = 0;
    void receive(const QString &msg, const QByteArray &data) override
    {
        if (!isCall())
            return;
        ++calls;
        if (msg == QLatin1String("add(int,int)")) {
            QDataStream in(data);
            in.setVersion(QCop::DataStreamVersion);
            qint32 a, b;
            in >> a >> b;
            QVERIFY(reply(QStringLiteral("sum(int)"), stream(qint32(a + b))));
        } else if (msg == QLatin1String("fail()")) {
            QVERIFY(replyError(QStringLiteral("no such thing")));
        }
    }
};

// The local ends of adaptor connections.
class Target : public QObject
{
    Q_OBJECT
public:
    QList<QVariantList> calls;
public Q_SLOTS:
    void valueSet(int value, const QString &text) { calls.append(QVariantList{value, text}); }
    void gotMany(bool b, qlonglong ll, double d, const QStringList &list, const QByteArray &bytes,
                 const QDateTime &when, const QVariant &any)
    {
        calls.append({b, ll, d, list, bytes, when, any});
    }
    void fewer(int value) { calls.append(QVariantList{value}); }
Q_SIGNALS:
    void changed(int value, const QString &text);
    void many(bool b, qlonglong ll, double d, const QStringList &list, const QByteArray &bytes,
              const QDateTime &when, const QVariant &any);
};

class TestQCop : public QObject
{
    Q_OBJECT
private:
    QTemporaryDir m_dir;
    QString m_socket;
    QString m_bin;
    QProcess m_daemon;
    QList<QProcess *> m_children;

    QString program(const QString &name) const { return m_bin + QLatin1Char('/') + name; }
    void startDaemon();
    QProcess *startPeer(const QStringList &args, const QString &socket = QString());
    // Runs the qcop tool to completion; returns its stdout.
    QByteArray qcop(const QStringList &args, int *exitCode = nullptr);

private Q_SLOTS:
    void initTestCase();
    void cleanupTestCase();

    void channelSendReceive();
    void receiveIsVirtual();
    void sharedChannelObjects();
    void wildcards();
    void sendLocally();
    void badSendsFail();
    void oversizedRefused();
    void qcopSendReachesChannel();
    void envelopeSeenByWatch();
    void dataStreamMatchesLibqcop();
    void adaptorAcrossProcesses();
    void adaptorLocalConnectAndEnvelope();
    void qmfStyleCode();
    void monitorFollowsSubscriber();
    void callsWithReplies();
    void callsAcrossProcesses();
    void applicationChannelActivation();
    void daemonRestart();
    void daemonStartedLater();
};

void TestQCop::startDaemon()
{
    m_daemon.setProgram(program(QStringLiteral("qcopd")));
    m_daemon.setArguments({QStringLiteral("--socket"), m_socket, QStringLiteral("--config"),
                           m_dir.filePath(QStringLiteral("qcopd.toml"))});
    m_daemon.setProcessChannelMode(QProcess::ForwardedErrorChannel);
    QFile::remove(m_socket);
    m_daemon.start();
    QVERIFY2(m_daemon.waitForStarted(), qPrintable(m_daemon.errorString()));
    QTRY_VERIFY_WITH_TIMEOUT(QFile::exists(m_socket), 10000);
}

QProcess *TestQCop::startPeer(const QStringList &args, const QString &socket)
{
    auto *p = new QProcess(this);
    if (!socket.isEmpty()) {
        QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
        env.insert(QStringLiteral("QCOP_SOCKET"), socket);
        p->setProcessEnvironment(env);
    }
    m_children.append(p);
    p->setProcessChannelMode(QProcess::ForwardedErrorChannel);
    p->start(qEnvironmentVariable("QCOP_QT_PEER"), args);
    if (!p->waitForStarted())
        return p;
    // Its subscriptions are made before it prints "ready".
    if (!QTest::qWaitFor([p] { return p->canReadLine() || p->state() != QProcess::Running; }, 10000))
        qWarning("qcop-qt-peer %s is not ready", qPrintable(args.join(QLatin1Char(' '))));
    return p;
}

QByteArray TestQCop::qcop(const QStringList &args, int *exitCode)
{
    QProcess p;
    p.setProcessChannelMode(QProcess::ForwardedErrorChannel);
    p.start(program(QStringLiteral("qcop")), args);
    p.waitForStarted();
    // The event loop keeps running: this process may be the one that answers.
    if (!QTest::qWaitFor([&p] { return p.state() == QProcess::NotRunning; }, 20000))
        qWarning("qcop %s did not finish", qPrintable(args.join(QLatin1Char(' '))));
    if (exitCode)
        *exitCode = p.exitCode();
    return p.readAllStandardOutput();
}

void TestQCop::initTestCase()
{
    QVERIFY(m_dir.isValid());
    m_bin = qEnvironmentVariable("QCOP_BIN_DIR");
    QVERIFY2(QFile::exists(program(QStringLiteral("qcopd"))), "QCOP_BIN_DIR must hold qcopd and qcop");
    QVERIFY2(QFile::exists(qEnvironmentVariable("QCOP_QT_PEER")), "QCOP_QT_PEER must name qcop-qt-peer");
    m_socket = m_dir.filePath(QStringLiteral("qcopd.sock"));
    qputenv("QCOP_SOCKET", m_socket.toUtf8());
    QFile config(m_dir.filePath(QStringLiteral("qcopd.toml")));
    QVERIFY(config.open(QIODevice::WriteOnly));
    // The activation test's application: qcopd starts the peer for its channel.
    config.write(QStringLiteral("[[service]]\nname = \"qcopqtpeer\"\n"
                                "channel = \"QPE/Application/qcopqtpeer\"\n"
                                "command = [\"%1\", \"app\"]\n")
                     .arg(QFileInfo(qEnvironmentVariable("QCOP_QT_PEER")).absoluteFilePath())
                     .toUtf8());
    config.close();
    startDaemon();
}

void TestQCop::cleanupTestCase()
{
    for (QProcess *p : qAsConst(m_children)) {
        p->kill();
        p->waitForFinished();
    }
    m_daemon.terminate();
    m_daemon.waitForFinished();
}

void TestQCop::channelSendReceive()
{
    QCopChannel channel(QStringLiteral("test/basic"));
    QCOMPARE(channel.channel(), QStringLiteral("test/basic"));
    QVERIFY(channel.isConnected());
    QVERIFY(QCopChannel::isRegistered(QStringLiteral("test/basic")));
    QVERIFY(!QCopChannel::isRegistered(QStringLiteral("test/nobody")));
    QSignalSpy spy(&channel, &QCopChannel::received);
    const QByteArray data = stream(qint32(42), QStringLiteral("hello"));
    QVERIFY(QCopChannel::send(QStringLiteral("test/basic"), QStringLiteral("setVolume(int,QString)"), data));
    QVERIFY(QCopChannel::send(QStringLiteral("test/basic"), QStringLiteral("ping()")));
    QVERIFY(QCopChannel::flush());
    QTRY_COMPARE(spy.count(), 2);
    QCOMPARE(spy[0][0].toString(), QStringLiteral("setVolume(int,QString)"));
    QCOMPARE(spy[0][1].toByteArray(), data);
    QCOMPARE(spy[1][0].toString(), QStringLiteral("ping()"));
    QVERIFY(spy[1][1].toByteArray().isEmpty());
    // Nobody listening: still a successful send, as in Qt 4.
    QVERIFY(QCopChannel::send(QStringLiteral("test/nobody"), QStringLiteral("ping()")));
    QVERIFY(QCopChannel::flush());
    QVERIFY(!QCopChannel::isCall());
    QVERIFY(!QCopChannel::reply(QStringLiteral("x()")));
    QVERIFY(!QCopChannel::replyError(QStringLiteral("x")));
    QCopChannel::reregisterAll();
    channel.connectRepeatedly();
    channel.disconnectFromServer();
    QVERIFY(channel.isConnected());
}

void TestQCop::receiveIsVirtual()
{
    Recorder r(QStringLiteral("test/virtual"));
    QVERIFY(QCopChannel::send(QStringLiteral("test/virtual"), QStringLiteral("a(int)"), stream(qint32(1))));
    QTRY_COMPARE(r.got.size(), 1);
    QCOMPARE(r.got[0].first, QStringLiteral("a(int)"));
    QCOMPARE(r.got[0].second, stream(qint32(1)));
}

void TestQCop::sharedChannelObjects()
{
    const QString name = QStringLiteral("test/shared");
    auto *a = new Recorder(name);
    auto *b = new Recorder(name);
    QVERIFY(QCopChannel::send(name, QStringLiteral("one()")));
    QTRY_VERIFY(a->got.size() == 1 && b->got.size() == 1);
    delete a;  // one object left: still subscribed
    QVERIFY(QCopChannel::isRegistered(name));
    QVERIFY(QCopChannel::send(name, QStringLiteral("two()")));
    QTRY_COMPARE(b->got.size(), 2);
    QCOMPARE(b->got[1].first, QStringLiteral("two()"));
    delete b;
    QVERIFY(!QCopChannel::isRegistered(name));
}

void TestQCop::wildcards()
{
    Recorder all(QStringLiteral("test/wild/*"));
    // Only `*` makes a pattern (as Qt's QCOP); `?` and `[...]` are wildcards inside one.
    Recorder digit(QStringLiteral("*test/cam[0-3]"));
    Recorder one(QStringLiteral("*test/x?"));
    Recorder exact(QStringLiteral("test/wild/a/b"));
    Recorder notDigit(QStringLiteral("*test/cam[!0-9]"));
    Recorder literal(QStringLiteral("test/lit[1]?"));
    QSignalSpy forwarded(&all, &QCopChannel::forwarded);
    // A pattern counts as a channel of its own name, and matches no other name here.
    QVERIFY(QCopChannel::isRegistered(QStringLiteral("test/wild/*")));
    QVERIFY(!QCopChannel::isRegistered(QStringLiteral("test/other/*")));
    QVERIFY(QCopChannel::send(QStringLiteral("test/lit[1]?"), QStringLiteral("lit()")));
    QVERIFY(QCopChannel::send(QStringLiteral("test/wild/a/b"), QStringLiteral("f(int)"), stream(qint32(7))));
    QVERIFY(QCopChannel::send(QStringLiteral("test/cam2"), QStringLiteral("g()")));
    QVERIFY(QCopChannel::send(QStringLiteral("test/cam4"), QStringLiteral("g()")));
    QVERIFY(QCopChannel::send(QStringLiteral("test/camX"), QStringLiteral("g()")));
    QVERIFY(QCopChannel::send(QStringLiteral("test/xy"), QStringLiteral("h()")));
    QVERIFY(QCopChannel::send(QStringLiteral("test/xyz"), QStringLiteral("h()")));
    QVERIFY(QCopChannel::send(QStringLiteral("test/end"), QStringLiteral("end()")));
    Recorder end(QStringLiteral("test/end"));
    QVERIFY(QCopChannel::send(QStringLiteral("test/end"), QStringLiteral("end()")));
    QTRY_COMPARE(end.got.size(), 1);
    // `*` crosses '/'; Qt 4's wrapping for a wildcard channel.
    QCOMPARE(all.got.size(), 1);
    QCOMPARE(all.got[0].first, QStringLiteral("forwardedMessage(QString,QString,QByteArray)"));
    QCOMPARE(all.got[0].second, stream(QStringLiteral("test/wild/a/b"), QStringLiteral("f(int)"), stream(qint32(7))));
    QCOMPARE(forwarded.count(), 1);
    QCOMPARE(forwarded[0][0].toString(), QStringLiteral("f(int)"));
    QCOMPARE(forwarded[0][1].toByteArray(), stream(qint32(7)));
    QCOMPARE(forwarded[0][2].toString(), QStringLiteral("test/wild/a/b"));
    // The exact subscriber in the same process gets it too (qcopd delivers once per process).
    QCOMPARE(exact.got.size(), 1);
    QCOMPARE(exact.got[0].first, QStringLiteral("f(int)"));
    QCOMPARE(digit.got.size(), 1);
    QCOMPARE(notDigit.got.size(), 1);  // test/camX
    QCOMPARE(notDigit.got[0].first, QStringLiteral("forwardedMessage(QString,QString,QByteArray)"));
    QCOMPARE(one.got.size(), 1);
    QCOMPARE(literal.got.size(), 1);
    QCOMPARE(literal.got[0].first, QStringLiteral("lit()"));
    // A pattern cannot be sent to.
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCop: send .*")));
    QVERIFY(!QCopChannel::send(QStringLiteral("test/wild/*"), QStringLiteral("f()")));
    QVERIFY2(QCopChannel::lastError().contains(QLatin1String("WILDCARD")), qPrintable(QCopChannel::lastError()));
}

void TestQCop::sendLocally()
{
    Recorder here(QStringLiteral("test/local"));
    QCopChannel::sendLocally(QStringLiteral("test/local"), QStringLiteral("l()"), QByteArray("x"));
    QCOMPARE(here.got.size(), 1);
    QCOMPARE(here.got[0].second, QByteArray("x"));
}

void TestQCop::badSendsFail()
{
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCop: send .*BADNAME.*")));
    QVERIFY(!QCopChannel::send(QString(), QStringLiteral("f()")));
    QVERIFY(QCopChannel::lastError().contains(QLatin1String("BADNAME")));
}

void TestQCop::oversizedRefused()
{
    Recorder r(QStringLiteral("test/big"));
    const QByteArray big(100 * 1024, 'x');  // qcopd's default limit is 64 KiB
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCop: send .*TOOLARGE.*")));
    QVERIFY(!QCopChannel::send(QStringLiteral("test/big"), QStringLiteral("blob(QByteArray)"), stream(big)));
    QVERIFY2(QCopChannel::lastError().contains(QLatin1String("QCOP_E_TOOLARGE")), qPrintable(QCopChannel::lastError()));
    {
        QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCop: send .*TOOLARGE.*")));
        QCopEnvelope e(QStringLiteral("test/big"), QStringLiteral("blob(QByteArray)"));
        e << big;
    }
    // Just under the limit goes through whole: no truncation.
    const QByteArray fits(60 * 1024, 'y');
    QVERIFY(QCopChannel::send(QStringLiteral("test/big"), QStringLiteral("blob(QByteArray)"), stream(fits)));
    QTRY_COMPARE(r.got.size(), 1);
    QCOMPARE(r.got[0].second, stream(fits));
}

void TestQCop::qcopSendReachesChannel()
{
    Recorder r(QStringLiteral("test/cli"));
    QSignalSpy spy(&r, &QCopChannel::received);
    int rc = -1;
    qcop({QStringLiteral("send"), QStringLiteral("test/cli"),
          QStringLiteral("set(int,QString,bool,QStringList,QByteArray,qlonglong,double)"),
          QStringLiteral("-5"), QStringLiteral("grüße"), QStringLiteral("true"),
          QStringLiteral("a,b"), QStringLiteral("0a0b"), QStringLiteral("-9000000000"),
          QStringLiteral("2.5")},
         &rc);
    QCOMPARE(rc, 0);
    QTRY_COMPARE(spy.count(), 1);
    QCOMPARE(r.got[0].first, QStringLiteral("set(int,QString,bool,QStringList,QByteArray,qlonglong,double)"));
    // Byte for byte what Qt's QDataStream writes for these values.
    QCOMPARE(r.got[0].second,
             stream(qint32(-5), QStringLiteral("grüße"), true,
                    QStringList{QStringLiteral("a"), QStringLiteral("b")}, QByteArray("\x0a\x0b"),
                    qint64(-9000000000LL), 2.5));
}

void TestQCop::envelopeSeenByWatch()
{
    QProcess watch;
    watch.setProcessChannelMode(QProcess::ForwardedErrorChannel);
    watch.start(program(QStringLiteral("qcop")),
                {QStringLiteral("watch"), QStringLiteral("--count"), QStringLiteral("3"),
                 QStringLiteral("test/env*")});
    QVERIFY(watch.waitForStarted());
    // qcop watch subscribes a pattern: wait until qcopd lists it.
    QTRY_VERIFY_WITH_TIMEOUT(qcop({QStringLiteral("channels")}).contains("test/env*"), 10000);
    const QDateTime when(QDate(2024, 2, 29), QTime(13, 14, 15, 16), Qt::UTC);
    {
        QCopEnvelope e(QStringLiteral("test/env"), QStringLiteral("setVolume(int)"));
        QCOMPARE(e.channel(), QStringLiteral("test/env"));
        QCOMPARE(e.message(), QStringLiteral("setVolume(int)"));
        e << qint32(42);
        QCOMPARE(e.data(), stream(qint32(42)));
    }
    {
        QCopEnvelope e(QStringLiteral("test/env/2"), QStringLiteral("all(QString,bool,QStringList,QByteArray,qulonglong,QDateTime,double)"));
        e << QStringLiteral("say \"hi\"") << false << QStringList{QStringLiteral("x"), QStringLiteral("y")}
          << QByteArray("\x01\xff", 2) << quint64(18000000000000000000ULL) << when << 0.5;
    }
    {
        QCopEnvelope never(QStringLiteral("test/env"), QStringLiteral("cancelled()"));
        never.cancel();
    }
    {
        QCopEnvelope e(QStringLiteral("test/env"), QStringLiteral("now()"));
        QVERIFY(e.send());
        QVERIFY(!e.send());  // once
    }
    QTRY_VERIFY_WITH_TIMEOUT(watch.state() == QProcess::NotRunning, 10000);
    const QList<QByteArray> lines = watch.readAllStandardOutput().trimmed().split('\n');
    QCOMPARE(lines.size(), 3);
    QCOMPARE(lines[0], QByteArray("test/env: setVolume( 42 )"));
    QCOMPARE(lines[1], QByteArray("test/env/2: all( \"say \\22hi\\22\", false, [\"x\",\"y\"], \"01FF\", 18000000000000000000, \"2024-02-29T13:14:15\", 0.5 )"));
    QCOMPARE(lines[2], QByteArray("test/env: now()"));
}

void TestQCop::dataStreamMatchesLibqcop()
{
    // libqcop's encoder (what C programs and the qcop tool send) and Qt's QDataStream
    // agree byte for byte, and libqcop's reader decodes what Qt wrote.
    qcop_args *a = qcop_args_new();
    qcop_args_int(a, -7);
    qcop_args_uint(a, 4000000000u);
    qcop_args_longlong(a, -1);
    qcop_args_ulonglong(a, 1ULL << 63);
    qcop_args_bool(a, 1);
    qcop_args_double(a, -0.125);
    qcop_args_string(a, "ünïcødé ☃");
    qcop_args_bytes(a, "\0\1\2", 3);
    const char *items[] = {"one", "", "three"};
    qcop_args_stringlist(a, items, 3);
    qcop_args_text(a, "QDateTime", "2024-02-29T13:14:15.016Z");
    size_t len = 0;
    const char *p = static_cast<const char *>(qcop_args_data(a, &len));
    const QByteArray fromC(p, int(len));
    qcop_args_free(a);
    const QByteArray fromQt = stream(qint32(-7), quint32(4000000000u), qint64(-1), quint64(1ULL << 63), true,
                                     -0.125, QStringLiteral("ünïcødé ☃"), QByteArray("\0\1\2", 3),
                                     QStringList{QStringLiteral("one"), QStringLiteral(""), QStringLiteral("three")},
                                     QDateTime(QDate(2024, 2, 29), QTime(13, 14, 15, 16), Qt::UTC));
    QCOMPARE(fromC.toHex(), fromQt.toHex());

    qcop_reader *r = qcop_reader_new(fromQt.constData(), size_t(fromQt.size()));
    int32_t i = 0;
    QCOMPARE(qcop_reader_int(r, &i), QCOP_OK);
    QCOMPARE(i, -7);
    const char *text = nullptr;
    QCOMPARE(qcop_reader_text(r, "uint", &text), QCOP_OK);
    QCOMPARE(QByteArray(text), QByteArray("4000000000"));
    QCOMPARE(qcop_reader_text(r, "qlonglong", &text), QCOP_OK);
    QCOMPARE(QByteArray(text), QByteArray("-1"));
    uint64_t u = 0;
    QCOMPARE(qcop_reader_ulonglong(r, &u), QCOP_OK);
    QCOMPARE(u, 1ULL << 63);
    int b = 0;
    QCOMPARE(qcop_reader_bool(r, &b), QCOP_OK);
    QCOMPARE(b, 1);
    double d = 0;
    QCOMPARE(qcop_reader_double(r, &d), QCOP_OK);
    QCOMPARE(d, -0.125);
    const char *s = nullptr;
    QCOMPARE(qcop_reader_string(r, &s, nullptr), QCOP_OK);
    QCOMPARE(QString::fromUtf8(s), QStringLiteral("ünïcødé ☃"));
    const uint8_t *bytes = nullptr;
    size_t n = 0;
    QCOMPARE(qcop_reader_bytes(r, &bytes, &n), QCOP_OK);
    QCOMPARE(QByteArray(reinterpret_cast<const char *>(bytes), int(n)), QByteArray("\0\1\2", 3));
    const char *const *list = nullptr;
    QCOMPARE(qcop_reader_stringlist(r, &list, &n), QCOP_OK);
    QCOMPARE(n, size_t(3));
    QCOMPARE(QByteArray(list[2]), QByteArray("three"));
    QCOMPARE(qcop_reader_text(r, "QDateTime", &text), QCOP_OK);
    QCOMPARE(QByteArray(text), QByteArray("2024-02-29T13:14:15.016Z"));
    QCOMPARE(qcop_reader_remaining(r), size_t(0));
    qcop_reader_free(r);

    // A QVariant holding a QString, as Qt 4 streams it, is what `qcop send ... QVariant` sends.
    Recorder v(QStringLiteral("test/variant"));
    int rc = -1;
    qcop({QStringLiteral("send"), QStringLiteral("test/variant"), QStringLiteral("v(QVariant)"), QStringLiteral("text")}, &rc);
    QCOMPARE(rc, 0);
    QTRY_COMPARE(v.got.size(), 1);
    QCOMPARE(v.got[0].second.toHex(), stream(QVariant(QStringLiteral("text"))).toHex());
}

void TestQCop::adaptorAcrossProcesses()
{
    // Here: a signal -> MESSAGE on test/adaptor; there: a published slot that emits a
    // signal connected to MESSAGE(...) on test/adaptor/back; here again: a slot.
    QCopAdaptor out(QStringLiteral("test/adaptor"));
    QCOMPARE(out.channel(), QStringLiteral("test/adaptor"));
    QCopAdaptor back(QStringLiteral("test/adaptor/back"));
    Target target;
    QVERIFY(QCopAdaptor::connect(&target, SIGNAL(changed(int,QString)), &out, MESSAGE(setValue(int,QString))));
    QVERIFY(QCopAdaptor::connect(&target, SIGNAL(many(bool,qlonglong,double,QStringList,QByteArray,QDateTime,QVariant)),
                                 &out, MESSAGE(setMany(bool,qlonglong,double,QStringList,QByteArray,QDateTime,QVariant))));
    QVERIFY(QCopAdaptor::connect(&back, MESSAGE(valueSet(int,QString)), &target, SLOT(valueSet(int,QString))));
    QVERIFY(QCopAdaptor::connect(&back, MESSAGE(gotMany(bool,qlonglong,double,QStringList,QByteArray,QDateTime,QVariant)),
                                 &target, SLOT(gotMany(bool,qlonglong,double,QStringList,QByteArray,QDateTime,QVariant))));
    QVERIFY(back.isConnected(MESSAGE(valueSet(int,QString))));
    QVERIFY(!back.isConnected(MESSAGE(other())));
    // No such signal, no such slot, incompatible arguments, MESSAGE to MESSAGE: refused.
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCopAdaptor::connect: no signal .*")));
    QVERIFY(!QCopAdaptor::connect(&target, SIGNAL(nothing()), &out, MESSAGE(x())));
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCopAdaptor::connect: no slot .*")));
    QVERIFY(!QCopAdaptor::connect(&back, MESSAGE(x()), &target, SLOT(nothing())));
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCopAdaptor::connect: .* does not take .*")));
    QVERIFY(!QCopAdaptor::connect(&back, MESSAGE(x(QString)), &target, SLOT(fewer(int))));
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCopAdaptor::connect: cannot .*")));
    QVERIFY(!QCopAdaptor::connect(&back, MESSAGE(x()), &out, MESSAGE(y())));

    QProcess *peer = startPeer({QStringLiteral("adaptor")});
    QCOMPARE(peer->readLine().trimmed(), QByteArray("ready"));
    QVERIFY(QCopChannel::isRegistered(QStringLiteral("test/adaptor")));

    Q_EMIT target.changed(21, QStringLiteral("over"));
    QTRY_COMPARE(target.calls.size(), 1);
    QCOMPARE(target.calls[0], (QVariantList{42, QStringLiteral("over!")}));

    const QDateTime when(QDate(2001, 9, 9), QTime(1, 46, 40), Qt::UTC);
    const QVariantMap map{{QStringLiteral("k"), 3}};
    Q_EMIT target.many(true, -(1LL << 40), 3.25, {QStringLiteral("p"), QStringLiteral("q")},
                       QByteArray("\0z", 2), when, QVariant(map));
    QTRY_COMPARE(target.calls.size(), 2);
    const QVariantList got = target.calls[1];
    QCOMPARE(got[0].toBool(), true);
    QCOMPARE(got[1].toLongLong(), -(1LL << 40));
    QCOMPARE(got[2].toDouble(), 3.25);
    QCOMPARE(got[3].toStringList(), (QStringList{QStringLiteral("p"), QStringLiteral("q")}));
    QCOMPARE(got[4].toByteArray(), QByteArray("\0z", 2));
    QCOMPARE(got[5].toDateTime(), when);
    QCOMPARE(got[6].toMap(), map);

    // send() forms: variadic, list and envelope.
    out.send(MESSAGE(setValue(int,QString)), 1, QStringLiteral("a"));
    out.send(MESSAGE(setValue(int,QString)), QList<QVariant>{2, QStringLiteral("b")});
    out.send(MESSAGE(setValue(int,QString))) << 3 << "c";
    QTRY_COMPARE(target.calls.size(), 5);
    QCOMPARE(target.calls[2], (QVariantList{2, QStringLiteral("a!")}));
    QCOMPARE(target.calls[3], (QVariantList{4, QStringLiteral("b!")}));
    QCOMPARE(target.calls[4], (QVariantList{6, QStringLiteral("c!")}));

    out.send(MESSAGE(quit()));
    QTRY_VERIFY_WITH_TIMEOUT(peer->state() == QProcess::NotRunning, 10000);
    QCOMPARE(peer->exitCode(), 0);
}

// An adaptor subclass publishing its own slots and signals (QMF style), used in-process.
class Published : public QCopAdaptor
{
    Q_OBJECT
public:
    explicit Published(const QString &channel) : QCopAdaptor(channel) { publishAll(SignalsAndSlots); }
    QList<QVariantList> calls;
public Q_SLOTS:
    void ping(int n) { calls.append(QVariantList{n}); }
    void any(const QVariant &v) { calls.append(QVariantList{v}); }
Q_SIGNALS:
    void pong(int n);
};

void TestQCop::adaptorLocalConnectAndEnvelope()
{
    Published pub(QStringLiteral("test/pub"));
    QCopAdaptor client(QStringLiteral("test/pub"));
    client.send(MESSAGE(ping(int)), 5);
    QVariant v = QVariant::fromValue(QStringList{QStringLiteral("z")});
    client.send(MESSAGE(any(QVariant)), v);
    QTRY_COMPARE(pub.calls.size(), 2);
    QCOMPARE(pub.calls[0], QVariantList{5});
    QCOMPARE(pub.calls[1][0].toStringList(), QStringList{QStringLiteral("z")});
    // A published signal becomes a message on the channel; a MESSAGE() connects to a slot.
    Target target;
    QVERIFY(QCopAdaptor::connect(&client, MESSAGE(pong(int)), &target, SLOT(fewer(int))));
    Q_EMIT pub.pong(9);
    QTRY_COMPARE(target.calls.size(), 1);
    QCOMPARE(target.calls[0], QVariantList{9});
    // Envelopes: copies share one message, sent once when the last goes.
    {
        QCopAdaptorEnvelope e = client.send(MESSAGE(ping(int)));
        QCopAdaptorEnvelope copy(e);
        copy << 11;
        QCopAdaptorEnvelope assigned;
        assigned = copy;
    }
    QTRY_COMPARE(pub.calls.size(), 3);
    QCOMPARE(pub.calls[2], QVariantList{11});
    // A local connection without MESSAGE() is QObject::connect.
    Target other;
    QVERIFY(QCopAdaptor::connect(&target, SIGNAL(changed(int,QString)), &other, SLOT(valueSet(int,QString))));
    Q_EMIT target.changed(1, QStringLiteral("l"));
    QCOMPARE(other.calls.size(), 1);
}

// Written the way QMF applications and QMF's own test use the API: string literals for
// messages and data, SIGNAL()/SLOT() members, publish() and the protected helpers.
class QmfStyle : public QCopAdaptor
{
    Q_OBJECT
    friend class TestQCop;
public:
    explicit QmfStyle(const QString &channel) : QCopAdaptor(channel) {}
    QList<QVariantList> calls;
public slots:
    void onArg0() { calls.append(QVariantList()); }
    void onArg1(QVariant one) { calls.append(QVariantList{one}); }
    void onArg2(QString one, QByteArray two) { calls.append(QVariantList{one, two}); }
signals:
    void arg0();
    void arg1(QVariant one);
};

void TestQCop::qmfStyleCode()
{
    QCopChannel cop("test/qmf/channel");
    QSignalSpy spy(&cop, SIGNAL(received(const QString&, const QByteArray&)));
    QVERIFY(QCopChannel::send("test/qmf/channel", "channel test1"));
    QVERIFY(QCopChannel::send("test/qmf/channel", "channel test2", "check for success"));
    QVERIFY(QCopChannel::flush());
    QTRY_COMPARE(spy.count(), 2);
    QCOMPARE(spy[1][1].toByteArray(), QByteArray("check for success"));

    QmfStyle adapt("test/qmf");
    QCOMPARE(adapt.sendChannels("test/qmf"), QStringList{"test/qmf"});
    QCOMPARE(adapt.receiveChannel("test/qmf"), QString("test/qmf"));
    QCOMPARE(adapt.memberToMessage(SIGNAL(arg1(QVariant))), QString("arg1(QVariant)"));
    QVERIFY(!adapt.isConnected(SLOT(onArg0())));
    QVERIFY(adapt.publish(SIGNAL(arg0())));
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCopAdaptor::connect: no signal .*")));
    QVERIFY(!adapt.publish("5invalidMember()"));
    adapt.publishAll(QCopAdaptor::Slots);
    QVERIFY(adapt.isConnected(SLOT(onArg0())));
    QVERIFY(adapt.isConnected(SLOT(onArg2(QString,QByteArray))));
    adapt.send(SLOT(onArg1(QVariant)), "one");
    adapt.send(SLOT(onArg2(QString,QByteArray)), "one", "two");  // "two" converted to QByteArray
    adapt.send(SLOT(onArg1(QVariant)), QVariantList() << "list");
    adapt.send(SLOT(onArg0()));
    QTRY_COMPARE(adapt.calls.size(), 4);
    QCOMPARE(adapt.calls[0], QVariantList{QString("one")});
    QCOMPARE(adapt.calls[1], (QVariantList{QString("one"), QByteArray("two")}));
    QCOMPARE(adapt.calls[2], QVariantList{QString("list")});
    QCOMPARE(adapt.calls[3], QVariantList());
    // Published signals become messages on the channel.
    adapt.publishAll(QCopAdaptor::Signals);
    QCopAdaptor listener("test/qmf");
    QVERIFY(QCopAdaptor::connect(&listener, MESSAGE(arg1(QVariant)), &adapt, SLOT(onArg1(QVariant))));
    Q_EMIT adapt.arg1(QVariant(5));
    QTRY_COMPARE(adapt.calls.size(), 5);
    QCOMPARE(adapt.calls[4], QVariantList{5});
}

void TestQCop::monitorFollowsSubscriber()
{
    const QString name = QStringLiteral("test/monitored");
    QCopChannelMonitor monitor(name);
    QCOMPARE(monitor.channel(), name);
    QCOMPARE(monitor.state(), QCopChannelMonitor::Unregistered);
    QSignalSpy reg(&monitor, &QCopChannelMonitor::registered);
    QSignalSpy unreg(&monitor, &QCopChannelMonitor::unregistered);
    QTRY_COMPARE(unreg.count(), 1);  // the initial state

    // Comes and goes cleanly.
    QProcess *peer = startPeer({QStringLiteral("subscribe"), name});
    QTRY_COMPARE(reg.count(), 1);
    QCOMPARE(monitor.state(), QCopChannelMonitor::Registered);
    QVERIFY(QCopChannel::isRegistered(name));
    QVERIFY(QCopChannel::send(name, QStringLiteral("quit()")));
    QTRY_VERIFY_WITH_TIMEOUT(peer->state() == QProcess::NotRunning, 10000);
    QTRY_COMPARE(unreg.count(), 2);
    QCOMPARE(monitor.state(), QCopChannelMonitor::Unregistered);
    QVERIFY(!QCopChannel::isRegistered(name));

    // Comes and is SIGKILLed.
    peer = startPeer({QStringLiteral("subscribe"), name});
    QTRY_COMPARE(reg.count(), 2);
    QVERIFY(QCopChannel::isRegistered(name));
    ::kill(pid_t(peer->processId()), SIGKILL);
    QTRY_COMPARE(unreg.count(), 3);
    QCOMPARE(monitor.state(), QCopChannelMonitor::Unregistered);
    QVERIFY(!QCopChannel::isRegistered(name));

    // A monitor made while the channel is registered starts Registered.
    QCopChannel here(name);
    QCopChannelMonitor second(name);
    QCOMPARE(second.state(), QCopChannelMonitor::Registered);
    QSignalSpy secondReg(&second, &QCopChannelMonitor::registered);
    QTRY_COMPARE(secondReg.count(), 1);
}

void TestQCop::callsWithReplies()
{
    LocalResponder responder(QStringLiteral("test/svc"));
    QCopReply *r = QCopReply::call(QStringLiteral("test/svc"), QStringLiteral("add(int,int)"),
                                   stream(qint32(2), qint32(40)), 5000, this);
    QCOMPARE(r->channel(), QStringLiteral("test/svc"));
    QCOMPARE(r->request(), QStringLiteral("add(int,int)"));
    QVERIFY(!r->isFinished());
    QSignalSpy done(r, &QCopReply::finished);
    QTRY_COMPARE(done.count(), 1);
    QVERIFY(r->isFinished());
    QCOMPARE(r->error(), QCopReply::NoError);
    QCOMPARE(r->message(), QStringLiteral("sum(int)"));
    QCOMPARE(r->data(), stream(qint32(42)));
    QCOMPARE(r->arguments(), QList<QVariant>{42});

    QCopReply *err = QCopReply::call(QStringLiteral("test/svc"), QStringLiteral("fail()"), {}, 5000, this);
    QTRY_VERIFY(err->isFinished());
    QCOMPARE(err->error(), QCopReply::RemoteError);
    QVERIFY2(err->errorString().contains(QLatin1String("no such thing")), qPrintable(err->errorString()));

    // Unanswered: the timeout ends it.
    QCopReply *slow = QCopReply::call(QStringLiteral("test/svc"), QStringLiteral("ignored()"), {}, 300, this);
    QTRY_VERIFY_WITH_TIMEOUT(slow->isFinished(), 10000);
    QCOMPARE(slow->error(), QCopReply::TimeoutError);

    QCopReply *nobody = QCopReply::call(QStringLiteral("test/nobody"), QStringLiteral("f()"), {}, 5000, this);
    QTRY_VERIFY(nobody->isFinished());
    QCOMPARE(nobody->error(), QCopReply::NoResponderError);

    // A reply object deleted before the answer: nothing happens.
    delete QCopReply::call(QStringLiteral("test/svc"), QStringLiteral("add(int,int)"), stream(qint32(1), qint32(1)), 5000);
    QTRY_COMPARE(responder.calls, 4);

    // `qcop call` answered by this process's channel.
    int rc = -1;
    const QByteArray out = qcop({QStringLiteral("call"), QStringLiteral("test/svc"), QStringLiteral("add(int,int)"),
                                 QStringLiteral("3"), QStringLiteral("4")}, &rc);
    QCOMPARE(rc, 0);
    QVERIFY2(out.contains("sum(int)") && out.contains('7'), out.constData());
}

void TestQCop::callsAcrossProcesses()
{
    QProcess *peer = startPeer({QStringLiteral("responder"), QStringLiteral("test/remote")});
    QCOMPARE(peer->readLine().trimmed(), QByteArray("ready"));
    QCopReply *r = QCopReply::call(QStringLiteral("test/remote"), QStringLiteral("add(int,int)"),
                                   stream(qint32(-3), qint32(10)), 5000, this);
    QTRY_VERIFY(r->isFinished());
    QCOMPARE(r->error(), QCopReply::NoError);
    QCOMPARE(r->arguments(), QList<QVariant>{7});
    QCopReply *slow = QCopReply::call(QStringLiteral("test/remote"), QStringLiteral("ignored()"), {}, 200, this);
    QTRY_VERIFY_WITH_TIMEOUT(slow->isFinished(), 10000);
    QCOMPARE(slow->error(), QCopReply::TimeoutError);
    // The responder dies with a call pending.
    QCopReply *gone = QCopReply::call(QStringLiteral("test/remote"), QStringLiteral("ignored()"), {}, 20000, this);
    // Killed once the call reached it (it says so for each call it leaves unanswered).
    QByteArray said;
    QTRY_VERIFY_WITH_TIMEOUT((said += peer->readAll()).count("pending") == 2, 10000);
    peer->kill();
    QTRY_VERIFY_WITH_TIMEOUT(gone->isFinished(), 15000);
    QVERIFY2(gone->error() == QCopReply::ResponderGoneError || gone->error() == QCopReply::NoResponderError,
             qPrintable(gone->errorString()));
}

void TestQCop::applicationChannelActivation()
{
    QCopApplicationChannel mine(QStringLiteral("tst"));
    QCOMPARE(mine.channel(), QStringLiteral("QPE/Application/tst"));
    QVERIFY(!mine.isStartupComplete());  // on the next turn of the event loop
    QSignalSpy started(&mine, &QCopApplicationChannel::startupComplete);
    QTRY_COMPARE(started.count(), 1);
    QVERIFY(mine.isStartupComplete());
    QVERIFY(QCopChannel::isRegistered(QStringLiteral("QPE/Application/tst")));
    QCOMPARE(QCopApplicationChannel::channelFor(QStringLiteral("x")), QStringLiteral("QPE/Application/x"));
    QCOMPARE(QCopApplicationChannel().channel(), QStringLiteral("QPE/Application/") + QCoreApplication::applicationName());
    // qcopd starts the peer for QPE/Application/qcopqtpeer, queues the message, and
    // delivers it once the peer's QCopApplicationChannel subscribes.
    Recorder back(QStringLiteral("test/app/back"));
    QVERIFY(QCopChannel::send(QStringLiteral("QPE/Application/qcopqtpeer"), QStringLiteral("hello(QString)"),
                              stream(QStringLiteral("queued"))));
    QTRY_COMPARE_WITH_TIMEOUT(back.got.size(), 1, 15000);
    QCOMPARE(back.got[0].first, QStringLiteral("appGot(QString)"));
    QCOMPARE(back.got[0].second, stream(QStringLiteral("queued")));
}

void TestQCop::daemonRestart()
{
    Recorder r(QStringLiteral("test/restart"));
    QCopChannelMonitor monitor(QStringLiteral("test/restart"));
    QCOMPARE(monitor.state(), QCopChannelMonitor::Registered);
    QSignalSpy down(&r, &QCopChannel::connectionDown);
    QSignalSpy up(&r, &QCopChannel::connected);
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCop: connection to qcopd lost .*reconnecting")));
    m_daemon.terminate();
    QVERIFY(m_daemon.waitForFinished());
    QTRY_COMPARE(down.count(), 1);
    QVERIFY(!r.isConnected());
    QCOMPARE(monitor.state(), QCopChannelMonitor::Unknown);
    // While down: sends fail at once with a reason; channels made now subscribe later.
    QTest::ignoreMessage(QtWarningMsg, QRegularExpression(QStringLiteral("QCop: .*not connected.*")));
    QVERIFY(!QCopChannel::send(QStringLiteral("test/restart"), QStringLiteral("lost()")));
    Recorder later(QStringLiteral("test/restart/later"));
    QVERIFY(!QCopChannel::isRegistered(QStringLiteral("test/restart")));

    startDaemon();
    QTRY_COMPARE_WITH_TIMEOUT(up.count(), 1, 15000);
    QVERIFY(r.isConnected());
    QTRY_COMPARE(monitor.state(), QCopChannelMonitor::Registered);
    // Both subscriptions are there again: the old one restored, the new one made.
    QVERIFY(QCopChannel::isRegistered(QStringLiteral("test/restart")));
    QVERIFY(QCopChannel::isRegistered(QStringLiteral("test/restart/later")));
    QVERIFY(QCopChannel::send(QStringLiteral("test/restart"), QStringLiteral("back()")));
    QVERIFY(QCopChannel::send(QStringLiteral("test/restart/later"), QStringLiteral("later()")));
    QTRY_COMPARE(r.got.size(), 1);
    QTRY_COMPARE(later.got.size(), 1);
    QCOMPARE(r.got[0].first, QStringLiteral("back()"));
}

void TestQCop::daemonStartedLater()
{
    // An application started before qcopd (boot order): it runs, retries, and connects
    // once the daemon is there, subscribing what it asked for meanwhile.
    const QString socket = m_dir.filePath(QStringLiteral("late.sock"));
    QProcess *peer = startPeer({QStringLiteral("late"), QStringLiteral("test/late")}, socket);
    QByteArray said;
    auto heard = [&](const char *line) {
        said += peer->readAll();
        return said.split('\n').contains(QByteArray(line));
    };
    QTRY_VERIFY_WITH_TIMEOUT(heard("down") && heard("failed"), 10000);
    QProcess daemon;
    daemon.setProcessChannelMode(QProcess::ForwardedErrorChannel);
    daemon.start(program(QStringLiteral("qcopd")), {QStringLiteral("--socket"), socket});
    QVERIFY(daemon.waitForStarted());
    QTRY_VERIFY_WITH_TIMEOUT(heard("up"), 15000);
    int rc = -1;
    qcop({QStringLiteral("--socket"), socket, QStringLiteral("send"), QStringLiteral("test/late"), QStringLiteral("hi()")}, &rc);
    QCOMPARE(rc, 0);
    QTRY_VERIFY_WITH_TIMEOUT(heard("got hi()"), 10000);
    peer->kill();
    peer->waitForFinished();
    daemon.terminate();
    QVERIFY(daemon.waitForFinished());
}

QTEST_GUILESS_MAIN(TestQCop)
#include "tst_qcop.moc"

// qcop-qt-sender: sends to QPE/Example with a QCopEnvelope (Qtopia style) and by emitting
// a signal connected to a message through a QCopAdaptor (QMF style), then exits.
// See it with: qcop watch QPE/Example
// SPDX-License-Identifier: MIT OR Apache-2.0
#include <QCopAdaptor>
#include <QCopChannel>
#include <QCopEnvelope>
#include <QtCore/qcoreapplication.h>

class Knob : public QObject
{
    Q_OBJECT
Q_SIGNALS:
    void turned(int volume, const QString &output);
};

int main(int argc, char **argv)
{
    QCoreApplication app(argc, argv);
    const int volume = argc > 1 ? QString::fromLocal8Bit(argv[1]).toInt() : 42;
    {
        QCopEnvelope e(QStringLiteral("QPE/Example"), QStringLiteral("setVolume(int)"));
        e << volume;
    }  // sent here
    QCopAdaptor adaptor(QStringLiteral("QPE/Example"));
    Knob knob;
    QCopAdaptor::connect(&knob, SIGNAL(turned(int,QString)), &adaptor,
                         MESSAGE(setVolume(int,QString)));
    Q_EMIT knob.turned(volume, QStringLiteral("speaker"));
    // Wait until qcopd routed both, then leave.
    return QCopChannel::flush() ? 0 : 1;
}

#include "main.moc"

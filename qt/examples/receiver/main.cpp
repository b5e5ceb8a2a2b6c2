// qcop-qt-receiver: prints what comes on QPE/Example, through a QCopChannel and through a
// QCopAdaptor slot. Try: qcop send QPE/Example 'setVolume(int)' 42
// SPDX-License-Identifier: MIT OR Apache-2.0
#include <QCopAdaptor>
#include <QCopChannel>
#include <QtCore/qcoreapplication.h>
#include <QtCore/qdatastream.h>
#include <QtCore/qtextstream.h>

class Volume : public QObject
{
    Q_OBJECT
public Q_SLOTS:
    void setVolume(int volume, const QString &output)
    {
        QTextStream(stdout) << "slot setVolume(" << volume << ", " << output << ")" << Qt::endl;
    }
};

int main(int argc, char **argv)
{
    QCoreApplication app(argc, argv);
    QCopChannel channel(QStringLiteral("QPE/Example"));
    QObject::connect(&channel, &QCopChannel::received,
                     [](const QString &msg, const QByteArray &data) {
                         QTextStream(stdout) << "QPE/Example: " << msg << " (" << data.size()
                                             << " bytes)" << Qt::endl;
                     });
    QCopAdaptor adaptor(QStringLiteral("QPE/Example"));
    Volume volume;
    QCopAdaptor::connect(&adaptor, MESSAGE(setVolume(int,QString)), &volume,
                         SLOT(setVolume(int,QString)));
    QTextStream(stdout) << "listening on QPE/Example" << Qt::endl;
    return app.exec();
}

#include "main.moc"

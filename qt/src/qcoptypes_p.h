// qcoptypes_p.h: QMetaType/QVariant helpers that read the same on Qt 5 and Qt 6.
// SPDX-License-Identifier: MIT OR Apache-2.0
#ifndef QCOPTYPES_P_H
#define QCOPTYPES_P_H

#include <QtCore/qbytearray.h>
#include <QtCore/qdatastream.h>
#include <QtCore/qiodevice.h>
#include <QtCore/qlist.h>
#include <QtCore/qmetatype.h>
#include <QtCore/qvariant.h>

namespace QCopTypes {

// The meta type id of a type name as a signature spells it (0 if unknown).
inline int typeId(const QByteArray &name)
{
    if (name == "QVariant")
        return QMetaType::QVariant;
#if QT_VERSION >= QT_VERSION_CHECK(6, 0, 0)
    return QMetaType::fromName(name).id();
#else
    return QMetaType::type(name.constData());
#endif
}

inline QVariant fromData(int type, const void *data)
{
    if (type == QMetaType::QVariant)
        return *static_cast<const QVariant *>(data);
#if QT_VERSION >= QT_VERSION_CHECK(6, 0, 0)
    return QVariant(QMetaType(type), data);
#else
    return QVariant(type, data);
#endif
}

inline int variantType(const QVariant &v)
{
#if QT_VERSION >= QT_VERSION_CHECK(6, 0, 0)
    return v.metaType().id();
#else
    return v.userType();
#endif
}

inline bool convert(QVariant &v, int type)
{
#if QT_VERSION >= QT_VERSION_CHECK(6, 0, 0)
    return v.convert(QMetaType(type));
#else
    return v.convert(type);
#endif
}

// Writes `v` as a value of `type` (without QVariant's header, unless `type` is QVariant).
inline bool save(QDataStream &s, int type, QVariant v)
{
    if (type == QMetaType::QVariant) {
        s << v;
        return true;
    }
    if (variantType(v) != type && !convert(v, type))
        return false;
#if QT_VERSION >= QT_VERSION_CHECK(6, 0, 0)
    return QMetaType(type).save(s, v.constData());
#else
    return QMetaType::save(s, type, v.constData());
#endif
}

// Reads a value of `type`; an invalid QVariant if the stream ran out or the type cannot be read.
inline QVariant load(QDataStream &s, int type)
{
    if (type == QMetaType::QVariant) {
        QVariant v;
        s >> v;
        return s.status() == QDataStream::Ok ? v : QVariant();
    }
#if QT_VERSION >= QT_VERSION_CHECK(6, 0, 0)
    QVariant v(QMetaType(type), nullptr);
    bool ok = QMetaType(type).load(s, v.data());
#else
    QVariant v(type, nullptr);
    bool ok = QMetaType::load(s, type, v.data());
#endif
    return ok && s.status() == QDataStream::Ok ? v : QVariant();
}

// The argument types of a signature `name(t1,t2)` (normalised), as names.
inline QList<QByteArray> parameterTypes(const QByteArray &signature)
{
    QList<QByteArray> out;
    int open = signature.indexOf('(');
    int close = signature.lastIndexOf(')');
    if (open < 0 || close <= open + 1)
        return out;
    const QByteArray inner = signature.mid(open + 1, close - open - 1);
    int depth = 0, start = 0;
    for (int i = 0; i <= inner.size(); ++i) {
        if (i == inner.size() || (inner[i] == ',' && depth == 0)) {
            out.append(inner.mid(start, i - start));
            start = i + 1;
        } else if (inner[i] == '<') {
            ++depth;
        } else if (inner[i] == '>') {
            --depth;
        }
    }
    return out;
}

}  // namespace QCopTypes

#endif

//! QCOP message signatures and the QDataStream argument encoding.
//!
//! A QCOP message is addressed to a channel and named by a *signature* such
//! as `setVolume(int,QString)`: a method-like name followed by the argument
//! types in parentheses. The arguments themselves travel as a single binary
//! payload produced by Qt's `QDataStream` in its Qt 4 default configuration:
//! big-endian byte order, doubles at full 64-bit precision, and each argument
//! written back to back with no padding and no type tags. The receiver
//! therefore needs the signature to know how to read the payload.
//!
//! # Wire format of each supported type
//!
//! | Type          | Bytes                                                        |
//! |---------------|--------------------------------------------------------------|
//! | `int`         | `i32`, 4 bytes                                               |
//! | `uint`        | `u32`, 4 bytes                                               |
//! | `long`        | `i64`, 8 bytes (see below)                                   |
//! | `ulong`       | `u64`, 8 bytes (see below)                                   |
//! | `qlonglong`   | `i64`, 8 bytes                                               |
//! | `qulonglong`  | `u64`, 8 bytes                                               |
//! | `bool`        | 1 byte, `0` or `1` (any nonzero byte reads as `true`)        |
//! | `double`      | IEEE-754 binary64, 8 bytes                                   |
//! | `QString`     | `u32` byte length, then UTF-16BE code units                  |
//! | `QByteArray`  | `u32` byte length, then the raw bytes                        |
//! | `QStringList` | `u32` element count, then that many `QString`s               |
//! | `QDateTime`   | `u32` Julian day, `u32` ms since midnight, `u8` spec (2 UTC) |
//! | `QUuid`       | `u32`, `u16`, `u16`, then 8 bytes (16 bytes)                 |
//! | `QUniqueId`   | a `QUuid` context, then a `u32` index (Qt Extended)          |
//! | `QContentIdList` | `u32` count, then (`u32` database, `u64` id) pairs (Qt Extended) |
//! | `QVariant`    | `u32` type id, `u8` null flag, then the value of that type   |
//!
//! All integers are big-endian. For `QString` and `QByteArray` the length
//! `0xFFFF_FFFF` marks a *null* value (distinct from an empty one), which is
//! why [`Value::QString`] and [`Value::QByteArray`] hold an `Option`.
//!
//! Qt serialises C `long` with the platform's width, so a 32-bit ARM device
//! and a 64-bit one would disagree about the payload. qcop fixes `long` and
//! `ulong` at 64 bits so that armv7 and aarch64 peers always interoperate.
//!
//! # Safety against hostile payloads
//!
//! The decoding functions ([`decode_value`], [`decode_args`]) are meant for
//! payloads received from other processes. They never panic and never
//! allocate more than a small multiple of the input size: every length or
//! count is checked against the bytes actually present before anything is
//! allocated.

use std::borrow::Cow;
use std::char::REPLACEMENT_CHARACTER;
use std::error::Error;
use std::fmt;
use std::str::FromStr;

/// Length prefix that QDataStream uses for a null `QString` or `QByteArray`.
const NULL_MARKER: u32 = 0xFFFF_FFFF;

/// Hex digits for [`hex`]; a table avoids going through the formatter per byte.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

// ---------------------------------------------------------------------------
// Argument types
// ---------------------------------------------------------------------------

/// An argument type that qcop knows how to encode and decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgType {
    /// `int` (also `qint32`): 32-bit signed integer.
    Int,
    /// `uint` (also `unsigned int`, `quint32`): 32-bit unsigned integer.
    UInt,
    /// `long`: signed integer, fixed at 64 bits on the wire by qcop so that
    /// 32-bit (armv7) and 64-bit (aarch64) peers agree.
    Long,
    /// `ulong` (also `unsigned long`): unsigned integer, fixed at 64 bits on
    /// the wire by qcop for the same reason as [`ArgType::Long`].
    ULong,
    /// `qlonglong` (also `qint64`): 64-bit signed integer.
    LongLong,
    /// `qulonglong` (also `quint64`): 64-bit unsigned integer.
    ULongLong,
    /// `bool`: one byte.
    Bool,
    /// `double`: IEEE-754 binary64.
    Double,
    /// `QString`: length-prefixed UTF-16BE text, possibly null.
    QString,
    /// `QByteArray`: length-prefixed bytes, possibly null.
    QByteArray,
    /// `QStringList`: count-prefixed list of `QString`s.
    QStringList,
    /// `QDateTime`: Julian day, milliseconds since midnight and time spec.
    QDateTime,
    /// `QUuid`: 16 bytes.
    QUuid,
    /// `QUniqueId` (Qt Extended): a `QUuid` context and a 32-bit index.
    QUniqueId,
    /// `QContentIdList` (Qt Extended): a list of (database id, content id) pairs.
    QContentIdList,
    /// `QVariant`: a type id and a value of one of the types QDataStream
    /// defines for it (see [`Variant`]).
    QVariant,
}

impl ArgType {
    /// Every supported type, in declaration order.
    pub const ALL: [ArgType; 16] = [
        ArgType::Int,
        ArgType::UInt,
        ArgType::Long,
        ArgType::ULong,
        ArgType::LongLong,
        ArgType::ULongLong,
        ArgType::Bool,
        ArgType::Double,
        ArgType::QString,
        ArgType::QByteArray,
        ArgType::QStringList,
        ArgType::QDateTime,
        ArgType::QUuid,
        ArgType::QUniqueId,
        ArgType::QContentIdList,
        ArgType::QVariant,
    ];

    /// Looks up a type by its Qt name.
    ///
    /// Accepts the canonical names returned by [`ArgType::name`] plus the
    /// aliases `unsigned int`, `unsigned long` (spelled with exactly one space) and Qt's
    /// typedefs `qint32`, `quint32`, `qint64` and `quint64`. Use
    /// [`parse_signature`] for full Qt-style normalisation of messier input
    /// such as `const QString &`.
    #[must_use]
    pub fn parse(name: &str) -> Option<ArgType> {
        let ty = match name {
            "int" | "qint32" => ArgType::Int,
            "uint" | "unsigned int" | "quint32" => ArgType::UInt,
            "long" => ArgType::Long,
            "ulong" | "unsigned long" => ArgType::ULong,
            "qlonglong" | "qint64" => ArgType::LongLong,
            "qulonglong" | "quint64" => ArgType::ULongLong,
            "bool" => ArgType::Bool,
            "double" => ArgType::Double,
            "QString" => ArgType::QString,
            "QByteArray" => ArgType::QByteArray,
            "QStringList" => ArgType::QStringList,
            "QDateTime" => ArgType::QDateTime,
            "QUuid" => ArgType::QUuid,
            "QUniqueId" => ArgType::QUniqueId,
            "QContentIdList" => ArgType::QContentIdList,
            "QVariant" => ArgType::QVariant,
            _ => return None,
        };
        Some(ty)
    }

    /// The canonical (normalised) Qt name of the type, as it appears in a
    /// normalised signature, e.g. `"uint"` or `"QString"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ArgType::Int => "int",
            ArgType::UInt => "uint",
            ArgType::Long => "long",
            ArgType::ULong => "ulong",
            ArgType::LongLong => "qlonglong",
            ArgType::ULongLong => "qulonglong",
            ArgType::Bool => "bool",
            ArgType::Double => "double",
            ArgType::QString => "QString",
            ArgType::QByteArray => "QByteArray",
            ArgType::QStringList => "QStringList",
            ArgType::QDateTime => "QDateTime",
            ArgType::QUuid => "QUuid",
            ArgType::QUniqueId => "QUniqueId",
            ArgType::QContentIdList => "QContentIdList",
            ArgType::QVariant => "QVariant",
        }
    }

    /// Inclusive value range of the integer types, for range checks and
    /// error messages; `None` for non-integer types.
    fn int_range(self) -> Option<(i128, i128)> {
        let range = match self {
            ArgType::Int => (i32::MIN.into(), i32::MAX.into()),
            ArgType::UInt => (0, u32::MAX.into()),
            ArgType::Long | ArgType::LongLong => (i64::MIN.into(), i64::MAX.into()),
            ArgType::ULong | ArgType::ULongLong => (0, u64::MAX.into()),
            _ => return None,
        };
        Some(range)
    }
}

impl fmt::Display for ArgType {
    /// Writes the canonical name (see [`ArgType::name`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------

/// A parsed, normalised QCOP message signature such as `setVolume(int,QString)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    /// The message name, e.g. `setVolume`.
    pub name: String,
    /// The argument types, in order.
    pub types: Vec<ArgType>,
    /// The normalised text, which keeps each type's spelling (`qint64` stays `qint64`).
    text: String,
}

impl Signature {
    /// The normalised signature text, e.g. `setVolume(int,QString)`, as Qt's
    /// `QMetaObject::normalizedSignature` writes it (see [`normalize_signature`]).
    ///
    /// This is the form peers compare messages by, so it must be used
    /// whenever a message name goes on the wire.
    #[must_use]
    pub fn normalized(&self) -> String {
        self.text.clone()
    }

    /// The normalised signature text, borrowed.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Signature {
    /// Writes the normalised signature (see [`Signature::normalized`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized())
    }
}

impl FromStr for Signature {
    type Err = SignatureError;

    /// Same as [`parse_signature`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_signature(s)
    }
}

/// Why a signature could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The signature is empty or only whitespace.
    Empty,
    /// There is no `(` … `)` argument list; QCOP messages always carry one,
    /// even when empty (`ping()`).
    MissingParens,
    /// The message name is empty, or contains something other than ASCII
    /// letters, digits, `_` and `::` scope separators, or a part of it
    /// starts with a digit.
    BadName,
    /// An argument type is blank, as in `f(int,)`.
    EmptyArgument,
    /// An argument type is not one qcop can encode; holds the normalised
    /// type name.
    UnknownType(String),
    /// Something other than whitespace follows the closing `)`.
    TrailingGarbage,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Empty => f.write_str("empty message signature"),
            SignatureError::MissingParens => f.write_str(
                "message signature needs an argument list in parentheses, e.g. \"ping()\"",
            ),
            SignatureError::BadName => f.write_str(
                "message name must be non-empty, made of ASCII letters, digits, '_' and \
                 '::' scope separators, and no part of it may start with a digit",
            ),
            SignatureError::EmptyArgument => {
                f.write_str("message signature has an empty argument type")
            }
            SignatureError::UnknownType(name) => write!(
                f,
                "unsupported argument type \"{name}\" (supported: int, uint, long, ulong, \
                 qlonglong, qulonglong, bool, double, QString, QByteArray, QStringList, \
                 QDateTime, QUuid, QUniqueId, QContentIdList, QVariant)"
            ),
            SignatureError::TrailingGarbage => {
                f.write_str("unexpected text after the closing ')' of the message signature")
            }
        }
    }
}

impl Error for SignatureError {}

/// Parses and normalises a message signature, requiring every argument type
/// to be supported.
///
/// The text is normalised by [`normalize_signature`], exactly as Qt's
/// `QMetaObject::normalizedSignature` does: whitespace around the name, parentheses and
/// commas is dropped, `const T&`, `const T &`, `const T` and `T const &` become `T`,
/// `unsigned int` (and bare `unsigned`) becomes `uint` and `unsigned long` becomes `ulong`.
/// Qt's typedef names keep their spelling: `qint64`, `quint64`, `qint32` and `quint32` are
/// encoded as `qlonglong`, `qulonglong`, `int` and `uint`, but the signature stays
/// `f(qint64)`, which is what a Qt receiver connected to `f(qint64)` compares with.
///
/// ```text
/// " setVolume ( int , const QString & ) "  ->  setVolume(int,QString)
/// " f ( qint64 ) "                          ->  f(qint64)
/// ```
///
/// # Errors
///
/// See [`SignatureError`]; in particular a name without parentheses
/// (`ping`) is rejected, and an unsupported type yields
/// [`SignatureError::UnknownType`] naming it.
pub fn parse_signature(sig: &str) -> Result<Signature, SignatureError> {
    let (name, tokens) = split_signature(sig)?;
    let types = tokens
        .iter()
        .map(|token| {
            ArgType::parse(token).ok_or_else(|| SignatureError::UnknownType(token.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let text = format!("{}({})", name, tokens.join(","));
    Ok(Signature { name, types, text })
}

/// Parses and normalises a signature received from a peer, tolerating
/// unsupported argument types.
///
/// Returns the normalised signature text (unknown types appear in their
/// normalised spelling, e.g. `f(int,QVariant)`) and one entry per argument:
/// `Some` for supported types, `None` for the rest, whose bytes the caller
/// cannot interpret (and typically prints with [`hex`]). Commas nested in
/// template arguments, as in `QMap<QString,int>`, do not split arguments.
///
/// # Errors
///
/// The same structural errors as [`parse_signature`], but never
/// [`SignatureError::UnknownType`].
pub fn parse_signature_lenient(
    sig: &str,
) -> Result<(String, Vec<Option<ArgType>>), SignatureError> {
    let (name, tokens) = split_signature(sig)?;
    let types = tokens.iter().map(|token| ArgType::parse(token)).collect();
    let normalized = format!("{}({})", name, tokens.join(","));
    Ok((normalized, types))
}

/// Splits a signature, normalised as Qt does, into its validated name and its argument
/// type tokens.
fn split_signature(sig: &str) -> Result<(String, Vec<String>), SignatureError> {
    let sig = normalize_signature(sig);
    if sig.is_empty() {
        return Err(SignatureError::Empty);
    }
    let (name, after_open) = sig.split_once('(').ok_or(SignatureError::MissingParens)?;
    if !is_valid_name(name) {
        return Err(SignatureError::BadName);
    }
    // Types never contain ')', so the first one closes the argument list.
    let (inner, rest) = after_open
        .split_once(')')
        .ok_or(SignatureError::MissingParens)?;
    if !rest.is_empty() {
        return Err(SignatureError::TrailingGarbage);
    }
    let tokens = if inner.is_empty() {
        Vec::new()
    } else {
        split_types(inner)
            .into_iter()
            .map(|t| {
                if t.is_empty() {
                    Err(SignatureError::EmptyArgument)
                } else {
                    Ok(t.to_owned())
                }
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok((name.to_owned(), tokens))
}

/// Whether `name` is a C identifier made of ASCII characters, or several
/// joined by `::` (a scoped name such as `Time::editTime`, which Qt
/// Extended services use).
fn is_valid_name(name: &str) -> bool {
    name.split("::").all(is_identifier)
}

/// Whether `name` is one C identifier made of ASCII characters.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if first.is_ascii_alphabetic() || first == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    }
}

/// Splits an argument list on commas that are not inside `<…>`, so that a
/// peer's `QMap<QString,int>` stays one (unsupported) type.
pub fn split_types(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            // Saturate so that a stray '>' cannot hide later commas forever.
            '>' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
}

// ---------------------------------------------------------------------------
// Qt's signature normalisation
// ---------------------------------------------------------------------------

/// Normalises a message signature exactly as Qt's `QMetaObject::normalizedSignature`
/// (Qt 4.8 and Qt 5) does, so that every spelling of one signature compares equal to the
/// text a Qt receiver connected to it.
///
/// The rules, applied to any text (this never fails):
/// - spaces and tabs are removed, except a single space between two identifier
///   characters (`unsigned int`, `const QString`);
/// - inside the argument list, each argument type is normalised: `const T&`, `T const&`
///   and `const T` become `T` (a value); `unsigned int` and a bare `unsigned` become
///   `uint`, `unsigned long` becomes `ulong` (but `unsigned long long`, `unsigned long int`,
///   `unsigned short` and `unsigned char` stay); a leading `struct `, `class ` or `enum ` is
///   dropped; `T const*` becomes `const T*`; template arguments are normalised in turn
///   (keeping `const` there), and `>>` is written `> >`;
/// - a lone `void` argument is dropped (`f(void)` is `f()`).
///
/// Typedef names are text to Qt and are kept: `f(qint64)` stays `f(qint64)`, a different
/// signature from `f(qlonglong)`.
///
/// ```
/// use qcop::datastream::normalize_signature;
/// assert_eq!(normalize_signature(" reboot ( ) "), "reboot()");
/// assert_eq!(normalize_signature("f(const QString &, unsigned)"), "f(QString,uint)");
/// assert_eq!(normalize_signature("f(qint64)"), "f(qint64)");
/// ```
#[must_use]
pub fn normalize_signature(sig: &str) -> Cow<'_, str> {
    if is_plainly_normalized(sig) {
        return Cow::Borrowed(sig);
    }
    let bytes = qt_normalized_signature(sig.as_bytes());
    if bytes == sig.as_bytes() {
        return Cow::Borrowed(sig);
    }
    // Only ASCII bytes are removed or inserted, at ASCII boundaries, so the text stays
    // UTF-8; the lossy path is never expected to run.
    match String::from_utf8(bytes) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// A quick test that `sig` is a fixed point of the normalisation: no whitespace, and
/// either no parentheses at all or `name(` followed by plain identifiers separated by
/// commas and a final `)`, none of them `unsigned` or `void`.
fn is_plainly_normalized(sig: &str) -> bool {
    let b = sig.as_bytes();
    if b.iter().any(|&c| is_sig_space(c)) {
        return false;
    }
    let Some(open) = b.iter().position(|&c| c == b'(') else {
        return !b.contains(&b')');
    };
    if b[..open].contains(&b')') || b.last() != Some(&b')') {
        return false;
    }
    let inner = &b[open + 1..b.len() - 1];
    inner
        .split(|&c| c == b',')
        .all(|arg| arg.iter().all(|&c| is_ident_byte(c)) && arg != b"unsigned" && arg != b"void")
}

/// Qt's whitespace in signatures.
fn is_sig_space(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// A byte of a C identifier.
fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The byte at `i`, or 0 past the end (the C string's terminator).
fn byte_at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// Whether `s[i..]` starts with `word`.
fn has_at(s: &[u8], i: usize, word: &[u8]) -> bool {
    s.get(i..).is_some_and(|rest| rest.starts_with(word))
}

/// Drops whitespace except one space between identifier characters.
fn remove_sig_whitespace(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() && is_sig_space(s[i]) {
        i += 1;
    }
    let mut last = 0u8;
    while i < s.len() {
        while i < s.len() && !is_sig_space(s[i]) {
            last = s[i];
            out.push(last);
            i += 1;
        }
        while i < s.len() && is_sig_space(s[i]) {
            i += 1;
        }
        if i < s.len()
            && ((is_ident_byte(s[i]) && is_ident_byte(last)) || (s[i] == b':' && last == b'<'))
        {
            last = b' ';
            out.push(last);
        }
    }
    out
}

/// The whole-signature pass: whitespace, then each argument of the outermost list.
fn qt_normalized_signature(sig: &[u8]) -> Vec<u8> {
    let d = remove_sig_whitespace(sig);
    let mut result = Vec::with_capacity(d.len());
    let mut argdepth = 0i32;
    let mut templdepth = 0i32;
    let mut i = 0;
    while i < d.len() {
        if argdepth == 1 {
            let start = i;
            while i < d.len() && (templdepth != 0 || (d[i] != b',' && d[i] != b')')) {
                match d[i] {
                    b'<' => templdepth += 1,
                    b'>' => templdepth -= 1,
                    _ => {}
                }
                i += 1;
            }
            // An explicit `void` argument list: `f(void)` is `f()`.
            let lone_void = &d[start..i] == b"void" && byte_at(&d, i) == b')';
            if !lone_void {
                result.extend(normalize_type_bytes(&d, start, i, true, 0));
            }
            if i >= d.len() {
                break;
            }
        }
        match d[i] {
            b'(' => argdepth += 1,
            b')' => argdepth -= 1,
            _ => {}
        }
        result.push(d[i]);
        i += 1;
    }
    result
}

/// Template nesting normalised; deeper arguments are kept as they are (a bound on the
/// recursion for hostile input; no real type comes near it).
const MAX_TEMPLATE_DEPTH: u32 = 32;

/// Normalises the type `buf[t..e]` (whitespace already removed). Like Qt, it may look at
/// the bytes just past `e` (the rest of the signature), never past the end of `buf`.
fn normalize_type_bytes(buf: &[u8], t: usize, e: usize, adjust_const: bool, depth: u32) -> Vec<u8> {
    if depth > MAX_TEMPLATE_DEPTH {
        return buf[t..e].to_vec();
    }
    let len = e - t;
    // `char const *` becomes `const char *`: find a `const` word after the first byte and
    // before any `&`, `*` or `<`, and move it to the front.
    let moved;
    let (buf, mut t, mut e) = {
        let mut found = None;
        for i in 1..len {
            let c = buf[t + i];
            if c == b'c'
                && has_at(buf, t + i + 1, b"onst")
                && (i + 5 >= len || !is_ident_byte(buf[t + i + 5]))
                && !is_ident_byte(buf[t + i - 1])
            {
                found = Some(i);
                break;
            }
            if c == b'&' || c == b'*' || c == b'<' {
                break;
            }
        }
        match found {
            Some(i) => {
                let mut v = buf[t..e].to_vec();
                if is_sig_space(v[i - 1]) {
                    v.drain(i - 1..(i + 5).min(v.len()));
                } else {
                    v.drain(i..(i + 5).min(v.len()));
                }
                let mut with_const = b"const ".to_vec();
                with_const.extend_from_slice(&v);
                moved = with_const;
                (&moved[..], 0, moved.len())
            }
            None => (buf, t, e),
        }
    };
    if adjust_const && e > t + 6 && has_at(buf, t, b"const ") {
        let last = buf[e - 1];
        if last == b'&' {
            t += 6;
            e -= 1;
        } else if is_ident_byte(last) || last == b'>' {
            t += 6;
        }
    }
    let mut result = Vec::with_capacity(len);
    if has_at(buf, t, b"const ") {
        t += 6;
        result.extend_from_slice(b"const ");
    }
    if has_at(buf, t, b"unsigned") {
        // Only the isolated word `unsigned`.
        if !is_ident_byte(byte_at(buf, t + 8)) {
            if has_at(buf, t + 8, b" int") {
                t += 12;
                result.extend_from_slice(b"uint");
            } else if has_at(buf, t + 8, b" long") {
                if !has_at(buf, t + 13, b" int") && !has_at(buf, t + 13, b" long") {
                    t += 13;
                    result.extend_from_slice(b"ulong");
                }
            } else if !has_at(buf, t + 8, b" short") && !has_at(buf, t + 8, b" char") {
                t += 8;
                result.extend_from_slice(b"uint");
            }
        }
    } else {
        for keyword in [&b"struct "[..], b"class ", b"enum "] {
            if has_at(buf, t, keyword) {
                t += keyword.len();
                break;
            }
        }
    }
    let mut star = false;
    while t < e {
        let mut c = buf[t];
        t += 1;
        star = star || c == b'*';
        result.push(c);
        if c == b'<' {
            // Template arguments, each normalised without dropping their `const`.
            let mut tt = t;
            let mut templdepth = 1;
            while t < e {
                c = buf[t];
                t += 1;
                match c {
                    b'<' => templdepth += 1,
                    b'>' => templdepth -= 1,
                    _ => {}
                }
                if templdepth == 0 || (templdepth == 1 && c == b',') {
                    result.extend(normalize_type_bytes(buf, tt, t - 1, false, depth + 1));
                    result.push(c);
                    if templdepth == 0 {
                        if byte_at(buf, t) == b'>' {
                            result.push(b' ');
                        }
                        break;
                    }
                    tt = t;
                }
            }
        }
        // A `const` after the type.
        if !is_ident_byte(c)
            && t < e
            && e - t >= 5
            && has_at(buf, t, b"const")
            && (e - t == 5 || !is_ident_byte(buf[t + 5]))
        {
            t += 5;
            while t < e && is_sig_space(buf[t]) {
                t += 1;
            }
            if adjust_const && t < e && buf[t] == b'&' {
                t += 1;
            } else if adjust_const && !star {
                // A const value is passed as a value.
            } else if !star {
                result.splice(0..0, b"const ".iter().copied());
            } else {
                result.extend_from_slice(b"const");
            }
        }
    }
    result
}

// ---------------------------------------------------------------------------
// Values and encoding
// ---------------------------------------------------------------------------

/// One argument value of a QCOP message.
///
/// [`Display`](fmt::Display) renders it for a command-line line (used by
/// `qcop watch --format rich`): integers, booleans and doubles plainly
/// (doubles in Rust's shortest round-trip form, e.g. `1.0`, `1e300`, `NaN`,
/// `inf`); `QString` double-quoted with `"`, `\` and control characters
/// backslash-escaped (an unpaired surrogate as `\u{d800}`); `QByteArray` as
/// lowercase hex with a `0x` prefix (`0x0a0b`, empty is `0x`); a null
/// `QString`, `QByteArray` or `QDateTime` as `null`; `QStringList` as
/// `["a", "b", null]`; `QDateTime` as `2024-05-01T12:30:00` (`.250` for
/// milliseconds, `Z` for UTC); `QUuid` as `{xxxxxxxx-...}`; `QUniqueId` as
/// `{uuid}:index`; `QContentIdList` as `1:42,1:43`; `QVariant` as the value
/// it holds. The text of integers, doubles, booleans, byte arrays, UUIDs, ids
/// and content id lists is accepted back by [`parse_arg`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `int`.
    Int(i32),
    /// `uint`.
    UInt(u32),
    /// `long` (64 bits on the wire).
    Long(i64),
    /// `ulong` (64 bits on the wire).
    ULong(u64),
    /// `qlonglong`.
    LongLong(i64),
    /// `qulonglong`.
    ULongLong(u64),
    /// `bool`.
    Bool(bool),
    /// `double`.
    Double(f64),
    /// `QString`; `None` is a null string.
    QString(Option<String>),
    /// `QByteArray`; `None` is a null byte array.
    QByteArray(Option<Vec<u8>>),
    /// `QStringList`; a `None` element is a null string, kept as Qt keeps
    /// it (command-line values are never null).
    QStringList(Vec<Option<String>>),
    /// A `QString` received with an unpaired surrogate, which a Rust
    /// `String` cannot hold: kept unit for unit, as Qt keeps it, so that it
    /// re-encodes to the same bytes.
    QStringUtf16(Vec<u16>),
    /// `QDateTime`.
    QDateTime(DateTime),
    /// `QUuid`, its 16 bytes in wire order.
    QUuid([u8; 16]),
    /// `QUniqueId` (Qt Extended).
    QUniqueId {
        /// The context `QUuid`.
        context: [u8; 16],
        /// The index within the context.
        index: u32,
    },
    /// `QContentIdList` (Qt Extended): (database id, content id) pairs.
    QContentIdList(Vec<(u32, u64)>),
    /// `QVariant`.
    QVariant(Variant),
}

/// A `QDateTime` as QDataStream carries it (Qt 4 stream versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Julian day number of the date; 0 is a null date.
    pub julian_day: u32,
    /// Milliseconds since midnight; `0xFFFF_FFFF` is a null time.
    pub msecs: u32,
    /// Qt 4's time spec byte: [`DateTime::SPEC_UTC`] (2) for UTC; local time
    /// otherwise (`0xFF` "local, daylight saving unknown" as Qt 5 and 6 write
    /// it, 0 standard and 1 daylight saving time as Qt 4 wrote it).
    pub spec: u8,
}

/// Milliseconds value of a null `QTime`.
const NULL_TIME: u32 = 0xFFFF_FFFF;
/// Milliseconds in a day.
const DAY_MS: u32 = 86_400_000;

impl DateTime {
    /// The spec byte of a UTC time (Qt 4's `QDateTimePrivate::UTC`).
    pub const SPEC_UTC: u8 = 2;
    /// The spec byte written for local time (`LocalUnknown`, what Qt 5 and 6 write
    /// with Qt 4 stream versions; Qt then works out whether daylight saving applies).
    pub const SPEC_LOCAL: u8 = 0xFF;

    /// Whether the time is UTC (otherwise it is local time).
    #[must_use]
    pub fn is_utc(&self) -> bool {
        self.spec == Self::SPEC_UTC
    }

    /// The null `QDateTime` (what an unparsable value becomes).
    pub const NULL: DateTime = DateTime {
        julian_day: 0,
        msecs: NULL_TIME,
        spec: 0,
    };

    /// Whether the date and time are both valid, as `QDateTime::isValid`.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.julian_day != 0 && self.msecs < DAY_MS
    }

    /// `YYYY-MM-DDTHH:MM:SS` (Qt's `Qt::ISODate` form), or `""` for an
    /// invalid value, as Qt prints it.
    #[must_use]
    pub fn iso(&self) -> String {
        if !self.is_valid() {
            return String::new();
        }
        let (y, m, d) = civil_from_julian_day(self.julian_day);
        let s = self.msecs / 1000;
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }

    /// Parses `YYYY-MM-DD`, optionally followed by `THH:MM`, `:SS`, `.mmm`
    /// and `Z` (UTC; otherwise local time).
    #[must_use]
    pub fn parse_iso(text: &str) -> Option<DateTime> {
        let text = text.trim();
        let (text, spec) = match text.strip_suffix('Z') {
            Some(rest) => (rest, Self::SPEC_UTC),
            None => (text, Self::SPEC_LOCAL),
        };
        let (date, time) = text.split_once('T').unwrap_or((text, ""));
        let mut parts = date.split('-');
        let (y, m, d) = (
            digits(parts.next()?, 4)?,
            digits(parts.next()?, 2)?,
            digits(parts.next()?, 2)?,
        );
        if parts.next().is_some() || !(1..=12).contains(&m) || d == 0 || d > days_in(y, m) {
            return None;
        }
        let msecs = if time.is_empty() {
            0
        } else {
            let (hms, ms) = time.split_once('.').unwrap_or((time, ""));
            let mut parts = hms.split(':');
            let h = digits(parts.next()?, 2)?;
            let min = digits(parts.next()?, 2)?;
            let sec = parts.next().map_or(Some(0), |p| digits(p, 2))?;
            let ms = if ms.is_empty() { 0 } else { digits(ms, 3)? };
            if parts.next().is_some() || h > 23 || min > 59 || sec > 59 {
                return None;
            }
            ((h * 60 + min) * 60 + sec) * 1000 + ms
        };
        Some(DateTime {
            julian_day: julian_day(y, m, d),
            msecs,
            spec,
        })
    }
}

/// Exactly `n` ASCII digits as a number.
fn digits(text: &str, n: usize) -> Option<u32> {
    if text.len() == n && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

fn days_in(y: u32, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Julian day number of a (proleptic Gregorian) date.
fn julian_day(y: u32, m: u32, d: u32) -> u32 {
    let (y, m, d) = (i64::from(y), i64::from(m), i64::from(d));
    let a = (14 - m) / 12;
    let y = y + 4800 - a;
    let m = m + 12 * a - 3;
    let jd = d + (153 * m + 2) / 5 + 365 * y + y / 4 - y / 100 + y / 400 - 32045;
    u32::try_from(jd).unwrap_or(0)
}

/// The (proleptic Gregorian) date of a Julian day number.
fn civil_from_julian_day(jd: u32) -> (i64, i64, i64) {
    let a = i64::from(jd) + 32044;
    let b = (4 * a + 3) / 146_097;
    let c = a - 146_097 * b / 4;
    let d = (4 * c + 3) / 1461;
    let e = c - 1461 * d / 4;
    let m = (5 * e + 2) / 153;
    let day = e - (153 * m + 2) / 5 + 1;
    let month = m + 3 - 12 * (m / 10);
    let year = 100 * b + d - 4800 + m / 10;
    (year, month, day)
}

/// `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`, as `QUuid::toString` writes it.
#[must_use]
pub fn uuid_text(bytes: &[u8; 16]) -> String {
    let h = hex(bytes);
    format!(
        "{{{}-{}-{}-{}-{}}}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Parses a UUID with or without braces, as `QUuid`'s string constructor.
#[must_use]
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let b = inner.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let digits: String = inner.chars().filter(|&c| c != '-').collect();
    if digits.len() != 32 || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in digits.as_bytes().chunks_exact(2).enumerate() {
        out[i] = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
    }
    Some(out)
}

/// A `QVariant` of one of the types QDataStream defines for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Variant {
    /// An invalid (empty) variant.
    Invalid,
    /// A variant holding a value of a type qcop also has as an argument
    /// type (bool, int, uint, qlonglong, qulonglong, double, QString,
    /// QStringList, QByteArray, QDateTime).
    Value(Box<Value>),
    /// `QChar`: one UTF-16 code unit.
    Char(u16),
    /// `QDate`: a Julian day number (0 is null).
    Date(u32),
    /// `QTime`: milliseconds since midnight (`0xFFFF_FFFF` is null).
    Time(u32),
    /// `QVariantList`.
    List(Vec<Variant>),
    /// `QVariantMap`: keys in stream order.
    Map(Vec<(Option<String>, Variant)>),
}

/// Deepest nesting of variant lists and maps that is decoded; deeper
/// payloads are refused rather than risking the stack.
const MAX_VARIANT_DEPTH: usize = 16;

/// QVariant type ids of Qt 4's QDataStream format.
mod variant_type {
    pub const INVALID: u32 = 0;
    pub const BOOL: u32 = 1;
    pub const INT: u32 = 2;
    pub const UINT: u32 = 3;
    pub const LONGLONG: u32 = 4;
    pub const ULONGLONG: u32 = 5;
    pub const DOUBLE: u32 = 6;
    pub const CHAR: u32 = 7;
    pub const MAP: u32 = 8;
    pub const LIST: u32 = 9;
    pub const STRING: u32 = 10;
    pub const STRINGLIST: u32 = 11;
    pub const BYTEARRAY: u32 = 12;
    pub const DATE: u32 = 14;
    pub const TIME: u32 = 15;
    pub const DATETIME: u32 = 16;
}

impl Variant {
    /// Appends the QDataStream encoding (type id, null flag, value).
    fn encode(&self, out: &mut Vec<u8>) {
        use variant_type as t;
        let (id, null) = match self {
            Variant::Invalid => (t::INVALID, 1),
            Variant::Value(v) => (
                match **v {
                    Value::Bool(_) => t::BOOL,
                    Value::Int(_) => t::INT,
                    Value::UInt(_) => t::UINT,
                    Value::Long(_) | Value::LongLong(_) => t::LONGLONG,
                    Value::ULong(_) | Value::ULongLong(_) => t::ULONGLONG,
                    Value::Double(_) => t::DOUBLE,
                    Value::QStringList(_) => t::STRINGLIST,
                    Value::QByteArray(_) => t::BYTEARRAY,
                    Value::QDateTime(_) => t::DATETIME,
                    // Strings, and types with no variant id of their own,
                    // which the constructors never put here.
                    _ => t::STRING,
                },
                0,
            ),
            Variant::Char(_) => (t::CHAR, 0),
            Variant::Date(_) => (t::DATE, 0),
            Variant::Time(_) => (t::TIME, 0),
            Variant::List(_) => (t::LIST, 0),
            Variant::Map(_) => (t::MAP, 0),
        };
        out.extend_from_slice(&id.to_be_bytes());
        out.push(null);
        match self {
            Variant::Invalid => out.extend_from_slice(&NULL_MARKER.to_be_bytes()),
            Variant::Value(v) => v.encode(out),
            Variant::Char(c) => out.extend_from_slice(&c.to_be_bytes()),
            Variant::Date(d) | Variant::Time(d) => out.extend_from_slice(&d.to_be_bytes()),
            Variant::List(list) => {
                out.extend_from_slice(&length_prefix(list.len()).to_be_bytes());
                for v in list {
                    v.encode(out);
                }
            }
            Variant::Map(map) => {
                out.extend_from_slice(&length_prefix(map.len()).to_be_bytes());
                for (k, v) in map {
                    Value::QString(k.clone()).encode(out);
                    v.encode(out);
                }
            }
        }
    }
}

impl fmt::Display for Variant {
    /// The held value as [`Value`] shows it; a `QChar` quoted, a `QDate`
    /// as `YYYY-MM-DD`, a `QTime` as `HH:MM:SS.mmm`, a list as `[a, b]`, a
    /// map as `{"key": value}`, an invalid variant as `invalid`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::Invalid => f.write_str("invalid"),
            Variant::Value(v) => write!(f, "{v}"),
            Variant::Char(c) => write!(f, "{}", Value::QStringUtf16(vec![*c])),
            Variant::Date(0) => f.write_str("null"),
            Variant::Date(d) => {
                let (y, m, d) = civil_from_julian_day(*d);
                write!(f, "{y:04}-{m:02}-{d:02}")
            }
            Variant::Time(ms) if *ms >= DAY_MS => f.write_str("null"),
            Variant::Time(ms) => {
                let s = ms / 1000;
                write!(
                    f,
                    "{:02}:{:02}:{:02}.{:03}",
                    s / 3600,
                    s / 60 % 60,
                    s % 60,
                    ms % 1000
                )
            }
            Variant::List(list) => {
                f.write_str("[")?;
                for (i, v) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Variant::Map(map) => {
                f.write_str("{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {v}", Value::QString(k.clone()))?;
                }
                f.write_str("}")
            }
        }
    }
}

impl Value {
    /// The type of this value.
    #[must_use]
    pub fn arg_type(&self) -> ArgType {
        match self {
            Value::Int(_) => ArgType::Int,
            Value::UInt(_) => ArgType::UInt,
            Value::Long(_) => ArgType::Long,
            Value::ULong(_) => ArgType::ULong,
            Value::LongLong(_) => ArgType::LongLong,
            Value::ULongLong(_) => ArgType::ULongLong,
            Value::Bool(_) => ArgType::Bool,
            Value::Double(_) => ArgType::Double,
            Value::QString(_) => ArgType::QString,
            Value::QByteArray(_) => ArgType::QByteArray,
            Value::QStringList(_) => ArgType::QStringList,
            Value::QStringUtf16(_) => ArgType::QString,
            Value::QDateTime(_) => ArgType::QDateTime,
            Value::QUuid(_) => ArgType::QUuid,
            Value::QUniqueId { .. } => ArgType::QUniqueId,
            Value::QContentIdList(_) => ArgType::QContentIdList,
            Value::QVariant(_) => ArgType::QVariant,
        }
    }

    /// The value Qt reads for `ty` from an exhausted stream, and that the
    /// original `qcop` tool sent for a missing argument: zero, `false`, a
    /// null string or byte array, an empty list, a null date, a null UUID,
    /// an invalid variant.
    #[must_use]
    pub fn null_of(ty: ArgType) -> Value {
        match ty {
            ArgType::Int => Value::Int(0),
            ArgType::UInt => Value::UInt(0),
            ArgType::Long => Value::Long(0),
            ArgType::ULong => Value::ULong(0),
            ArgType::LongLong => Value::LongLong(0),
            ArgType::ULongLong => Value::ULongLong(0),
            ArgType::Bool => Value::Bool(false),
            ArgType::Double => Value::Double(0.0),
            ArgType::QString => Value::QString(None),
            ArgType::QByteArray => Value::QByteArray(None),
            ArgType::QStringList => Value::QStringList(Vec::new()),
            ArgType::QDateTime => Value::QDateTime(DateTime::NULL),
            ArgType::QUuid => Value::QUuid([0; 16]),
            ArgType::QUniqueId => Value::QUniqueId {
                context: [0; 16],
                index: 0,
            },
            ArgType::QContentIdList => Value::QContentIdList(Vec::new()),
            ArgType::QVariant => Value::QVariant(Variant::Invalid),
        }
    }

    /// Appends the QDataStream encoding of this value to `out`.
    ///
    /// # Panics
    ///
    /// If a string or byte array is 4 GiB or longer, which QDataStream's
    /// 32-bit length prefix cannot express (far beyond any QCOP message).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::UInt(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Long(v) | Value::LongLong(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::ULong(v) | Value::ULongLong(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::Double(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::QString(None) | Value::QByteArray(None) => {
                out.extend_from_slice(&NULL_MARKER.to_be_bytes());
            }
            Value::QString(Some(s)) => encode_qstring(s, out),
            Value::QByteArray(Some(bytes)) => {
                out.extend_from_slice(&length_prefix(bytes.len()).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            Value::QStringList(list) => {
                out.extend_from_slice(&length_prefix(list.len()).to_be_bytes());
                for s in list {
                    match s {
                        Some(s) => encode_qstring(s, out),
                        None => out.extend_from_slice(&NULL_MARKER.to_be_bytes()),
                    }
                }
            }
            Value::QStringUtf16(units) => {
                out.extend_from_slice(&length_prefix(units.len().saturating_mul(2)).to_be_bytes());
                for unit in units {
                    out.extend_from_slice(&unit.to_be_bytes());
                }
            }
            Value::QDateTime(dt) => {
                out.extend_from_slice(&dt.julian_day.to_be_bytes());
                out.extend_from_slice(&dt.msecs.to_be_bytes());
                out.push(dt.spec);
            }
            Value::QUuid(bytes) => out.extend_from_slice(bytes),
            Value::QUniqueId { context, index } => {
                out.extend_from_slice(context);
                out.extend_from_slice(&index.to_be_bytes());
            }
            Value::QContentIdList(ids) => {
                out.extend_from_slice(&length_prefix(ids.len()).to_be_bytes());
                for (db, id) in ids {
                    out.extend_from_slice(&db.to_be_bytes());
                    out.extend_from_slice(&id.to_be_bytes());
                }
            }
            Value::QVariant(v) => v.encode(out),
        }
    }
}

/// Encodes a non-null `QString`: byte length, then UTF-16BE code units.
fn encode_qstring(s: &str, out: &mut Vec<u8>) {
    let units = s.encode_utf16().count();
    let byte_len = units.saturating_mul(2);
    out.extend_from_slice(&length_prefix(byte_len).to_be_bytes());
    out.reserve(byte_len);
    for unit in s.encode_utf16() {
        out.extend_from_slice(&unit.to_be_bytes());
    }
}

/// Converts a length to the 32-bit prefix, refusing values that would be
/// truncated or mistaken for the null marker.
fn length_prefix(len: usize) -> u32 {
    match u32::try_from(len) {
        Ok(n) if n != NULL_MARKER => n,
        _ => panic!("QDataStream cannot encode a length of {len} (limit is 4 GiB - 2)"),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::UInt(v) => write!(f, "{v}"),
            Value::Long(v) | Value::LongLong(v) => write!(f, "{v}"),
            Value::ULong(v) | Value::ULongLong(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            // Debug keeps a ".0" on whole numbers and switches to exponent
            // notation for huge or tiny values instead of printing hundreds
            // of digits; it still round-trips through str::parse.
            Value::Double(v) => write!(f, "{v:?}"),
            Value::QString(None) | Value::QByteArray(None) => f.write_str("null"),
            Value::QString(Some(s)) => write_quoted(f, s),
            Value::QByteArray(Some(bytes)) => write!(f, "0x{}", hex(bytes)),
            Value::QStringList(list) => {
                f.write_str("[")?;
                for (i, s) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match s {
                        Some(s) => write_quoted(f, s)?,
                        None => f.write_str("null")?,
                    }
                }
                f.write_str("]")
            }
            Value::QStringUtf16(units) => {
                f.write_str("\"")?;
                for c in char::decode_utf16(units.iter().copied()) {
                    match c {
                        Ok(c) => write_quoted_char(f, c)?,
                        Err(e) => write!(f, "\\u{{{:x}}}", e.unpaired_surrogate())?,
                    }
                }
                f.write_str("\"")
            }
            Value::QDateTime(dt) if !dt.is_valid() => f.write_str("null"),
            Value::QDateTime(dt) => {
                f.write_str(&dt.iso())?;
                if dt.msecs % 1000 != 0 {
                    write!(f, ".{:03}", dt.msecs % 1000)?;
                }
                if dt.is_utc() {
                    f.write_str("Z")?;
                }
                Ok(())
            }
            Value::QUuid(bytes) => f.write_str(&uuid_text(bytes)),
            Value::QUniqueId { context, index } => {
                write!(f, "{}:{index}", uuid_text(context))
            }
            Value::QContentIdList(ids) => {
                for (i, (db, id)) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{db}:{id}")?;
                }
                Ok(())
            }
            Value::QVariant(v) => write!(f, "{v}"),
        }
    }
}

/// Writes `s` in double quotes, escaping quotes, backslashes and control
/// characters so that one value always stays on one terminal line and
/// cannot inject terminal escape sequences.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        write_quoted_char(f, c)?;
    }
    f.write_str("\"")
}

/// One character of [`write_quoted`].
fn write_quoted_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    match c {
        '"' => f.write_str("\\\""),
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\0' => f.write_str("\\0"),
        c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c)),
        c => write!(f, "{c}"),
    }
}

/// Quotes `s` like [`Value`]'s `QString` display, for error messages.
fn quoted(s: &str) -> String {
    struct Quoted<'a>(&'a str);
    impl fmt::Display for Quoted<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_quoted(f, self.0)
        }
    }
    Quoted(s).to_string()
}

/// Lowercase hex of `bytes` with no prefix or separators, e.g. `0a0b`; for
/// showing payloads whose types are unknown.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for &b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

// ---------------------------------------------------------------------------
// Command-line arguments
// ---------------------------------------------------------------------------

/// What is wrong with one command-line argument's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgProblem {
    /// Not a decimal or `0x` hexadecimal integer, or not a floating-point
    /// number for `double`.
    NotANumber,
    /// A well-formed integer outside the type's range (never wrapped).
    OutOfRange,
    /// Not one of `true`, `false`, `1`, `0` (any case).
    NotABool,
    /// A `QByteArray` hex string with an odd number of digits.
    OddHexLength,
    /// A `QByteArray` hex string containing this non-hex character.
    BadHexDigit(char),
    /// Not an ISO date and time (`2024-05-01T12:30:00`, optionally with
    /// `.mmm` and `Z`).
    NotADateTime,
    /// Not a UUID (`{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`, braces
    /// optional).
    NotAUuid,
    /// Not a `QUniqueId` (`UUID:INDEX`).
    NotAUniqueId,
    /// Not a `QContentIdList` (`DB:ID,DB:ID,...`).
    NotAContentIdList,
}

/// Why command-line arguments could not be turned into a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// The number of arguments does not match the signature.
    WrongCount {
        /// How many the signature declares.
        expected: usize,
        /// How many were given.
        given: usize,
    },
    /// One argument's text is not a valid value of its type.
    Invalid {
        /// 1-based position of the argument; `None` when the error comes
        /// from a bare [`parse_arg`] call that does not know it.
        index: Option<usize>,
        /// The declared type of the argument.
        ty: ArgType,
        /// The offending text.
        text: String,
        /// What is wrong with it.
        problem: ArgProblem,
    },
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::WrongCount { expected, given } => {
                let plural = if *expected == 1 { "" } else { "s" };
                let verb = if *given == 1 { "was" } else { "were" };
                write!(
                    f,
                    "message takes {expected} argument{plural} but {given} {verb} given"
                )
            }
            ArgError::Invalid {
                index,
                ty,
                text,
                problem,
            } => {
                match index {
                    Some(i) => write!(f, "argument {i} ({ty}): ")?,
                    None => write!(f, "argument ({ty}): ")?,
                }
                write!(f, "{} ", quoted(text))?;
                write_problem(f, *ty, *problem)
            }
        }
    }
}

/// The part of an [`ArgError::Invalid`] message after the quoted text.
fn write_problem(f: &mut fmt::Formatter<'_>, ty: ArgType, problem: ArgProblem) -> fmt::Result {
    match problem {
        ArgProblem::NotANumber => f.write_str("is not a number"),
        ArgProblem::OutOfRange => match ty.int_range() {
            Some((min, max)) => write!(f, "is out of range for {ty} ({min} to {max})"),
            None => write!(f, "is out of range for {ty}"),
        },
        ArgProblem::NotABool => f.write_str("is not a boolean (use true, false, 1 or 0)"),
        ArgProblem::OddHexLength => f.write_str("has an odd number of hex digits"),
        ArgProblem::BadHexDigit(c) => write!(f, "contains the non-hex character {c:?}"),
        ArgProblem::NotADateTime => {
            f.write_str("is not an ISO date and time (like 2024-05-01T12:30:00)")
        }
        ArgProblem::NotAUuid => {
            f.write_str("is not a UUID (like {xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx})")
        }
        ArgProblem::NotAUniqueId => f.write_str("is not a QUniqueId (UUID:INDEX)"),
        ArgProblem::NotAContentIdList => {
            f.write_str("is not a QContentIdList (DB:ID pairs separated by commas)")
        }
    }
}

impl Error for ArgError {}

/// Parses one command-line argument as a value of type `ty`.
///
/// * Integer types: decimal, or hexadecimal with a `0x` prefix, optionally
///   signed (`-0x10`); the value must fit the type (no wrapping, so
///   `0xffffffff` is *not* a valid `int`). Surrounding whitespace is ignored.
/// * `bool`: `true`, `false`, `1` or `0`, in any case.
/// * `double`: anything [`f64`'s `FromStr`](f64::from_str) accepts,
///   including `1e-3`, `inf` and `NaN`.
/// * `QString`: the text verbatim (never null).
/// * `QByteArray`: an even number of hex digits, optionally prefixed by `0x`
///   (so `0x` alone is an empty array; never null).
/// * `QStringList`: comma-separated elements, verbatim (so elements cannot
///   contain commas); empty text is an empty list.
/// * `QDateTime`: ISO `YYYY-MM-DD[THH:MM[:SS[.mmm]]][Z]`; local time unless
///   `Z` marks UTC.
/// * `QUuid`: `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`, braces optional.
/// * `QUniqueId`: `UUID:INDEX`.
/// * `QContentIdList`: `DB:ID` pairs separated by commas; empty text is an
///   empty list.
/// * `QVariant`: the text as a variant holding a `QString`.
///
/// # Errors
///
/// [`ArgError::Invalid`] with `index: None`; [`encode_args`] fills in the
/// position.
pub fn parse_arg(ty: ArgType, text: &str) -> Result<Value, ArgError> {
    parse_value(ty, text).map_err(|problem| ArgError::Invalid {
        index: None,
        ty,
        text: text.to_owned(),
        problem,
    })
}

/// [`parse_arg`] without the error context.
fn parse_value(ty: ArgType, text: &str) -> Result<Value, ArgProblem> {
    let value = match ty {
        ArgType::Int => Value::Int(parse_int(text)?),
        ArgType::UInt => Value::UInt(parse_int(text)?),
        ArgType::Long => Value::Long(parse_int(text)?),
        ArgType::ULong => Value::ULong(parse_int(text)?),
        ArgType::LongLong => Value::LongLong(parse_int(text)?),
        ArgType::ULongLong => Value::ULongLong(parse_int(text)?),
        ArgType::Bool => Value::Bool(parse_bool(text)?),
        ArgType::Double => Value::Double(text.trim().parse().map_err(|_| ArgProblem::NotANumber)?),
        ArgType::QString => Value::QString(Some(text.to_owned())),
        ArgType::QByteArray => Value::QByteArray(Some(parse_hex(text)?)),
        ArgType::QStringList => Value::QStringList(parse_string_list(text)),
        ArgType::QDateTime => {
            Value::QDateTime(DateTime::parse_iso(text).ok_or(ArgProblem::NotADateTime)?)
        }
        ArgType::QUuid => Value::QUuid(parse_uuid(text).ok_or(ArgProblem::NotAUuid)?),
        ArgType::QUniqueId => {
            let (uuid, index) = text
                .trim()
                .rsplit_once(':')
                .ok_or(ArgProblem::NotAUniqueId)?;
            Value::QUniqueId {
                context: parse_uuid(uuid).ok_or(ArgProblem::NotAUniqueId)?,
                index: parse_int(index).map_err(|_| ArgProblem::NotAUniqueId)?,
            }
        }
        ArgType::QContentIdList => {
            let mut ids = Vec::new();
            for pair in text.split(',').filter(|_| !text.is_empty()) {
                let (db, id) = pair.split_once(':').ok_or(ArgProblem::NotAContentIdList)?;
                let db = parse_int(db).map_err(|_| ArgProblem::NotAContentIdList)?;
                let id = parse_int(id).map_err(|_| ArgProblem::NotAContentIdList)?;
                ids.push((db, id));
            }
            Value::QContentIdList(ids)
        }
        ArgType::QVariant => Value::QVariant(Variant::Value(Box::new(Value::QString(Some(
            text.to_owned(),
        ))))),
    };
    Ok(value)
}

/// Parses one command-line argument the way the original `qcop` tool did,
/// guessing where the text does not fit: a number that does not parse (or
/// does not fit) is 0, hex digits are read skipping any other character
/// (and an odd last digit), an unparsable date, UUID or id is null. The
/// guess comes back with the problem it papered over, for a warning.
/// Values that parse are read as [`parse_arg`] reads them.
///
/// # Errors
///
/// A `bool` that is not `true`, `false`, `1` or `0`: the original refused
/// those too.
pub fn parse_arg_lenient(ty: ArgType, text: &str) -> Result<(Value, Option<ArgProblem>), ArgError> {
    let problem = match parse_value(ty, text) {
        Ok(value) => return Ok((value, None)),
        Err(problem) => problem,
    };
    let guess = match ty {
        ArgType::Bool => return Err(parse_arg(ty, text).unwrap_err()),
        ArgType::QByteArray => Value::QByteArray(Some(parse_hex_lenient(text))),
        ArgType::QContentIdList => Value::QContentIdList(
            text.split(',')
                .map(|pair| {
                    let (db, id) = pair.split_once(':').unwrap_or((pair, ""));
                    (parse_int(db).unwrap_or(0), parse_int(id).unwrap_or(0))
                })
                .collect(),
        ),
        ArgType::QUniqueId => match text.trim().rsplit_once(':') {
            Some((uuid, index)) => Value::QUniqueId {
                context: parse_uuid(uuid).unwrap_or([0; 16]),
                index: parse_int(index).unwrap_or(0),
            },
            None => Value::null_of(ty),
        },
        _ => Value::null_of(ty),
    };
    Ok((guess, Some(problem)))
}

/// Hex digits read as the original tool read them: every other character
/// skipped, an odd last digit dropped.
fn parse_hex_lenient(text: &str) -> Vec<u8> {
    let nibbles: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(hex_value)
        .collect();
    nibbles
        .chunks_exact(2)
        .map(|pair| (pair[0] << 4) | pair[1])
        .collect()
}

/// Parses an integer and range-checks it into `T`.
fn parse_int<T: TryFrom<i128>>(text: &str) -> Result<T, ArgProblem> {
    T::try_from(parse_wide_int(text)?).map_err(|_| ArgProblem::OutOfRange)
}

/// Parses a signed decimal or `0x` hex integer into an `i128`, which holds
/// every value of every supported integer type, so range checks happen once
/// in [`parse_int`] rather than by wrapping.
fn parse_wide_int(text: &str) -> Result<i128, ArgProblem> {
    let text = text.trim();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (radix, digits) = match unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        Some(hex_digits) => (16, hex_digits),
        None => (10, unsigned),
    };
    // from_str_radix would accept another sign here ("--5"); insist on digits.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(ArgProblem::NotANumber);
    }
    // The digits are valid, so failure can only mean overflow.
    let magnitude = u128::from_str_radix(digits, radix).map_err(|_| ArgProblem::OutOfRange)?;
    let magnitude = i128::try_from(magnitude).map_err(|_| ArgProblem::OutOfRange)?;
    Ok(if negative { -magnitude } else { magnitude })
}

/// Parses `true`/`false`/`1`/`0`, ignoring case and surrounding whitespace.
fn parse_bool(text: &str) -> Result<bool, ArgProblem> {
    let text = text.trim();
    if text == "1" || text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if text == "0" || text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ArgProblem::NotABool)
    }
}

/// Parses hex digits (optional `0x` prefix, even count) into bytes.
fn parse_hex(text: &str) -> Result<Vec<u8>, ArgProblem> {
    let text = text.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(ArgProblem::BadHexDigit(bad));
    }
    // All characters are ASCII hex digits from here on, one byte each.
    let digits = digits.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(ArgProblem::OddHexLength);
    }
    Ok(digits
        .chunks_exact(2)
        .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1]))
        .collect())
}

/// Value of an ASCII hex digit already validated by the caller.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// Splits a comma-separated list; empty text is an empty list rather than
/// a list holding one empty string, which is the more useful reading.
fn parse_string_list(text: &str) -> Vec<Option<String>> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(|s| Some(s.to_owned())).collect()
    }
}

/// Parses command-line arguments against `types` and encodes them as one
/// QCOP payload.
///
/// # Errors
///
/// [`ArgError::WrongCount`] if `args` and `types` differ in length, else
/// the first [`ArgError::Invalid`] with its 1-based `index` set.
pub fn encode_args(types: &[ArgType], args: &[&str]) -> Result<Vec<u8>, ArgError> {
    if types.len() != args.len() {
        return Err(ArgError::WrongCount {
            expected: types.len(),
            given: args.len(),
        });
    }
    let mut out = Vec::new();
    for (i, (&ty, &text)) in types.iter().zip(args).enumerate() {
        let value = parse_arg(ty, text).map_err(|e| with_index(e, i + 1))?;
        value.encode(&mut out);
    }
    Ok(out)
}

/// Records the 1-based argument position in an [`ArgError::Invalid`].
fn with_index(err: ArgError, position: usize) -> ArgError {
    match err {
        ArgError::Invalid {
            ty, text, problem, ..
        } => ArgError::Invalid {
            index: Some(position),
            ty,
            text,
            problem,
        },
        err @ ArgError::WrongCount { .. } => err,
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Why a received payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ends before a value (or a length or count prefix) does.
    Truncated {
        /// Bytes the next item needs (for a `QStringList`, at least 4 per
        /// declared element).
        needed: usize,
        /// Bytes actually left.
        available: usize,
    },
    /// A `QString` declares an odd byte length, impossible for UTF-16.
    OddUtf16Length,
    /// Bytes remain after the last argument of the signature.
    TrailingBytes(usize),
    /// A `QVariant` of a type id qcop does not decode.
    UnsupportedVariant(u32),
    /// `QVariant` lists or maps nested deeper than qcop decodes.
    VariantTooDeep,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed, available } => write!(
                f,
                "payload truncated: needed {needed} bytes but only {available} remain"
            ),
            DecodeError::OddUtf16Length => {
                f.write_str("QString has an odd byte length, impossible for UTF-16")
            }
            DecodeError::TrailingBytes(n) => {
                write!(f, "{n} unexpected bytes after the last argument")
            }
            DecodeError::UnsupportedVariant(id) => {
                write!(f, "QVariant of type {id}, which qcop does not decode")
            }
            DecodeError::VariantTooDeep => write!(
                f,
                "QVariant lists or maps nested more than {MAX_VARIANT_DEPTH} deep"
            ),
        }
    }
}

impl Error for DecodeError {}

/// A cursor over an untrusted payload whose reads fail instead of panicking.
struct Reader<'a> {
    rest: &'a [u8],
    /// Read `bool` arguments as 4-byte integers, as the original `qcop`
    /// tool (and Qtopia 1/2 and Opie) wrote them.
    wide_bools: bool,
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Reader<'a> {
        Reader {
            rest,
            wide_bools: false,
        }
    }

    /// Takes the next `n` bytes, or reports how short the payload is.
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let head = self.rest.get(..n).ok_or(DecodeError::Truncated {
            needed: n,
            available: self.rest.len(),
        })?;
        self.rest = &self.rest[head.len()..];
        Ok(head)
    }

    /// Takes the next `N` bytes as an array, for `from_be_bytes`.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// Reads a big-endian `u32` length or count prefix.
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    /// Reads a `QString` as UTF-16 code units; `None` for a null string.
    fn qstring_units(&mut self) -> Result<Option<Vec<u16>>, DecodeError> {
        let len = self.u32()?;
        if len == NULL_MARKER {
            return Ok(None);
        }
        if len % 2 != 0 {
            return Err(DecodeError::OddUtf16Length);
        }
        // take() checks the length against the real payload, so a lying
        // prefix fails here before anything is allocated.
        let bytes = self.take(to_usize(len))?;
        Ok(Some(
            bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect(),
        ))
    }

    /// Reads a `QString`; `None` for a null string. An unpaired surrogate
    /// becomes U+FFFD (see [`Reader::qstring_value`] for keeping it).
    fn qstring(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(self.qstring_units()?.map(|units| {
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(REPLACEMENT_CHARACTER))
                .collect()
        }))
    }

    /// Reads a `QString` argument, keeping an unpaired surrogate as Qt does
    /// ([`Value::QStringUtf16`]).
    fn qstring_value(&mut self) -> Result<Value, DecodeError> {
        Ok(match self.qstring_units()? {
            None => Value::QString(None),
            Some(units) => match String::from_utf16(&units) {
                Ok(text) => Value::QString(Some(text)),
                Err(_) => Value::QStringUtf16(units),
            },
        })
    }

    /// Reads a `QByteArray`; `None` for a null array.
    fn qbytearray(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        let len = self.u32()?;
        if len == NULL_MARKER {
            return Ok(None);
        }
        Ok(Some(self.take(to_usize(len))?.to_vec()))
    }

    /// Reads a count prefix of items that take at least `min_size` bytes
    /// each, checking it against the bytes left so that a lying count
    /// cannot make a large allocation.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let count = to_usize(self.u32()?);
        if count > self.rest.len() / min_size {
            return Err(DecodeError::Truncated {
                needed: count.saturating_mul(min_size),
                available: self.rest.len(),
            });
        }
        Ok(count)
    }

    /// Reads a `QStringList`, keeping null elements.
    fn qstringlist(&mut self) -> Result<Vec<Option<String>>, DecodeError> {
        let count = self.count(4)?;
        let mut list = Vec::with_capacity(count);
        for _ in 0..count {
            list.push(self.qstring()?);
        }
        Ok(list)
    }

    fn datetime(&mut self) -> Result<DateTime, DecodeError> {
        Ok(DateTime {
            julian_day: self.u32()?,
            msecs: self.u32()?,
            spec: self.array::<1>()?[0],
        })
    }

    /// Reads a `QVariant` nested `depth` levels deep in lists and maps.
    fn variant(&mut self, depth: usize) -> Result<Variant, DecodeError> {
        use variant_type as t;
        if depth > MAX_VARIANT_DEPTH {
            return Err(DecodeError::VariantTooDeep);
        }
        let id = self.u32()?;
        let _null = self.array::<1>()?;
        let boxed = |v: Value| Variant::Value(Box::new(v));
        Ok(match id {
            t::INVALID => {
                self.qstring()?;
                Variant::Invalid
            }
            t::BOOL => boxed(Value::Bool(self.array::<1>()?[0] != 0)),
            t::INT => boxed(Value::Int(i32::from_be_bytes(self.array()?))),
            t::UINT => boxed(Value::UInt(self.u32()?)),
            t::LONGLONG => boxed(Value::LongLong(i64::from_be_bytes(self.array()?))),
            t::ULONGLONG => boxed(Value::ULongLong(u64::from_be_bytes(self.array()?))),
            t::DOUBLE => boxed(Value::Double(f64::from_be_bytes(self.array()?))),
            t::CHAR => Variant::Char(u16::from_be_bytes(self.array()?)),
            t::STRING => boxed(Value::QString(self.qstring()?)),
            t::STRINGLIST => boxed(Value::QStringList(self.qstringlist()?)),
            t::BYTEARRAY => boxed(Value::QByteArray(self.qbytearray()?)),
            t::DATE => Variant::Date(self.u32()?),
            t::TIME => Variant::Time(self.u32()?),
            t::DATETIME => boxed(Value::QDateTime(self.datetime()?)),
            t::LIST => {
                // A variant takes at least 5 bytes (type id and null flag).
                let count = self.count(5)?;
                let mut list = Vec::with_capacity(count);
                for _ in 0..count {
                    list.push(self.variant(depth + 1)?);
                }
                Variant::List(list)
            }
            t::MAP => {
                let count = self.count(9)?;
                let mut map = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = self.qstring()?;
                    map.push((key, self.variant(depth + 1)?));
                }
                Variant::Map(map)
            }
            other => return Err(DecodeError::UnsupportedVariant(other)),
        })
    }

    /// Reads one value of type `ty`.
    fn value(&mut self, ty: ArgType) -> Result<Value, DecodeError> {
        let value = match ty {
            ArgType::Int => Value::Int(i32::from_be_bytes(self.array()?)),
            ArgType::UInt => Value::UInt(u32::from_be_bytes(self.array()?)),
            ArgType::Long => Value::Long(i64::from_be_bytes(self.array()?)),
            ArgType::ULong => Value::ULong(u64::from_be_bytes(self.array()?)),
            ArgType::LongLong => Value::LongLong(i64::from_be_bytes(self.array()?)),
            ArgType::ULongLong => Value::ULongLong(u64::from_be_bytes(self.array()?)),
            ArgType::Bool if self.wide_bools => Value::Bool(self.u32()? != 0),
            // Qt reads any nonzero byte as true, so do the same.
            ArgType::Bool => Value::Bool(self.array::<1>()?[0] != 0),
            ArgType::Double => Value::Double(f64::from_be_bytes(self.array()?)),
            ArgType::QString => self.qstring_value()?,
            ArgType::QByteArray => Value::QByteArray(self.qbytearray()?),
            ArgType::QStringList => Value::QStringList(self.qstringlist()?),
            ArgType::QDateTime => Value::QDateTime(self.datetime()?),
            ArgType::QUuid => Value::QUuid(self.array()?),
            ArgType::QUniqueId => Value::QUniqueId {
                context: self.array()?,
                index: self.u32()?,
            },
            ArgType::QContentIdList => {
                let count = self.count(12)?;
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.push((self.u32()?, u64::from_be_bytes(self.array()?)));
                }
                Value::QContentIdList(ids)
            }
            ArgType::QVariant => Value::QVariant(self.variant(0)?),
        };
        Ok(value)
    }
}

/// Widens a wire length; saturating keeps the later bounds check correct
/// even on targets where `usize` is narrower than 32 bits.
fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Decodes one value of type `ty` from the start of `buf`, returning it and
/// the number of bytes it occupied.
///
/// Safe on untrusted input: never panics, and allocates at most a small
/// multiple of `buf.len()`. A `QString` with an unpaired surrogate is kept
/// as [`Value::QStringUtf16`]; inside a `QStringList` (or a `QVariant`) the
/// surrogate becomes U+FFFD.
///
/// # Errors
///
/// [`DecodeError::Truncated`] if `buf` is too short for the value (checked
/// before allocating), [`DecodeError::OddUtf16Length`] for an impossible
/// `QString` length, [`DecodeError::UnsupportedVariant`] and
/// [`DecodeError::VariantTooDeep`] for a `QVariant` qcop cannot read.
pub fn decode_value(ty: ArgType, buf: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut reader = Reader::new(buf);
    let value = reader.value(ty)?;
    Ok((value, buf.len() - reader.rest.len()))
}

/// Decodes a whole payload holding exactly one value of each of `types`,
/// in order. Safe on untrusted input, like [`decode_value`].
///
/// # Errors
///
/// Any error of [`decode_value`], or [`DecodeError::TrailingBytes`] if bytes
/// are left over after the last argument.
pub fn decode_args(types: &[ArgType], payload: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let mut reader = Reader::new(payload);
    let values = read_all(&mut reader, types)?;
    if !reader.rest.is_empty() {
        return Err(DecodeError::TrailingBytes(reader.rest.len()));
    }
    Ok(values)
}

fn read_all(reader: &mut Reader<'_>, types: &[ArgType]) -> Result<Vec<Value>, DecodeError> {
    let mut values = Vec::with_capacity(types.len());
    for &ty in types {
        values.push(reader.value(ty)?);
    }
    Ok(values)
}

/// A payload decoded the way a Qt receiver reads it (see [`decode_message`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// One value per argument type.
    pub values: Vec<Value>,
    /// Bytes left after the last argument, which Qt ignores.
    pub trailing: usize,
    /// The `bool` arguments were 4-byte integers (an old sender).
    pub wide_bools: bool,
    /// The payload ended early (or was corrupt) at this argument: it and
    /// every later one are [`Value::null_of`] their type, as Qt reads an
    /// exhausted stream.
    pub short_at: Option<usize>,
}

/// Decodes a received payload as a Qt receiver would, never failing: bytes
/// after the last argument are ignored, and arguments the payload does not
/// hold read as null or zero ([`Decoded::short_at`] says where). A payload
/// whose `bool` arguments only fit as 4-byte integers, as the original
/// `qcop` tool, Qtopia 1/2 and Opie wrote them, is read that way.
/// Safe on untrusted input, like [`decode_value`].
#[must_use]
pub fn decode_message(types: &[ArgType], payload: &[u8]) -> Decoded {
    let attempt = |wide_bools| {
        let mut reader = Reader {
            rest: payload,
            wide_bools,
        };
        read_all(&mut reader, types).map(|values| (values, reader.rest.len()))
    };
    let narrow = attempt(false);
    if !matches!(narrow, Ok((_, 0))) && types.contains(&ArgType::Bool) {
        if let Ok((values, 0)) = attempt(true) {
            return Decoded {
                values,
                trailing: 0,
                wide_bools: true,
                short_at: None,
            };
        }
    }
    if let Ok((values, trailing)) = narrow {
        return Decoded {
            values,
            trailing,
            wide_bools: false,
            short_at: None,
        };
    }
    // Read as far as the payload goes, then the nulls Qt would produce.
    let mut reader = Reader::new(payload);
    let mut values = Vec::with_capacity(types.len());
    let mut short_at = None;
    for (i, &ty) in types.iter().enumerate() {
        match short_at.is_none().then(|| reader.value(ty)) {
            Some(Ok(v)) => values.push(v),
            Some(Err(_)) => {
                short_at = Some(i);
                values.push(Value::null_of(ty));
            }
            None => values.push(Value::null_of(ty)),
        }
    }
    Decoded {
        values,
        trailing: 0,
        wide_bools: false,
        short_at,
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        value.encode(&mut out);
        out
    }

    /// Checks the exact bytes and that they decode back to the same value.
    fn check_bytes(value: Value, bytes: &[u8]) {
        assert_eq!(encoded(&value), bytes, "encoding of {value:?}");
        assert_eq!(
            decode_value(value.arg_type(), bytes),
            Ok((value.clone(), bytes.len())),
            "decoding of {value:?}"
        );
    }

    fn s(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    // ---- exact encodings ---------------------------------------------------

    #[test]
    fn integer_encodings() {
        check_bytes(Value::Int(-2), &[0xff, 0xff, 0xff, 0xfe]);
        check_bytes(Value::Int(1), &[0, 0, 0, 1]);
        check_bytes(Value::Int(i32::MIN), &[0x80, 0, 0, 0]);
        check_bytes(Value::UInt(0xdead_beef), &[0xde, 0xad, 0xbe, 0xef]);
        check_bytes(Value::Long(-1), &[0xff; 8]);
        check_bytes(Value::Long(1), &[0, 0, 0, 0, 0, 0, 0, 1]);
        check_bytes(Value::ULong(u64::MAX), &[0xff; 8]);
        check_bytes(
            Value::LongLong(0x0102_0304_0506_0708),
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        check_bytes(
            Value::ULongLong(0x8000_0000_0000_0001),
            &[0x80, 0, 0, 0, 0, 0, 0, 1],
        );
    }

    #[test]
    fn bool_and_double_encodings() {
        check_bytes(Value::Bool(true), &[0x01]);
        check_bytes(Value::Bool(false), &[0x00]);
        // Any nonzero byte is true, like Qt.
        assert_eq!(
            decode_value(ArgType::Bool, &[0x02]),
            Ok((Value::Bool(true), 1))
        );
        check_bytes(Value::Double(1.0), &[0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        check_bytes(Value::Double(-2.5), &[0xc0, 0x04, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn qstring_encodings() {
        check_bytes(Value::QString(s("hi")), &[0, 0, 0, 4, 0, 0x68, 0, 0x69]);
        check_bytes(Value::QString(s("")), &[0, 0, 0, 0]);
        check_bytes(Value::QString(None), &[0xff, 0xff, 0xff, 0xff]);
        check_bytes(Value::QString(s("é")), &[0, 0, 0, 2, 0, 0xe9]);
        // U+1F600 is outside the BMP, so it becomes the surrogate pair D83D DE00.
        check_bytes(
            Value::QString(s("\u{1F600}")),
            &[0, 0, 0, 4, 0xd8, 0x3d, 0xde, 0x00],
        );
    }

    #[test]
    fn qbytearray_encodings() {
        check_bytes(
            Value::QByteArray(Some(vec![0x0a, 0x0b])),
            &[0, 0, 0, 2, 0x0a, 0x0b],
        );
        check_bytes(Value::QByteArray(Some(vec![])), &[0, 0, 0, 0]);
        check_bytes(Value::QByteArray(None), &[0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn qstringlist_encodings() {
        check_bytes(
            Value::QStringList(vec![s("a")]),
            &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0x61],
        );
        check_bytes(Value::QStringList(vec![]), &[0, 0, 0, 0]);
        check_bytes(
            Value::QStringList(vec![s(""), s("ab")]),
            &[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0x61, 0, 0x62],
        );
        // A null element is kept, as Qt keeps it.
        check_bytes(
            Value::QStringList(vec![None, s("")]),
            &[0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        );
    }

    #[test]
    fn encode_args_concatenates() {
        let payload = encode_args(&[ArgType::Int, ArgType::QString], &["5", "hi"]).unwrap();
        assert_eq!(payload, [0, 0, 0, 5, 0, 0, 0, 4, 0, 0x68, 0, 0x69]);
        assert_eq!(
            decode_args(&[ArgType::Int, ArgType::QString], &payload),
            Ok(vec![Value::Int(5), Value::QString(s("hi"))])
        );
        assert_eq!(encode_args(&[], &[]), Ok(vec![]));
        assert_eq!(decode_args(&[], &[]), Ok(vec![]));
    }

    // ---- decoding errors ---------------------------------------------------

    #[test]
    fn decode_truncated() {
        assert_eq!(
            decode_value(ArgType::Int, &[0, 0, 1]),
            Err(DecodeError::Truncated {
                needed: 4,
                available: 3
            })
        );
        assert_eq!(
            decode_value(ArgType::Bool, &[]),
            Err(DecodeError::Truncated {
                needed: 1,
                available: 0
            })
        );
        // A huge declared length fails against the real size, no allocation.
        assert_eq!(
            decode_value(ArgType::QString, &[0x7f, 0xff, 0xff, 0xfe, 0, 0x61]),
            Err(DecodeError::Truncated {
                needed: 0x7fff_fffe,
                available: 2
            })
        );
        assert_eq!(
            decode_value(ArgType::QByteArray, &[0xff, 0xff, 0xff, 0xfe, 1]),
            Err(DecodeError::Truncated {
                needed: 0xffff_fffe,
                available: 1
            })
        );
        assert_eq!(
            decode_value(ArgType::QStringList, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            Err(DecodeError::Truncated {
                needed: to_usize(0xffff_ffff).saturating_mul(4),
                available: 4
            })
        );
        // Count fits the /4 bound but an element is cut short.
        assert_eq!(
            decode_value(ArgType::QStringList, &[0, 0, 0, 1, 0, 0, 0, 2, 0]),
            Err(DecodeError::Truncated {
                needed: 2,
                available: 1
            })
        );
    }

    #[test]
    fn decode_odd_and_bad_utf16() {
        assert_eq!(
            decode_value(ArgType::QString, &[0, 0, 0, 3, 0, 0x61, 0]),
            Err(DecodeError::OddUtf16Length)
        );
        // An unpaired high surrogate is kept, as Qt keeps it.
        check_bytes(
            Value::QStringUtf16(vec![0xd800, 0x61]),
            &[0, 0, 0, 4, 0xd8, 0x00, 0, 0x61],
        );
        assert_eq!(
            Value::QStringUtf16(vec![0xd800, 0x61]).to_string(),
            r#""\u{d800}a""#
        );
        // So is a lone low surrogate.
        check_bytes(Value::QStringUtf16(vec![0xdc00]), &[0, 0, 0, 2, 0xdc, 0x00]);
        // Inside a list it is replaced.
        assert_eq!(
            decode_value(ArgType::QStringList, &[0, 0, 0, 1, 0, 0, 0, 2, 0xdc, 0x00]),
            Ok((Value::QStringList(vec![s("\u{FFFD}")]), 10))
        );
    }

    #[test]
    fn decode_reports_consumed_and_trailing() {
        assert_eq!(
            decode_value(ArgType::Int, &[0, 0, 0, 7, 9, 9]),
            Ok((Value::Int(7), 4))
        );
        assert_eq!(
            decode_args(&[ArgType::Int], &[0, 0, 0, 7, 9]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            decode_args(&[], &[1, 2]),
            Err(DecodeError::TrailingBytes(2))
        );
        assert_eq!(
            DecodeError::TrailingBytes(1).to_string(),
            "1 unexpected bytes after the last argument"
        );
        assert_eq!(
            DecodeError::Truncated {
                needed: 4,
                available: 3
            }
            .to_string(),
            "payload truncated: needed 4 bytes but only 3 remain"
        );
    }

    // ---- signatures --------------------------------------------------------

    fn normalized(sig: &str) -> String {
        parse_signature(sig)
            .unwrap_or_else(|e| panic!("{sig:?}: {e}"))
            .normalized()
    }

    #[test]
    fn signature_normalization() {
        assert_eq!(
            normalized("setVolume(int,QString)"),
            "setVolume(int,QString)"
        );
        assert_eq!(
            normalized("  setVolume ( int , const QString & ) "),
            "setVolume(int,QString)"
        );
        assert_eq!(
            normalized("f(unsigned int, unsigned   long,qint64,quint64)"),
            "f(uint,ulong,qint64,quint64)"
        );
        // Qt's typedef names keep their spelling and are encoded as what they stand for.
        let sig = parse_signature(" f ( qint64 , const quint64 & , qint32, quint32 ) ").unwrap();
        assert_eq!(sig.normalized(), "f(qint64,quint64,qint32,quint32)");
        assert_eq!(sig.as_str(), "f(qint64,quint64,qint32,quint32)");
        assert_eq!(
            sig.types,
            [
                ArgType::LongLong,
                ArgType::ULongLong,
                ArgType::Int,
                ArgType::UInt
            ]
        );
        assert_ne!(
            sig,
            parse_signature("f(qlonglong,qulonglong,int,uint)").unwrap()
        );
        assert_eq!(normalized("f(void)"), "f()");
        assert_eq!(normalized("f(unsigned)"), "f(uint)");
        assert_eq!(normalized("f(const QString&)"), "f(QString)");
        assert_eq!(normalized("f(QString const &)"), "f(QString)");
        assert_eq!(normalized("f(const\tQStringList  &)"), "f(QStringList)");
        assert_eq!(normalized("f(const int)"), "f(int)");
        assert_eq!(normalized("f(const unsigned long&)"), "f(ulong)");
        assert_eq!(normalized("ping()"), "ping()");
        assert_eq!(normalized("ping( )"), "ping()");
        assert_eq!(
            normalized("_x9(bool,double,QByteArray)"),
            "_x9(bool,double,QByteArray)"
        );
        let sig = parse_signature("a(long,qlonglong)").unwrap();
        assert_eq!(sig.name, "a");
        assert_eq!(sig.types, [ArgType::Long, ArgType::LongLong]);
        assert_eq!(sig.to_string(), "a(long,qlonglong)");
        assert_eq!(
            "a(long)".parse::<Signature>().unwrap().types,
            [ArgType::Long]
        );
    }

    #[test]
    fn signature_errors() {
        use SignatureError::*;
        let cases: &[(&str, SignatureError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("ping", MissingParens),
            ("f(int", MissingParens),
            ("(int)", BadName),
            ("1abc()", BadName),
            ("a-b()", BadName),
            ("set Volume(int)", BadName),
            ("f(int)x", TrailingGarbage),
            ("f(int))", TrailingGarbage),
            ("f(int,)", EmptyArgument),
            ("f(,int)", EmptyArgument),
            ("f(QPoint)", UnknownType("QPoint".into())),
            // A non-const reference is a different type in Qt.
            ("f(int&)", UnknownType("int&".into())),
            (
                "f(int, QMap < QString , int >)",
                UnknownType("QMap<QString,int>".into()),
            ),
        ];
        for (sig, expected) in cases {
            assert_eq!(parse_signature(sig).as_ref(), Err(expected), "{sig:?}");
        }
        assert!(UnknownType("QPoint".into())
            .to_string()
            .contains("\"QPoint\""));
        assert!(MissingParens.to_string().contains("ping()"));
    }

    #[test]
    fn qt_normalization_rules() {
        let cases: &[(&str, &str)] = &[
            // Every spelling of one signature.
            ("reboot()", "reboot()"),
            ("reboot( )", "reboot()"),
            ("reboot ()", "reboot()"),
            (" reboot()", "reboot()"),
            ("reboot(  )", "reboot()"),
            ("\treboot(\t) ", "reboot()"),
            ("reboot(void)", "reboot()"),
            // The argument types.
            ("f(const QString &, int)", "f(QString,int)"),
            ("f(QString const&)", "f(QString)"),
            ("f(const int)", "f(int)"),
            ("f(int &)", "f(int&)"),
            ("f(const char *)", "f(const char*)"),
            ("f(char const *)", "f(const char*)"),
            ("f(char * const)", "f(char*const)"),
            ("f(unsigned)", "f(uint)"),
            ("f(unsigned int)", "f(uint)"),
            ("f(unsigned long)", "f(ulong)"),
            ("f(unsigned long int)", "f(unsigned long int)"),
            ("f(unsigned long long)", "f(unsigned long long)"),
            ("f(unsigned short)", "f(unsigned short)"),
            ("f(unsigned char)", "f(unsigned char)"),
            ("f(unsignedness)", "f(unsignedness)"),
            ("f(long long)", "f(long long)"),
            ("f(struct Point)", "f(Point)"),
            ("f(class QObject *)", "f(QObject*)"),
            ("f(enum Mode)", "f(Mode)"),
            ("f(qint64, quint64)", "f(qint64,quint64)"),
            ("f(qlonglong)", "f(qlonglong)"),
            // Templates: arguments normalised, their const kept, no `>>`.
            ("f(const QList<QString> &)", "f(QList<QString>)"),
            (
                "f(QMap<QString, QList<int>>)",
                "f(QMap<QString,QList<int> >)",
            ),
            ("f(QList<const char *>)", "f(QList<const char*>)"),
            ("f(QList<unsigned>)", "f(QList<uint>)"),
            // Whole declarations (return type, name, arguments) and odd types.
            (" void  foo( ) ", "void foo()"),
            ("void foo( void ( * ) ( void ))", "void foo(void(*)())"),
            ("void foo( void * )", "void foo(void*)"),
            ("QString &foo (const QString & )", "QString&foo(QString)"),
            ("void foo(QString * const)", "void foo(QString*const)"),
            (
                "void foo(const int, int const, const int &, int const &)",
                "void foo(int,int,int,int)",
            ),
            ("void foo(QList<int const*>)", "void foo(QList<const int*>)"),
            ("void foo(Foo<Bar>const)", "void foo(Foo<Bar>)"),
            (
                "void foo(Foo<Bar>const*const *const)",
                "void foo(Foo<Bar>*const*const)",
            ),
            ("void foo(const Foo<Bar>&)", "void foo(Foo<Bar>)"),
            ("a( b ( ( ", "a(b(("),
            // Not signatures: only whitespace goes.
            ("", ""),
            ("  ", ""),
            ("plain name", "plain name"),
            ("a - b", "a-b"),
            ("f(int)  x", "f(int)x"),
            ("f(int", "f(int"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_signature(raw), *want, "{raw:?}");
            // The canonical form is a fixed point.
            assert_eq!(normalize_signature(want), *want, "{want:?}");
        }
        assert!(matches!(
            normalize_signature("f(int,QString)"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            normalize_signature("set Volume"),
            Cow::Borrowed(_)
        ));
        // Hostile nesting is bounded, not recursed without end.
        let deep = format!("f({}int{})", "QList<".repeat(5000), ">".repeat(5000));
        let _ = normalize_signature(&deep);
    }

    #[test]
    fn lenient_signature() {
        assert_eq!(
            parse_signature_lenient("f(int, QMap<QString, int>, const QPoint &)"),
            Ok((
                "f(int,QMap<QString,int>,QPoint)".to_owned(),
                vec![Some(ArgType::Int), None, None]
            ))
        );
        assert_eq!(
            parse_signature_lenient(" g ( unsigned ) "),
            Ok(("g(uint)".to_owned(), vec![Some(ArgType::UInt)]))
        );
        assert_eq!(
            parse_signature_lenient("g"),
            Err(SignatureError::MissingParens)
        );
    }

    #[test]
    fn arg_type_names() {
        for ty in ArgType::ALL {
            assert_eq!(ArgType::parse(ty.name()), Some(ty));
            assert_eq!(ty.to_string(), ty.name());
        }
        assert_eq!(ArgType::parse("unsigned int"), Some(ArgType::UInt));
        assert_eq!(ArgType::parse("unsigned long"), Some(ArgType::ULong));
        assert_eq!(ArgType::parse("qint64"), Some(ArgType::LongLong));
        assert_eq!(ArgType::parse("quint64"), Some(ArgType::ULongLong));
        assert_eq!(ArgType::parse("qint32"), Some(ArgType::Int));
        assert_eq!(ArgType::parse("quint32"), Some(ArgType::UInt));
        assert_eq!(ArgType::parse("QPoint"), None);
        assert_eq!(ArgType::parse("Int"), None);
    }

    // ---- command-line arguments --------------------------------------------

    fn problem(ty: ArgType, text: &str) -> ArgProblem {
        match parse_arg(ty, text) {
            Err(ArgError::Invalid { problem, .. }) => problem,
            other => panic!("{ty} {text:?}: expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn parse_integers() {
        assert_eq!(parse_arg(ArgType::Int, "0x10"), Ok(Value::Int(16)));
        assert_eq!(parse_arg(ArgType::Int, "-0x10"), Ok(Value::Int(-16)));
        assert_eq!(parse_arg(ArgType::Int, "+5"), Ok(Value::Int(5)));
        assert_eq!(parse_arg(ArgType::Int, " 7 "), Ok(Value::Int(7)));
        assert_eq!(
            parse_arg(ArgType::Int, "-2147483648"),
            Ok(Value::Int(i32::MIN))
        );
        assert_eq!(
            parse_arg(ArgType::UInt, "0XFFFFFFFF"),
            Ok(Value::UInt(u32::MAX))
        );
        assert_eq!(parse_arg(ArgType::Long, "-1"), Ok(Value::Long(-1)));
        assert_eq!(
            parse_arg(ArgType::ULongLong, "18446744073709551615"),
            Ok(Value::ULongLong(u64::MAX))
        );
        assert_eq!(problem(ArgType::Int, "2147483648"), ArgProblem::OutOfRange);
        assert_eq!(problem(ArgType::Int, "0xffffffff"), ArgProblem::OutOfRange);
        assert_eq!(problem(ArgType::UInt, "-1"), ArgProblem::OutOfRange);
        assert_eq!(
            problem(ArgType::ULong, "18446744073709551616"),
            ArgProblem::OutOfRange
        );
        assert_eq!(
            problem(
                ArgType::LongLong,
                "999999999999999999999999999999999999999999"
            ),
            ArgProblem::OutOfRange
        );
        for bad in [
            "", "abc", "--1", "+-1", "-+1", "0x", "1.5", "1e3", "0x-1", "٣",
        ] {
            assert_eq!(
                problem(ArgType::Int, bad),
                ArgProblem::NotANumber,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parse_other_types() {
        for (text, v) in [("true", true), ("FALSE", false), ("1", true), ("0", false)] {
            assert_eq!(parse_arg(ArgType::Bool, text), Ok(Value::Bool(v)));
        }
        assert_eq!(problem(ArgType::Bool, "yes"), ArgProblem::NotABool);
        assert_eq!(parse_arg(ArgType::Double, "-2.5"), Ok(Value::Double(-2.5)));
        assert_eq!(parse_arg(ArgType::Double, "1e3"), Ok(Value::Double(1000.0)));
        assert_eq!(problem(ArgType::Double, "x"), ArgProblem::NotANumber);
        assert_eq!(
            parse_arg(ArgType::QString, " a\"b "),
            Ok(Value::QString(s(" a\"b ")))
        );
        assert_eq!(
            parse_arg(ArgType::QByteArray, "0x0A0b"),
            Ok(Value::QByteArray(Some(vec![0x0a, 0x0b])))
        );
        assert_eq!(
            parse_arg(ArgType::QByteArray, "ff00"),
            Ok(Value::QByteArray(Some(vec![0xff, 0x00])))
        );
        assert_eq!(
            parse_arg(ArgType::QByteArray, "0x"),
            Ok(Value::QByteArray(Some(vec![])))
        );
        assert_eq!(
            problem(ArgType::QByteArray, "abc"),
            ArgProblem::OddHexLength
        );
        assert_eq!(
            problem(ArgType::QByteArray, "zz"),
            ArgProblem::BadHexDigit('z')
        );
        assert_eq!(
            problem(ArgType::QByteArray, "0xé0"),
            ArgProblem::BadHexDigit('é')
        );
        assert_eq!(
            parse_arg(ArgType::QStringList, ""),
            Ok(Value::QStringList(vec![]))
        );
        assert_eq!(
            parse_arg(ArgType::QStringList, "a,b,"),
            Ok(Value::QStringList(vec![s("a"), s("b"), s("")]))
        );
    }

    #[test]
    fn arg_error_messages() {
        let err = encode_args(&[ArgType::Int, ArgType::Int], &["1", "abc"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"argument 2 (int): "abc" is not a number"#
        );
        let err = encode_args(&[ArgType::Int], &["1", "2"]).unwrap_err();
        assert_eq!(
            err,
            ArgError::WrongCount {
                expected: 1,
                given: 2
            }
        );
        assert_eq!(err.to_string(), "message takes 1 argument but 2 were given");
        assert_eq!(
            encode_args(&[ArgType::Int, ArgType::Bool], &[])
                .unwrap_err()
                .to_string(),
            "message takes 2 arguments but 0 were given"
        );
        assert_eq!(
            parse_arg(ArgType::Int, "3000000000")
                .unwrap_err()
                .to_string(),
            r#"argument (int): "3000000000" is out of range for int (-2147483648 to 2147483647)"#
        );
        let err = encode_args(&[ArgType::QByteArray], &["0xg\n"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"argument 1 (QByteArray): "0xg\n" contains the non-hex character 'g'"#
        );
    }

    // ---- the types of Qt Extended and QVariant -----------------------------

    #[test]
    fn datetime_uuid_and_id_encodings() {
        let dt = DateTime::parse_iso("2024-05-01T12:30:05.250Z").unwrap();
        // 2024-05-01 is Julian day 2460432.
        assert_eq!(dt.julian_day, 2_460_432);
        let ms = (12 * 3600 + 30 * 60 + 5) * 1000 + 250u32;
        let mut bytes = 2_460_432u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&ms.to_be_bytes());
        // The spec byte is Qt 4's: 2 for UTC (as Qt 4, 5 and 6 write and read it).
        bytes.push(2);
        check_bytes(Value::QDateTime(dt), &bytes);
        assert_eq!(DateTime::parse_iso("2024-05-01").unwrap().spec, 0xFF);
        let mut local = dt;
        for spec in [0, 1, 0xFF] {
            local.spec = spec;
            assert_eq!(
                Value::QDateTime(local).to_string(),
                "2024-05-01T12:30:05.250"
            );
        }
        assert_eq!(dt.iso(), "2024-05-01T12:30:05");
        assert_eq!(Value::QDateTime(dt).to_string(), "2024-05-01T12:30:05.250Z");
        assert_eq!(DateTime::parse_iso("2024-02-30"), None);
        assert_eq!(DateTime::parse_iso("2024-02-29").unwrap().msecs, 0);
        assert_eq!(DateTime::NULL.iso(), "");

        let text = "{12345678-9abc-def0-1234-56789abcdef0}";
        let uuid = parse_uuid(text).unwrap();
        assert_eq!(uuid[..4], [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(uuid_text(&uuid), text);
        assert_eq!(parse_uuid(&text[1..37]), Some(uuid));
        assert_eq!(parse_uuid("{1234}"), None);
        check_bytes(Value::QUuid(uuid), &uuid);

        let id = parse_arg(ArgType::QUniqueId, &format!("{text}:7")).unwrap();
        let mut bytes = uuid.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 7]);
        check_bytes(id.clone(), &bytes);
        assert_eq!(id.to_string(), format!("{text}:7"));

        let ids = parse_arg(ArgType::QContentIdList, "1:42,2:7").unwrap();
        check_bytes(
            ids.clone(),
            &[
                0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7,
            ],
        );
        assert_eq!(ids.to_string(), "1:42,2:7");
        assert_eq!(
            parse_arg(ArgType::QContentIdList, ""),
            Ok(Value::QContentIdList(vec![]))
        );
    }

    #[test]
    fn variants_decode_as_qt_writes_them() {
        // QVariant(int 5): type 2, not null, value.
        check_bytes(
            Value::QVariant(Variant::Value(Box::new(Value::Int(5)))),
            &[0, 0, 0, 2, 0, 0, 0, 0, 5],
        );
        // QVariantList of a QString and a bool.
        let bytes = [
            0, 0, 0, 9, 0, 0, 0, 0, 2, 0, 0, 0, 10, 0, 0, 0, 0, 2, 0, b'a', 0, 0, 0, 1, 0, 1,
        ];
        let (v, used) = decode_value(ArgType::QVariant, &bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(v.to_string(), r#"["a", true]"#);
        // An invalid variant carries an empty QString.
        check_bytes(
            Value::QVariant(Variant::Invalid),
            &[0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
        );
        assert_eq!(
            decode_value(ArgType::QVariant, &[0, 0, 0, 19, 0]),
            Err(DecodeError::UnsupportedVariant(19))
        );
        // Nesting is bounded.
        let mut deep = Vec::new();
        for _ in 0..40 {
            deep.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0, 1]);
        }
        assert_eq!(
            decode_value(ArgType::QVariant, &deep),
            Err(DecodeError::VariantTooDeep)
        );
    }

    #[test]
    fn messages_decode_as_qt_reads_them() {
        // Trailing bytes are ignored.
        let d = decode_message(&[ArgType::Int], &[0, 0, 0, 1, 9, 9]);
        assert_eq!((d.values, d.trailing), (vec![Value::Int(1)], 2));
        // The 4-byte bool of old senders.
        let d = decode_message(&[ArgType::Bool, ArgType::Int], &[0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(d.values, vec![Value::Bool(true), Value::Int(2)]);
        assert!(d.wide_bools);
        let d = decode_message(&[ArgType::Bool], &[1]);
        assert_eq!((d.values, d.wide_bools), (vec![Value::Bool(true)], false));
        let d = decode_message(&[ArgType::Bool], &[0, 0, 0, 0]);
        assert_eq!((d.values, d.wide_bools), (vec![Value::Bool(false)], true));
        // A short payload reads as nulls from where it ends.
        let d = decode_message(&[ArgType::Int, ArgType::QString], &[0, 0, 0, 3, 0, 0]);
        assert_eq!(d.values, vec![Value::Int(3), Value::QString(None)]);
        assert_eq!(d.short_at, Some(1));
    }

    #[test]
    fn lenient_values_guess_as_the_original_tool() {
        let guess = |ty, text| parse_arg_lenient(ty, text).unwrap();
        assert_eq!(guess(ArgType::Int, "12"), (Value::Int(12), None));
        assert_eq!(
            guess(ArgType::Int, "abc"),
            (Value::Int(0), Some(ArgProblem::NotANumber))
        );
        assert_eq!(
            guess(ArgType::Int, "99999999999"),
            (Value::Int(0), Some(ArgProblem::OutOfRange))
        );
        assert_eq!(
            guess(ArgType::QByteArray, "0a:0B-c"),
            (
                Value::QByteArray(Some(vec![0x0a, 0x0b])),
                Some(ArgProblem::BadHexDigit(':'))
            )
        );
        assert_eq!(
            guess(ArgType::QDateTime, "soon").0,
            Value::QDateTime(DateTime::NULL)
        );
        assert_eq!(guess(ArgType::QUuid, "x").0, Value::QUuid([0; 16]));
        assert!(parse_arg_lenient(ArgType::Bool, "maybe").is_err());
        assert_eq!(guess(ArgType::Bool, "TRUE"), (Value::Bool(true), None));
    }

    #[test]
    fn scoped_message_names() {
        let sig = parse_signature("Time::editTime()").unwrap();
        assert_eq!(sig.name, "Time::editTime");
        assert_eq!(
            parse_signature("a::b::c(int)").unwrap().normalized(),
            "a::b::c(int)"
        );
        for bad in ["::f()", "f::()", "a:::b()", "a:b()"] {
            assert_eq!(parse_signature(bad), Err(SignatureError::BadName), "{bad}");
        }
    }

    // ---- display -----------------------------------------------------------

    #[test]
    fn value_display() {
        let cases = [
            (Value::Int(-3), "-3"),
            (Value::ULongLong(u64::MAX), "18446744073709551615"),
            (Value::Bool(true), "true"),
            (Value::Double(1.0), "1.0"),
            (Value::Double(-2.5), "-2.5"),
            (Value::Double(f64::NAN), "NaN"),
            (Value::QString(s("hello \"x\"")), r#""hello \"x\"""#),
            (Value::QString(s("a\\b\n\t\u{1b}")), r#""a\\b\n\t\u{1b}""#),
            (Value::QString(s("é😀")), "\"é😀\""),
            (Value::QString(None), "null"),
            (Value::QByteArray(Some(vec![0x0a, 0x0b])), "0x0a0b"),
            (Value::QByteArray(Some(vec![])), "0x"),
            (Value::QByteArray(None), "null"),
            (Value::QStringList(vec![]), "[]"),
            (
                Value::QStringList(vec![s("a"), s("b\""), None]),
                r#"["a", "b\"", null]"#,
            ),
        ];
        for (value, text) in cases {
            assert_eq!(value.to_string(), text);
        }
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(hex(&[]), "");
    }

    // ---- properties --------------------------------------------------------

    fn arb_string() -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(Value::Int),
            any::<u32>().prop_map(Value::UInt),
            any::<i64>().prop_map(Value::Long),
            any::<u64>().prop_map(Value::ULong),
            any::<i64>().prop_map(Value::LongLong),
            any::<u64>().prop_map(Value::ULongLong),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(Value::Double),
            prop::option::of(arb_string()).prop_map(Value::QString),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..16)).prop_map(Value::QByteArray),
            prop::collection::vec(prop::option::of(arb_string()), 0..5)
                .prop_map(Value::QStringList),
            prop::collection::vec(any::<u16>(), 0..8).prop_map(Value::QStringUtf16),
            (any::<u32>(), any::<u32>(), 0u8..2).prop_map(|(julian_day, msecs, spec)| {
                Value::QDateTime(DateTime {
                    julian_day,
                    msecs,
                    spec,
                })
            }),
            any::<[u8; 16]>().prop_map(Value::QUuid),
            (any::<[u8; 16]>(), any::<u32>())
                .prop_map(|(context, index)| Value::QUniqueId { context, index }),
            prop::collection::vec((any::<u32>(), any::<u64>()), 0..4)
                .prop_map(Value::QContentIdList),
            arb_variant().prop_map(Value::QVariant),
        ]
    }

    fn arb_variant() -> impl Strategy<Value = Variant> {
        let leaf = prop_oneof![
            Just(Variant::Invalid),
            any::<i32>().prop_map(|v| Variant::Value(Box::new(Value::Int(v)))),
            any::<bool>().prop_map(|v| Variant::Value(Box::new(Value::Bool(v)))),
            prop::option::of(arb_string())
                .prop_map(|v| Variant::Value(Box::new(Value::QString(v)))),
            any::<u16>().prop_map(Variant::Char),
            any::<u32>().prop_map(Variant::Date),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Variant::List),
                prop::collection::vec((prop::option::of(arb_string()), inner), 0..3)
                    .prop_map(Variant::Map),
            ]
        })
    }

    /// Equality that compares doubles bitwise, so NaN equals itself.
    /// Equality of what goes on the wire, so NaN equals itself and a valid
    /// `QStringUtf16` equals the same `QString`.
    fn same(a: &Value, b: &Value) -> bool {
        encoded(a) == encoded(b)
    }

    fn arb_type() -> impl Strategy<Value = String> {
        let base = prop::sample::select(vec![
            "int",
            "unsigned",
            "unsigned int",
            "unsigned long",
            "unsigned long long",
            "long",
            "qint64",
            "quint64",
            "QString",
            "QByteArray",
            "char",
            "bool",
        ]);
        (
            any::<bool>(),
            base,
            prop::sample::select(vec!["", " &", "&", " *", "*", " const &", " const*"]),
            0..3usize,
        )
            .prop_map(|(leading_const, base, suffix, templ)| {
                let mut t = base.to_owned();
                for _ in 0..templ {
                    t = format!("QList< {t} >");
                }
                // `const` once: `const int const &` is not C++.
                let c = if leading_const && !suffix.contains("const") {
                    "const "
                } else {
                    ""
                };
                format!("{c}{t}{suffix}")
            })
    }

    proptest! {
        #[test]
        fn normalization_is_stable(
            name in "[a-z_][a-zA-Z0-9_]{0,8}",
            types in prop::collection::vec(arb_type(), 0..4),
            pad in prop::sample::select(vec!["", " ", "  ", "\t"]),
        ) {
            let sig = format!("{pad}{name}{pad}({pad}{}{pad}){pad}", types.join(&format!("{pad},{pad}")));
            let once = normalize_signature(&sig).into_owned();
            prop_assert_eq!(normalize_signature(&once), once.as_str());
            // The spaced and the packed spellings agree.
            let packed = format!("{name}({})", types.join(","));
            prop_assert_eq!(normalize_signature(&packed), once.as_str());
        }

        #[test]
        fn normalization_of_arbitrary_text(sig in "[ a-z(),<>&*:c]{0,40}|\\PC{0,40}") {
            let once = normalize_signature(&sig);
            // The quick test only passes fixed points.
            if is_plainly_normalized(&sig) {
                prop_assert_eq!(qt_normalized_signature(sig.as_bytes()), sig.as_bytes());
            }
            prop_assert!(once.len() <= sig.len() * 2 + 1);
        }

        #[test]
        fn encode_decode_round_trip(value in arb_value()) {
            let bytes = encoded(&value);
            let (decoded, used) = decode_value(value.arg_type(), &bytes).unwrap();
            prop_assert!(same(&decoded, &value), "{:?} != {:?}", decoded, value);
            prop_assert_eq!(used, bytes.len());
        }

        #[test]
        fn args_round_trip(values in prop::collection::vec(arb_value(), 0..5)) {
            let types: Vec<ArgType> = values.iter().map(Value::arg_type).collect();
            let mut payload = Vec::new();
            for v in &values {
                v.encode(&mut payload);
            }
            let decoded = decode_args(&types, &payload).unwrap();
            prop_assert_eq!(decoded.len(), values.len());
            for (d, v) in decoded.iter().zip(&values) {
                prop_assert!(same(d, v), "{:?} != {:?}", d, v);
            }
            // Every strict prefix is too short for the same signature.
            for cut in 0..payload.len() {
                prop_assert!(decode_args(&types, &payload[..cut]).is_err());
            }
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(
            types in prop::collection::vec(prop::sample::select(ArgType::ALL.to_vec()), 0..6),
            payload in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = decode_args(&types, &payload);
            for &ty in &types {
                if let Ok((_, used)) = decode_value(ty, &payload) {
                    prop_assert!(used <= payload.len());
                }
            }
        }

        #[test]
        fn int_text_round_trip(n in any::<i64>(), u in any::<u64>()) {
            prop_assert_eq!(parse_arg(ArgType::LongLong, &n.to_string()), Ok(Value::LongLong(n)));
            prop_assert_eq!(parse_arg(ArgType::ULong, &format!("{u:#x}")), Ok(Value::ULong(u)));
            let as_int = i32::try_from(n);
            match parse_arg(ArgType::Int, &n.to_string()) {
                Ok(v) => prop_assert_eq!(Some(v), as_int.ok().map(Value::Int)),
                Err(e) => {
                    prop_assert!(as_int.is_err());
                    prop_assert!(e.to_string().contains("out of range"), "{}", e);
                }
            }
        }

        #[test]
        fn display_text_round_trip(value in arb_value()) {
            // Display output of scalars and byte arrays is valid parse_arg input.
            let round_trips = !matches!(
                value,
                Value::QString(_)
                    | Value::QStringList(_)
                    | Value::QByteArray(None)
                    | Value::QStringUtf16(_)
                    | Value::QDateTime(_)
                    | Value::QVariant(_)
            );
            if round_trips {
                let parsed = parse_arg(value.arg_type(), &value.to_string()).unwrap();
                // "NaN" carries no sign or payload, so any NaN matches.
                let both_nan = matches!(
                    (&parsed, &value),
                    (Value::Double(a), Value::Double(b)) if a.is_nan() && b.is_nan()
                );
                prop_assert!(both_nan || same(&parsed, &value), "{:?} != {:?}", parsed, value);
            }
        }
    }
}

//! QDataStream arguments, as Qt programs and the `qcop` tool write and read them: a builder
//! (`qcop_args`) and a reader (`qcop_reader`) for every type the `qcop` tool supports.

use crate::error::{self, ErrorText, Failure, Handle, QCOP_E_DECODE, QCOP_OK};
use crate::ffi;
use qcop_client::datastream::{decode_value, parse_arg, ArgType, Value};
use std::ffi::{c_char, c_int, c_void};

/// An argument payload being built (`qcop_args` in C).
pub struct Args {
    buf: Vec<u8>,
    error: ErrorText,
}

impl Handle for Args {
    fn error_text(&mut self) -> &mut ErrorText {
        &mut self.error
    }
}

/// A new, empty argument payload (free it with `qcop_args_free`). NULL only if memory ran
/// out.
///
/// ```c
/// qcop_args *a = qcop_args_new();
/// qcop_args_string(a, "hello");
/// qcop_args_int(a, 3);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_new() -> *mut Args {
    std::panic::catch_unwind(|| {
        ffi::into_handle(Args {
            buf: Vec::new(),
            error: ErrorText::new(),
        })
    })
    .unwrap_or(std::ptr::null_mut())
}

/// Frees an argument payload; NULL is ignored.
///
/// ```c
/// qcop_args_free(a);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_free(args: *mut Args) {
    error::free(args);
}

/// The encoded payload: its length in `*len` (if not NULL), its bytes returned (valid until
/// the next change to `args` or its free; non-NULL).
///
/// ```c
/// size_t len;
/// const void *p = qcop_args_data(a, &len);
/// qcop_send(conn, "QPE/Audio", "setVolume(int)", p, len);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_data(args: *const Args, len: *mut usize) -> *const c_void {
    let (p, n) = error::get(args, (EMPTY.as_ptr(), 0), |a| {
        if a.buf.is_empty() {
            (EMPTY.as_ptr(), 0)
        } else {
            (a.buf.as_ptr(), a.buf.len())
        }
    });
    ffi::put(len, n);
    p.cast()
}

/// Empties the payload, to build another one.
///
/// ```c
/// qcop_args_clear(a);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_clear(args: *mut Args) -> c_int {
    error::with(args, "args", |a| {
        a.buf.clear();
        Ok(QCOP_OK)
    })
}

static EMPTY: [u8; 1] = [0];

fn push(args: *mut Args, value: impl FnOnce() -> Result<Value, Failure>) -> c_int {
    error::with(args, "args", |a| {
        value()?.encode(&mut a.buf);
        Ok(QCOP_OK)
    })
}

/// Appends an `int` (4 bytes).
///
/// ```c
/// qcop_args_int(a, -5);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_int(args: *mut Args, v: i32) -> c_int {
    push(args, || Ok(Value::Int(v)))
}

/// Appends a `uint` (4 bytes).
///
/// ```c
/// qcop_args_uint(a, 5u);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_uint(args: *mut Args, v: u32) -> c_int {
    push(args, || Ok(Value::UInt(v)))
}

/// Appends a `long` (8 bytes on the wire on every board, so armv7 and aarch64 agree).
///
/// ```c
/// qcop_args_long(a, -5);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_long(args: *mut Args, v: i64) -> c_int {
    push(args, || Ok(Value::Long(v)))
}

/// Appends a `ulong` (8 bytes on the wire).
///
/// ```c
/// qcop_args_ulong(a, 5u);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_ulong(args: *mut Args, v: u64) -> c_int {
    push(args, || Ok(Value::ULong(v)))
}

/// Appends a `qlonglong` (8 bytes).
///
/// ```c
/// qcop_args_longlong(a, INT64_MIN);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_longlong(args: *mut Args, v: i64) -> c_int {
    push(args, || Ok(Value::LongLong(v)))
}

/// Appends a `qulonglong` (8 bytes).
///
/// ```c
/// qcop_args_ulonglong(a, UINT64_MAX);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_ulonglong(args: *mut Args, v: u64) -> c_int {
    push(args, || Ok(Value::ULongLong(v)))
}

/// Appends a `bool` (1 byte; any nonzero `v` is true).
///
/// ```c
/// qcop_args_bool(a, 1);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_bool(args: *mut Args, v: c_int) -> c_int {
    push(args, || Ok(Value::Bool(v != 0)))
}

/// Appends a `double` (8 bytes, IEEE-754).
///
/// ```c
/// qcop_args_double(a, 0.5);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_double(args: *mut Args, v: f64) -> c_int {
    push(args, || Ok(Value::Double(v)))
}

/// Appends a `QString` from NUL-terminated UTF-8 text (NULL: a null QString, which Qt
/// tells apart from an empty one). `QCOP_E_INVAL` if the text is not UTF-8.
///
/// ```c
/// qcop_args_string(a, "Grüße");
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_string(args: *mut Args, text: *const c_char) -> c_int {
    push(args, || {
        Ok(Value::QString(
            ffi::opt_str(text, "text")?.map(str::to_owned),
        ))
    })
}

/// Appends a `QByteArray` of `len` bytes (`data` NULL: a null QByteArray).
///
/// ```c
/// qcop_args_bytes(a, "\x01\x02", 2);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_bytes(args: *mut Args, data: *const c_void, len: usize) -> c_int {
    push(args, || {
        if data.is_null() {
            return Ok(Value::QByteArray(None));
        }
        Ok(Value::QByteArray(Some(
            ffi::bytes(data, len, "data")?.to_vec(),
        )))
    })
}

/// Appends a `QStringList` of `count` NUL-terminated UTF-8 strings.
///
/// ```c
/// const char *apps[] = { "clock", "radio" };
/// qcop_args_stringlist(a, apps, 2);
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_stringlist(
    args: *mut Args,
    items: *const *const c_char,
    count: usize,
) -> c_int {
    push(args, || {
        let items = ffi::str_array(items, count, "items")?;
        Ok(Value::QStringList(
            items.into_iter().map(|s| Some(s.to_owned())).collect(),
        ))
    })
}

fn arg_type(name: *const c_char) -> Result<ArgType, Failure> {
    let name = ffi::str_arg(name, "type")?;
    ArgType::parse(name).ok_or_else(|| Failure::inval(format!("unknown argument type {name:?}")))
}

/// Appends a value of the Qt type `type` (`"int"`, `"QString"`, `"QStringList"`...)
/// written as the `qcop` tool takes it on its command line (`"42"`, `"true"`, hex for a
/// QByteArray, comma-separated for a QStringList). `QCOP_E_INVAL` if the text does not fit
/// the type.
///
/// ```c
/// qcop_args_text(a, "int", "42");
/// qcop_args_text(a, "QStringList", "clock,radio");
/// ```
#[no_mangle]
pub extern "C" fn qcop_args_text(args: *mut Args, ty: *const c_char, text: *const c_char) -> c_int {
    push(args, || {
        let ty = arg_type(ty)?;
        let text = ffi::str_arg(text, "text")?;
        parse_arg(ty, text).map_err(|e| Failure::inval(e.to_string()))
    })
}

/// A reader over a received payload (`qcop_reader` in C).
pub struct Reader {
    data: Vec<u8>,
    pos: usize,
    /// NUL-terminated copies of the strings read, alive as long as the reader.
    texts: Vec<Vec<u8>>,
    /// Pointer arrays of the string lists read.
    lists: Vec<Vec<*const c_char>>,
    error: ErrorText,
}

impl Handle for Reader {
    fn error_text(&mut self) -> &mut ErrorText {
        &mut self.error
    }
}

impl Reader {
    fn next(&mut self, ty: ArgType) -> Result<Value, Failure> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let (value, used) = decode_value(ty, rest)
            .map_err(|e| Failure::new(QCOP_E_DECODE, format!("{ty} at byte {}: {e}", self.pos)))?;
        self.pos += used;
        Ok(value)
    }

    /// Keeps a NUL-terminated copy of `text` and returns its pointer.
    fn keep(&mut self, text: &[u8]) -> *const c_char {
        let mut owned = Vec::with_capacity(text.len() + 1);
        owned.extend_from_slice(text);
        owned.push(0);
        let p = owned.as_ptr().cast();
        self.texts.push(owned);
        p
    }
}

/// A reader over `len` bytes at `data` (copied: `data` may go away afterwards). Free it
/// with `qcop_reader_free`; every string it hands out lives until then. Each
/// `qcop_reader_*` call reads the next value; a value that does not fit (payload too
/// short) fails with `QCOP_E_DECODE` and reads nothing. NULL only if memory ran out or
/// `data` is NULL with a nonzero `len`.
///
/// ```c
/// size_t len;
/// const uint8_t *p = qcop_message_data(m, &len);
/// qcop_reader *r = qcop_reader_new(p, len);
/// int32_t volume;
/// if (qcop_reader_int(r, &volume) == QCOP_OK) set_volume(volume);
/// qcop_reader_free(r);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_new(data: *const c_void, len: usize) -> *mut Reader {
    let mut out = std::ptr::null_mut();
    error::run(|| {
        let data = ffi::bytes(data, len, "data")?.to_vec();
        out = ffi::into_handle(Reader {
            data,
            pos: 0,
            texts: Vec::new(),
            lists: Vec::new(),
            error: ErrorText::new(),
        });
        Ok(QCOP_OK)
    });
    out
}

/// Frees a reader and every string read from it; NULL is ignored.
///
/// ```c
/// qcop_reader_free(r);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_free(reader: *mut Reader) {
    error::free(reader);
}

/// Bytes not read yet (0 for NULL): 0 after the last argument of a well-formed payload.
///
/// ```c
/// if (qcop_reader_remaining(r) != 0) fprintf(stderr, "trailing bytes\n");
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_remaining(reader: *const Reader) -> usize {
    error::get(reader, 0, |r| r.data.len().saturating_sub(r.pos))
}

fn read<T>(
    reader: *mut Reader,
    out: *mut T,
    ty: ArgType,
    pick: impl FnOnce(Value) -> Option<T>,
) -> c_int {
    error::with(reader, "reader", |r| {
        if out.is_null() {
            return Err(Failure::inval("out is NULL"));
        }
        let v = r.next(ty)?;
        let v = pick(v).ok_or_else(|| Failure::new(QCOP_E_DECODE, "unexpected value"))?;
        ffi::put(out, v);
        Ok(QCOP_OK)
    })
}

/// Reads an `int`.
///
/// ```c
/// int32_t v; qcop_reader_int(r, &v);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_int(reader: *mut Reader, out: *mut i32) -> c_int {
    read(reader, out, ArgType::Int, |v| match v {
        Value::Int(v) => Some(v),
        _ => None,
    })
}

/// Reads a `uint`.
///
/// ```c
/// uint32_t v; qcop_reader_uint(r, &v);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_uint(reader: *mut Reader, out: *mut u32) -> c_int {
    read(reader, out, ArgType::UInt, |v| match v {
        Value::UInt(v) => Some(v),
        _ => None,
    })
}

/// Reads a `long` (8 bytes on the wire).
///
/// ```c
/// int64_t v; qcop_reader_long(r, &v);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_long(reader: *mut Reader, out: *mut i64) -> c_int {
    read(reader, out, ArgType::Long, |v| match v {
        Value::Long(v) => Some(v),
        _ => None,
    })
}

/// Reads a `ulong` (8 bytes on the wire).
///
/// ```c
/// uint64_t v; qcop_reader_ulong(r, &v);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_ulong(reader: *mut Reader, out: *mut u64) -> c_int {
    read(reader, out, ArgType::ULong, |v| match v {
        Value::ULong(v) => Some(v),
        _ => None,
    })
}

/// Reads a `qlonglong`.
///
/// ```c
/// int64_t v; qcop_reader_longlong(r, &v);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_longlong(reader: *mut Reader, out: *mut i64) -> c_int {
    read(reader, out, ArgType::LongLong, |v| match v {
        Value::LongLong(v) => Some(v),
        _ => None,
    })
}

/// Reads a `qulonglong`.
///
/// ```c
/// uint64_t v; qcop_reader_ulonglong(r, &v);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_ulonglong(reader: *mut Reader, out: *mut u64) -> c_int {
    read(reader, out, ArgType::ULongLong, |v| match v {
        Value::ULongLong(v) => Some(v),
        _ => None,
    })
}

/// Reads a `bool` as 1 or 0.
///
/// ```c
/// int on; qcop_reader_bool(r, &on);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_bool(reader: *mut Reader, out: *mut c_int) -> c_int {
    read(reader, out, ArgType::Bool, |v| match v {
        Value::Bool(v) => Some(v as c_int),
        _ => None,
    })
}

/// Reads a `double`.
///
/// ```c
/// double v; qcop_reader_double(r, &v);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_double(reader: *mut Reader, out: *mut f64) -> c_int {
    read(reader, out, ArgType::Double, |v| match v {
        Value::Double(v) => Some(v),
        _ => None,
    })
}

/// Reads a `QString` as NUL-terminated UTF-8 in `*out` (NULL for a null QString), its
/// length in bytes in `*len` if not NULL. The text lives as long as the reader.
///
/// ```c
/// const char *name;
/// if (qcop_reader_string(r, &name, NULL) == QCOP_OK && name) puts(name);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_string(
    reader: *mut Reader,
    out: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    error::with(reader, "reader", |r| {
        ffi::put_required(out, std::ptr::null(), "out")?;
        ffi::put(len, 0);
        if let Value::QString(Some(text)) = r.next(ArgType::QString)? {
            ffi::put(out, r.keep(text.as_bytes()));
            ffi::put(len, text.len());
        }
        Ok(QCOP_OK)
    })
}

/// Reads a `QByteArray`: its bytes in `*out` (NULL for a null QByteArray; followed by a
/// NUL byte otherwise), its length in `*len`. The bytes live as long as the reader.
///
/// ```c
/// const uint8_t *p; size_t n;
/// qcop_reader_bytes(r, &p, &n);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_bytes(
    reader: *mut Reader,
    out: *mut *const u8,
    len: *mut usize,
) -> c_int {
    error::with(reader, "reader", |r| {
        ffi::put_required(out, std::ptr::null(), "out")?;
        ffi::put(len, 0);
        if let Value::QByteArray(Some(bytes)) = r.next(ArgType::QByteArray)? {
            ffi::put(out, r.keep(&bytes).cast());
            ffi::put(len, bytes.len());
        }
        Ok(QCOP_OK)
    })
}

/// Reads a `QStringList`: an array of `*count` NUL-terminated UTF-8 strings in `*items`
/// (followed by a NULL entry; a null string in the list reads as ""). Everything lives as
/// long as the reader.
///
/// ```c
/// const char *const *apps; size_t n;
/// if (qcop_reader_stringlist(r, &apps, &n) == QCOP_OK)
///     for (size_t i = 0; i < n; i++) puts(apps[i]);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_stringlist(
    reader: *mut Reader,
    items: *mut *const *const c_char,
    count: *mut usize,
) -> c_int {
    error::with(reader, "reader", |r| {
        ffi::put_required(items, std::ptr::null(), "items")?;
        ffi::put(count, 0);
        let Value::QStringList(list) = r.next(ArgType::QStringList)? else {
            return Err(Failure::new(QCOP_E_DECODE, "unexpected value"));
        };
        let mut ptrs: Vec<*const c_char> = list
            .iter()
            .map(|s| r.keep(s.as_deref().unwrap_or("").as_bytes()))
            .collect();
        ptrs.push(std::ptr::null());
        ffi::put(items, ptrs.as_ptr());
        ffi::put(count, list.len());
        r.lists.push(ptrs);
        Ok(QCOP_OK)
    })
}

/// Reads a value of the Qt type `type` and stores in `*out` its text as `qcop watch` and
/// `qcop wait` print it (`42`, `true`, `"text"`, `0x0a0b`, `["a", "b"]`, `null`). The
/// text lives as long as the reader.
///
/// ```c
/// const char *t;
/// if (qcop_reader_text(r, "int", &t) == QCOP_OK) puts(t);
/// ```
#[no_mangle]
pub extern "C" fn qcop_reader_text(
    reader: *mut Reader,
    ty: *const c_char,
    out: *mut *const c_char,
) -> c_int {
    error::with(reader, "reader", |r| {
        ffi::put_required(out, std::ptr::null(), "out")?;
        let ty = arg_type(ty)?;
        let text = r.next(ty)?.to_string();
        ffi::put(out, r.keep(text.as_bytes()));
        Ok(QCOP_OK)
    })
}

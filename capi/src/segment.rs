//! Shared-memory segments with a lock that survives its holder's death, and system
//! semaphores (Qt's `QSharedMemory` and `QSystemSemaphore`), set up through qcopd.

use crate::conn::{options, wait, Wait};
use crate::error::{self, ErrorText, Failure, Handle, QCOP_OK};
use crate::ffi::{self, held::Lent};
use qcop_client::shm::{SegmentGuard, SharedMemory, SystemSemaphore};
use std::ffi::{c_char, c_int, c_void};

/// Flag of `qcop_segment_open`: create the segment (fails with `QCOP_E_EXISTS` if the name
/// is taken, unless `QCOP_SEG_ATTACH` is given too).
pub const QCOP_SEG_CREATE: u32 = 1;
/// Flag of `qcop_segment_open`: attach to an existing segment (`QCOP_E_NOTFOUND` if none,
/// unless `QCOP_SEG_CREATE` is given too).
pub const QCOP_SEG_ATTACH: u32 = 2;
/// Flag of `qcop_segment_open`: attach read-only (the lock can still be taken).
pub const QCOP_SEG_READONLY: u32 = 4;
/// Flag of `qcop_segment_open` and `qcop_semaphore_open`: keep the object when its last
/// user goes, until `qcop_shm_remove` (it never outlives the daemon).
pub const QCOP_SHM_PERSISTENT: u32 = 8;
/// Flag of `qcop_semaphore_open`: create it if it does not exist.
pub const QCOP_SEM_CREATE: u32 = 16;
/// Flag of `qcop_semaphore_open`: give back the units of an opener that goes away (closes
/// or dies) without releasing them, like SysV `SEM_UNDO`.
pub const QCOP_SEM_UNDO: u32 = 32;

/// A segment (`qcop_segment` in C).
pub struct Segment {
    inner: Lent<SharedMemory, SegmentGuard<'static>>,
    error: ErrorText,
}

impl Handle for Segment {
    fn error_text(&mut self) -> &mut ErrorText {
        &mut self.error
    }
}

/// A system semaphore (`qcop_semaphore` in C).
pub struct Semaphore {
    inner: SystemSemaphore,
    error: ErrorText,
}

impl Handle for Semaphore {
    fn error_text(&mut self) -> &mut ErrorText {
        &mut self.error
    }
}

fn check_flags(flags: u32, known: u32) -> Result<(), Failure> {
    if flags & !known != 0 {
        return Err(Failure::inval(format!(
            "unknown flags {:#x}",
            flags & !known
        )));
    }
    Ok(())
}

/// Creates or attaches the segment `name` through qcopd (`socket`: NULL for the default).
/// `flags`: `QCOP_SEG_CREATE` (with `size` bytes, permission bits `mode`, 0 for 0600),
/// `QCOP_SEG_ATTACH`, both (attach if it exists, else create), plus `QCOP_SEG_READONLY`,
/// `QCOP_SHM_PERSISTENT`. Stores the segment in `*out` (free with `qcop_segment_close`).
/// Errors go to `qcop_strerror(NULL)`.
///
/// ```c
/// qcop_segment *seg;
/// if (qcop_segment_open(&seg, NULL, "status", 4096, 0, QCOP_SEG_CREATE | QCOP_SEG_ATTACH) < 0)
///     fprintf(stderr, "%s\n", qcop_strerror(NULL));
/// ```
#[no_mangle]
pub extern "C" fn qcop_segment_open(
    out: *mut *mut Segment,
    socket: *const c_char,
    name: *const c_char,
    size: u64,
    mode: u16,
    flags: u32,
) -> c_int {
    error::run(|| {
        ffi::put_required(out, std::ptr::null_mut(), "out")?;
        check_flags(
            flags,
            QCOP_SEG_CREATE | QCOP_SEG_ATTACH | QCOP_SEG_READONLY | QCOP_SHM_PERSISTENT,
        )?;
        let opts = options(socket, std::ptr::null(), 0)?;
        let name = ffi::str_arg(name, "name")?;
        let mut b = SharedMemory::builder(name)
            .size(size)
            .persistent(flags & QCOP_SHM_PERSISTENT != 0)
            .connect_options(opts);
        if mode != 0 {
            b = b.mode(mode);
        }
        if flags & QCOP_SEG_READONLY != 0 {
            b = b.read_only();
        }
        let shm = match (flags & QCOP_SEG_CREATE != 0, flags & QCOP_SEG_ATTACH != 0) {
            (true, true) => b.create_or_attach()?,
            (true, false) => b.create()?,
            (false, true) => b.attach()?,
            (false, false) => {
                return Err(Failure::inval(
                    "flags need QCOP_SEG_CREATE, QCOP_SEG_ATTACH or both",
                ))
            }
        };
        ffi::put(
            out,
            ffi::into_handle(Segment {
                inner: Lent::new(shm),
                error: ErrorText::new(),
            }),
        );
        Ok(QCOP_OK)
    })
}

/// Detaches and frees the segment (a held lock is given back first). The daemon removes a
/// segment that is not persistent with its last attachment. NULL is ignored.
///
/// ```c
/// qcop_segment_close(seg);
/// ```
#[no_mangle]
pub extern "C" fn qcop_segment_close(segment: *mut Segment) {
    error::free(segment);
}

/// The segment's data size in bytes (0 for NULL).
///
/// ```c
/// size_t n = qcop_segment_size(seg);
/// ```
#[no_mangle]
pub extern "C" fn qcop_segment_size(segment: *mut Segment) -> usize {
    ffi::handle_mut(segment).map_or(0, |s| match s.inner.lent() {
        Some(g) => g.data().len(),
        None => s.inner.owner().map_or(0, |o| o.size()),
    })
}

/// Takes the segment's lock, waiting up to `timeout_ms` (`-1`: as long as it takes, `0`:
/// not at all). Returns 1 when locked, 0 if it stayed held by someone else, or a negative
/// code. A holder that died does not block anyone: the lock is handed over and
/// `*owner_died` (if not NULL) is set to 1 (check the data, it may be half-written).
///
/// ```c
/// int died;
/// if (qcop_segment_lock(seg, 1000, &died) == 1) {
///     if (died) repair(qcop_segment_data(seg));
///     qcop_segment_unlock(seg);
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_segment_lock(
    segment: *mut Segment,
    timeout_ms: c_int,
    owner_died: *mut c_int,
) -> c_int {
    error::with(segment, "segment", |s| {
        ffi::put(owner_died, 0);
        let timeout = wait(timeout_ms)?;
        let got = s.inner.lend(
            || Failure::state("this segment is locked already"),
            |shm| {
                Ok(match timeout {
                    Wait::Forever => Some(shm.lock()?),
                    Wait::For(d) if d.is_zero() => shm.try_lock()?,
                    Wait::For(d) => shm.lock_timeout(d)?,
                })
            },
        )?;
        if !got {
            return Ok(0);
        }
        let died = s.inner.lent().is_some_and(|g| g.previous_owner_died());
        ffi::put(owner_died, died as c_int);
        Ok(1)
    })
}

/// Gives the lock back. `QCOP_E_STATE` if it is not held.
///
/// ```c
/// qcop_segment_unlock(seg);
/// ```
#[no_mangle]
pub extern "C" fn qcop_segment_unlock(segment: *mut Segment) -> c_int {
    error::with(segment, "segment", |s| {
        s.inner
            .finish(SegmentGuard::unlock)
            .ok_or_else(|| Failure::state("the segment is not locked"))??;
        Ok(QCOP_OK)
    })
}

/// The segment's data in place, while the lock is held (NULL otherwise): valid until
/// `qcop_segment_unlock`. Writable unless the segment was attached read-only (writing
/// then faults).
///
/// ```c
/// if (qcop_segment_lock(seg, -1, NULL) == 1) {
///     struct status *st = qcop_segment_data(seg);
///     st->battery = 80;
///     qcop_segment_unlock(seg);
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_segment_data(segment: *mut Segment) -> *mut c_void {
    let Some(s) = ffi::handle_mut(segment) else {
        return std::ptr::null_mut();
    };
    match s.inner.lent() {
        Some(g) => match g.data_mut() {
            Ok(d) => d.as_mut_ptr().cast(),
            Err(_) => g.data().as_ptr().cast_mut().cast(),
        },
        None => std::ptr::null_mut(),
    }
}

/// Copies `len` bytes at `offset` into `buf`: under the lock if this handle holds it,
/// else without locking (a writer may be half-way). `QCOP_E_SHMINVAL` out of bounds.
///
/// ```c
/// char name[32];
/// qcop_segment_read(seg, 0, name, sizeof name);
/// ```
#[no_mangle]
pub extern "C" fn qcop_segment_read(
    segment: *mut Segment,
    offset: usize,
    buf: *mut c_void,
    len: usize,
) -> c_int {
    error::with(segment, "segment", |s| {
        let dst = ffi::bytes_mut(buf, len, "buf")?;
        match s.inner.lent() {
            Some(g) => g.read(offset, dst)?,
            None => s
                .inner
                .owner()
                .ok_or_else(|| Failure::state("segment busy"))?
                .read(offset, dst)?,
        }
        Ok(QCOP_OK)
    })
}

/// Copies `len` bytes from `buf` to `offset`: under the lock if this handle holds it, else
/// without locking. `QCOP_E_SHMINVAL` out of bounds, `QCOP_E_DENIED` if read-only.
///
/// ```c
/// qcop_segment_write(seg, 0, "ready", 6);
/// ```
#[no_mangle]
pub extern "C" fn qcop_segment_write(
    segment: *mut Segment,
    offset: usize,
    buf: *const c_void,
    len: usize,
) -> c_int {
    error::with(segment, "segment", |s| {
        let src = ffi::bytes(buf, len, "buf")?;
        match s.inner.lent() {
            Some(g) => g.write(offset, src)?,
            None => s
                .inner
                .owner()
                .ok_or_else(|| Failure::state("segment busy"))?
                .write(offset, src)?,
        }
        Ok(QCOP_OK)
    })
}

/// Opens the semaphore `name` through qcopd (`socket`: NULL for the default); with
/// `QCOP_SEM_CREATE` creates it with `initial` units if it does not exist. Other flags:
/// `QCOP_SEM_UNDO`, `QCOP_SHM_PERSISTENT`. Stores it in `*out` (free with
/// `qcop_semaphore_close`). Errors go to `qcop_strerror(NULL)`.
///
/// ```c
/// qcop_semaphore *sem;
/// qcop_semaphore_open(&sem, NULL, "camera", 1, QCOP_SEM_CREATE | QCOP_SEM_UNDO);
/// ```
#[no_mangle]
pub extern "C" fn qcop_semaphore_open(
    out: *mut *mut Semaphore,
    socket: *const c_char,
    name: *const c_char,
    initial: u32,
    flags: u32,
) -> c_int {
    error::run(|| {
        ffi::put_required(out, std::ptr::null_mut(), "out")?;
        check_flags(flags, QCOP_SEM_CREATE | QCOP_SEM_UNDO | QCOP_SHM_PERSISTENT)?;
        let opts = options(socket, std::ptr::null(), 0)?;
        let name = ffi::str_arg(name, "name")?;
        let b = SystemSemaphore::builder(name)
            .initial(initial)
            .undo(flags & QCOP_SEM_UNDO != 0)
            .persistent(flags & QCOP_SHM_PERSISTENT != 0)
            .connect_options(opts);
        let inner = if flags & QCOP_SEM_CREATE != 0 {
            b.create_or_open()?
        } else {
            b.open()?
        };
        ffi::put(
            out,
            ffi::into_handle(Semaphore {
                inner,
                error: ErrorText::new(),
            }),
        );
        Ok(QCOP_OK)
    })
}

/// Closes and frees the semaphore (with `QCOP_SEM_UNDO`, units still taken go back).
/// NULL is ignored.
///
/// ```c
/// qcop_semaphore_close(sem);
/// ```
#[no_mangle]
pub extern "C" fn qcop_semaphore_close(semaphore: *mut Semaphore) {
    error::free(semaphore);
}

/// Takes one unit, waiting up to `timeout_ms` (`-1`: as long as it takes, `0`: not at
/// all). Returns 1 when taken, 0 if none came in time, or a negative code. A dead holder
/// never blocks anyone for ever (its units come back with `QCOP_SEM_UNDO`).
///
/// ```c
/// if (qcop_semaphore_acquire(sem, 5000) == 1) {
///     use_camera();
///     qcop_semaphore_release(sem, 1);
/// }
/// ```
#[no_mangle]
pub extern "C" fn qcop_semaphore_acquire(semaphore: *mut Semaphore, timeout_ms: c_int) -> c_int {
    error::with(semaphore, "semaphore", |s| {
        Ok(match wait(timeout_ms)? {
            Wait::Forever => {
                s.inner.acquire()?;
                1
            }
            Wait::For(d) if d.is_zero() => s.inner.try_acquire()? as c_int,
            Wait::For(d) => s.inner.acquire_timeout(d)? as c_int,
        })
    })
}

/// Gives back `n` units; fails with `QCOP_E_SHMINVAL` (changing nothing) past the maximum.
///
/// ```c
/// qcop_semaphore_release(sem, 1);
/// ```
#[no_mangle]
pub extern "C" fn qcop_semaphore_release(semaphore: *mut Semaphore, n: u32) -> c_int {
    error::with(semaphore, "semaphore", |s| {
        s.inner.release(n)?;
        Ok(QCOP_OK)
    })
}

/// Units available now (a snapshot; 0 for NULL).
///
/// ```c
/// printf("%u free\n", qcop_semaphore_value(sem));
/// ```
#[no_mangle]
pub extern "C" fn qcop_semaphore_value(semaphore: *const Semaphore) -> u32 {
    error::get(semaphore, 0, |s| s.inner.value())
}

/// Removes a persistent segment's (`semaphore` 0) or semaphore's (`semaphore` 1) name
/// through qcopd (`socket`: NULL for the default). Owner or root only.
///
/// ```c
/// qcop_shm_remove(NULL, "status", 0);
/// ```
#[no_mangle]
pub extern "C" fn qcop_shm_remove(
    socket: *const c_char,
    name: *const c_char,
    semaphore: c_int,
) -> c_int {
    error::run(|| {
        let opts = options(socket, std::ptr::null(), 0)?;
        let name = ffi::str_arg(name, "name")?;
        if semaphore != 0 {
            SystemSemaphore::remove(name, &opts)?;
        } else {
            SharedMemory::remove(name, &opts)?;
        }
        Ok(QCOP_OK)
    })
}

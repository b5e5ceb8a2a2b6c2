//! [`SharedMemory`]: a named segment brokered by `qcopd`, with a lock that survives its
//! holder's death (Qt's `QSharedMemory`).
//!
//! ```no_run
//! use qcop::shm::SharedMemory;
//!
//! let mut shm = SharedMemory::builder("status").size(4096).create_or_attach()?;
//! let mut guard = shm.lock()?;
//! if guard.previous_owner_died() {
//!     // The last holder crashed mid-update: repair or reinitialise the data.
//! }
//! guard.write(0, b"ready")?;
//! drop(guard); // unlocks
//! # Ok::<(), qcop::shm::ShmError>(())
//! ```

use super::borrow;
use super::control::{Control, ControlView, Header, Kind as ControlKind};
use super::error::ShmError;
use super::map::{Access, Mapping};
use super::robust::{Acquired, LockFailure, OWNER_MASK, SLICE};
use super::token::{token_liveness, Liveness, Token};
use crate::client::segments::NewObject;
use crate::client::{ConnectOptions, Connection};
use crate::pattern::check_name;
use crate::wire::segments::{LockState, GID_CREATOR};
use std::fmt;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Longest name of a segment or semaphore, in bytes.
pub const MAX_NAME_LEN: usize = 255;

pub(crate) fn check_object_name(name: &str) -> Result<(), ShmError> {
    check_name(name, MAX_NAME_LEN).map_err(|e| ShmError::BadName(format!("{name:?}: {e}")))
}

/// Options for creating or attaching a segment; from [`SharedMemory::builder`].
#[derive(Debug, Clone)]
pub struct SegmentBuilder {
    name: String,
    size: u64,
    mode: u16,
    gid: u32,
    persistent: bool,
    access: Access,
    connect: Option<ConnectOptions>,
}

impl SegmentBuilder {
    /// Data size in bytes (for `create` and `create_or_attach`).
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }

    /// Permission bits for a new segment, like a file's (default `0o600`: the creator's
    /// user only). Read lets others attach read-only, write read-write.
    pub fn mode(mut self, mode: u16) -> Self {
        self.mode = mode;
        self
    }

    /// The group the group bits of `mode` apply to (default: the creator's primary group).
    pub fn group(mut self, gid: u32) -> Self {
        self.gid = gid;
        self
    }

    /// Keep the segment when its last attacher detaches, until it is removed
    /// ([`SharedMemory::remove`], `qcop shm rm`). It never outlives the daemon.
    pub fn persistent(mut self, on: bool) -> Self {
        self.persistent = on;
        self
    }

    /// Attach read-only: the data cannot be written (the daemon hands a read-only
    /// descriptor); the lock can still be taken, as with Qt, but through the daemon (a
    /// round trip for each lock and unlock): a read-only attacher cannot write the lock
    /// word, so it can never release a writer's hold.
    pub fn read_only(mut self) -> Self {
        self.access = Access::ReadOnly;
        self
    }

    /// How to reach the daemon (default: [`ConnectOptions::new`]).
    pub fn connect_options(mut self, opts: ConnectOptions) -> Self {
        self.connect = Some(opts);
        self
    }

    /// Creates the segment; fails with [`ShmError::AlreadyExists`] if the name is taken.
    pub fn create(self) -> Result<SharedMemory, ShmError> {
        self.open(Open::Create)
    }

    /// Attaches to an existing segment; [`ShmError::NotFound`] if there is none.
    pub fn attach(self) -> Result<SharedMemory, ShmError> {
        self.open(Open::Attach)
    }

    /// Attaches if the segment exists (read-write, keeping its size), creates it otherwise.
    pub fn create_or_attach(self) -> Result<SharedMemory, ShmError> {
        self.open(Open::Either)
    }

    fn open(self, how: Open) -> Result<SharedMemory, ShmError> {
        check_object_name(&self.name)?;
        if how != Open::Attach && self.size == 0 {
            return Err(ShmError::InvalidSize(
                "a segment needs at least one byte".into(),
            ));
        }
        if how != Open::Attach && self.access == Access::ReadOnly {
            return Err(ShmError::InvalidArgument(
                "a segment is created read-write; attach read-only instead".into(),
            ));
        }
        // The attachment lives exactly as long as this connection: no reconnecting to a
        // daemon that would not know it.
        let opts = self.connect.unwrap_or_default().reconnect(false);
        let mut conn = Connection::connect(&opts)?;
        let grant = match how {
            Open::Attach => conn.seg_attach(&self.name, self.access == Access::ReadOnly)?,
            Open::Create | Open::Either => conn.seg_create(
                &self.name,
                self.size,
                NewObject {
                    mode: self.mode,
                    gid: self.gid,
                    persistent: self.persistent,
                    open_existing: how == Open::Either,
                },
            )?,
        };
        let access = if grant.read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        let data = Mapping::map(grant.data.as_fd(), access)
            .map_err(|e| ShmError::Unavailable(format!("cannot map the segment: {e}")))?;
        let control_fd = conn.seg_control(grant.handle)?;
        let unavailable = |e: super::control::ControlError| ShmError::Unavailable(e.to_string());
        // The header in the block is not trusted (any read-write attacher may have written
        // it): the size is the daemon's.
        let control = if grant.read_only {
            LockWord::Brokered(ControlView::open(control_fd.as_fd()).map_err(unavailable)?)
        } else {
            let header = Header {
                kind: ControlKind::Segment,
                flags: 0,
                data_size: grant.size,
                max: 0,
                slots: 0,
            };
            LockWord::Shared(Control::open(control_fd.as_fd(), header).map_err(unavailable)?)
        };
        let token = Token::from_raw(grant.token)
            .ok_or_else(|| ShmError::Unavailable(format!("bad token {:#x}", grant.token)))?;
        if data.len() as u64 != grant.size {
            return Err(ShmError::Unavailable(format!(
                "segment size mismatch: {} announced, {} mapped",
                grant.size,
                data.len(),
            )));
        }
        // Both mappings stay valid after the descriptors close.
        Ok(SharedMemory {
            conn,
            name: self.name,
            handle: grant.handle,
            token,
            data,
            control,
            created: grant.created,
            daemon_lost: false,
        })
    }
}

/// Where an attachment's lock operations go.
enum LockWord {
    /// Read-write attachment: the lock word is in this process's writable mapping of the
    /// control block.
    Shared(Control),
    /// Read-only attachment: the word can be read and slept on; the daemon changes it.
    Brokered(ControlView),
}

impl LockWord {
    fn owner(&self) -> u32 {
        match self {
            LockWord::Shared(c) => c.lock().owner(),
            LockWord::Brokered(v) => v.word() & OWNER_MASK,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Create,
    Attach,
    Either,
}

/// An attached shared-memory segment.
///
/// The attachment lasts until [`SharedMemory::detach`] or drop, or until the process
/// dies: the daemon then detaches it, and if it held the lock, marks the lock so that the
/// next locker learns the data may be inconsistent ([`SegmentGuard::previous_owner_died`]).
/// A non-persistent segment disappears with its last attachment.
///
/// Unlocked access copies bytes ([`SharedMemory::read`], [`SharedMemory::write`]);
/// in-place access needs the lock ([`SegmentGuard::data`], [`SegmentGuard::data_mut`]).
/// One `SharedMemory` serves one thread at a time; attach once per thread to lock from
/// several threads (each attachment is a separate lock owner).
pub struct SharedMemory {
    conn: Connection,
    name: String,
    handle: u32,
    token: Token,
    data: Mapping,
    control: LockWord,
    created: bool,
    /// The daemon went away: dead holders are now found by their pid.
    daemon_lost: bool,
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.data.len())
            .field("access", &self.data.access())
            .field("handle", &self.handle)
            .finish()
    }
}

impl SharedMemory {
    /// Options for a segment called `name` (Qt's key): see [`SegmentBuilder`].
    pub fn builder(name: &str) -> SegmentBuilder {
        SegmentBuilder {
            name: name.to_owned(),
            size: 0,
            mode: 0o600,
            gid: GID_CREATOR,
            persistent: false,
            access: Access::ReadWrite,
            connect: None,
        }
    }

    /// Creates a segment of `size` bytes, owner-only (Qt: `setKey` + `create(size)`).
    pub fn create(name: &str, size: u64) -> Result<SharedMemory, ShmError> {
        SharedMemory::builder(name).size(size).create()
    }

    /// Attaches to an existing segment (Qt: `setKey` + `attach(mode)`).
    pub fn attach(name: &str, access: Access) -> Result<SharedMemory, ShmError> {
        let b = SharedMemory::builder(name);
        match access {
            Access::ReadWrite => b.attach(),
            Access::ReadOnly => b.read_only().attach(),
        }
    }

    /// Removes a persistent segment's name (`qcop shm rm`): current attachers keep it, new
    /// ones cannot find it, its memory goes with the last of them. Owner or root only.
    pub fn remove(name: &str, opts: &ConnectOptions) -> Result<(), ShmError> {
        check_object_name(name)?;
        Connection::connect(opts)?.shm_remove(name, false)?;
        Ok(())
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Data size in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Read-write or read-only.
    pub fn access(&self) -> Access {
        self.data.access()
    }

    /// Whether this attachment created the segment (`create_or_attach` tells which).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Copies bytes at `offset` into `dst` without locking.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), ShmError> {
        copy_out(&self.data, offset, dst)
    }

    /// Copies `src` to `offset` without locking (readers may see it half-written).
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), ShmError> {
        copy_in(&self.data, offset, src)
    }

    /// Takes the lock, waiting as long as it takes (Qt: `lock()`).
    ///
    /// A holder that dies does not block this forever: the daemon (or, if the daemon is gone
    /// too, this waiter checking the holder's process) marks the lock, and it is returned
    /// with [`SegmentGuard::previous_owner_died`] set.
    pub fn lock(&mut self) -> Result<SegmentGuard<'_>, ShmError> {
        // Uncontended: no closure, no wait loop.
        if let LockWord::Shared(c) = &self.control {
            if let Ok(how) = c.lock().try_lock(self.token) {
                return Ok(self.guard(how));
            }
        }
        match self.lock_inner(None)? {
            Some(g) => Ok(g),
            None => Err(ShmError::LockError(
                "lock wait ended without the lock".into(),
            )),
        }
    }

    /// Takes the lock if it is free; `None` if someone holds it.
    pub fn try_lock(&mut self) -> Result<Option<SegmentGuard<'_>>, ShmError> {
        let result = match &self.control {
            LockWord::Shared(c) => c.lock().try_lock(self.token),
            LockWord::Brokered(_) => self.brokered_lock(Some(Duration::ZERO))?,
        };
        self.finish_lock(result)
    }

    /// Takes the lock, waiting at most `timeout`; `None` if it stayed held.
    pub fn lock_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<SegmentGuard<'_>>, ShmError> {
        self.lock_inner(Some(timeout))
    }

    fn lock_inner(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<SegmentGuard<'_>>, ShmError> {
        let SharedMemory {
            conn,
            control,
            token,
            daemon_lost,
            handle,
            ..
        } = self;
        let control = match control {
            LockWord::Shared(c) => c,
            LockWord::Brokered(_) => {
                let result = self.brokered_lock(timeout)?;
                return self.finish_lock(result);
            }
        };
        let result = control.lock().lock(*token, timeout, &mut |owner| {
            // A word no attachment could have written (garbage from a misbehaving
            // attacher) has no holder to wait for.
            if Token::from_raw(owner).is_none() {
                return Liveness::Dead;
            }
            // The daemon hands over the lock of a holder that goes away; have it also check
            // the block, in case the word was overwritten with a token no one holds.
            if !*daemon_lost {
                match conn.seg_lock(*handle, (false, false, true)) {
                    Err(e) if e.is_disconnect() => {}
                    _ => return Liveness::Unknown,
                }
                log::warn!("qcopd is gone: checking lock holders by process id");
                *daemon_lost = true;
            }
            token_liveness(owner)
        });
        self.finish_lock(result)
    }

    /// Takes the lock through the daemon (a read-only attachment), sleeping on the word
    /// between attempts while it is held, for at most `timeout` (`None`: no limit). Fails
    /// as soon as the daemon is unreachable: without it no one could hand the lock over.
    fn brokered_lock(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Result<Acquired, LockFailure>, ShmError> {
        let LockWord::Brokered(view) = &self.control else {
            return Err(ShmError::LockError("not a read-only attachment".into()));
        };
        let waits = timeout != Some(Duration::ZERO);
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut slept = false;
        loop {
            let (state, word) = self.conn.seg_lock(self.handle, (false, waits, false))?;
            match state {
                LockState::Locked => return Ok(Ok(Acquired::Clean)),
                LockState::LockedOwnerDied => return Ok(Ok(Acquired::OwnerDied)),
                LockState::Recursive => return Ok(Err(LockFailure::Recursive)),
                LockState::Busy => {}
                other => {
                    return Err(ShmError::LockError(format!(
                        "the daemon answered a lock request with {other:?}"
                    )))
                }
            }
            let slice = match deadline {
                None => SLICE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        // We may have consumed the wake-up meant for the next holder.
                        if slept && view.word() & OWNER_MASK == 0 {
                            view.wake_one();
                        }
                        return Ok(Err(if waits {
                            LockFailure::TimedOut
                        } else {
                            LockFailure::Busy {
                                owner: word & OWNER_MASK,
                            }
                        }));
                    }
                    left.min(SLICE)
                }
            };
            // Freed between the daemon's attempt and its answer: ask again at once.
            if word & OWNER_MASK != 0 {
                view.wait(word, slice);
                slept = true;
            }
        }
    }

    /// Releases the lock through the daemon (a read-only attachment).
    fn brokered_unlock(&mut self) -> Result<(), ShmError> {
        match self.conn.seg_lock(self.handle, (true, false, false))? {
            (LockState::Unlocked, _) => Ok(()),
            (_, word) => Err(ShmError::LockError(format!(
                "the lock was no longer held by this attachment (holder {:#x})",
                word & OWNER_MASK
            ))),
        }
    }

    /// Releases the lock this attachment holds, whichever way it was taken.
    #[inline]
    fn unlock_held(&mut self) -> Result<(), ShmError> {
        match &self.control {
            LockWord::Shared(c) => c.lock().unlock(self.token).map_err(|e| {
                ShmError::LockError(format!(
                    "the lock was no longer held by this attachment (holder {:#x})",
                    e.owner
                ))
            }),
            LockWord::Brokered(_) => self.brokered_unlock(),
        }
    }

    fn finish_lock(
        &mut self,
        result: Result<Acquired, LockFailure>,
    ) -> Result<Option<SegmentGuard<'_>>, ShmError> {
        match result {
            Ok(how) => Ok(Some(self.guard(how))),
            Err(LockFailure::Busy { .. } | LockFailure::TimedOut) => Ok(None),
            Err(LockFailure::Recursive) => Err(ShmError::LockError(
                "this attachment already holds the lock".into(),
            )),
        }
    }

    #[inline]
    fn guard(&mut self, how: Acquired) -> SegmentGuard<'_> {
        if how == Acquired::OwnerDied {
            log::warn!(
                "segment {:?}: the previous lock holder died; the data may be inconsistent",
                self.name
            );
        }
        SegmentGuard {
            owner_died: how == Acquired::OwnerDied,
            shm: self,
        }
    }

    /// Detaches: unmaps the segment and tells the daemon, which removes a non-persistent
    /// segment with its last attachment (Qt: `detach()`). Dropping does the same.
    pub fn detach(mut self) -> Result<(), ShmError> {
        self.release_lock_if_held();
        match self.conn.seg_close(self.handle) {
            // Without a daemon there is nothing left to detach from.
            Err(e) if e.is_disconnect() => Ok(()),
            r => r.map_err(ShmError::from),
        }
    }

    /// A guard leaked with `mem::forget` leaves the lock held: give it back before leaving,
    /// so detaching is not mistaken for a crash.
    fn release_lock_if_held(&mut self) {
        if self.control.owner() == self.token.raw() {
            let _ = self.unlock_held();
        }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        self.release_lock_if_held();
        // Closing the connection detaches.
    }
}

/// The segment lock, held; unlocks when dropped (Qt: `lock()` ... `unlock()`).
pub struct SegmentGuard<'a> {
    shm: &'a mut SharedMemory,
    owner_died: bool,
}

impl fmt::Debug for SegmentGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentGuard")
            .field("segment", &self.shm.name)
            .field("previous_owner_died", &self.owner_died)
            .finish()
    }
}

impl SegmentGuard<'_> {
    /// True if the previous holder died holding the lock: it may have left the data
    /// half-updated. Reported to exactly one locker.
    pub fn previous_owner_died(&self) -> bool {
        self.owner_died
    }

    /// The data, in place (Qt: `constData()`).
    #[inline]
    pub fn data(&self) -> &[u8] {
        borrow::bytes(&self.shm.data)
    }

    /// The data, in place and writable (Qt: `data()`); [`ShmError::PermissionDenied`] on a
    /// read-only attachment.
    #[inline]
    pub fn data_mut(&mut self) -> Result<&mut [u8], ShmError> {
        borrow::bytes_mut(&mut self.shm.data)
            .ok_or_else(|| ShmError::PermissionDenied("the segment is attached read-only".into()))
    }

    /// Copies bytes at `offset` into `dst`.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), ShmError> {
        copy_out(&self.shm.data, offset, dst)
    }

    /// Copies `src` to `offset`.
    pub fn write(&mut self, offset: usize, src: &[u8]) -> Result<(), ShmError> {
        copy_in(&self.shm.data, offset, src)
    }

    /// Unlocks, reporting a lock that was taken away (the daemon or a waiter found this
    /// attachment dead, or another process overwrote the lock word).
    pub fn unlock(self) -> Result<(), ShmError> {
        let mut this = std::mem::ManuallyDrop::new(self);
        this.shm.unlock_held()
    }
}

impl Drop for SegmentGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let _ = self.shm.unlock_held();
    }
}

fn copy_out(map: &Mapping, offset: usize, dst: &mut [u8]) -> Result<(), ShmError> {
    if map.read(offset, dst) {
        return Ok(());
    }
    Err(ShmError::InvalidArgument(format!(
        "{} bytes at offset {offset} run past the {}-byte segment",
        dst.len(),
        map.len()
    )))
}

fn copy_in(map: &Mapping, offset: usize, src: &[u8]) -> Result<(), ShmError> {
    if map.access() == Access::ReadOnly {
        return Err(ShmError::PermissionDenied(
            "the segment is attached read-only".into(),
        ));
    }
    if map.write(offset, src) {
        return Ok(());
    }
    Err(ShmError::InvalidArgument(format!(
        "{} bytes at offset {offset} run past the {}-byte segment",
        src.len(),
        map.len()
    )))
}

//! [`SystemSemaphore`]: a named counting semaphore brokered by `qcopd` (Qt's
//! `QSystemSemaphore`), optionally with undo: units held by a process that dies are given
//! back, as SysV `SEM_UNDO` did.
//!
//! ```no_run
//! use qcop::shm::SystemSemaphore;
//!
//! // Three slots; a crashed user's slot comes back.
//! let mut sem = SystemSemaphore::builder("encoder-slots")
//!     .initial(3)
//!     .max(3)
//!     .undo(true)
//!     .create_or_open()?;
//! sem.acquire()?;
//! // ... use the slot ...
//! sem.release(1)?;
//! # Ok::<(), qcop::shm::ShmError>(())
//! ```

use super::control::{Control, Header, Kind as ControlKind, FLAG_UNDO, MAX_SLOTS};
use super::counting::{UndoSlot, MAX_VALUE};
use super::error::ShmError;
use super::segment::check_object_name;
use super::token::{token_liveness, Liveness, Token};
use crate::client::segments::NewObject;
use crate::client::{ConnectOptions, Connection};
use crate::wire::segments::GID_CREATOR;
use std::fmt;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Options for creating or opening a semaphore; from [`SystemSemaphore::builder`].
#[derive(Debug, Clone)]
pub struct SemaphoreBuilder {
    name: String,
    initial: u32,
    max: u32,
    undo: bool,
    mode: u16,
    gid: u32,
    persistent: bool,
    connect: Option<ConnectOptions>,
}

impl SemaphoreBuilder {
    /// Units available when created (default 0; Qt's `initialValue`).
    pub fn initial(mut self, n: u32) -> Self {
        self.initial = n;
        self
    }

    /// Largest value; a release past it fails, and the value never reads above it, whatever
    /// another opener writes (default and limit: 2³¹−1).
    pub fn max(mut self, n: u32) -> Self {
        self.max = n;
        self
    }

    /// Give back the units of an opener that goes away (closes, or dies) without
    /// releasing them, like SysV `SEM_UNDO`. A process killed in the middle of an acquire
    /// or release may lose that one operation's units, never get them twice.
    pub fn undo(mut self, on: bool) -> Self {
        self.undo = on;
        self
    }

    /// Permission bits (default `0o600`); using the semaphore needs write permission.
    pub fn mode(mut self, mode: u16) -> Self {
        self.mode = mode;
        self
    }

    /// The group the group bits apply to (default: the creator's primary group).
    pub fn group(mut self, gid: u32) -> Self {
        self.gid = gid;
        self
    }

    /// Keep the semaphore (and its value) when its last user closes it, until removed.
    pub fn persistent(mut self, on: bool) -> Self {
        self.persistent = on;
        self
    }

    /// How to reach the daemon (default: [`ConnectOptions::new`]).
    pub fn connect_options(mut self, opts: ConnectOptions) -> Self {
        self.connect = Some(opts);
        self
    }

    /// Creates it; [`ShmError::AlreadyExists`] if the name is taken.
    pub fn create(self) -> Result<SystemSemaphore, ShmError> {
        self.open_as(Some(false))
    }

    /// Opens an existing one, leaving its value alone; [`ShmError::NotFound`] if none.
    pub fn open(self) -> Result<SystemSemaphore, ShmError> {
        self.open_as(None)
    }

    /// Opens it if it exists (value untouched), creates it with `initial` otherwise (Qt's
    /// `QSystemSemaphore::Open` mode).
    pub fn create_or_open(self) -> Result<SystemSemaphore, ShmError> {
        self.open_as(Some(true))
    }

    fn open_as(self, create: Option<bool>) -> Result<SystemSemaphore, ShmError> {
        check_object_name(&self.name)?;
        if create.is_some() && (self.max == 0 || self.max > MAX_VALUE || self.initial > self.max) {
            return Err(ShmError::InvalidArgument(format!(
                "initial value {} and maximum {} must satisfy initial <= max, 1 <= max <= {MAX_VALUE}",
                self.initial, self.max
            )));
        }
        let opts = self.connect.unwrap_or_default().reconnect(false);
        let mut conn = Connection::connect(&opts)?;
        let grant = match create {
            None => conn.sem_open(&self.name)?,
            Some(open_existing) => conn.sem_create(
                &self.name,
                (self.initial, self.max, self.undo),
                NewObject {
                    mode: self.mode,
                    gid: self.gid,
                    persistent: self.persistent,
                    open_existing,
                },
            )?,
        };
        if grant.max == 0 || grant.max > MAX_VALUE {
            return Err(ShmError::Unavailable(format!(
                "the daemon announced a maximum of {}",
                grant.max
            )));
        }
        // Everything that matters comes from the daemon's answer: any opener may have
        // written the block's own copy.
        let undo = grant.slot.is_some();
        let header = Header {
            kind: ControlKind::Semaphore,
            flags: if undo { FLAG_UNDO } else { 0 },
            data_size: 0,
            max: grant.max,
            slots: if undo { MAX_SLOTS } else { 0 },
        };
        let control = Control::open(grant.control.as_fd(), header)
            .map_err(|e| ShmError::Unavailable(e.to_string()))?;
        let token = Token::from_raw(grant.token)
            .ok_or_else(|| ShmError::Unavailable(format!("bad token {:#x}", grant.token)))?;
        if let Some(i) = grant.slot {
            let mine = control
                .slot(i)
                .is_some_and(|s| s.token.load(Ordering::Acquire) == token.raw());
            if !mine {
                return Err(ShmError::Unavailable(format!(
                    "undo slot {i} does not hold this opener's token"
                )));
            }
        }
        Ok(SystemSemaphore {
            conn,
            name: self.name,
            handle: grant.handle,
            control,
            slot: grant.slot,
            created: grant.created,
            daemon_lost: false,
        })
    }
}

/// An open system semaphore. One value shared by every process that opens the name;
/// methods take `&mut self`: open it once per thread.
pub struct SystemSemaphore {
    conn: Connection,
    name: String,
    handle: u32,
    control: Control,
    slot: Option<u32>,
    created: bool,
    daemon_lost: bool,
}

impl fmt::Debug for SystemSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemSemaphore")
            .field("name", &self.name)
            .field("value", &self.value())
            .field("max", &self.max())
            .field("undo", &self.slot.is_some())
            .finish()
    }
}

impl SystemSemaphore {
    /// Options for a semaphore called `name`: see [`SemaphoreBuilder`].
    pub fn builder(name: &str) -> SemaphoreBuilder {
        SemaphoreBuilder {
            name: name.to_owned(),
            initial: 0,
            max: MAX_VALUE,
            undo: false,
            mode: 0o600,
            gid: GID_CREATOR,
            persistent: false,
            connect: None,
        }
    }

    /// Opens `name`, creating it with `initial` units if it does not exist (Qt:
    /// `QSystemSemaphore(key, initial, QSystemSemaphore::Open)`).
    pub fn create_or_open(name: &str, initial: u32) -> Result<SystemSemaphore, ShmError> {
        SystemSemaphore::builder(name)
            .initial(initial)
            .create_or_open()
    }

    /// Opens an existing semaphore.
    pub fn open(name: &str) -> Result<SystemSemaphore, ShmError> {
        SystemSemaphore::builder(name).open()
    }

    /// Removes a persistent semaphore's name. Owner or root only.
    pub fn remove(name: &str, opts: &ConnectOptions) -> Result<(), ShmError> {
        check_object_name(name)?;
        Connection::connect(opts)?.shm_remove(name, true)?;
        Ok(())
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this opener created it.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Units available now (a snapshot).
    pub fn value(&self) -> u32 {
        self.control.semaphore().value()
    }

    /// The largest value.
    pub fn max(&self) -> u32 {
        self.control.semaphore().max()
    }

    fn undo_slot(&self) -> Option<UndoSlot<'_>> {
        self.slot.and_then(|i| self.control.slot(i))
    }

    /// Takes one unit, waiting as long as it takes (Qt: `acquire()`).
    pub fn acquire(&mut self) -> Result<(), ShmError> {
        if self.acquire_inner(None) {
            Ok(())
        } else {
            Err(ShmError::LockError("acquire ended without a unit".into()))
        }
    }

    /// Takes one unit if one is available now.
    pub fn try_acquire(&mut self) -> Result<bool, ShmError> {
        Ok(self.control.semaphore().try_acquire(self.undo_slot()))
    }

    /// Takes one unit, waiting at most `timeout`; false if none came.
    pub fn acquire_timeout(&mut self, timeout: Duration) -> Result<bool, ShmError> {
        Ok(self.acquire_inner(Some(timeout)))
    }

    fn acquire_inner(&mut self, timeout: Option<Duration>) -> bool {
        let SystemSemaphore {
            conn,
            control,
            slot,
            daemon_lost,
            ..
        } = self;
        let undo = slot.and_then(|i| control.slot(i));
        control.semaphore().acquire(undo, timeout, &mut || {
            if !*daemon_lost && conn.daemon_reachable() {
                return;
            }
            if !*daemon_lost {
                log::warn!("qcopd is gone: reclaiming units of dead openers by process id");
                *daemon_lost = true;
            }
            reclaim_dead(control);
        })
    }

    /// Gives back `n` units (Qt: `release(n)`); fails without changing anything if the
    /// value would pass the maximum.
    pub fn release(&mut self, n: u32) -> Result<(), ShmError> {
        self.control
            .semaphore()
            .release(n, self.undo_slot())
            .map_err(|o| {
                ShmError::InvalidArgument(format!(
                    "releasing {n} units would raise {} past its maximum {} (value {})",
                    self.name, o.max, o.value
                ))
            })
    }

    /// Closes it; with undo, units this opener still holds are given back. Dropping does
    /// the same.
    pub fn close(mut self) -> Result<(), ShmError> {
        match self.conn.seg_close(self.handle) {
            Err(e) if e.is_disconnect() => Ok(()),
            r => r.map_err(ShmError::from),
        }
    }
}

/// While the daemon is unreachable: gives back the units of undo slots whose process is
/// gone. The token CAS in `reclaim` makes each slot's units come back once, whoever gets
/// there first.
fn reclaim_dead(control: &Control) {
    let sem = control.semaphore();
    for i in 0..control.header().slots {
        let Some(slot) = control.slot(i) else { break };
        let token = slot.token.load(Ordering::Acquire);
        if token != 0
            && token_liveness(token) == Liveness::Dead
            && sem.reclaim(slot, token).is_some()
        {
            control.note_recovery();
        }
    }
}

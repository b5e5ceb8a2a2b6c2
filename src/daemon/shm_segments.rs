//! Named shared-memory segments and system semaphores brokered by the daemon
//! (QSharedMemory and QSystemSemaphore without their failure modes).
//!
//! The daemon creates every object as memfds and hands descriptors to attachers, so nothing
//! is ever named in `/dev/shm`. A segment is a data memfd plus a one-page control memfd
//! holding its lock; a semaphore is a control memfd. The daemon maps each control block
//! itself, because it is the one that notices an attacher going away: when a connection
//! closes (or detaches explicitly) it marks a lock that attachment held `OWNER_DIED`, waking
//! the waiters, and gives back the units of a semaphore with undo. Neither needs the
//! attacher's cooperation, so a SIGKILLed process never deadlocks the others.
//!
//! Lifetime: an object lives while it has attachments; a persistent one also survives its
//! last detach until removed. Removing only drops the name: attachers keep their memory,
//! new ones cannot find it, and the memory goes with the last detach.
//!
//! Trust: the daemon hands every control block read-write only to those that may change
//! it (read-write attachers, semaphore openers) and read-only to read-only attachers, which
//! take the lock through it ([`SegFrame::Lock`]). It trusts nothing it reads back from a
//! block: before it hands one out, acts on one, or lists it, it checks the block against
//! its own records (the header it wrote, the tokens of the attachments it granted, the
//! semaphore's maximum) and rewrites what does not match, counting each damaged block in
//! `shm_control_blocks_repaired`.
//!
//! Permissions follow Unix file modes on the creator's uid and a group: read lets a client
//! attach a segment read-only, write lets it attach read-write and use a semaphore;
//! removing needs the owner or root. [`check_access`] is the single place deciding this.

use super::config::Config;
use crate::pattern::check_name;
use crate::shm::control::{self, Control, Header, Kind as ControlKind, CONTROL_SIZE, MAX_SLOTS};
use crate::shm::counting::MAX_VALUE;
use crate::shm::map::create_memfd;
use crate::shm::robust::{Acquired, LockFailure};
use crate::shm::token::{Token, NONCES};
use crate::wire::segments::{LockState, SegAttacher, SegEntry, SegFrame, GID_CREATOR, NO_SLOT};
use crate::wire::ErrorCode;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Longest segment or semaphore name, in bytes.
pub const MAX_NAME: usize = 255;

/// Who is asking: the connection and its `SO_PEERCRED` credentials.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// Connection id.
    pub client_id: u32,
    /// Process id as the daemon sees it.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Name from the handshake.
    pub name: &'a str,
}

/// What an attacher wants to do with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Attach a segment read-only.
    Read,
    /// Attach a segment read-write, or use a semaphore.
    Write,
    /// Remove the name.
    Remove,
}

/// The ownership and mode of an object, as [`check_access`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    /// The creator's uid.
    pub uid: u32,
    /// The group the group bits apply to.
    pub gid: u32,
    /// Permission bits (`0o777` at most).
    pub mode: u16,
}

/// Whether `peer` may do `want` to an object owned as `own`: Unix file semantics on the
/// peer's uid and primary gid (root may do anything; removing needs the owner). Returns
/// the reason for a refusal. This is the one permission check of this module.
pub fn check_access(own: &Ownership, peer: &Peer<'_>, want: Want) -> Result<(), String> {
    if peer.uid == 0 {
        return Ok(());
    }
    let bits = if peer.uid == own.uid {
        (own.mode >> 6) & 0o7
    } else if peer.gid == own.gid {
        (own.mode >> 3) & 0o7
    } else {
        own.mode & 0o7
    };
    let ok = match want {
        Want::Read => bits & 0o4 != 0,
        Want::Write => bits & 0o2 != 0,
        Want::Remove => peer.uid == own.uid,
    };
    if ok {
        Ok(())
    } else {
        let what = match want {
            Want::Read => "read",
            Want::Write => "write",
            Want::Remove => "remove",
        };
        Err(format!(
            "uid {} may not {what} it (owner uid {}, group {}, mode {:04o})",
            peer.uid, own.uid, own.gid, own.mode
        ))
    }
}

/// The daemon's answer to one request of this family.
#[derive(Debug)]
pub enum SegAnswer {
    /// A frame without a descriptor.
    Reply(SegFrame<'static>),
    /// A frame and the descriptor it carries.
    ReplyFd(SegFrame<'static>, OwnedFd),
    /// `Ok` with this sequence number.
    Ok(u32),
    /// A refused request.
    Error(u32, ErrorCode, String),
    /// A frame only the daemon may send came from a client: close it.
    Fatal(String),
}

type ObjectId = u64;

enum Body {
    Segment { data: OwnedFd, size: u64 },
    Semaphore { undo: bool, slots: Vec<bool> },
}

struct Object {
    name: Box<str>,
    own: Ownership,
    persistent: bool,
    removed: bool,
    control_fd: OwnedFd,
    control: Control,
    body: Body,
    /// Handle ids attached to it.
    handles: Vec<u32>,
    /// Dead holders' locks or undo units recovered (the block's copy is informational).
    recoveries: u32,
}

impl Object {
    fn is_semaphore(&self) -> bool {
        matches!(self.body, Body::Semaphore { .. })
    }
}

struct Handle {
    object: ObjectId,
    client_id: u32,
    token: Token,
    read_only: bool,
    slot: Option<u32>,
    pid: u32,
    uid: u32,
    client_name: Box<str>,
}

/// Counters since start, reported by `qcop stats`.
#[derive(Debug, Default, Clone)]
struct Counters {
    segments_created: u64,
    semaphores_created: u64,
    attaches: u64,
    refused: u64,
    locks_recovered: u64,
    undo_units_returned: u64,
    destroyed: u64,
    control_repairs: u64,
}

/// Every segment and semaphore, and who has them.
#[derive(Default)]
pub struct Segments {
    objects: HashMap<ObjectId, Object>,
    segment_names: HashMap<Box<str>, ObjectId>,
    semaphore_names: HashMap<Box<str>, ObjectId>,
    handles: HashMap<u32, Handle>,
    by_client: HashMap<u32, Vec<u32>>,
    next_object: ObjectId,
    next_handle: u32,
    segment_bytes: u64,
    segment_count: u32,
    semaphore_count: u32,
    counters: Counters,
}

/// A refusal: code and text.
type Refusal = (ErrorCode, String);

impl Segments {
    /// Handles one request from `peer` under the limits of `cfg`.
    pub fn handle(&mut self, cfg: &Config, peer: &Peer<'_>, frame: SegFrame<'_>) -> SegAnswer {
        let seq = frame.header_fields().1;
        let result = match frame {
            SegFrame::Create {
                open_existing,
                persistent,
                name,
                size,
                mode,
                gid,
                pid,
                ..
            } => self.create_segment(
                cfg,
                peer,
                seq,
                name,
                size,
                Ownership {
                    uid: peer.uid,
                    gid: if gid == GID_CREATOR { peer.gid } else { gid },
                    mode,
                },
                persistent,
                open_existing,
                pid,
            ),
            SegFrame::Attach {
                read_only,
                name,
                pid,
                ..
            } => self.attach_segment(cfg, peer, seq, name, read_only, pid, false),
            SegFrame::Control { handle, .. } => self.control_block(peer, seq, handle),
            SegFrame::SemCreate {
                open_existing,
                persistent,
                undo,
                name,
                initial,
                max,
                mode,
                gid,
                pid,
                ..
            } => self.create_semaphore(
                cfg,
                peer,
                seq,
                name,
                (initial, max, undo),
                Ownership {
                    uid: peer.uid,
                    gid: if gid == GID_CREATOR { peer.gid } else { gid },
                    mode,
                },
                persistent,
                open_existing,
                pid,
            ),
            SegFrame::SemOpen { name, pid, .. } => {
                self.open_semaphore(cfg, peer, seq, name, pid, false)
            }
            SegFrame::Close { handle, .. } => match self.handles.get(&handle) {
                Some(h) if h.client_id == peer.client_id => {
                    self.release(handle);
                    Ok(SegAnswer::Ok(seq))
                }
                _ => Err((ErrorCode::SegNotFound, format!("no handle {handle}"))),
            },
            SegFrame::Remove {
                semaphore, name, ..
            } => self.remove(peer, seq, semaphore, name),
            SegFrame::List { .. } => {
                let ids: Vec<ObjectId> = self.objects.keys().copied().collect();
                for id in ids {
                    self.audit(id);
                }
                Ok(SegAnswer::Reply(SegFrame::Listing {
                    seq,
                    entries: self.list(peer),
                }))
            }
            SegFrame::Lock {
                handle,
                unlock,
                waited,
                check,
                ..
            } => self.lock_op(peer, seq, handle, (unlock, waited, check)),
            other => {
                return SegAnswer::Fatal(format!(
                    "unexpected {:?} frame from a client",
                    other.kind()
                ))
            }
        };
        result.unwrap_or_else(|(code, text)| {
            self.counters.refused += 1;
            SegAnswer::Error(seq, code, text)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn create_segment(
        &mut self,
        cfg: &Config,
        peer: &Peer<'_>,
        seq: u32,
        name: &str,
        size: u64,
        own: Ownership,
        persistent: bool,
        open_existing: bool,
        pid: u32,
    ) -> Result<SegAnswer, Refusal> {
        check_object_name(name)?;
        check_pid(pid)?;
        if self.segment_names.contains_key(name) {
            if open_existing {
                return self.attach_segment(cfg, peer, seq, name, false, pid, false);
            }
            return Err((
                ErrorCode::SegExists,
                format!("a segment named {name:?} exists"),
            ));
        }
        check_mode(own.mode)?;
        if size == 0 || size > cfg.shm_max_segment_bytes {
            return Err((
                ErrorCode::SegInvalidSize,
                format!(
                    "size {size} is outside 1..={} bytes (shm_max_segment_bytes)",
                    cfg.shm_max_segment_bytes
                ),
            ));
        }
        if self.segment_count >= cfg.shm_max_segments {
            return Err((
                ErrorCode::SegLimit,
                format!("{} segments exist (shm_max_segments)", cfg.shm_max_segments),
            ));
        }
        if self.segment_bytes + size > cfg.shm_max_total_segment_bytes {
            return Err((
                ErrorCode::SegLimit,
                format!(
                    "{} of {} bytes are in use (shm_max_total_segment_bytes)",
                    self.segment_bytes, cfg.shm_max_total_segment_bytes
                ),
            ));
        }
        self.check_handle_limit(cfg, peer)?;
        let data = create_memfd(&format!("qcop-seg:{name}"), size).map_err(unavailable)?;
        // Owner-only inode: a read-only descriptor cannot be reopened for writing through
        // /proc/self/fd by a client running under another uid.
        nix::sys::stat::fchmod(&data, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|e| unavailable(io::Error::from(e)))?;
        let header = Header {
            kind: ControlKind::Segment,
            flags: 0,
            data_size: size,
            max: 0,
            slots: 0,
        };
        let (control_fd, control) = new_control(&format!("qcop-segctl:{name}"), header, 0)?;
        let id = self.insert(Object {
            name: name.into(),
            own,
            persistent,
            removed: false,
            control_fd,
            control,
            body: Body::Segment { data, size },
            handles: Vec::new(),
            recoveries: 0,
        });
        self.segment_names.insert(name.into(), id);
        self.segment_count += 1;
        self.segment_bytes += size;
        self.counters.segments_created += 1;
        log::debug!(
            "client {}: created segment {name:?} ({size} bytes)",
            peer.client_id
        );
        self.attach_segment(cfg, peer, seq, name, false, pid, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn attach_segment(
        &mut self,
        cfg: &Config,
        peer: &Peer<'_>,
        seq: u32,
        name: &str,
        read_only: bool,
        pid: u32,
        created: bool,
    ) -> Result<SegAnswer, Refusal> {
        check_object_name(name)?;
        check_pid(pid)?;
        let Some(&id) = self.segment_names.get(name) else {
            return Err((ErrorCode::SegNotFound, format!("no segment named {name:?}")));
        };
        self.audit(id);
        let obj = &self.objects[&id];
        if !created {
            let want = if read_only { Want::Read } else { Want::Write };
            check_access(&obj.own, peer, want).map_err(|e| (ErrorCode::Denied, e))?;
            self.check_handle_limit(cfg, peer)?;
        }
        let Body::Segment { data, size } = &obj.body else {
            return Err((ErrorCode::SegNotFound, format!("no segment named {name:?}")));
        };
        let size = *size;
        let fd = if read_only {
            reopen_read_only(data)
        } else {
            data.try_clone()
        }
        .map_err(unavailable)?;
        let (handle, token) = self.add_handle(id, peer, pid, read_only, None)?;
        self.counters.attaches += 1;
        Ok(SegAnswer::ReplyFd(
            SegFrame::Attached {
                seq,
                read_only,
                created,
                handle,
                token: token.raw(),
                size,
            },
            fd,
        ))
    }

    fn control_block(
        &mut self,
        peer: &Peer<'_>,
        seq: u32,
        handle: u32,
    ) -> Result<SegAnswer, Refusal> {
        let (attachment, obj) = self.own_handle(peer, handle)?;
        let read_only = attachment.read_only;
        // A read-only attacher may read the lock word and sleep on it, never change it.
        let fd = if read_only {
            reopen_read_only(&obj.control_fd)
        } else {
            obj.control_fd.try_clone()
        }
        .map_err(unavailable)?;
        Ok(SegAnswer::ReplyFd(
            SegFrame::ControlBlock { seq, handle },
            fd,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn create_semaphore(
        &mut self,
        cfg: &Config,
        peer: &Peer<'_>,
        seq: u32,
        name: &str,
        (initial, max, undo): (u32, u32, bool),
        own: Ownership,
        persistent: bool,
        open_existing: bool,
        pid: u32,
    ) -> Result<SegAnswer, Refusal> {
        check_object_name(name)?;
        check_pid(pid)?;
        if self.semaphore_names.contains_key(name) {
            if open_existing {
                return self.open_semaphore(cfg, peer, seq, name, pid, false);
            }
            return Err((
                ErrorCode::SegExists,
                format!("a semaphore named {name:?} exists"),
            ));
        }
        check_mode(own.mode)?;
        if max == 0 || max > MAX_VALUE || initial > max {
            return Err((
                ErrorCode::SegInvalid,
                format!("initial value {initial} and maximum {max} must satisfy initial <= max, 1 <= max <= {MAX_VALUE}"),
            ));
        }
        if self.semaphore_count >= cfg.shm_max_semaphores {
            return Err((
                ErrorCode::SegLimit,
                format!(
                    "{} semaphores exist (shm_max_semaphores)",
                    cfg.shm_max_semaphores
                ),
            ));
        }
        self.check_handle_limit(cfg, peer)?;
        let slots = if undo { MAX_SLOTS } else { 0 };
        let header = Header {
            kind: ControlKind::Semaphore,
            flags: if undo { control::FLAG_UNDO } else { 0 },
            data_size: 0,
            max,
            slots,
        };
        let (control_fd, control) = new_control(&format!("qcop-sem:{name}"), header, initial)?;
        let id = self.insert(Object {
            name: name.into(),
            own,
            persistent,
            removed: false,
            control_fd,
            control,
            body: Body::Semaphore {
                undo,
                slots: vec![false; slots as usize],
            },
            handles: Vec::new(),
            recoveries: 0,
        });
        self.semaphore_names.insert(name.into(), id);
        self.semaphore_count += 1;
        self.counters.semaphores_created += 1;
        self.open_semaphore(cfg, peer, seq, name, pid, true)
    }

    fn open_semaphore(
        &mut self,
        cfg: &Config,
        peer: &Peer<'_>,
        seq: u32,
        name: &str,
        pid: u32,
        created: bool,
    ) -> Result<SegAnswer, Refusal> {
        check_object_name(name)?;
        check_pid(pid)?;
        let Some(&id) = self.semaphore_names.get(name) else {
            return Err((
                ErrorCode::SegNotFound,
                format!("no semaphore named {name:?}"),
            ));
        };
        self.audit(id);
        let obj = self.objects.get_mut(&id).ok_or_else(|| {
            (
                ErrorCode::SegNotFound,
                format!("no semaphore named {name:?}"),
            )
        })?;
        if !created {
            check_access(&obj.own, peer, Want::Write).map_err(|e| (ErrorCode::Denied, e))?;
        }
        let fd = obj.control_fd.try_clone().map_err(unavailable)?;
        let slot = match &mut obj.body {
            Body::Semaphore { undo: true, slots } => {
                let Some(i) = slots.iter().position(|used| !used) else {
                    return Err((
                        ErrorCode::SegLimit,
                        format!("all {MAX_SLOTS} undo slots of {name:?} are in use"),
                    ));
                };
                Some(i as u32)
            }
            _ => None,
        };
        if !created {
            self.check_handle_limit(cfg, peer)?;
        }
        let (handle, token) = self.add_handle(id, peer, pid, false, slot)?;
        if let (Some(i), Some(obj)) = (slot, self.objects.get_mut(&id)) {
            if let Body::Semaphore { slots, .. } = &mut obj.body {
                slots[i as usize] = true;
            }
            if let Some(s) = obj.control.slot(i) {
                use std::sync::atomic::Ordering;
                s.adj.store(0, Ordering::Relaxed);
                // Release: the opener reads the slot after receiving the descriptor.
                s.token.store(token.raw(), Ordering::Release);
            }
        }
        self.counters.attaches += 1;
        let max = self.objects.get(&id).map_or(0, |o| o.control.header().max);
        Ok(SegAnswer::ReplyFd(
            SegFrame::SemOpened {
                seq,
                created,
                handle,
                token: token.raw(),
                slot: slot.unwrap_or(NO_SLOT),
                max,
            },
            fd,
        ))
    }

    fn remove(
        &mut self,
        peer: &Peer<'_>,
        seq: u32,
        semaphore: bool,
        name: &str,
    ) -> Result<SegAnswer, Refusal> {
        check_object_name(name)?;
        let names = if semaphore {
            &mut self.semaphore_names
        } else {
            &mut self.segment_names
        };
        let what = if semaphore { "semaphore" } else { "segment" };
        let Some(&id) = names.get(name) else {
            return Err((ErrorCode::SegNotFound, format!("no {what} named {name:?}")));
        };
        let obj = self
            .objects
            .get_mut(&id)
            .ok_or_else(|| (ErrorCode::SegNotFound, format!("no {what} named {name:?}")))?;
        check_access(&obj.own, peer, Want::Remove).map_err(|e| (ErrorCode::Denied, e))?;
        names.remove(name);
        obj.removed = true;
        log::debug!("client {}: removed {what} {name:?}", peer.client_id);
        if obj.handles.is_empty() {
            self.destroy(id);
        }
        Ok(SegAnswer::Ok(seq))
    }

    /// Objects `peer` may at least read (root and owners see theirs), with their attachers.
    fn list(&self, peer: &Peer<'_>) -> Vec<SegEntry> {
        let mut entries: Vec<SegEntry> = self
            .objects
            .values()
            .filter(|o| check_access(&o.own, peer, Want::Read).is_ok() || o.own.uid == peer.uid)
            .map(|o| {
                let attachers = o
                    .handles
                    .iter()
                    .filter_map(|h| self.handles.get(h))
                    .map(|h| SegAttacher {
                        client_id: h.client_id,
                        pid: h.pid,
                        uid: h.uid,
                        read_only: h.read_only,
                        name: h.client_name.to_string(),
                    })
                    .collect();
                let (size, value, max, undo) = match &o.body {
                    Body::Segment { size, .. } => {
                        let owner = o.control.lock().owner();
                        let holder = o
                            .handles
                            .iter()
                            .filter_map(|h| self.handles.get(h))
                            .find(|h| owner != 0 && h.token.raw() == owner)
                            .map(|h| h.pid)
                            .or_else(|| Token::from_raw(owner).map(Token::pid))
                            .unwrap_or(0);
                        (*size, holder, o.recoveries, false)
                    }
                    Body::Semaphore { undo, .. } => {
                        let s = o.control.semaphore();
                        (0, s.value(), s.max(), *undo)
                    }
                };
                SegEntry {
                    semaphore: o.is_semaphore(),
                    persistent: o.persistent,
                    removed: o.removed,
                    undo,
                    name: o.name.to_string(),
                    mode: o.own.mode,
                    uid: o.own.uid,
                    gid: o.own.gid,
                    size,
                    value,
                    max,
                    attachers,
                }
            })
            .collect();
        entries.sort_by(|a, b| {
            (a.semaphore, &a.name, a.removed).cmp(&(b.semaphore, &b.name, b.removed))
        });
        entries
    }

    /// A connection closed: everything it had attached goes, as if it had detached, with
    /// its lock marked `OWNER_DIED` and its undo units given back.
    pub fn client_closed(&mut self, client_id: u32) {
        for handle in self.by_client.remove(&client_id).unwrap_or_default() {
            self.release(handle);
        }
    }

    /// Counters and gauges for `qcop stats`, appended after the daemon's own.
    pub fn report(&self) -> Vec<(String, u64)> {
        let c = &self.counters;
        [
            ("shm_segments", u64::from(self.segment_count)),
            ("shm_segment_bytes", self.segment_bytes),
            ("shm_semaphores", u64::from(self.semaphore_count)),
            ("shm_handles", self.handles.len() as u64),
            ("shm_segments_created", c.segments_created),
            ("shm_semaphores_created", c.semaphores_created),
            ("shm_attaches", c.attaches),
            ("shm_requests_refused", c.refused),
            ("shm_locks_recovered", c.locks_recovered),
            ("shm_undo_units_returned", c.undo_units_returned),
            ("shm_objects_destroyed", c.destroyed),
            ("shm_control_blocks_repaired", c.control_repairs),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect()
    }

    /// Takes or releases a segment's lock for an attachment (how read-only attachers
    /// lock: they cannot write the word). Only the attachment's own token is used, so no
    /// one can release another's hold this way.
    fn lock_op(
        &mut self,
        peer: &Peer<'_>,
        seq: u32,
        handle: u32,
        (unlock, waited, check): (bool, bool, bool),
    ) -> Result<SegAnswer, Refusal> {
        let (attachment, obj) = self.own_handle(peer, handle)?;
        let token = attachment.token;
        if obj.is_semaphore() {
            return Err((
                ErrorCode::SegInvalid,
                format!("handle {handle} is a semaphore's, not a segment's"),
            ));
        }
        let lock = obj.control.lock();
        let state = if check {
            LockState::Checked
        } else if unlock {
            match lock.unlock(token) {
                Ok(()) => LockState::Unlocked,
                Err(_) => LockState::NotOwner,
            }
        } else {
            match lock.try_lock_after(token, waited) {
                Ok(Acquired::Clean) => LockState::Locked,
                Ok(Acquired::OwnerDied) => LockState::LockedOwnerDied,
                Err(LockFailure::Recursive) => LockState::Recursive,
                Err(LockFailure::Busy { .. } | LockFailure::TimedOut) => {
                    if waited {
                        lock.announce_waiter();
                    }
                    LockState::Busy
                }
            }
        };
        let word = lock.word().load(std::sync::atomic::Ordering::Relaxed);
        Ok(SegAnswer::Reply(SegFrame::LockState {
            seq,
            handle,
            state,
            word,
        }))
    }

    /// Checks an object's control block against the daemon's records and rewrites what
    /// does not match: the header it wrote, a lock word naming no attachment of the object
    /// (marked owner-died: the data may be damaged too), a semaphore value above the
    /// maximum, undo slots whose token is not the one it assigned. Counts a damaged block.
    /// The peer's own attachment `handle` and its object, audited first (a handle of
    /// another client is as unknown as one that never existed).
    fn own_handle(&mut self, peer: &Peer<'_>, handle: u32) -> Result<(&Handle, &Object), Refusal> {
        let not_found = || (ErrorCode::SegNotFound, format!("no handle {handle}"));
        let id = self
            .handles
            .get(&handle)
            .filter(|h| h.client_id == peer.client_id)
            .map(|h| h.object)
            .ok_or_else(not_found)?;
        self.audit(id);
        match (self.handles.get(&handle), self.objects.get(&id)) {
            (Some(h), Some(obj)) => Ok((h, obj)),
            _ => Err(not_found()),
        }
    }

    fn audit(&mut self, id: ObjectId) {
        use std::sync::atomic::Ordering;
        let Some(obj) = self.objects.get(&id) else {
            return;
        };
        let mut damage = obj.control.repair_header();
        let attachments = || obj.handles.iter().filter_map(|h| self.handles.get(h));
        match &obj.body {
            Body::Segment { .. } => {
                let lock = obj.control.lock();
                let owner = lock.owner();
                if owner != 0
                    && !attachments().any(|h| h.token.raw() == owner)
                    && lock.recover(owner)
                {
                    damage.push("lock word");
                }
            }
            Body::Semaphore { .. } => {
                if obj.control.semaphore().clamp() {
                    damage.push("value above the maximum");
                }
                let mut expected = [0u32; MAX_SLOTS as usize];
                for h in attachments() {
                    if let Some(e) = h.slot.and_then(|i| expected.get_mut(i as usize)) {
                        *e = h.token.raw();
                    }
                }
                for (i, &want) in (0..obj.control.header().slots).zip(expected.iter()) {
                    let Some(slot) = obj.control.slot(i) else {
                        break;
                    };
                    if slot.token.load(Ordering::Acquire) != want {
                        slot.token.store(want, Ordering::Release);
                        damage.push("undo slot token");
                    }
                    if want == 0 && slot.adj.load(Ordering::Relaxed) != 0 {
                        slot.adj.store(0, Ordering::Relaxed);
                        damage.push("undo slot adjustment");
                    }
                }
            }
        }
        if obj.control.recovered() != obj.recoveries {
            obj.control.set_recovered(obj.recoveries);
        }
        if !damage.is_empty() {
            let mut seen = Vec::new();
            damage.retain(|d| {
                let new = !seen.contains(d);
                seen.push(*d);
                new
            });
            log::warn!(
                "{} {:?}: control block was overwritten ({}); rebuilt from qcopd's records",
                if obj.is_semaphore() {
                    "semaphore"
                } else {
                    "segment"
                },
                obj.name,
                damage.join(", ")
            );
            self.counters.control_repairs += 1;
        }
    }

    // ----- bookkeeping -----------------------------------------------------------------

    fn insert(&mut self, obj: Object) -> ObjectId {
        let id = self.next_object;
        self.next_object += 1;
        self.objects.insert(id, obj);
        id
    }

    fn check_handle_limit(&self, cfg: &Config, peer: &Peer<'_>) -> Result<(), Refusal> {
        let held = self.by_client.get(&peer.client_id).map_or(0, Vec::len);
        if held >= cfg.shm_max_handles_per_client as usize {
            return Err((
                ErrorCode::SegLimit,
                format!(
                    "a client may hold {} segments and semaphores (shm_max_handles_per_client)",
                    cfg.shm_max_handles_per_client
                ),
            ));
        }
        Ok(())
    }

    fn add_handle(
        &mut self,
        id: ObjectId,
        peer: &Peer<'_>,
        pid: u32,
        read_only: bool,
        slot: Option<u32>,
    ) -> Result<(u32, Token), Refusal> {
        let obj = self
            .objects
            .get(&id)
            .ok_or_else(|| (ErrorCode::SegNotFound, "object vanished".to_owned()))?;
        // A nonce no other attachment of this object with the same pid uses.
        let mut used = [false; NONCES as usize];
        for h in obj.handles.iter().filter_map(|h| self.handles.get(h)) {
            if h.token.pid() == pid {
                used[h.token.nonce() as usize] = true;
            }
        }
        let token = used
            .iter()
            .position(|u| !u)
            .and_then(|n| Token::new(pid, n as u32))
            .ok_or_else(|| {
                (
                    ErrorCode::SegLimit,
                    format!("process {pid} holds {NONCES} attachments of this object"),
                )
            })?;
        let mut handle = self.next_handle;
        while handle == 0 || self.handles.contains_key(&handle) {
            handle = handle.wrapping_add(1);
        }
        self.next_handle = handle.wrapping_add(1);
        self.handles.insert(
            handle,
            Handle {
                object: id,
                client_id: peer.client_id,
                token,
                read_only,
                slot,
                pid: peer.pid,
                uid: peer.uid,
                client_name: peer.name.into(),
            },
        );
        self.by_client
            .entry(peer.client_id)
            .or_default()
            .push(handle);
        if let Some(obj) = self.objects.get_mut(&id) {
            obj.handles.push(handle);
        }
        Ok((handle, token))
    }

    /// Drops one attachment: recovers its lock or semaphore units, and the object if that
    /// was the last attachment of a non-persistent (or removed) object.
    fn release(&mut self, handle: u32) {
        // The block is checked before acting on it, while this attachment still counts as
        // one (its lock and undo slot are its own).
        let Some(object) = self.handles.get(&handle).map(|h| h.object) else {
            return;
        };
        self.audit(object);
        let Some(h) = self.handles.remove(&handle) else {
            return;
        };
        if let Some(list) = self.by_client.get_mut(&h.client_id) {
            list.retain(|&x| x != handle);
            if list.is_empty() {
                self.by_client.remove(&h.client_id);
            }
        }
        let Some(obj) = self.objects.get_mut(&h.object) else {
            return;
        };
        obj.handles.retain(|&x| x != handle);
        match &mut obj.body {
            Body::Segment { .. } => {
                if obj.control.lock().recover(h.token.raw()) {
                    obj.recoveries = obj.recoveries.saturating_add(1);
                    obj.control.set_recovered(obj.recoveries);
                    self.counters.locks_recovered += 1;
                    log::info!(
                        "segment {:?}: holder pid {} went away holding the lock; marked owner-died",
                        obj.name,
                        h.pid
                    );
                }
            }
            Body::Semaphore { slots, .. } => {
                if let Some(i) = h.slot {
                    if let Some(s) = obj.control.slot(i) {
                        if let Some(adj) = obj.control.semaphore().reclaim(s, h.token.raw()) {
                            if adj != 0 {
                                obj.recoveries = obj.recoveries.saturating_add(1);
                                obj.control.set_recovered(obj.recoveries);
                                self.counters.undo_units_returned += u64::from(adj.unsigned_abs());
                                log::debug!(
                                    "semaphore {:?}: undid {adj} units of pid {}",
                                    obj.name,
                                    h.pid
                                );
                            }
                        }
                    }
                    if let Some(used) = slots.get_mut(i as usize) {
                        *used = false;
                    }
                }
            }
        }
        if obj.handles.is_empty() && (!obj.persistent || obj.removed) {
            self.destroy(h.object);
        }
    }

    fn destroy(&mut self, id: ObjectId) {
        let Some(obj) = self.objects.remove(&id) else {
            return;
        };
        let names = if obj.is_semaphore() {
            self.semaphore_count -= 1;
            &mut self.semaphore_names
        } else {
            self.segment_count -= 1;
            &mut self.segment_names
        };
        if names.get(&obj.name) == Some(&id) {
            names.remove(&obj.name);
        }
        if let Body::Segment { size, .. } = obj.body {
            self.segment_bytes -= size;
        }
        self.counters.destroyed += 1;
        log::debug!("destroyed {:?}", obj.name);
    }
}

fn new_control(name: &str, header: Header, word: u32) -> Result<(OwnedFd, Control), Refusal> {
    let fd = create_memfd(name, CONTROL_SIZE).map_err(unavailable)?;
    // Owner-only inode, as for the data: a read-only attacher's descriptor cannot be
    // reopened for writing through /proc/self/fd.
    nix::sys::stat::fchmod(&fd, Mode::S_IRUSR | Mode::S_IWUSR)
        .map_err(|e| unavailable(io::Error::from(e)))?;
    let control = Control::init(fd.as_fd(), header, word)
        .map_err(|e| (ErrorCode::SegUnavailable, e.to_string()))?;
    Ok((fd, control))
}

/// A read-only descriptor for the same memory: a new open file description through
/// `/proc/self/fd`, so the client cannot map it writable.
fn reopen_read_only(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::fcntl::open(
        path.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot reopen the segment read-only through {path} (is /proc mounted?): {e}"),
        )
    })
}

fn unavailable(e: io::Error) -> Refusal {
    log::warn!("shared memory: {e}");
    (ErrorCode::SegUnavailable, e.to_string())
}

fn check_object_name(name: &str) -> Result<(), Refusal> {
    check_name(name, MAX_NAME).map_err(|e| (ErrorCode::BadName, e.to_string()))
}

fn check_pid(pid: u32) -> Result<(), Refusal> {
    Token::new(pid, 0).map(|_| ()).ok_or_else(|| {
        (
            ErrorCode::SegInvalid,
            format!("pid {pid} cannot be a Linux process id"),
        )
    })
}

fn check_mode(mode: u16) -> Result<(), Refusal> {
    if mode & !0o777 != 0 {
        return Err((
            ErrorCode::SegInvalid,
            format!("mode {mode:o} has bits outside 0777"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer<'static> {
        Peer {
            client_id: 1,
            pid: 10,
            uid,
            gid,
            name: "t",
        }
    }

    #[test]
    fn access_follows_unix_modes() {
        let own = Ownership {
            uid: 1000,
            gid: 100,
            mode: 0o640,
        };
        assert!(check_access(&own, &peer(1000, 1), Want::Write).is_ok());
        assert!(check_access(&own, &peer(1000, 1), Want::Remove).is_ok());
        assert!(check_access(&own, &peer(1001, 100), Want::Read).is_ok());
        assert!(check_access(&own, &peer(1001, 100), Want::Write).is_err());
        assert!(check_access(&own, &peer(1001, 100), Want::Remove).is_err());
        assert!(check_access(&own, &peer(1002, 101), Want::Read).is_err());
        assert!(check_access(&own, &peer(0, 0), Want::Remove).is_ok());
        let own = Ownership { mode: 0o606, ..own };
        assert!(check_access(&own, &peer(1002, 101), Want::Write).is_ok());
        assert!(
            check_access(&own, &peer(1001, 100), Want::Read).is_err(),
            "group bits apply to the group, not the other bits"
        );
    }

    fn cfg() -> Config {
        Config {
            shm_max_segments: 2,
            shm_max_segment_bytes: 8192,
            shm_max_total_segment_bytes: 12288,
            shm_max_semaphores: 1,
            shm_max_handles_per_client: 3,
            ..Config::default()
        }
    }

    fn create(s: &mut Segments, p: &Peer<'_>, name: &str, size: u64) -> SegAnswer {
        s.handle(
            &cfg(),
            p,
            SegFrame::Create {
                seq: 1,
                open_existing: false,
                persistent: false,
                name,
                size,
                mode: 0o600,
                gid: GID_CREATOR,
                pid: 99,
            },
        )
    }

    fn code(a: &SegAnswer) -> Option<ErrorCode> {
        match a {
            SegAnswer::Error(_, c, _) => Some(*c),
            _ => None,
        }
    }

    #[test]
    fn read_only_descriptors_cannot_be_mapped_writable_or_reopened_by_others() {
        use crate::shm::map::{Access, Mapping};
        let mut s = Segments::default();
        let p = peer(1000, 100);
        assert!(matches!(
            create(&mut s, &p, "ro", 4096),
            SegAnswer::ReplyFd(..)
        ));
        let a = s.handle(
            &cfg(),
            &p,
            SegFrame::Attach {
                seq: 2,
                read_only: true,
                name: "ro",
                pid: 99,
            },
        );
        let SegAnswer::ReplyFd(SegFrame::Attached { read_only, .. }, fd) = a else {
            panic!("expected an attachment, got {a:?}");
        };
        assert!(read_only);
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
        assert!(Mapping::map(fd.as_fd(), Access::ReadWrite).is_err());
        assert!(Mapping::map(fd.as_fd(), Access::ReadOnly).is_ok());
        // Reopening through /proc/self/fd for writing needs write permission on the inode,
        // which only the daemon's user has.
        let st = nix::sys::stat::fstat(&fd).unwrap();
        assert_eq!(st.st_mode & 0o777, 0o600);
        assert_eq!(st.st_uid, nix::unistd::geteuid().as_raw());
    }

    #[test]
    fn limits_names_and_sizes_are_enforced() {
        let mut s = Segments::default();
        let p = peer(1000, 100);
        assert_eq!(code(&create(&mut s, &p, "", 10)), Some(ErrorCode::BadName));
        assert_eq!(
            code(&create(&mut s, &p, "a", 0)),
            Some(ErrorCode::SegInvalidSize)
        );
        assert_eq!(
            code(&create(&mut s, &p, "a", 8193)),
            Some(ErrorCode::SegInvalidSize)
        );
        assert!(matches!(
            create(&mut s, &p, "a", 8192),
            SegAnswer::ReplyFd(..)
        ));
        assert_eq!(
            code(&create(&mut s, &p, "a", 10)),
            Some(ErrorCode::SegExists)
        );
        assert_eq!(
            code(&create(&mut s, &p, "b", 8192)),
            Some(ErrorCode::SegLimit),
            "total"
        );
        assert!(matches!(
            create(&mut s, &p, "b", 4096),
            SegAnswer::ReplyFd(..)
        ));
        assert_eq!(
            code(&create(&mut s, &p, "c", 1)),
            Some(ErrorCode::SegLimit),
            "count"
        );
        assert_eq!(s.report()[0], ("shm_segments".to_owned(), 2));
        assert_eq!(s.report()[1], ("shm_segment_bytes".to_owned(), 12288));
        s.client_closed(p.client_id);
        assert!(s.objects.is_empty() && s.handles.is_empty() && s.by_client.is_empty());
        assert_eq!(s.report()[1].1, 0);
    }
}

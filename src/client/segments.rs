//! Requests for shared-memory segments and system semaphores. The types applications use
//! are [`crate::shm::SharedMemory`] and [`crate::shm::SystemSemaphore`]; this is their
//! conversation with the daemon, plus the listing and removal the CLI uses.

use super::{unexpected, Answer, Connection, Error};
use crate::wire::segments::{LockState, SegEntry, SegFrame};
use crate::wire::Frame;
use std::os::fd::OwnedFd;
use std::time::Instant;

/// A segment attachment as the daemon granted it.
#[derive(Debug)]
pub(crate) struct SegGrant {
    pub handle: u32,
    pub token: u32,
    pub size: u64,
    pub read_only: bool,
    pub created: bool,
    pub data: OwnedFd,
}

/// An open semaphore as the daemon granted it.
#[derive(Debug)]
pub(crate) struct SemGrant {
    pub handle: u32,
    pub token: u32,
    pub slot: Option<u32>,
    pub max: u32,
    pub created: bool,
    pub control: OwnedFd,
}

/// Parameters of a new segment or semaphore.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewObject {
    pub mode: u16,
    pub gid: u32,
    pub persistent: bool,
    pub open_existing: bool,
}

fn own_pid() -> u32 {
    std::process::id()
}

fn seg_grant(answer: Answer, data: OwnedFd) -> Result<SegGrant, Error> {
    match answer {
        Answer::Seg(SegFrame::Attached {
            read_only,
            created,
            handle,
            token,
            size,
            ..
        }) => Ok(SegGrant {
            handle,
            token,
            size,
            read_only,
            created,
            data,
        }),
        other => Err(unexpected(other)),
    }
}

impl Connection {
    /// Creates a segment (or attaches to it when `new.open_existing` and it exists).
    pub(crate) fn seg_create(
        &mut self,
        name: &str,
        size: u64,
        new: NewObject,
    ) -> Result<SegGrant, Error> {
        let (a, fd) = self.request_with_fd(|seq| {
            Frame::Seg(SegFrame::Create {
                seq,
                open_existing: new.open_existing,
                persistent: new.persistent,
                name,
                size,
                mode: new.mode,
                gid: new.gid,
                pid: own_pid(),
            })
        })?;
        seg_grant(a, fd)
    }

    /// Attaches to an existing segment.
    pub(crate) fn seg_attach(&mut self, name: &str, read_only: bool) -> Result<SegGrant, Error> {
        let (a, fd) = self.request_with_fd(|seq| {
            Frame::Seg(SegFrame::Attach {
                seq,
                read_only,
                name,
                pid: own_pid(),
            })
        })?;
        seg_grant(a, fd)
    }

    /// The control block (lock) of an attached segment.
    pub(crate) fn seg_control(&mut self, handle: u32) -> Result<OwnedFd, Error> {
        let (a, fd) = self.request_with_fd(|seq| Frame::Seg(SegFrame::Control { seq, handle }))?;
        match a {
            Answer::Seg(SegFrame::ControlBlock { handle: h, .. }) if h == handle => Ok(fd),
            other => Err(unexpected(other)),
        }
    }

    /// Takes (`unlock` false) or releases the lock of an attached segment through the
    /// daemon, or with `check` only has the daemon check the control block; returns the
    /// outcome and the lock word after it.
    pub(crate) fn seg_lock(
        &mut self,
        handle: u32,
        (unlock, waited, check): (bool, bool, bool),
    ) -> Result<(LockState, u32), Error> {
        match self.request(|seq| {
            Frame::Seg(SegFrame::Lock {
                seq,
                unlock,
                waited,
                check,
                handle,
            })
        })? {
            Answer::Seg(SegFrame::LockState {
                handle: h,
                state,
                word,
                ..
            }) if h == handle => Ok((state, word)),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a semaphore (or opens it when `new.open_existing` and it exists).
    pub(crate) fn sem_create(
        &mut self,
        name: &str,
        (initial, max, undo): (u32, u32, bool),
        new: NewObject,
    ) -> Result<SemGrant, Error> {
        let r = self.request_with_fd(|seq| {
            Frame::Seg(SegFrame::SemCreate {
                seq,
                open_existing: new.open_existing,
                persistent: new.persistent,
                undo,
                name,
                initial,
                max,
                mode: new.mode,
                gid: new.gid,
                pid: own_pid(),
            })
        })?;
        sem_grant(r)
    }

    /// Opens an existing semaphore.
    pub(crate) fn sem_open(&mut self, name: &str) -> Result<SemGrant, Error> {
        let r = self.request_with_fd(|seq| {
            Frame::Seg(SegFrame::SemOpen {
                seq,
                name,
                pid: own_pid(),
            })
        })?;
        sem_grant(r)
    }

    /// Detaches a segment or closes a semaphore.
    pub(crate) fn seg_close(&mut self, handle: u32) -> Result<(), Error> {
        self.request_ok(|seq| Frame::Seg(SegFrame::Close { seq, handle }))
            .map(|_| ())
    }

    /// Removes the name of a segment (or, with `semaphore`, of a semaphore). Attachers keep
    /// their memory; the name is free for a new object at once.
    pub fn shm_remove(&mut self, name: &str, semaphore: bool) -> Result<(), Error> {
        self.retrying(|c| {
            c.request_ok(|seq| {
                Frame::Seg(SegFrame::Remove {
                    seq,
                    semaphore,
                    name,
                })
            })
        })
        .map(|_| ())
    }

    /// The segments and semaphores this connection's user may see, with their attachers.
    pub fn shm_list(&mut self) -> Result<Vec<SegEntry>, Error> {
        self.retrying(
            |c| match c.request(|seq| Frame::Seg(SegFrame::List { seq }))? {
                Answer::Seg(SegFrame::Listing { entries, .. }) => Ok(entries),
                other => Err(unexpected(other)),
            },
        )
    }

    /// Whether the daemon is still at the other end: reads what is pending without
    /// waiting and reports false once the stream has ended.
    pub(crate) fn daemon_reachable(&mut self) -> bool {
        match self.pump(Some(Instant::now())) {
            Ok(_) => true,
            Err(e) => !e.is_disconnect(),
        }
    }
}

fn sem_grant((answer, control): (Answer, OwnedFd)) -> Result<SemGrant, Error> {
    match answer {
        Answer::Seg(SegFrame::SemOpened {
            created,
            handle,
            token,
            slot,
            max,
            ..
        }) => Ok(SemGrant {
            handle,
            token,
            slot: (slot != crate::wire::segments::NO_SLOT).then_some(slot),
            max,
            created,
            control,
        }),
        other => Err(unexpected(other)),
    }
}

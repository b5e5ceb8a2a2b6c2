//! Frames of the shared-memory segments and system semaphores (kinds 0x18-0x20 and
//! 0x98-0x9b, 0xa0; see `docs/PROTOCOL.md`, "Shared-memory segments and semaphores").

use super::buf::{put_str, DecodeError, Reader};
use super::frame::Kind;

/// Flag of `SegCreate` / `SemCreate`: attach to (open) an existing object of that name
/// instead of failing with `AlreadyExists`.
pub const SEG_OPEN_EXISTING: u8 = 0x01;
/// Flag of `SegCreate` / `SemCreate`: the object outlives its attachers until removed.
pub const SEG_PERSISTENT: u8 = 0x02;
/// Flag of `SemCreate`: units of attachers that go away are given back.
pub const SEM_UNDO: u8 = 0x04;
/// Flag of `SegAttach` and `SegAttached`: read-only data.
pub const SEG_READ_ONLY: u8 = 0x01;
/// Flag of `SegAttached` / `SemOpened`: this request created the object.
pub const SEG_CREATED: u8 = 0x02;
/// Flag of `SegRemove`: the name is a semaphore's.
pub const SEG_SEMAPHORE: u8 = 0x01;

/// Flag of `SegLock`: release the lock (else take it).
pub const SEG_UNLOCK: u8 = 0x01;
/// Flag of `SegLock`: the attacher slept on the lock word since its last attempt; if the
/// lock is busy, set its waiters bit.
pub const SEG_WAITED: u8 = 0x02;

/// Flag of `SegLock`: change nothing, only have the daemon check the control block against
/// its records (a waiting read-write attacher asks this between sleeps).
pub const SEG_CHECK: u8 = 0x04;

/// `gid` value meaning "the creator's own group".
pub const GID_CREATOR: u32 = u32::MAX;
/// `slot` value meaning "no undo slot".
pub const NO_SLOT: u32 = u32::MAX;

/// Frame kinds of this family, as `(kind byte, allowed flag bits)`.
pub(crate) const KINDS: [(u8, u8); 14] = [
    (0x18, SEG_OPEN_EXISTING | SEG_PERSISTENT),
    (0x19, SEG_READ_ONLY),
    (0x1a, 0),
    (0x1b, SEG_OPEN_EXISTING | SEG_PERSISTENT | SEM_UNDO),
    (0x1c, 0),
    (0x1d, 0),
    (0x1e, SEG_SEMAPHORE),
    (0x1f, 0),
    (0x20, SEG_UNLOCK | SEG_WAITED | SEG_CHECK),
    (0x98, SEG_READ_ONLY | SEG_CREATED),
    (0x99, 0),
    (0x9a, SEG_CREATED),
    (0x9b, 0),
    (0xa0, 0),
];

/// Whether frames of kind `k` carry a file descriptor.
pub(crate) fn carries_fd(k: u8) -> bool {
    matches!(k, 0x98..=0x9a)
}

/// The outcome of a `SegLock`, in `SegLockState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// 0: the attacher now holds the lock.
    Locked = 0,
    /// 1: it holds the lock, which the previous holder died holding.
    LockedOwnerDied = 1,
    /// 2: someone else holds it; `word` is the lock word to sleep on.
    Busy = 2,
    /// 3: the attacher already holds it.
    Recursive = 3,
    /// 4: released.
    Unlocked = 4,
    /// 5: not released: the attacher does not hold it (`word` tells who does).
    NotOwner = 5,
    /// 6: the block was checked (and repaired if it had to be); nothing else changed.
    Checked = 6,
}

impl LockState {
    fn from_u8(v: u8) -> Option<LockState> {
        use LockState::*;
        Some(match v {
            0 => Locked,
            1 => LockedOwnerDied,
            2 => Busy,
            3 => Recursive,
            4 => Unlocked,
            5 => NotOwner,
            6 => Checked,
            _ => return None,
        })
    }
}

/// One segment or semaphore in a `SegListing`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegEntry {
    /// A semaphore (else a segment).
    pub semaphore: bool,
    /// Outlives its attachers until removed.
    pub persistent: bool,
    /// Removed: nameless, alive until its last attacher leaves.
    pub removed: bool,
    /// Semaphore with undo.
    pub undo: bool,
    /// Name.
    pub name: String,
    /// Permission bits (`0o640` style; read = attach read-only, write = read-write).
    pub mode: u16,
    /// Owner (the creator's uid).
    pub uid: u32,
    /// Group the group bits apply to.
    pub gid: u32,
    /// Segment: data bytes. Semaphore: 0.
    pub size: u64,
    /// Segment: pid inside the lock holder's token (0 = unlocked). Semaphore: the value.
    pub value: u32,
    /// Segment: times a dead holder's lock was recovered. Semaphore: the maximum.
    pub max: u32,
    /// Who has it attached.
    pub attachers: Vec<SegAttacher>,
}

/// One attachment in a [`SegEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegAttacher {
    /// The client's connection id.
    pub client_id: u32,
    /// Its pid (`SO_PEERCRED`).
    pub pid: u32,
    /// Its uid.
    pub uid: u32,
    /// Attached read-only.
    pub read_only: bool,
    /// The client's name.
    pub name: String,
}

/// A frame of this family. Names borrow from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegFrame<'a> {
    /// 0x18: create a segment (or attach to it with `open_existing`) read-write.
    Create {
        /// Request number.
        seq: u32,
        /// Attach if it exists.
        open_existing: bool,
        /// Keep it after its last attacher leaves, until removed.
        persistent: bool,
        /// Segment name.
        name: &'a str,
        /// Data bytes.
        size: u64,
        /// Permission bits.
        mode: u16,
        /// Group for the group bits; [`GID_CREATOR`] for the creator's.
        gid: u32,
        /// The attacher's pid as it sees it (goes into its lock token).
        pid: u32,
    },
    /// 0x19: attach to an existing segment.
    Attach {
        /// Request number.
        seq: u32,
        /// Map the data read-only.
        read_only: bool,
        /// Segment name.
        name: &'a str,
        /// The attacher's pid.
        pid: u32,
    },
    /// 0x1a: ask for the control block of an attached segment.
    Control {
        /// Request number.
        seq: u32,
        /// Handle from `Attached`.
        handle: u32,
    },
    /// 0x1b: create a semaphore (or open it with `open_existing`).
    SemCreate {
        /// Request number.
        seq: u32,
        /// Open if it exists (its value is then left alone).
        open_existing: bool,
        /// Keep it after its last user leaves, until removed.
        persistent: bool,
        /// Give back units of users that go away.
        undo: bool,
        /// Semaphore name.
        name: &'a str,
        /// Initial value.
        initial: u32,
        /// Largest value.
        max: u32,
        /// Permission bits.
        mode: u16,
        /// Group for the group bits.
        gid: u32,
        /// The opener's pid.
        pid: u32,
    },
    /// 0x1c: open an existing semaphore.
    SemOpen {
        /// Request number.
        seq: u32,
        /// Semaphore name.
        name: &'a str,
        /// The opener's pid.
        pid: u32,
    },
    /// 0x1d: detach a segment or close a semaphore.
    Close {
        /// Request number.
        seq: u32,
        /// Its handle.
        handle: u32,
    },
    /// 0x1e: remove a name.
    Remove {
        /// Request number.
        seq: u32,
        /// The name is a semaphore's.
        semaphore: bool,
        /// Name.
        name: &'a str,
    },
    /// 0x1f: list segments and semaphores.
    List {
        /// Request number.
        seq: u32,
    },
    /// 0x20: take or release the lock of an attached segment through the daemon (how a
    /// read-only attacher, which cannot write the lock word, locks).
    Lock {
        /// Request number.
        seq: u32,
        /// Release instead of take.
        unlock: bool,
        /// The attacher slept on the word since its last attempt.
        waited: bool,
        /// Only check the block.
        check: bool,
        /// Handle from `Attached`.
        handle: u32,
    },
    /// 0xa0: answer to `Lock`.
    LockState {
        /// Request number.
        seq: u32,
        /// The handle asked about.
        handle: u32,
        /// What happened.
        state: LockState,
        /// The lock word after the operation.
        word: u32,
    },
    /// 0x98 (carries the data memfd): answer to `Create` / `Attach`.
    Attached {
        /// Request number.
        seq: u32,
        /// The descriptor is read-only.
        read_only: bool,
        /// This request created the segment.
        created: bool,
        /// Handle for `Control` and `Close`.
        handle: u32,
        /// The attachment's lock token.
        token: u32,
        /// Data bytes.
        size: u64,
    },
    /// 0x99 (carries the control memfd): answer to `Control`.
    ControlBlock {
        /// Request number.
        seq: u32,
        /// The handle asked about.
        handle: u32,
    },
    /// 0x9a (carries the control memfd): answer to `SemCreate` / `SemOpen`.
    SemOpened {
        /// Request number.
        seq: u32,
        /// This request created the semaphore.
        created: bool,
        /// Handle for `Close`.
        handle: u32,
        /// The opener's token.
        token: u32,
        /// Undo slot index, or [`NO_SLOT`].
        slot: u32,
        /// The largest value (the block's own copy is not to be trusted).
        max: u32,
    },
    /// 0x9b: answer to `List`.
    Listing {
        /// Request number.
        seq: u32,
        /// Segments and semaphores.
        entries: Vec<SegEntry>,
    },
}

fn flag(on: bool, bit: u8) -> u8 {
    if on {
        bit
    } else {
        0
    }
}

impl<'a> SegFrame<'a> {
    /// Decodes the body of a frame of kind `kind` (one of [`KINDS`]).
    pub(crate) fn decode(
        kind: u8,
        flags: u8,
        seq: u32,
        r: &mut Reader<'a>,
    ) -> Result<SegFrame<'a>, DecodeError> {
        let has = |bit: u8| flags & bit != 0;
        Ok(match kind {
            0x18 => SegFrame::Create {
                seq,
                open_existing: has(SEG_OPEN_EXISTING),
                persistent: has(SEG_PERSISTENT),
                name: r.str()?,
                size: r.u64()?,
                mode: r.u16()?,
                gid: r.u32()?,
                pid: r.u32()?,
            },
            0x19 => SegFrame::Attach {
                seq,
                read_only: has(SEG_READ_ONLY),
                name: r.str()?,
                pid: r.u32()?,
            },
            0x1a => SegFrame::Control {
                seq,
                handle: r.u32()?,
            },
            0x1b => SegFrame::SemCreate {
                seq,
                open_existing: has(SEG_OPEN_EXISTING),
                persistent: has(SEG_PERSISTENT),
                undo: has(SEM_UNDO),
                name: r.str()?,
                initial: r.u32()?,
                max: r.u32()?,
                mode: r.u16()?,
                gid: r.u32()?,
                pid: r.u32()?,
            },
            0x1c => SegFrame::SemOpen {
                seq,
                name: r.str()?,
                pid: r.u32()?,
            },
            0x1d => SegFrame::Close {
                seq,
                handle: r.u32()?,
            },
            0x1e => SegFrame::Remove {
                seq,
                semaphore: has(SEG_SEMAPHORE),
                name: r.str()?,
            },
            0x1f => SegFrame::List { seq },
            0x20 => SegFrame::Lock {
                seq,
                unlock: has(SEG_UNLOCK),
                waited: has(SEG_WAITED),
                check: has(SEG_CHECK),
                handle: r.u32()?,
            },
            0xa0 => SegFrame::LockState {
                seq,
                handle: r.u32()?,
                state: LockState::from_u8(r.u8()?).ok_or(DecodeError::Reserved)?,
                word: r.u32()?,
            },
            0x98 => SegFrame::Attached {
                seq,
                read_only: has(SEG_READ_ONLY),
                created: has(SEG_CREATED),
                handle: r.u32()?,
                token: r.u32()?,
                size: r.u64()?,
            },
            0x99 => SegFrame::ControlBlock {
                seq,
                handle: r.u32()?,
            },
            0x9a => SegFrame::SemOpened {
                seq,
                created: has(SEG_CREATED),
                handle: r.u32()?,
                token: r.u32()?,
                slot: r.u32()?,
                max: r.u32()?,
            },
            0x9b => SegFrame::Listing {
                seq,
                entries: decode_entries(r)?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }

    /// A daemon-to-client frame as an owned answer with its sequence number; `None` for
    /// requests.
    pub fn into_answer(self) -> Option<(u32, SegFrame<'static>)> {
        Some(match self {
            SegFrame::Attached {
                seq,
                read_only,
                created,
                handle,
                token,
                size,
            } => (
                seq,
                SegFrame::Attached {
                    seq,
                    read_only,
                    created,
                    handle,
                    token,
                    size,
                },
            ),
            SegFrame::ControlBlock { seq, handle } => (seq, SegFrame::ControlBlock { seq, handle }),
            SegFrame::SemOpened {
                seq,
                created,
                handle,
                token,
                slot,
                max,
            } => (
                seq,
                SegFrame::SemOpened {
                    seq,
                    created,
                    handle,
                    token,
                    slot,
                    max,
                },
            ),
            SegFrame::LockState {
                seq,
                handle,
                state,
                word,
            } => (
                seq,
                SegFrame::LockState {
                    seq,
                    handle,
                    state,
                    word,
                },
            ),
            SegFrame::Listing { seq, entries } => (seq, SegFrame::Listing { seq, entries }),
            _ => return None,
        })
    }

    /// The frame's kind.
    pub fn kind(&self) -> Kind {
        match self {
            SegFrame::Create { .. } => Kind::SegCreate,
            SegFrame::Attach { .. } => Kind::SegAttach,
            SegFrame::Control { .. } => Kind::SegControl,
            SegFrame::SemCreate { .. } => Kind::SemCreate,
            SegFrame::SemOpen { .. } => Kind::SemOpen,
            SegFrame::Close { .. } => Kind::SegClose,
            SegFrame::Remove { .. } => Kind::SegRemove,
            SegFrame::List { .. } => Kind::SegList,
            SegFrame::Lock { .. } => Kind::SegLock,
            SegFrame::LockState { .. } => Kind::SegLockState,
            SegFrame::Attached { .. } => Kind::SegAttached,
            SegFrame::ControlBlock { .. } => Kind::SegControlBlock,
            SegFrame::SemOpened { .. } => Kind::SemOpened,
            SegFrame::Listing { .. } => Kind::SegListing,
        }
    }

    /// Kind-specific header flags (without the descriptor flag) and the sequence number.
    pub(crate) fn header_fields(&self) -> (u8, u32) {
        match *self {
            SegFrame::Create {
                seq,
                open_existing,
                persistent,
                ..
            } => (
                flag(open_existing, SEG_OPEN_EXISTING) | flag(persistent, SEG_PERSISTENT),
                seq,
            ),
            SegFrame::Attach { seq, read_only, .. } => (flag(read_only, SEG_READ_ONLY), seq),
            SegFrame::SemCreate {
                seq,
                open_existing,
                persistent,
                undo,
                ..
            } => (
                flag(open_existing, SEG_OPEN_EXISTING)
                    | flag(persistent, SEG_PERSISTENT)
                    | flag(undo, SEM_UNDO),
                seq,
            ),
            SegFrame::Remove { seq, semaphore, .. } => (flag(semaphore, SEG_SEMAPHORE), seq),
            SegFrame::Attached {
                seq,
                read_only,
                created,
                ..
            } => (
                flag(read_only, SEG_READ_ONLY) | flag(created, SEG_CREATED),
                seq,
            ),
            SegFrame::SemOpened { seq, created, .. } => (flag(created, SEG_CREATED), seq),
            SegFrame::Lock {
                seq,
                unlock,
                waited,
                check,
                ..
            } => (
                flag(unlock, SEG_UNLOCK) | flag(waited, SEG_WAITED) | flag(check, SEG_CHECK),
                seq,
            ),
            SegFrame::Control { seq, .. }
            | SegFrame::SemOpen { seq, .. }
            | SegFrame::Close { seq, .. }
            | SegFrame::List { seq }
            | SegFrame::ControlBlock { seq, .. }
            | SegFrame::LockState { seq, .. }
            | SegFrame::Listing { seq, .. } => (0, seq),
        }
    }

    /// Appends the body.
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        let u16 = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_be_bytes());
        let u32 = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_be_bytes());
        let u64 = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_be_bytes());
        match self {
            SegFrame::Create {
                name,
                size,
                mode,
                gid,
                pid,
                ..
            } => {
                put_str(out, name);
                u64(out, *size);
                u16(out, *mode);
                u32(out, *gid);
                u32(out, *pid);
            }
            SegFrame::Attach { name, pid, .. } | SegFrame::SemOpen { name, pid, .. } => {
                put_str(out, name);
                u32(out, *pid);
            }
            SegFrame::Control { handle, .. }
            | SegFrame::Close { handle, .. }
            | SegFrame::Lock { handle, .. }
            | SegFrame::ControlBlock { handle, .. } => u32(out, *handle),
            SegFrame::LockState {
                handle,
                state,
                word,
                ..
            } => {
                u32(out, *handle);
                out.push(*state as u8);
                u32(out, *word);
            }
            SegFrame::SemCreate {
                name,
                initial,
                max,
                mode,
                gid,
                pid,
                ..
            } => {
                put_str(out, name);
                u32(out, *initial);
                u32(out, *max);
                u16(out, *mode);
                u32(out, *gid);
                u32(out, *pid);
            }
            SegFrame::Remove { name, .. } => put_str(out, name),
            SegFrame::List { .. } => {}
            SegFrame::Attached {
                handle,
                token,
                size,
                ..
            } => {
                u32(out, *handle);
                u32(out, *token);
                u64(out, *size);
            }
            SegFrame::SemOpened {
                handle,
                token,
                slot,
                max,
                ..
            } => {
                u32(out, *handle);
                u32(out, *token);
                u32(out, *slot);
                u32(out, *max);
            }
            SegFrame::Listing { entries, .. } => {
                u32(out, entries.len() as u32);
                for e in entries {
                    out.push(u8::from(e.semaphore) + 1);
                    out.push(flag(e.persistent, 0x01) | flag(e.removed, 0x02) | flag(e.undo, 0x04));
                    put_str(out, &e.name);
                    u16(out, e.mode);
                    u32(out, e.uid);
                    u32(out, e.gid);
                    u64(out, e.size);
                    u32(out, e.value);
                    u32(out, e.max);
                    u32(out, e.attachers.len() as u32);
                    for a in &e.attachers {
                        u32(out, a.client_id);
                        u32(out, a.pid);
                        u32(out, a.uid);
                        out.push(u8::from(a.read_only));
                        put_str(out, &a.name);
                    }
                }
            }
        }
    }
}

/// Smallest encoded entry and attacher, for rejecting hostile counts before allocating.
const MIN_ENTRY: usize = 1 + 1 + 2 + 2 + 4 + 4 + 8 + 4 + 4 + 4;
const MIN_ATTACHER: usize = 4 + 4 + 4 + 1 + 2;

fn decode_entries(r: &mut Reader<'_>) -> Result<Vec<SegEntry>, DecodeError> {
    let n = r.count(MIN_ENTRY)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let semaphore = match r.u8()? {
            1 => false,
            2 => true,
            _ => return Err(DecodeError::Reserved),
        };
        let flags = r.u8()?;
        if flags & !0x07 != 0 {
            return Err(DecodeError::Reserved);
        }
        let mut e = SegEntry {
            semaphore,
            persistent: flags & 0x01 != 0,
            removed: flags & 0x02 != 0,
            undo: flags & 0x04 != 0,
            name: r.str()?.to_owned(),
            mode: r.u16()?,
            uid: r.u32()?,
            gid: r.u32()?,
            size: r.u64()?,
            value: r.u32()?,
            max: r.u32()?,
            attachers: Vec::new(),
        };
        let k = r.count(MIN_ATTACHER)?;
        e.attachers.reserve(k);
        for _ in 0..k {
            e.attachers.push(SegAttacher {
                client_id: r.u32()?,
                pid: r.u32()?,
                uid: r.u32()?,
                read_only: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Reserved),
                },
                name: r.str()?.to_owned(),
            });
        }
        entries.push(e);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Frame, FrameReader, FLAG_FD, HEADER_LEN};

    fn roundtrip(f: SegFrame<'_>) {
        let frame = Frame::Seg(f);
        let bytes = frame.to_vec();
        assert_eq!(
            bytes[5] & FLAG_FD != 0,
            frame.kind().carries_fd(),
            "{frame:?}"
        );
        assert_eq!(Frame::decode_exact(&bytes, 1 << 20), Ok(frame.clone()));
        let mut reader = FrameReader::new(1 << 20);
        reader.push_bytes(&bytes);
        assert_eq!(reader.next_frame(), Ok(Some(frame)));
    }

    fn entry() -> SegEntry {
        SegEntry {
            semaphore: true,
            persistent: true,
            removed: false,
            undo: true,
            name: "status".into(),
            mode: 0o640,
            uid: 1000,
            gid: 100,
            size: 0,
            value: 3,
            max: 5,
            attachers: vec![SegAttacher {
                client_id: 7,
                pid: 4242,
                uid: 1000,
                read_only: true,
                name: "ui".into(),
            }],
        }
    }

    #[test]
    fn every_segment_frame_roundtrips() {
        roundtrip(SegFrame::Create {
            seq: 1,
            open_existing: true,
            persistent: true,
            name: "status",
            size: 1 << 40,
            mode: 0o600,
            gid: GID_CREATOR,
            pid: 12,
        });
        roundtrip(SegFrame::Attach {
            seq: 2,
            read_only: true,
            name: "status",
            pid: 12,
        });
        roundtrip(SegFrame::Control { seq: 3, handle: 9 });
        roundtrip(SegFrame::SemCreate {
            seq: 4,
            open_existing: false,
            persistent: false,
            undo: true,
            name: "slots",
            initial: 2,
            max: 8,
            mode: 0o660,
            gid: 100,
            pid: 13,
        });
        roundtrip(SegFrame::SemOpen {
            seq: 5,
            name: "slots",
            pid: 13,
        });
        roundtrip(SegFrame::Close { seq: 6, handle: 9 });
        roundtrip(SegFrame::Remove {
            seq: 7,
            semaphore: true,
            name: "slots",
        });
        roundtrip(SegFrame::List { seq: 8 });
        roundtrip(SegFrame::Attached {
            seq: 9,
            read_only: true,
            created: false,
            handle: 1,
            token: 0x3fff_ffff,
            size: 4096,
        });
        roundtrip(SegFrame::ControlBlock { seq: 10, handle: 1 });
        roundtrip(SegFrame::SemOpened {
            seq: 11,
            created: true,
            handle: 2,
            token: 5,
            slot: NO_SLOT,
            max: 1,
        });
        for (unlock, waited, check) in [
            (false, false, false),
            (false, true, false),
            (true, false, false),
            (false, false, true),
        ] {
            roundtrip(SegFrame::Lock {
                seq: 13,
                unlock,
                waited,
                check,
                handle: 3,
            });
        }
        for state in [
            LockState::Locked,
            LockState::LockedOwnerDied,
            LockState::Busy,
            LockState::Recursive,
            LockState::Unlocked,
            LockState::NotOwner,
            LockState::Checked,
        ] {
            roundtrip(SegFrame::LockState {
                seq: 14,
                handle: 3,
                state,
                word: 0xc000_0001,
            });
        }
        roundtrip(SegFrame::Listing {
            seq: 12,
            entries: vec![entry(), SegEntry::default()],
        });
    }

    #[test]
    fn attach_has_the_documented_layout() {
        let bytes = Frame::Seg(SegFrame::Attach {
            seq: 3,
            read_only: true,
            name: "ab",
            pid: 258,
        })
        .to_vec();
        assert_eq!(
            bytes,
            [
                &[0, 0, 0, 8, 0x19, 0x01, 0, 0, 0, 0, 0, 3][..],
                &[0, 2, b'a', b'b', 0, 0, 1, 2],
            ]
            .concat()
        );
    }

    #[test]
    fn descriptor_flag_and_bad_fields_are_refused() {
        let mut bytes = Frame::Seg(SegFrame::ControlBlock { seq: 1, handle: 2 }).to_vec();
        bytes[5] &= !FLAG_FD;
        assert!(
            Frame::decode_exact(&bytes, 1 << 20).is_err(),
            "FD flag missing"
        );
        let mut bytes = Frame::Seg(SegFrame::Close { seq: 1, handle: 2 }).to_vec();
        bytes[5] |= FLAG_FD;
        assert!(
            Frame::decode_exact(&bytes, 1 << 20).is_err(),
            "FD flag on a request"
        );
        bytes[5] = 0x01;
        assert!(
            Frame::decode_exact(&bytes, 1 << 20).is_err(),
            "undefined flag"
        );
        // A listing whose count promises more entries than the frame holds.
        let mut bytes = Frame::Seg(SegFrame::Listing {
            seq: 1,
            entries: vec![entry()],
        })
        .to_vec();
        bytes[HEADER_LEN + 3] = 200;
        assert!(Frame::decode_exact(&bytes, 1 << 20).is_err());
        // An entry kind other than 1 or 2.
        let mut bytes = Frame::Seg(SegFrame::Listing {
            seq: 1,
            entries: vec![entry()],
        })
        .to_vec();
        bytes[HEADER_LEN + 4] = 3;
        assert!(Frame::decode_exact(&bytes, 1 << 20).is_err());
        // A lock state outside 0..=6.
        let mut bytes = Frame::Seg(SegFrame::LockState {
            seq: 1,
            handle: 2,
            state: LockState::Busy,
            word: 0,
        })
        .to_vec();
        bytes[HEADER_LEN + 4] = 7;
        assert!(Frame::decode_exact(&bytes, 1 << 20).is_err());
    }
}

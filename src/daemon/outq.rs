//! A client's bounded outgoing queue.
//!
//! Frames are shared between receivers (`Rc<[u8]>`: a broadcast to eight subscribers holds
//! one copy of the bytes) and written with one `sendmsg` of up to [`MAX_IOV`] slices. The
//! byte count charged to a queue is the full length of each queued frame, so the bound holds
//! however the frames are shared.

use crate::wire::Frame;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

/// Slices gathered into one `sendmsg`.
pub const MAX_IOV: usize = 64;

/// Encoded length of a `Lost` frame.
const LOST_LEN: usize = 20;

enum Out {
    /// A delivered message: may be dropped by the slow-consumer policy.
    Frame(Rc<[u8]>),
    /// An answer the client asked for (Ok, Error, Reply, ...): never dropped, the client
    /// waits for exactly this frame.
    Answer(Rc<[u8]>),
    /// An answer that carries a file descriptor: sent with `SCM_RIGHTS` in the `sendmsg`
    /// that writes the frame's first byte; our copy closes when the frame leaves the queue.
    AnswerFd(Rc<[u8]>, OwnedFd),
    /// A gap notice: `count` messages were dropped at this point of the stream.
    Lost { count: u64, bytes: [u8; LOST_LEN] },
}

impl Out {
    fn lost(count: u64) -> Out {
        let mut bytes = [0u8; LOST_LEN];
        let v = Frame::Lost { count }.to_vec();
        bytes.copy_from_slice(&v);
        Out::Lost { count, bytes }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Out::Frame(b) | Out::Answer(b) | Out::AnswerFd(b, _) => b,
            Out::Lost { bytes, .. } => bytes,
        }
    }

    fn droppable(&self) -> bool {
        !matches!(self, Out::Answer(_) | Out::AnswerFd(..))
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Out::AnswerFd(_, fd) => Some(fd.as_fd()),
            _ => None,
        }
    }
}

/// What happened to a frame offered to a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The new frame was queued.
    pub queued: bool,
    /// Messages dropped to make room, or the new one if it could not be queued.
    pub dropped: u64,
    /// Change in queued bytes (may be negative when old frames were dropped).
    pub delta: i64,
}

/// The queue. Invariant: `bytes` is the sum of the lengths of the queued items, and the
/// first `head_written` bytes of the front item have already gone to the socket.
#[derive(Default)]
pub struct OutQueue {
    items: VecDeque<Out>,
    head_written: usize,
    bytes: usize,
}

impl OutQueue {
    /// Bytes charged to this queue.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends a frame if it fits in `limit` bytes; never drops anything.
    pub fn try_push(&mut self, frame: Rc<[u8]>, limit: usize) -> bool {
        if self.bytes + frame.len() > limit {
            return false;
        }
        self.bytes += frame.len();
        self.items.push_back(Out::Frame(frame));
        true
    }

    /// Appends an answer if it fits in `limit` bytes; answers are never dropped.
    pub fn push_answer(&mut self, frame: Rc<[u8]>, limit: usize) -> bool {
        if self.bytes + frame.len() > limit {
            return false;
        }
        self.bytes += frame.len();
        self.items.push_back(Out::Answer(frame));
        true
    }

    /// Appends an answer that carries `fd`, if it fits in `limit` bytes; never dropped.
    /// On refusal the descriptor is returned.
    pub fn push_answer_fd(
        &mut self,
        frame: Rc<[u8]>,
        fd: OwnedFd,
        limit: usize,
    ) -> Result<(), OwnedFd> {
        if self.bytes + frame.len() > limit {
            return Err(fd);
        }
        self.bytes += frame.len();
        self.items.push_back(Out::AnswerFd(frame, fd));
        Ok(())
    }

    /// Appends a frame, dropping the oldest unsent messages to stay within `limit` bytes.
    ///
    /// The dropped messages are replaced by one `Lost` notice at the place of the gap, so the
    /// receiver learns exactly how many it missed and where. A partly written frame is never
    /// dropped (that would corrupt the stream).
    pub fn push_drop_oldest(&mut self, frame: Rc<[u8]>, limit: usize) -> Pushed {
        let before = self.bytes as i64;
        let first = usize::from(self.head_written > 0);
        let mut dropped = 0u64;
        let mut carried = 0u64;
        // Where the first dropped item was: the gap notice goes there.
        let mut gap = None;
        while self.bytes + frame.len() + LOST_LEN > limit {
            // Answers before the gap stay; the scan resumes at the gap.
            let from = gap.unwrap_or(first);
            let Some(i) = self.items.iter().skip(from).position(Out::droppable) else {
                break;
            };
            let Some(old) = self.items.remove(from + i) else {
                break;
            };
            gap.get_or_insert(from + i);
            self.bytes -= old.bytes().len();
            match old {
                Out::Frame(_) => dropped += 1,
                Out::Lost { count, .. } => carried += count,
                Out::Answer(_) | Out::AnswerFd(..) => {} // not reached: answers are skipped above
            }
        }
        let queued = self.bytes + frame.len() + LOST_LEN <= limit;
        if !queued {
            dropped += 1;
        }
        if dropped + carried > 0 {
            self.bytes += LOST_LEN;
            self.items
                .insert(gap.unwrap_or(first), Out::lost(dropped + carried));
        }
        if queued {
            self.bytes += frame.len();
            self.items.push_back(Out::Frame(frame));
        }
        Pushed {
            queued,
            dropped,
            delta: self.bytes as i64 - before,
        }
    }

    /// Records that one message was dropped for this receiver at the current end of the
    /// queue (used when the daemon-wide memory budget is exhausted). Returns the change in
    /// queued bytes.
    pub fn note_lost(&mut self) -> i64 {
        self.note_lost_many(1)
    }

    /// Records that `n` messages were lost for this receiver at the current end of the
    /// queue (also those a lossy shared-memory stream overwrote before qcopd forwarded
    /// them). Returns the change in queued bytes.
    pub fn note_lost_many(&mut self, n: u64) -> i64 {
        let partly_written_tail = self.items.len() == 1 && self.head_written > 0;
        if let (Some(Out::Lost { count, .. }), false) = (self.items.back(), partly_written_tail) {
            let n = count.saturating_add(n);
            if let Some(last) = self.items.back_mut() {
                *last = Out::lost(n);
            }
            return 0;
        }
        self.items.push_back(Out::lost(n));
        self.bytes += LOST_LEN;
        LOST_LEN as i64
    }

    /// Hands up to [`MAX_IOV`] slices, starting at the unsent part of the head, to `write`
    /// (one `sendmsg`), then consumes what it wrote. Returns the bytes released from the
    /// queue.
    ///
    /// A frame that carries a descriptor starts a `sendmsg` of its own, with the descriptor
    /// passed as the second argument: the kernel attaches it to the frame's first byte, so
    /// the receiver holds it by the time the frame is complete.
    pub fn write_with(
        &mut self,
        write: impl FnOnce(&[IoSlice<'_>], Option<BorrowedFd<'_>>) -> nix::Result<usize>,
    ) -> nix::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        let fd = match self.items.front() {
            Some(item) if self.head_written == 0 => item.fd(),
            _ => None,
        };
        for (i, item) in self.items.iter().take(MAX_IOV).enumerate() {
            if i > 0 && item.fd().is_some() {
                break;
            }
            let b = item.bytes();
            slices[i] = IoSlice::new(if i == 0 { &b[self.head_written..] } else { b });
            n += 1;
        }
        let written = write(&slices[..n], fd)?;
        Ok(self.advance(written))
    }

    /// Consumes `n` written bytes; returns the number of bytes released from the queue.
    pub fn advance(&mut self, mut n: usize) -> usize {
        let mut released = 0;
        while n > 0 {
            let Some(front) = self.items.front() else {
                break;
            };
            let left = front.bytes().len() - self.head_written;
            if n >= left {
                n -= left;
                released += front.bytes().len();
                self.bytes -= front.bytes().len();
                self.items.pop_front();
                self.head_written = 0;
            } else {
                self.head_written += n;
                n = 0;
            }
        }
        released
    }

    /// Gives up on the queue before a disconnect: drops everything unsent except a frame
    /// already partly written (cutting it would leave the receiver a torn frame), then
    /// appends `last` (the fatal error that says why). Returns the change in queued bytes and
    /// the delivered messages dropped.
    pub fn abandon(&mut self, last: Rc<[u8]>) -> (i64, u64) {
        let before = self.bytes as i64;
        let keep = usize::from(self.head_written > 0);
        let mut dropped = 0u64;
        for item in self.items.drain(keep..) {
            self.bytes -= item.bytes().len();
            dropped += u64::from(matches!(item, Out::Frame(_)));
        }
        self.bytes += last.len();
        self.items.push_back(Out::Answer(last));
        (self.bytes as i64 - before, dropped)
    }

    /// Empties the queue; returns the bytes released and the delivered messages (not
    /// answers or notices) that will now never be written.
    pub fn clear(&mut self) -> (usize, u64) {
        let b = self.bytes;
        let messages = self
            .items
            .iter()
            .filter(|i| matches!(i, Out::Frame(_)))
            .count() as u64;
        self.items.clear();
        self.head_written = 0;
        self.bytes = 0;
        (b, messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameReader;

    fn msg(i: u32) -> Rc<[u8]> {
        Frame::Message {
            token: 0,
            call: false,
            channel: "c",
            message: "m()",
            payload: &i.to_be_bytes(),
            sender: None,
        }
        .to_vec()
        .into()
    }

    /// Concatenates what the queue would write and decodes it like a client.
    fn drain(q: &mut OutQueue) -> Vec<String> {
        let mut stream = Vec::new();
        while !q.is_empty() {
            q.write_with(|slices, _fd| {
                for s in slices {
                    stream.extend_from_slice(s);
                }
                Ok(slices.iter().map(|s| s.len()).sum())
            })
            .unwrap();
        }
        let mut r = FrameReader::new(1 << 16);
        r.buffer_mut(stream.len())[..stream.len()].copy_from_slice(&stream);
        r.filled(stream.len());
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            out.push(match f {
                Frame::Message { payload, .. } => {
                    format!("m{}", u32::from_be_bytes(payload.try_into().unwrap()))
                }
                Frame::Lost { count } => format!("lost{count}"),
                other => format!("{other:?}"),
            });
        }
        out
    }

    #[test]
    fn a_descriptor_starts_its_own_sendmsg_and_is_never_dropped() {
        let fd = || std::fs::File::open("/dev/null").unwrap().into();
        let len = msg(0).len();
        let limit = len * 4 + LOST_LEN;
        let mut q = OutQueue::default();
        q.push_drop_oldest(msg(0), limit);
        q.push_answer_fd(msg(1), fd(), limit).unwrap();
        q.push_drop_oldest(msg(2), limit);
        q.push_answer_fd(msg(3), fd(), limit).unwrap();
        // Each call: (slices, carried a descriptor).
        let mut calls = Vec::new();
        while !q.is_empty() {
            q.write_with(|slices, fd| {
                calls.push((slices.len(), fd.is_some()));
                // Write the first slice only partly the first time a descriptor goes out.
                let n: usize = slices.iter().map(|s| s.len()).sum();
                Ok(if fd.is_some() && calls.len() == 2 {
                    5
                } else {
                    n
                })
            })
            .unwrap();
        }
        // m0 alone (m1 carries a descriptor); m1 with its descriptor, partly written; the rest
        // of m1 and m2 without it (already sent); m3 with its own.
        assert_eq!(calls, [(1, false), (2, true), (2, false), (1, true)]);
        // Answers with descriptors survive the drop policy.
        let mut q = OutQueue::default();
        q.push_answer_fd(msg(9), fd(), limit).unwrap();
        for i in 10..20 {
            q.push_drop_oldest(msg(i), limit);
        }
        assert_eq!(drain(&mut q)[0], "m9");
    }

    #[test]
    fn drop_oldest_marks_the_gap_with_its_size() {
        let len = msg(0).len();
        let limit = len * 3 + LOST_LEN;
        let mut q = OutQueue::default();
        for i in 0..10 {
            q.push_drop_oldest(msg(i), limit);
            assert!(q.bytes() <= limit);
        }
        assert_eq!(drain(&mut q), ["lost7", "m7", "m8", "m9"]);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn partly_written_head_is_kept() {
        let len = msg(0).len();
        let limit = len * 2 + LOST_LEN;
        let mut q = OutQueue::default();
        q.push_drop_oldest(msg(0), limit);
        q.advance(3);
        for i in 1..5 {
            q.push_drop_oldest(msg(i), limit);
        }
        // Finish the head by hand, then decode the rest.
        q.write_with(|slices, _fd| {
            assert_eq!(slices[0].len(), len - 3);
            Ok(slices[0].len())
        })
        .unwrap();
        assert_eq!(drain(&mut q), ["lost3", "m4"]);
    }

    #[test]
    fn abandoning_finishes_the_partly_written_frame_then_says_why() {
        let bye = || -> Rc<[u8]> {
            Frame::Error {
                seq: 0,
                fatal: true,
                code: crate::wire::ErrorCode::SlowConsumer,
                text: "bye",
            }
            .to_vec()
            .into()
        };
        let len = msg(0).len();
        let mut q = OutQueue::default();
        for i in 0..4 {
            assert!(q.try_push(msg(i), 1000));
        }
        q.advance(len + 3);
        let (delta, dropped) = q.abandon(bye());
        assert_eq!(dropped, 2);
        assert_eq!(delta, bye().len() as i64 - 2 * len as i64);
        assert_eq!(q.bytes(), len + bye().len());
        q.write_with(|slices, _fd| {
            assert_eq!(slices[0].len(), len - 3);
            Ok(slices[0].len())
        })
        .unwrap();
        let rest = drain(&mut q);
        assert_eq!(rest.len(), 1);
        assert!(rest[0].contains("SlowConsumer"), "{rest:?}");

        // At a frame boundary, only the error is left.
        let mut q = OutQueue::default();
        assert!(q.try_push(msg(0), 1000));
        assert_eq!(q.abandon(bye()).1, 1);
        assert_eq!(q.bytes(), bye().len());
    }

    #[test]
    fn memory_budget_losses_merge_at_the_tail() {
        let mut q = OutQueue::default();
        assert!(q.try_push(msg(1), 1000));
        q.note_lost();
        q.note_lost();
        assert!(q.try_push(msg(2), 1000));
        assert_eq!(drain(&mut q), ["m1", "lost2", "m2"]);
    }
}

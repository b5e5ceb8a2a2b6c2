//! A client's bounded outgoing queue.
//!
//! The bytes of every queued frame sit in one contiguous buffer, in order, and go to the
//! socket in one `sendmsg` of one slice (as much as the socket takes): a broadcast copies a
//! message's bytes into each receiver's buffer instead of handing the kernel one slice per
//! frame. A list of frame records (length and kind) beside the bytes keeps what the
//! slow-consumer policy needs: which frames are messages that may be dropped, which are
//! answers that may not, where a descriptor travels, and where a gap notice stands. The byte
//! count charged to a queue is the full length of each queued frame. The buffer keeps its
//! memory while in use (no allocation per message in steady state) and gives back what
//! exceeds [`KEEP_BYTES`] once empty.

use crate::wire::Frame;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Capacity an empty queue keeps for its next frames.
pub const KEEP_BYTES: usize = 8 * 1024;

/// Encoded length of a `Lost` frame.
const LOST_LEN: usize = 20;

enum Kind {
    /// A delivered message: may be dropped by the slow-consumer policy.
    Frame,
    /// An answer the client asked for (Ok, Error, Reply, ...): never dropped, the client
    /// waits for exactly this frame.
    Answer,
    /// An answer that carries a file descriptor: sent with `SCM_RIGHTS` in the `sendmsg`
    /// that writes the frame's first byte; our copy closes when the frame leaves the queue.
    AnswerFd(OwnedFd),
    /// A gap notice: `count` messages were dropped at this point of the stream.
    Lost(u64),
}

struct Item {
    len: usize,
    kind: Kind,
}

impl Item {
    fn droppable(&self) -> bool {
        matches!(self.kind, Kind::Frame | Kind::Lost(_))
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.kind {
            Kind::AnswerFd(fd) => Some(fd.as_fd()),
            _ => None,
        }
    }
}

fn lost_bytes(count: u64) -> [u8; LOST_LEN] {
    let mut bytes = [0u8; LOST_LEN];
    let mut v = Vec::with_capacity(LOST_LEN);
    Frame::Lost { count }.encode(&mut v);
    bytes.copy_from_slice(&v);
    bytes
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

/// The queue. Invariants: `bytes` is the sum of the lengths of the items; `data[pos..]`
/// holds, in order, the unsent bytes of every item, of which the first `head_written` bytes
/// of the front item are already gone to the socket (so `data.len() - pos == bytes -
/// head_written`).
#[derive(Default)]
pub struct OutQueue {
    items: VecDeque<Item>,
    data: Vec<u8>,
    pos: usize,
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

    fn append(&mut self, frame: &[u8], kind: Kind) {
        if self.items.is_empty() {
            self.data.clear();
            self.pos = 0;
        } else {
            self.compact();
        }
        self.data.extend_from_slice(frame);
        self.bytes += frame.len();
        self.items.push_back(Item {
            len: frame.len(),
            kind,
        });
    }

    /// Appends a frame if it fits in `limit` bytes; never drops anything.
    pub fn try_push(&mut self, frame: &[u8], limit: usize) -> bool {
        if self.bytes + frame.len() > limit {
            return false;
        }
        self.append(frame, Kind::Frame);
        true
    }

    /// Appends an answer if it fits in `limit` bytes; answers are never dropped.
    pub fn push_answer(&mut self, frame: &[u8], limit: usize) -> bool {
        if self.bytes + frame.len() > limit {
            return false;
        }
        self.append(frame, Kind::Answer);
        true
    }

    /// Appends an answer that carries `fd`, if it fits in `limit` bytes; never dropped.
    /// On refusal the descriptor is returned.
    pub fn push_answer_fd(
        &mut self,
        frame: &[u8],
        fd: OwnedFd,
        limit: usize,
    ) -> Result<(), OwnedFd> {
        if self.bytes + frame.len() > limit {
            return Err(fd);
        }
        self.append(frame, Kind::AnswerFd(fd));
        Ok(())
    }

    /// Where item `i`'s unsent bytes start in `data`.
    fn offset_of(&self, i: usize) -> usize {
        let before: usize = self.items.iter().take(i).map(|it| it.len).sum();
        if i == 0 {
            self.pos
        } else {
            self.pos + before - self.head_written
        }
    }

    /// Appends a frame, dropping the oldest unsent messages to stay within `limit` bytes.
    ///
    /// The dropped messages are replaced by one `Lost` notice at the place of the gap, so the
    /// receiver learns exactly how many it missed and where. A partly written frame is never
    /// dropped (that would corrupt the stream).
    pub fn push_drop_oldest(&mut self, frame: &[u8], limit: usize) -> Pushed {
        let before = self.bytes as i64;
        let first = usize::from(self.head_written > 0);
        let mut dropped = 0u64;
        let mut carried = 0u64;
        // Where the first dropped item was: the gap notice goes there.
        let mut gap = None;
        while self.bytes + frame.len() + LOST_LEN > limit {
            // Answers before the gap stay; the scan resumes at the gap.
            let from = gap.unwrap_or(first);
            let Some(i) = self.items.iter().skip(from).position(Item::droppable) else {
                break;
            };
            let at = self.offset_of(from + i);
            let Some(old) = self.items.remove(from + i) else {
                break;
            };
            gap.get_or_insert(from + i);
            self.cut(at, old.len);
            self.bytes -= old.len;
            match old.kind {
                Kind::Frame => dropped += 1,
                Kind::Lost(count) => carried += count,
                Kind::Answer | Kind::AnswerFd(_) => {} // not reached: answers are skipped above
            }
        }
        let queued = self.bytes + frame.len() + LOST_LEN <= limit;
        if !queued {
            dropped += 1;
        }
        if dropped + carried > 0 {
            let at_item = gap.unwrap_or(first);
            let at = if at_item == self.items.len() {
                self.data.len()
            } else {
                self.offset_of(at_item)
            };
            let n = dropped + carried;
            self.insert_bytes(at, &lost_bytes(n));
            self.bytes += LOST_LEN;
            self.items.insert(
                at_item,
                Item {
                    len: LOST_LEN,
                    kind: Kind::Lost(n),
                },
            );
        }
        if queued {
            self.append(frame, Kind::Frame);
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
        if let (
            Some(Item {
                kind: Kind::Lost(count),
                ..
            }),
            false,
        ) = (self.items.back_mut(), partly_written_tail)
        {
            *count = count.saturating_add(n);
            let bytes = lost_bytes(*count);
            let end = self.data.len();
            self.data[end - LOST_LEN..].copy_from_slice(&bytes);
            return 0;
        }
        self.append(&lost_bytes(n), Kind::Lost(n));
        LOST_LEN as i64
    }

    /// Hands the unsent bytes, up to the next frame that carries a descriptor, to `write`
    /// as one slice (one `sendmsg`), then consumes what it wrote. Returns the bytes released
    /// from the queue.
    ///
    /// A frame that carries a descriptor starts a `sendmsg` of its own, with the descriptor
    /// passed as the second argument: the kernel attaches it to the frame's first byte, so
    /// the receiver holds it by the time the frame is complete.
    pub fn write_with(
        &mut self,
        write: impl FnOnce(&[IoSlice<'_>], Option<BorrowedFd<'_>>) -> nix::Result<usize>,
    ) -> nix::Result<usize> {
        let fd = match self.items.front() {
            Some(item) if self.head_written == 0 => item.fd(),
            _ => None,
        };
        let mut end = self.data.len();
        let mut at = self.pos;
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 && item.fd().is_some() {
                end = at;
                break;
            }
            at += if i == 0 {
                item.len - self.head_written
            } else {
                item.len
            };
        }
        let slices = [IoSlice::new(&self.data[self.pos..end])];
        let written = write(&slices, fd)?;
        Ok(self.advance(written))
    }

    /// Consumes `n` written bytes; returns the number of bytes released from the queue.
    pub fn advance(&mut self, mut n: usize) -> usize {
        let mut released = 0;
        while n > 0 {
            let Some(front) = self.items.front() else {
                break;
            };
            let left = front.len - self.head_written;
            if n >= left {
                n -= left;
                self.pos += left;
                released += front.len;
                self.bytes -= front.len;
                self.items.pop_front();
                self.head_written = 0;
            } else {
                self.head_written += n;
                self.pos += n;
                n = 0;
            }
        }
        if self.items.is_empty() {
            self.release();
        } else {
            self.compact();
        }
        released
    }

    /// Gives up on the queue before a disconnect: drops everything unsent except a frame
    /// already partly written (cutting it would leave the receiver a torn frame), then
    /// appends `last` (the fatal error that says why). Returns the change in queued bytes and
    /// the delivered messages dropped.
    pub fn abandon(&mut self, last: &[u8]) -> (i64, u64) {
        let before = self.bytes as i64;
        let (keep, end) = match self.items.front() {
            Some(front) if self.head_written > 0 => (1, self.pos + front.len - self.head_written),
            _ => (0, self.pos),
        };
        let mut dropped = 0u64;
        for item in self.items.drain(keep..) {
            self.bytes -= item.len;
            dropped += u64::from(matches!(item.kind, Kind::Frame));
        }
        self.data.truncate(end);
        self.append(last, Kind::Answer);
        (self.bytes as i64 - before, dropped)
    }

    /// Moves the unsent bytes to the front once most of the buffer is spent (amortised:
    /// only after at least as many bytes went as stay).
    fn compact(&mut self) {
        if self.pos >= KEEP_BYTES && self.pos > self.data.len() / 2 {
            self.data.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Removes `len` bytes at `at`, moving whichever side of them is shorter (dropping the
    /// oldest messages costs about a frame, not the queue).
    fn cut(&mut self, at: usize, len: usize) {
        if at - self.pos <= self.data.len() - (at + len) {
            self.data.copy_within(self.pos..at, self.pos + len);
            self.pos += len;
        } else {
            self.data.drain(at..at + len);
        }
    }

    /// Inserts `bytes` at `at`, moving the bytes before it when there is room in front.
    fn insert_bytes(&mut self, at: usize, bytes: &[u8]) {
        if self.pos >= bytes.len() {
            let start = self.pos - bytes.len();
            self.data.copy_within(self.pos..at, start);
            self.data[at - bytes.len()..at].copy_from_slice(bytes);
            self.pos = start;
        } else {
            self.data.splice(at..at, bytes.iter().copied());
        }
    }

    /// Empty: the bytes go, the memory beyond [`KEEP_BYTES`] too.
    fn release(&mut self) {
        self.data.clear();
        self.pos = 0;
        if self.data.capacity() > KEEP_BYTES {
            self.data.shrink_to(KEEP_BYTES);
        }
    }

    /// Empties the queue; returns the bytes released and the delivered messages (not
    /// answers or notices) that will now never be written.
    pub fn clear(&mut self) -> (usize, u64) {
        let b = self.bytes;
        let messages = self
            .items
            .iter()
            .filter(|i| matches!(i.kind, Kind::Frame))
            .count() as u64;
        self.items.clear();
        self.head_written = 0;
        self.bytes = 0;
        self.release();
        (b, messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameReader;

    fn msg(i: u32) -> Vec<u8> {
        Frame::Message {
            token: 0,
            call: false,
            channel: "c",
            message: "m()",
            payload: &i.to_be_bytes(),
            sender: None,
        }
        .to_vec()
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
    fn frames_go_out_as_one_slice() {
        let mut q = OutQueue::default();
        for i in 0..10 {
            assert!(q.try_push(&msg(i), 1 << 20));
        }
        let len = msg(0).len();
        let mut calls = Vec::new();
        while !q.is_empty() {
            q.write_with(|slices, _| {
                calls.push(slices.iter().map(|s| s.len()).collect::<Vec<_>>());
                // The socket takes three and a half frames at a time.
                Ok((len * 7 / 2).min(slices[0].len()))
            })
            .unwrap();
        }
        assert_eq!(calls[0], [10 * len]);
        assert!(calls.iter().all(|c| c.len() == 1));
        assert_eq!(calls.len(), 3);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn a_descriptor_starts_its_own_sendmsg_and_is_never_dropped() {
        let fd = || std::fs::File::open("/dev/null").unwrap().into();
        let len = msg(0).len();
        let limit = len * 4 + LOST_LEN;
        let mut q = OutQueue::default();
        q.push_drop_oldest(&msg(0), limit);
        q.push_answer_fd(&msg(1), fd(), limit).unwrap();
        q.push_drop_oldest(&msg(2), limit);
        q.push_answer_fd(&msg(3), fd(), limit).unwrap();
        // Each call: (bytes offered, carried a descriptor).
        let mut calls = Vec::new();
        while !q.is_empty() {
            q.write_with(|slices, fd| {
                let n: usize = slices.iter().map(|s| s.len()).sum();
                calls.push((n, fd.is_some()));
                // Write only 5 bytes the first time a descriptor goes out.
                Ok(if fd.is_some() && calls.len() == 2 {
                    5
                } else {
                    n
                })
            })
            .unwrap();
        }
        // m0 alone (m1 carries a descriptor); m1 and m2 with m1's descriptor, partly
        // written; the rest of m1 and m2 without it (already sent); m3 with its own.
        assert_eq!(
            calls,
            [
                (len, false),
                (2 * len, true),
                (2 * len - 5, false),
                (len, true)
            ]
        );
        // Answers with descriptors survive the drop policy.
        let mut q = OutQueue::default();
        q.push_answer_fd(&msg(9), fd(), limit).unwrap();
        for i in 10..20 {
            q.push_drop_oldest(&msg(i), limit);
        }
        assert_eq!(drain(&mut q)[0], "m9");
    }

    #[test]
    fn drop_oldest_marks_the_gap_with_its_size() {
        let len = msg(0).len();
        let limit = len * 3 + LOST_LEN;
        let mut q = OutQueue::default();
        for i in 0..10 {
            q.push_drop_oldest(&msg(i), limit);
            assert!(q.bytes() <= limit);
        }
        assert_eq!(drain(&mut q), ["lost7", "m7", "m8", "m9"]);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn drop_oldest_keeps_answers_in_place() {
        let len = msg(0).len();
        let limit = len * 4 + LOST_LEN;
        let mut q = OutQueue::default();
        q.push_drop_oldest(&msg(0), limit);
        assert!(q.push_answer(&msg(100), limit));
        for i in 1..8 {
            q.push_drop_oldest(&msg(i), limit);
        }
        // The gap notice stands where the first dropped message stood.
        assert_eq!(drain(&mut q), ["lost5", "m100", "m5", "m6", "m7"]);
    }

    #[test]
    fn partly_written_head_is_kept() {
        let len = msg(0).len();
        let limit = len * 2 + LOST_LEN;
        let mut q = OutQueue::default();
        q.push_drop_oldest(&msg(0), limit);
        q.advance(3);
        for i in 1..5 {
            q.push_drop_oldest(&msg(i), limit);
        }
        // Finish the head by hand, then decode the rest.
        q.write_with(|slices, _fd| Ok(len - 3).map(|n| n.min(slices[0].len())))
            .unwrap();
        assert_eq!(drain(&mut q), ["lost3", "m4"]);
    }

    #[test]
    fn abandoning_finishes_the_partly_written_frame_then_says_why() {
        let bye = Frame::Error {
            seq: 0,
            fatal: true,
            code: crate::wire::ErrorCode::SlowConsumer,
            text: "bye",
        }
        .to_vec();
        let len = msg(0).len();
        let mut q = OutQueue::default();
        for i in 0..4 {
            assert!(q.try_push(&msg(i), 1000));
        }
        q.advance(len + 3);
        let (delta, dropped) = q.abandon(&bye);
        assert_eq!(dropped, 2);
        assert_eq!(delta, bye.len() as i64 - 2 * len as i64);
        assert_eq!(q.bytes(), len + bye.len());
        // The rest of the head, then the error, and nothing else.
        q.write_with(|slices, _fd| {
            assert_eq!(slices[0].len(), len - 3 + bye.len());
            Ok(len - 3)
        })
        .unwrap();
        let rest = drain(&mut q);
        assert_eq!(rest.len(), 1);
        assert!(rest[0].contains("SlowConsumer"), "{rest:?}");

        // At a frame boundary, only the error is left.
        let mut q = OutQueue::default();
        assert!(q.try_push(&msg(0), 1000));
        assert_eq!(q.abandon(&bye).1, 1);
        assert_eq!(q.bytes(), bye.len());
        assert!(drain(&mut q)[0].contains("SlowConsumer"));
    }

    #[test]
    fn memory_budget_losses_merge_at_the_tail() {
        let mut q = OutQueue::default();
        assert!(q.try_push(&msg(1), 1000));
        q.note_lost();
        q.note_lost();
        assert!(q.try_push(&msg(2), 1000));
        assert_eq!(drain(&mut q), ["m1", "lost2", "m2"]);
    }

    #[test]
    fn an_emptied_queue_keeps_a_bounded_buffer() {
        let mut q = OutQueue::default();
        let big = vec![0u8; 100_000];
        assert!(q.push_answer(&big, 1 << 20));
        q.advance(big.len());
        assert!(q.is_empty());
        assert!(q.data.capacity() <= KEEP_BYTES);
    }

    proptest::proptest! {
        /// Whatever the mix of messages, answers, losses and partial writes under a tight
        /// limit: the bytes written decode as frames, every answer arrives in order, and every
        /// message either arrives or is counted in a gap notice.
        #[test]
        fn nothing_is_lost_silently(ops in proptest::collection::vec(0u8..6, 1..300), cap in 2usize..8) {
            let len = msg(0).len();
            let limit = len * cap + LOST_LEN;
            let mut q = OutQueue::default();
            let mut stream = Vec::new();
            let (mut pushed, mut answers) = (0u32, 0u32);
            for op in ops {
                match op {
                    0..=2 => {
                        q.push_drop_oldest(&msg(pushed), limit);
                        pushed += 1;
                    }
                    3 => {
                        // Refused past its bound (the daemon then disconnects the client).
                        if q.push_answer(&msg(1_000_000 + answers), 4 * limit) {
                            answers += 1;
                        }
                    }
                    4 => {
                        q.note_lost();
                        pushed += 1;
                    }
                    _ => {
                        q.write_with(|slices, _| {
                            let s = &slices[0];
                            let n = (s.len() / 2).max(1).min(s.len());
                            stream.extend_from_slice(&s[..n]);
                            Ok(n)
                        }).unwrap();
                    }
                }
                proptest::prop_assert_eq!(q.data.len() - q.pos, q.bytes - q.head_written);
            }
            while !q.is_empty() {
                q.write_with(|slices, _| {
                    stream.extend_from_slice(&slices[0]);
                    Ok(slices[0].len())
                }).unwrap();
            }
            let mut r = FrameReader::new(1 << 20);
            r.buffer_mut(stream.len())[..stream.len()].copy_from_slice(&stream);
            r.filled(stream.len());
            let (mut seen, mut got_answers) = (0u64, Vec::new());
            while let Some(f) = r.next_frame().unwrap() {
                match f {
                    Frame::Message { payload, .. } => {
                        let v = u32::from_be_bytes(payload.try_into().unwrap());
                        if v >= 1_000_000 { got_answers.push(v - 1_000_000) } else { seen += 1 }
                    }
                    Frame::Lost { count } => seen += count,
                    other => panic!("unexpected {other:?}"),
                }
            }
            proptest::prop_assert_eq!(r.pending(), 0);
            proptest::prop_assert_eq!(seen, u64::from(pushed));
            proptest::prop_assert_eq!(got_answers, (0..answers).collect::<Vec<_>>());
        }
    }
}

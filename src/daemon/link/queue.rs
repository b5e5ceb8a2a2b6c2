//! A link's outgoing messages: the backlog kept while the link is down, the frames handed to
//! the current connection, and the messages written but not yet acknowledged.
//!
//! Messages (`Msg` frames) are numbered implicitly: the n-th `Msg` fully written to a peer
//! (per pair of daemon runs) is number n, and the peer counts the ones it received the same
//! way. Acknowledgements and the resume point after a reconnect are such counts, so the
//! frames need no sequence field and one encoded copy is shared by every link.
//!
//! Bounds: the backlog and the unwritten messages together hold at most `limit` bytes (the
//! oldest are dropped and counted); the unacknowledged copies at most `limit` bytes too
//! (the oldest are forgotten: if the connection then breaks before they were confirmed,
//! the resume reports them as lost).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;

/// Slices gathered into one `sendmsg`.
pub const MAX_IOV: usize = 64;

struct Item {
    bytes: Rc<[u8]>,
    /// A `Msg`: numbered when written, kept until acknowledged, resent after a reconnect.
    msg: bool,
}

/// The queue. Invariants: `backlog_bytes`, `out_msg_bytes`, `out_bytes` and `unacked_bytes`
/// are the sums of the lengths they name; the first `head_written` bytes of the front of
/// `out` are on the wire; `unacked` holds messages `written - unacked.len() + 1 ..= written`.
#[derive(Default)]
pub struct LinkQueue {
    backlog: VecDeque<Rc<[u8]>>,
    backlog_bytes: usize,
    out: VecDeque<Item>,
    head_written: usize,
    out_bytes: usize,
    out_msg_bytes: usize,
    unacked: VecDeque<Rc<[u8]>>,
    unacked_bytes: usize,
    written: u64,
}

impl LinkQueue {
    /// Queues a message for the connected peer, after anything already queued. Returns how
    /// many messages were dropped to stay within `limit` (the new one included if it cannot
    /// fit).
    pub fn push_msg(&mut self, frame: Rc<[u8]>, limit: usize) -> u64 {
        let dropped = self.make_room(frame.len(), limit);
        if self.backlog_bytes + self.out_msg_bytes + frame.len() > limit {
            return dropped + 1;
        }
        self.out_bytes += frame.len();
        self.out_msg_bytes += frame.len();
        self.out.push_back(Item {
            bytes: frame,
            msg: true,
        });
        dropped
    }

    /// Keeps a message for later (link down, or held behind older ones). Returns how many
    /// messages were dropped to stay within `limit`.
    pub fn push_backlog(&mut self, frame: Rc<[u8]>, limit: usize) -> u64 {
        let dropped = self.make_room(frame.len(), limit);
        if self.backlog_bytes + self.out_msg_bytes + frame.len() > limit {
            return dropped + 1;
        }
        self.backlog_bytes += frame.len();
        self.backlog.push_back(frame);
        dropped
    }

    /// Queues a control frame (never dropped, never resent).
    pub fn push_control(&mut self, frame: Rc<[u8]>) {
        self.out_bytes += frame.len();
        self.out.push_back(Item {
            bytes: frame,
            msg: false,
        });
    }

    /// Drops the oldest messages (backlog first, then unwritten ones) until `len` more bytes
    /// fit in `limit`.
    fn make_room(&mut self, len: usize, limit: usize) -> u64 {
        let mut dropped = 0;
        while self.backlog_bytes + self.out_msg_bytes + len > limit {
            if let Some(old) = self.backlog.pop_front() {
                self.backlog_bytes -= old.len();
            } else {
                // Never the partly written head: that would corrupt the stream.
                let from = usize::from(self.head_written > 0);
                let Some(i) = self.out.iter().skip(from).position(|i| i.msg) else {
                    break;
                };
                let Some(old) = self.out.remove(from + i) else {
                    break;
                };
                self.out_bytes -= old.bytes.len();
                self.out_msg_bytes -= old.bytes.len();
            }
            dropped += 1;
        }
        dropped
    }

    /// The oldest message of the backlog.
    pub fn backlog_front(&self) -> Option<&Rc<[u8]>> {
        self.backlog.front()
    }

    /// Removes the oldest message of the backlog.
    pub fn backlog_pop(&mut self) -> Option<Rc<[u8]>> {
        let f = self.backlog.pop_front()?;
        self.backlog_bytes -= f.len();
        Some(f)
    }

    /// Moves the oldest message of the backlog to the connection's queue.
    pub fn backlog_to_out(&mut self) {
        if let Some(f) = self.backlog_pop() {
            self.out_bytes += f.len();
            self.out_msg_bytes += f.len();
            self.out.push_back(Item {
                bytes: f,
                msg: true,
            });
        }
    }

    /// Messages in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Nothing to write.
    pub fn out_is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Bytes waiting to be written (messages and control frames).
    pub fn out_bytes(&self) -> usize {
        self.out_bytes
    }

    /// Bytes held: backlog, unwritten and unacknowledged.
    pub fn bytes(&self) -> usize {
        self.backlog_bytes + self.out_bytes + self.unacked_bytes
    }

    /// Messages written and not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Messages waiting (backlog and unwritten).
    pub fn waiting(&self) -> usize {
        self.backlog.len() + self.out.iter().filter(|i| i.msg).count()
    }

    /// Hands up to [`MAX_IOV`] slices to `write` (one `sendmsg`) and consumes what it wrote.
    /// Returns the bytes written and the messages completed by this write.
    pub fn write_with(
        &mut self,
        limit: usize,
        write: impl FnOnce(&[IoSlice<'_>]) -> nix::Result<usize>,
    ) -> nix::Result<(usize, u64)> {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (i, item) in self.out.iter().take(MAX_IOV).enumerate() {
            let b = &item.bytes[..];
            slices[i] = IoSlice::new(if i == 0 { &b[self.head_written..] } else { b });
            n += 1;
        }
        let written = write(&slices[..n])?;
        Ok((written, self.advance(written, limit)))
    }

    /// Bytes of the first frame to write.
    pub fn front_len(&self) -> Option<usize> {
        self.out.front().map(|i| i.bytes.len())
    }

    /// Takes the first frame to write, whole, as if written: a message is numbered and kept
    /// until acknowledged (within `limit` bytes). Returns it, and whether it is a message.
    pub fn take_out(&mut self, limit: usize) -> Option<(Rc<[u8]>, bool)> {
        let front = self.out.front()?;
        let (bytes, msg) = (Rc::clone(&front.bytes), front.msg);
        debug_assert_eq!(
            self.head_written, 0,
            "take_out and write_with are not mixed"
        );
        self.head_written = 0;
        self.advance(bytes.len(), limit);
        Some((bytes, msg))
    }

    fn advance(&mut self, mut n: usize, limit: usize) -> u64 {
        let mut msgs = 0;
        while n > 0 {
            let Some(front) = self.out.front() else {
                break;
            };
            let left = front.bytes.len() - self.head_written;
            if n < left {
                self.head_written += n;
                break;
            }
            n -= left;
            self.head_written = 0;
            let Some(item) = self.out.pop_front() else {
                break;
            };
            self.out_bytes -= item.bytes.len();
            if item.msg {
                self.out_msg_bytes -= item.bytes.len();
                self.written += 1;
                msgs += 1;
                self.unacked_bytes += item.bytes.len();
                self.unacked.push_back(item.bytes);
                while self.unacked_bytes > limit {
                    let Some(old) = self.unacked.pop_front() else {
                        break;
                    };
                    self.unacked_bytes -= old.len();
                }
            }
        }
        msgs
    }

    /// The peer confirmed it received `count` messages: forget those.
    pub fn ack(&mut self, count: u64) {
        let first = self.written + 1 - self.unacked.len() as u64;
        let confirmed = count
            .saturating_sub(first - 1)
            .min(self.unacked.len() as u64);
        for _ in 0..confirmed {
            if let Some(old) = self.unacked.pop_front() {
                self.unacked_bytes -= old.len();
            }
        }
    }

    /// The connection is gone: unwritten messages (a partly written one included) go back
    /// to the front of the backlog, in order; control frames are discarded.
    pub fn disconnected(&mut self) {
        self.head_written = 0;
        while let Some(item) = self.out.pop_back() {
            if item.msg {
                self.backlog_bytes += item.bytes.len();
                self.backlog.push_front(item.bytes);
            }
        }
        self.out_bytes = 0;
        self.out_msg_bytes = 0;
    }

    /// Reconnected to the same peer run, which received `rx_count` of our messages: those are
    /// confirmed, the rest of the unacknowledged ones are queued again, in order. Returns the
    /// messages that were neither confirmed nor kept (lost in the broken connection).
    pub fn resume(&mut self, rx_count: u64) -> u64 {
        self.ack(rx_count);
        let first = self.written + 1 - self.unacked.len() as u64;
        let lost = if rx_count >= self.written {
            0
        } else {
            first.saturating_sub(rx_count + 1)
        };
        // The peer numbers what it receives next from its own count.
        self.written = rx_count;
        // Behind the frames of the new handshake already queued (the peer must read our
        // `Ready` first), ahead of the backlog.
        while let Some(bytes) = self.unacked.pop_front() {
            self.unacked_bytes -= bytes.len();
            self.out_bytes += bytes.len();
            self.out_msg_bytes += bytes.len();
            self.out.push_back(Item { bytes, msg: true });
        }
        lost
    }

    /// Connected to a new peer run (or the peer lost our numbering): messages written
    /// before cannot be confirmed and are not resent, so none arrives twice. Returns how
    /// many were dropped that way.
    pub fn restart_numbering(&mut self) -> u64 {
        let dropped = self.unacked.len() as u64;
        self.unacked.clear();
        self.unacked_bytes = 0;
        self.written = 0;
        dropped
    }

    /// Takes over the backlog and the numbering of `old`, the queue of an earlier link to
    /// the same peer (whose connection is closed), keeping the frames already queued for the
    /// current connection (its handshake) in front.
    pub fn inherit(&mut self, old: LinkQueue) {
        debug_assert!(old.out.is_empty(), "a closed link has nothing to write");
        let waiting = std::mem::take(&mut self.backlog);
        self.backlog = old.backlog;
        self.backlog_bytes += old.backlog_bytes;
        self.backlog.extend(waiting);
        self.unacked = old.unacked;
        self.unacked_bytes = old.unacked_bytes;
        self.written = old.written;
    }

    /// Messages written in the current numbering.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Drops everything; returns the messages discarded (backlog and unwritten).
    pub fn clear(&mut self) -> u64 {
        let n = self.waiting() as u64;
        *self = LinkQueue {
            written: self.written,
            ..LinkQueue::default()
        };
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u8) -> Rc<[u8]> {
        Rc::from(vec![i; 10])
    }

    /// Writes everything, `chunk` bytes at a time; returns the first byte of each frame.
    fn drain(q: &mut LinkQueue, chunk: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        while !q.out_is_empty() {
            q.write_with(1000, |s| {
                let mut n = 0;
                for sl in s {
                    let take = sl.len().min(chunk - n);
                    wire.extend_from_slice(&sl[..take]);
                    n += take;
                    if n == chunk {
                        break;
                    }
                }
                Ok(n)
            })
            .unwrap();
        }
        wire.chunks(10).map(|c| c[0]).collect()
    }

    #[test]
    fn bound_drops_the_oldest_and_counts() {
        let mut q = LinkQueue::default();
        let mut dropped = 0;
        for i in 0..10 {
            dropped += q.push_backlog(msg(i), 35);
        }
        assert_eq!(dropped, 7);
        assert_eq!(q.backlog_len(), 3);
        while q.backlog_len() > 0 {
            q.backlog_to_out();
        }
        assert_eq!(drain(&mut q, 7), [7, 8, 9]);
        assert_eq!(q.written(), 3);
    }

    #[test]
    fn partly_written_head_is_never_dropped() {
        let mut q = LinkQueue::default();
        q.push_msg(msg(1), 20);
        let mut head = Vec::new();
        q.write_with(100, |s| {
            head.extend_from_slice(&s[0][..4]);
            Ok(4)
        })
        .unwrap();
        assert_eq!(q.push_msg(msg(2), 20), 0);
        assert_eq!(q.push_msg(msg(3), 20), 1);
        let mut rest = Vec::new();
        q.write_with(100, |s| {
            for sl in s {
                rest.extend_from_slice(sl);
            }
            Ok(rest.len())
        })
        .unwrap();
        head.extend_from_slice(&rest);
        assert_eq!(head, [vec![1u8; 10], vec![3u8; 10]].concat());
        assert_eq!(q.written(), 2);
    }

    #[test]
    fn resume_resends_exactly_what_was_not_received() {
        let mut q = LinkQueue::default();
        for i in 1..=5 {
            q.push_msg(msg(i), 1000);
        }
        q.push_control(Rc::from(vec![99u8; 10]));
        assert_eq!(drain(&mut q, 25), [1, 2, 3, 4, 5, 99]);
        q.ack(2);
        assert_eq!(q.unacked(), 3);
        q.push_msg(msg(6), 1000);
        q.write_with(1000, |_| Ok(3)).unwrap(); // 6 partly written
        q.disconnected();
        assert_eq!(q.backlog_len(), 1);
        // The new connection starts with its handshake frames.
        q.push_control(Rc::from(vec![98u8; 10]));
        // The peer had received 4 (the ack for 3 and 4 was lost with the connection).
        assert_eq!(q.resume(4), 0);
        while q.backlog_len() > 0 {
            q.backlog_to_out();
        }
        assert_eq!(drain(&mut q, 100), [98, 5, 6]);
        assert_eq!(q.written(), 6);
    }

    #[test]
    fn forgotten_copies_are_reported_lost() {
        let mut q = LinkQueue::default();
        for i in 1..=5 {
            q.push_msg(msg(i), 1000);
        }
        // Keep only two unacknowledged copies.
        while !q.out_is_empty() {
            q.write_with(20, |s| Ok(s.iter().map(|s| s.len()).sum()))
                .unwrap();
        }
        assert_eq!(q.unacked(), 2);
        q.disconnected();
        assert_eq!(q.resume(1), 2);
        assert_eq!(drain(&mut q, 100), [4, 5]);
        assert_eq!(q.written(), 3);
    }

    #[test]
    fn a_new_connection_inherits_behind_its_handshake() {
        let mut old = LinkQueue::default();
        old.push_msg(msg(1), 1000);
        drain(&mut old, 100);
        old.push_backlog(msg(2), 1000);
        old.disconnected();
        let mut new = LinkQueue::default();
        new.push_control(Rc::from(vec![97u8; 10]));
        new.write_with(1000, |_| Ok(4)).unwrap(); // the hello is half written
        new.inherit(old);
        assert_eq!(new.unacked(), 1);
        assert_eq!(new.resume(0), 0);
        new.backlog_to_out();
        // The rest of the hello, then the resent message, then the backlog.
        let mut wire = Vec::new();
        while !new.out_is_empty() {
            new.write_with(1000, |s| {
                for sl in s {
                    wire.extend_from_slice(sl);
                }
                Ok(s.iter().map(|s| s.len()).sum())
            })
            .unwrap();
        }
        assert_eq!(wire, [vec![97u8; 6], vec![1u8; 10], vec![2u8; 10]].concat());
    }

    #[test]
    fn a_new_peer_run_gets_no_old_copies() {
        let mut q = LinkQueue::default();
        q.push_msg(msg(1), 1000);
        drain(&mut q, 100);
        q.push_backlog(msg(2), 1000);
        q.disconnected();
        assert_eq!(q.restart_numbering(), 1);
        q.backlog_to_out();
        assert_eq!(drain(&mut q, 100), [2]);
        assert_eq!(q.written(), 1);
    }
}

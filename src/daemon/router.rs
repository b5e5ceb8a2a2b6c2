//! Who is subscribed to what: exact channels and wildcard patterns, keyed by client slot.
//!
//! Pure bookkeeping with no I/O, so routing rules are unit-tested without sockets. Patterns
//! live in a trie (the `index` module), so a message's route costs the same however many
//! patterns cannot match its channel; the last route is kept until a subscription changes.

mod index;

use crate::pattern::{is_pattern, NameError, Pattern};
use index::PatternIndex;
use std::collections::HashMap;

/// A client's position in the daemon's client table.
pub type Slot = usize;

struct PatternEntry {
    text: Box<str>,
    pattern: Pattern,
    subscribers: Vec<Slot>,
}

/// Result of a subscribe call.
#[derive(Debug, PartialEq, Eq)]
pub enum Subscribed {
    /// The subscription was added; `new_channel` is set when a channel (or a pattern, which
    /// counts as a channel of its own name, as in Qt's QCOP) got its first subscriber.
    Added {
        /// The channel or pattern had no subscriber before.
        new_channel: bool,
    },
    /// The client already had this subscription (nothing changed).
    Already,
}

/// Result of an unsubscribe call.
#[derive(Debug, PartialEq, Eq)]
pub enum Unsubscribed {
    /// Removed; `removed_channel` is set when a channel (or a pattern) lost its last
    /// subscriber.
    Removed {
        /// The channel or pattern has no subscriber left.
        removed_channel: bool,
    },
    /// The client had no such subscription.
    NotSubscribed,
}

/// The subscription table.
#[derive(Default)]
pub struct Router {
    channels: HashMap<Box<str>, Vec<Slot>>,
    /// Pattern entries by number (the values in `index`); `None` is a free number.
    patterns: Vec<Option<PatternEntry>>,
    free_patterns: Vec<u32>,
    /// Pattern text to entry number.
    by_text: HashMap<Box<str>, u32>,
    index: PatternIndex,
    pattern_count: usize,
    subscriptions: usize,
    /// Entry numbers matched by the current lookup (scratch).
    matched: Vec<u32>,
    /// The last lookup: its channel and recipients, valid until a subscription changes
    /// (messages come in runs on one channel).
    last_channel: String,
    last_recipients: Vec<Slot>,
    last_valid: bool,
}

impl Router {
    /// Adds `slot` as a subscriber of `name` (a channel or a pattern).
    pub fn subscribe(&mut self, slot: Slot, name: &str) -> Result<Subscribed, NameError> {
        self.last_valid = false;
        if is_pattern(name) {
            let pattern = Pattern::new(name)?;
            let new_channel = match self.by_text.get(name) {
                Some(&n) => {
                    let entry = self.patterns[n as usize].as_mut().expect("indexed entry");
                    if entry.subscribers.contains(&slot) {
                        return Ok(Subscribed::Already);
                    }
                    entry.subscribers.push(slot);
                    false
                }
                None => {
                    let n = match self.free_patterns.pop() {
                        Some(n) => n,
                        None => {
                            self.patterns.push(None);
                            (self.patterns.len() - 1) as u32
                        }
                    };
                    self.index.insert(&pattern, n);
                    self.patterns[n as usize] = Some(PatternEntry {
                        text: name.into(),
                        pattern,
                        subscribers: vec![slot],
                    });
                    self.by_text.insert(name.into(), n);
                    self.pattern_count += 1;
                    true
                }
            };
            self.subscriptions += 1;
            return Ok(Subscribed::Added { new_channel });
        }
        let subs = match self.channels.get_mut(name) {
            Some(s) => s,
            None => self.channels.entry(name.into()).or_default(),
        };
        if subs.contains(&slot) {
            return Ok(Subscribed::Already);
        }
        subs.push(slot);
        self.subscriptions += 1;
        Ok(Subscribed::Added {
            new_channel: subs.len() == 1,
        })
    }

    /// Removes one subscription of `slot`.
    pub fn unsubscribe(&mut self, slot: Slot, name: &str) -> Unsubscribed {
        self.last_valid = false;
        if is_pattern(name) {
            let Some(&n) = self.by_text.get(name) else {
                return Unsubscribed::NotSubscribed;
            };
            let entry = self.patterns[n as usize].as_mut().expect("indexed entry");
            let subs = &mut entry.subscribers;
            let Some(j) = subs.iter().position(|&s| s == slot) else {
                return Unsubscribed::NotSubscribed;
            };
            subs.swap_remove(j);
            let removed_channel = subs.is_empty();
            if removed_channel {
                let entry = self.patterns[n as usize].take().expect("indexed entry");
                self.index.remove(&entry.pattern, n);
                self.by_text.remove(name);
                self.free_patterns.push(n);
                self.pattern_count -= 1;
            }
            self.subscriptions -= 1;
            return Unsubscribed::Removed { removed_channel };
        }
        let Some(subs) = self.channels.get_mut(name) else {
            return Unsubscribed::NotSubscribed;
        };
        let Some(j) = subs.iter().position(|&s| s == slot) else {
            return Unsubscribed::NotSubscribed;
        };
        subs.swap_remove(j);
        self.subscriptions -= 1;
        let removed_channel = subs.is_empty();
        if removed_channel {
            self.channels.remove(name);
        }
        Unsubscribed::Removed { removed_channel }
    }

    /// Appends to `out` every slot that should receive a message on `channel`, each once
    /// (a client subscribed exactly and by one or more matching patterns gets one copy).
    pub fn recipients(&mut self, channel: &str, out: &mut Vec<Slot>) {
        out.clear();
        if self.last_valid && self.last_channel == channel {
            out.extend_from_slice(&self.last_recipients);
            return;
        }
        self.lookup(channel, out);
        self.last_channel.clear();
        self.last_channel.push_str(channel);
        self.last_recipients.clear();
        self.last_recipients.extend_from_slice(out);
        self.last_valid = true;
    }

    fn lookup(&mut self, channel: &str, out: &mut Vec<Slot>) {
        if let Some(subs) = self.channels.get(channel) {
            out.extend_from_slice(subs);
        }
        let exact = out.len();
        let mut matched = std::mem::take(&mut self.matched);
        matched.clear();
        self.index.matches(channel, |n| matched.push(n));
        for &n in &matched {
            if let Some(p) = &self.patterns[n as usize] {
                out.extend_from_slice(&p.subscribers);
            }
        }
        self.matched = matched;
        if out.len() > exact {
            out.sort_unstable();
            out.dedup();
        }
    }

    /// Pattern-trie nodes visited by every lookup so far: the routing work patterns cause
    /// (`qcop stats`: `pattern_visits`).
    pub fn pattern_visits(&self) -> u64 {
        self.index.visits()
    }

    /// Exact subscribers of `channel`.
    pub fn exact_count(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, Vec::len)
    }

    /// Subscribers registered under `name` itself, what `isRegistered` answers: the exact
    /// subscribers of a channel, or the subscribers of a pattern of that very text (a
    /// pattern counts as a channel of its own name, as in Qt's QCOP; it is not matched
    /// against other patterns).
    pub fn registered_count(&self, name: &str) -> usize {
        if is_pattern(name) {
            self.by_text
                .get(name)
                .and_then(|&n| self.patterns[n as usize].as_ref())
                .map_or(0, |p| p.subscribers.len())
        } else {
            self.exact_count(name)
        }
    }

    /// Channels and patterns with their subscriber counts, sorted by name.
    pub fn list(&self) -> Vec<(String, u32, bool)> {
        let mut v: Vec<(String, u32, bool)> = self
            .channels
            .iter()
            .map(|(k, s)| (k.to_string(), s.len() as u32, false))
            .chain(
                self.patterns
                    .iter()
                    .flatten()
                    .map(|p| (p.text.to_string(), p.subscribers.len() as u32, true)),
            )
            .collect();
        v.sort();
        v
    }

    /// Number of channels with exact subscribers.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Number of distinct patterns.
    pub fn pattern_count(&self) -> usize {
        self.pattern_count
    }

    /// Total subscriptions of all clients.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(r: &mut Router, ch: &str) -> Vec<Slot> {
        let mut v = Vec::new();
        r.recipients(ch, &mut v);
        v.sort();
        v
    }

    #[test]
    fn exact_and_pattern_subscribers_get_one_copy() {
        let mut r = Router::default();
        assert_eq!(
            r.subscribe(1, "QPE/System"),
            Ok(Subscribed::Added { new_channel: true })
        );
        assert_eq!(
            r.subscribe(2, "QPE/System"),
            Ok(Subscribed::Added { new_channel: false })
        );
        r.subscribe(1, "QPE/*").unwrap();
        r.subscribe(1, "*").unwrap();
        r.subscribe(3, "QPE/Sys?em*").unwrap();
        assert_eq!(r.subscribe(3, "QPE/Sys?em*"), Ok(Subscribed::Already));
        assert_eq!(rcpt(&mut r, "QPE/System"), vec![1, 2, 3]);
        assert_eq!(rcpt(&mut r, "Other"), vec![1]);
        assert_eq!(r.exact_count("QPE/System"), 2);
        assert_eq!(r.exact_count("QPE/*"), 0);
        assert_eq!(r.subscription_count(), 5);
    }

    #[test]
    fn last_unsubscribe_removes_the_channel() {
        let mut r = Router::default();
        r.subscribe(1, "a").unwrap();
        r.subscribe(2, "a").unwrap();
        assert_eq!(
            r.unsubscribe(1, "a"),
            Unsubscribed::Removed {
                removed_channel: false
            }
        );
        assert_eq!(r.unsubscribe(1, "a"), Unsubscribed::NotSubscribed);
        assert_eq!(
            r.unsubscribe(2, "a"),
            Unsubscribed::Removed {
                removed_channel: true
            }
        );
        assert_eq!(r.channel_count(), 0);
        r.subscribe(4, "x*").unwrap();
        assert_eq!(r.pattern_count(), 1);
        r.unsubscribe(4, "x*");
        assert_eq!(r.pattern_count(), 0);
        assert_eq!(r.subscription_count(), 0);
    }

    #[test]
    fn patterns_with_the_same_tokens_are_separate_subscriptions() {
        let mut r = Router::default();
        r.subscribe(1, "a*").unwrap();
        r.subscribe(2, "a**").unwrap();
        assert_eq!(r.pattern_count(), 2);
        assert_eq!(rcpt(&mut r, "abc"), vec![1, 2]);
        r.unsubscribe(1, "a*");
        assert_eq!(rcpt(&mut r, "abc"), vec![2]);
        // The freed entry is reused, and the list shows what is subscribed.
        r.subscribe(3, "b?*").unwrap();
        assert_eq!(rcpt(&mut r, "bc"), vec![3]);
        let list: Vec<(String, u32, bool)> = r.list();
        assert_eq!(list, vec![("a**".into(), 1, true), ("b?*".into(), 1, true)]);
    }

    /// Routing work with 4,096 patterns held by another client that cannot match the
    /// channel: the same trie nodes are visited as with 16 of them.
    #[test]
    fn routing_work_does_not_grow_with_patterns_that_cannot_match() {
        let work = |n: usize| {
            let mut r = Router::default();
            r.subscribe(1, "bench/rr").unwrap();
            r.subscribe(1, "bench/*").unwrap();
            for i in 0..n / 4 {
                for p in [
                    format!("noise/{i}/*"),
                    format!("*/noise{i}"),
                    format!("?oise{i}*"),
                    format!("bench/[0-9]{i}*"),
                ] {
                    r.subscribe(2, &p).unwrap();
                }
            }
            assert_eq!(r.pattern_count(), n + 1);
            let before = r.pattern_visits();
            // Two channels in turn: each lookup walks the index (the last one is cached).
            for _ in 0..50 {
                assert_eq!(rcpt(&mut r, "bench/rr"), vec![1]);
                assert_eq!(rcpt(&mut r, "bench/rs"), vec![1]);
            }
            (r.pattern_visits() - before) / 100
        };
        let small = work(16);
        assert!(small > 0 && small < 64, "{small} nodes per message");
        assert_eq!(work(4096), small);
    }

    #[test]
    fn the_cached_route_follows_subscriptions() {
        let mut r = Router::default();
        r.subscribe(1, "a/b").unwrap();
        assert_eq!(rcpt(&mut r, "a/b"), vec![1]);
        let visits = r.pattern_visits();
        r.subscribe(2, "a/*").unwrap();
        assert_eq!(rcpt(&mut r, "a/b"), vec![1, 2]);
        assert!(
            r.pattern_visits() > visits,
            "a change walks the index again"
        );
        let visits = r.pattern_visits();
        assert_eq!(rcpt(&mut r, "a/b"), vec![1, 2]);
        assert_eq!(
            r.pattern_visits(),
            visits,
            "the same channel again is cached"
        );
        r.unsubscribe(1, "a/b");
        assert_eq!(rcpt(&mut r, "a/b"), vec![2]);
        assert_eq!(rcpt(&mut r, "a/c"), vec![2]);
        r.unsubscribe(2, "a/*");
        assert_eq!(rcpt(&mut r, "a/c"), Vec::<Slot>::new());
    }

    #[test]
    fn bad_patterns_are_refused() {
        let mut r = Router::default();
        assert_eq!(r.subscribe(1, "a[b*"), Err(NameError::UnclosedClass));
        assert_eq!(r.subscription_count(), 0);
    }

    /// As in Qt's QCOP, only `*` makes a pattern: `cam?` and `cam[1]` are channels, and a
    /// pattern counts as a channel of its own name for isRegistered and the lifecycle events.
    #[test]
    fn only_a_star_makes_a_pattern_and_patterns_count_as_channels() {
        let mut r = Router::default();
        r.subscribe(1, "cam?").unwrap();
        r.subscribe(2, "QPE/cam[1]").unwrap();
        assert_eq!(rcpt(&mut r, "cam?"), vec![1]);
        assert_eq!(rcpt(&mut r, "cam1"), Vec::<Slot>::new());
        assert_eq!(rcpt(&mut r, "QPE/cam[1]"), vec![2]);
        assert_eq!(rcpt(&mut r, "QPE/cam1"), Vec::<Slot>::new());
        assert_eq!(r.pattern_count(), 0);
        // Within a pattern `?` and `[...]` are wildcards.
        assert_eq!(
            r.subscribe(3, "*cam[0-3]"),
            Ok(Subscribed::Added { new_channel: true })
        );
        assert_eq!(
            r.subscribe(4, "*cam[0-3]"),
            Ok(Subscribed::Added { new_channel: false })
        );
        assert_eq!(rcpt(&mut r, "QPE/cam1"), vec![3, 4]);
        assert_eq!(r.registered_count("*cam[0-3]"), 2);
        assert_eq!(r.registered_count("*cam[0-9]"), 0);
        assert_eq!(r.exact_count("*cam[0-3]"), 0);
        assert_eq!(
            r.unsubscribe(3, "*cam[0-3]"),
            Unsubscribed::Removed {
                removed_channel: false
            }
        );
        assert_eq!(
            r.unsubscribe(4, "*cam[0-3]"),
            Unsubscribed::Removed {
                removed_channel: true
            }
        );
        assert_eq!(r.registered_count("*cam[0-3]"), 0);
    }
}

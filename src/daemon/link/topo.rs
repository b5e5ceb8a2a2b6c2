//! Who is out there and what they listen to: the flooded advertisements of every daemon, the
//! graph they describe, and which daemons (and so which subscriptions) each link leads to.
//!
//! Every daemon advertises its own state: its neighbours (daemons it has a link up with)
//! and its local subscriptions, with a version that grows with every change. Adverts are
//! flooded over all links; a daemon keeps the newest version per origin. Interest is keyed
//! by the origin that holds the subscribers, so a withdrawal (a new version without the
//! name) takes effect everywhere, also around cycles.
//!
//! The far end of a link that is up always counts; any other edge counts only when both
//! ends list each other. When a daemon dies or is cut off, its neighbours' next adverts
//! drop it, so it becomes unreachable for everyone and its stale subscriptions stop
//! attracting traffic, without waiting for it to say anything.
//! Unreachable adverts are forgotten after [`FORGET_AFTER`].

use crate::pattern::{is_pattern, Pattern};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A daemon's random id for one run.
pub type DaemonId = u64;

/// Other daemons remembered at most.
pub const MAX_DAEMONS: usize = 64;
/// An unreachable daemon's advert is dropped after this long.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Subscription names (channels and patterns) with subscriber counts, matched against
/// channel names. Also used for export and import filters (count 1).
#[derive(Debug, Default, Clone)]
pub struct Subs {
    /// Sorted by name, each name once.
    exact: Vec<(Box<str>, u32)>,
    patterns: Vec<(Pattern, Box<str>, u32)>,
}

impl Subs {
    /// Builds the set; names that are invalid patterns are skipped (callers validate).
    pub fn new<'a>(names: impl IntoIterator<Item = (&'a str, u32)>) -> Subs {
        let mut s = Subs::default();
        for (name, count) in names {
            if is_pattern(name) {
                if let Ok(p) = Pattern::new(name) {
                    s.patterns.push((p, name.into(), count));
                }
            } else {
                // Kept sorted by insertion (no sort routine to carry for a few names).
                match s.exact.binary_search_by(|(n, _)| (**n).cmp(name)) {
                    Ok(i) => s.exact[i].1 = s.exact[i].1.saturating_add(count),
                    Err(i) => s.exact.insert(i, (name.into(), count)),
                }
            }
        }
        s
    }

    /// A filter from configured patterns.
    pub fn filter(patterns: &[String]) -> Subs {
        Subs::new(patterns.iter().map(|p| (p.as_str(), 1)))
    }

    /// Whether a message on `channel` would reach one of these subscriptions.
    pub fn wants(&self, channel: &str) -> bool {
        self.exact(channel) > 0 || self.patterns.iter().any(|(p, _, _)| p.matches(channel))
    }

    /// Subscribers of exactly `channel`.
    pub fn exact(&self, channel: &str) -> u32 {
        self.exact
            .binary_search_by(|(n, _)| (**n).cmp(channel))
            .map_or(0, |i| self.exact[i].1)
    }

    /// Every name with its count and whether it is a pattern.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32, bool)> {
        self.exact
            .iter()
            .map(|(n, c)| (&**n, *c, false))
            .chain(self.patterns.iter().map(|(_, n, c)| (&**n, *c, true)))
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.exact.len() + self.patterns.len()
    }

    /// No names at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one daemon said about itself, the newest version seen.
struct Advert {
    version: u64,
    neighbors: Vec<DaemonId>,
    subs: Rc<Subs>,
    /// The encoded `Advert` frame, relayed as it came.
    raw: Rc<[u8]>,
    /// When it was last found unreachable (`None` while reachable).
    unreachable_since: Option<Instant>,
}

/// What [`Topology::learn`] made of an advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Newer than anything known: relay it and recompute.
    New,
    /// Known already (it came round another path); nothing to do.
    Old,
    /// Refused: too many daemons known, or it claims to be this daemon.
    Refused,
}

/// The adverts of all other daemons and what each link leads to. (Tables are small vectors:
/// a few boards, at most [`MAX_DAEMONS`].)
pub struct Topology {
    me: DaemonId,
    adverts: Vec<(DaemonId, Advert)>,
    /// For each link that is up (by the caller's link index): the daemons reachable
    /// through it without passing through this daemon.
    reach: Vec<(usize, Vec<DaemonId>)>,
    /// Union of `reach`.
    reachable: Vec<DaemonId>,
}

impl Topology {
    /// An empty view for daemon `me`.
    pub fn new(me: DaemonId) -> Topology {
        Topology {
            me,
            adverts: Vec::new(),
            reach: Vec::new(),
            reachable: Vec::new(),
        }
    }

    /// Stores an advert if it is newer than the one known for its origin.
    pub fn learn(
        &mut self,
        origin: DaemonId,
        version: u64,
        neighbors: Vec<DaemonId>,
        subs: Subs,
        raw: Rc<[u8]>,
        now: Instant,
    ) -> Learned {
        if origin == self.me {
            return Learned::Refused;
        }
        let unreachable_since = (!self.reachable.contains(&origin)).then_some(now);
        let advert = Advert {
            version,
            neighbors,
            subs: Rc::new(subs),
            raw,
            unreachable_since,
        };
        match self.adverts.iter_mut().find(|(id, _)| *id == origin) {
            Some((_, a)) if a.version >= version => return Learned::Old,
            Some((_, a)) => *a = advert,
            None => {
                if self.adverts.len() >= MAX_DAEMONS {
                    // Make room by forgetting the daemon unreachable for longest, if any.
                    let victim = (0..self.adverts.len())
                        .filter_map(|i| self.adverts[i].1.unreachable_since.map(|t| (t, i)))
                        .min();
                    match victim {
                        Some((_, i)) => {
                            self.adverts.swap_remove(i);
                        }
                        None => return Learned::Refused,
                    }
                }
                self.adverts.push((origin, advert));
            }
        }
        Learned::New
    }

    /// Recomputes what each link leads to. `up` lists the links that are up, with the id of
    /// the daemon at their far end.
    pub fn recompute(&mut self, up: &[(usize, DaemonId)], now: Instant) {
        self.reach.clear();
        self.reachable.clear();
        for &(link, peer) in up {
            let r = self.reach_from(peer);
            for id in &r {
                if !self.reachable.contains(id) {
                    self.reachable.push(*id);
                }
            }
            self.reach.push((link, r));
        }
        for (id, a) in &mut self.adverts {
            if self.reachable.contains(id) {
                a.unreachable_since = None;
            } else if a.unreachable_since.is_none() {
                a.unreachable_since = Some(now);
            }
        }
    }

    /// Breadth-first search from `start` over confirmed edges, never entering this daemon.
    fn reach_from(&self, start: DaemonId) -> Vec<DaemonId> {
        let mut seen = vec![start];
        let mut queue = VecDeque::from([start]);
        while let Some(x) = queue.pop_front() {
            let Some(ax) = self.advert(x) else {
                continue;
            };
            for &y in &ax.neighbors {
                if y == self.me || seen.contains(&y) {
                    continue;
                }
                let confirmed = self.advert(y).is_some_and(|ay| ay.neighbors.contains(&x));
                if confirmed {
                    seen.push(y);
                    queue.push_back(y);
                }
            }
        }
        seen
    }

    fn advert(&self, id: DaemonId) -> Option<&Advert> {
        self.adverts.iter().find(|(i, _)| *i == id).map(|(_, a)| a)
    }

    /// Forgets adverts unreachable for longer than [`FORGET_AFTER`].
    pub fn forget_unreachable(&mut self, now: Instant) {
        self.adverts.retain(|(_, a)| {
            a.unreachable_since
                .map_or(true, |t| now.saturating_duration_since(t) < FORGET_AFTER)
        });
    }

    /// Daemons reachable through link `link` (empty if it is not up).
    pub fn via(&self, link: usize) -> &[DaemonId] {
        self.reach
            .iter()
            .find(|(l, _)| *l == link)
            .map_or(&[], |(_, r)| r.as_slice())
    }

    /// Whether some daemon other than `except`, reachable through `link`, subscribes to
    /// something matching `channel`.
    pub fn link_wants(&self, link: usize, channel: &str, except: DaemonId) -> bool {
        self.via(link)
            .iter()
            .any(|o| *o != except && self.subs(*o).is_some_and(|s| s.wants(channel)))
    }

    /// Whether `id` is reachable through some link that is up.
    pub fn is_reachable(&self, id: DaemonId) -> bool {
        self.reachable.contains(&id)
    }

    /// The subscriptions daemon `id` advertised.
    pub fn subs(&self, id: DaemonId) -> Option<&Rc<Subs>> {
        self.advert(id).map(|a| &a.subs)
    }

    /// Every known advert, encoded, for a link that just came up.
    pub fn raw_adverts(&self) -> impl Iterator<Item = &Rc<[u8]>> {
        self.adverts.iter().map(|(_, a)| &a.raw)
    }

    /// Reachable daemons, in no particular order.
    pub fn reachable(&self) -> impl Iterator<Item = DaemonId> + '_ {
        self.reachable.iter().copied()
    }

    /// Number of daemons whose advert is held.
    pub fn known(&self) -> usize {
        self.adverts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learn(t: &mut Topology, origin: u64, version: u64, n: &[u64], subs: &[&str]) -> Learned {
        let subs = Subs::new(subs.iter().map(|s| (*s, 1)));
        t.learn(
            origin,
            version,
            n.to_vec(),
            subs,
            Rc::from(&[][..]),
            Instant::now(),
        )
    }

    fn sorted(v: &[u64]) -> Vec<u64> {
        let mut v = v.to_vec();
        v.sort();
        v
    }

    #[test]
    fn subs_match_channels_and_patterns() {
        let s = Subs::new([("a/b", 2), ("x/*", 1), ("a/b", 1)]);
        assert!(s.wants("a/b") && s.wants("x/y/z") && !s.wants("a/c"));
        assert_eq!(s.exact("a/b"), 3);
        assert_eq!(s.exact("x/*"), 0);
        assert_eq!(s.len(), 2);
    }

    /// Triangle 1-2-3 seen from 1: each link leads to both others, and each subscriber is
    /// found through both links.
    #[test]
    fn triangle_reaches_everyone_through_both_links() {
        let mut t = Topology::new(1);
        assert_eq!(learn(&mut t, 2, 1, &[1, 3], &["b"]), Learned::New);
        assert_eq!(learn(&mut t, 3, 1, &[1, 2], &["c/*"]), Learned::New);
        t.recompute(&[(10, 2), (11, 3)], Instant::now());
        assert_eq!(sorted(t.via(10)), [2, 3]);
        assert_eq!(sorted(t.via(11)), [2, 3]);
        assert!(t.link_wants(10, "c/x", 0));
        // A message that came from 3 is not sent towards 3 for 3's own sake.
        assert!(!t.link_wants(10, "c/x", 3));
        assert!(t.link_wants(10, "b", 3));
        assert!(!t.link_wants(12, "b", 0));
    }

    /// Versions order adverts: an old one coming round a cycle changes nothing, and a
    /// withdrawal wins everywhere.
    #[test]
    fn newer_versions_win_and_withdraw() {
        let mut t = Topology::new(1);
        learn(&mut t, 2, 5, &[1], &["s"]);
        t.recompute(&[(0, 2)], Instant::now());
        assert!(t.link_wants(0, "s", 0));
        assert_eq!(learn(&mut t, 2, 5, &[1], &["s"]), Learned::Old);
        assert_eq!(learn(&mut t, 2, 4, &[1], &["s"]), Learned::Old);
        assert_eq!(learn(&mut t, 2, 6, &[1], &[]), Learned::New);
        t.recompute(&[(0, 2)], Instant::now());
        assert!(!t.link_wants(0, "s", 0));
        assert_eq!(learn(&mut t, 1, 9, &[], &["x"]), Learned::Refused);
    }

    /// A line 1-2-3: when 3 dies, 2's next advert drops it and 3 becomes unreachable even
    /// though 3's last advert still lists 2.
    #[test]
    fn edges_need_both_ends() {
        let mut t = Topology::new(1);
        learn(&mut t, 2, 1, &[1, 3], &[]);
        learn(&mut t, 3, 1, &[2], &["c"]);
        let now = Instant::now();
        t.recompute(&[(0, 2)], now);
        assert!(t.link_wants(0, "c", 0));
        learn(&mut t, 2, 2, &[1], &[]);
        t.recompute(&[(0, 2)], now);
        assert!(!t.link_wants(0, "c", 0));
        assert!(!t.is_reachable(3));
        t.forget_unreachable(now + FORGET_AFTER / 2);
        assert_eq!(t.known(), 2);
        t.forget_unreachable(now + FORGET_AFTER);
        assert_eq!(t.known(), 1);
    }

    /// The far end of a link that is up counts whatever its advert lists (the link is
    /// first-hand knowledge); daemons behind it need edges confirmed by both ends.
    #[test]
    fn a_direct_peer_counts_without_listing_neighbours() {
        let mut t = Topology::new(1);
        learn(&mut t, 2, 1, &[], &["near"]);
        learn(&mut t, 3, 1, &[2], &["far"]);
        t.recompute(&[(0, 2)], Instant::now());
        assert!(t.is_reachable(2));
        assert!(t.link_wants(0, "near", 0));
        assert!(!t.is_reachable(3));
        assert!(!t.link_wants(0, "far", 0));
        learn(&mut t, 2, 2, &[3], &["near"]);
        t.recompute(&[(0, 2)], Instant::now());
        assert!(t.link_wants(0, "far", 0));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = Topology::new(0);
        for id in 1..=MAX_DAEMONS as u64 {
            assert_eq!(learn(&mut t, id, 1, &[0], &[]), Learned::New);
        }
        let up: Vec<(usize, u64)> = (1..=MAX_DAEMONS as u64).map(|i| (i as usize, i)).collect();
        t.recompute(&up, Instant::now());
        assert_eq!(learn(&mut t, 1000, 1, &[], &[]), Learned::Refused);
        // Once one is unreachable, a newcomer replaces it.
        t.recompute(&up[1..], Instant::now());
        assert_eq!(learn(&mut t, 1000, 1, &[], &[]), Learned::New);
        assert!(t.subs(1).is_none());
    }
}

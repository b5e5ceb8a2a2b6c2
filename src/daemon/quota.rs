//! Per-user accounting: what each uid holds in the daemon, checked against per-user limits.
//!
//! Every connection, from the moment it is accepted (before its Hello), is charged to the
//! uid its peer credentials name (`SO_PEERCRED`). No user may hold more than
//! `max_clients_per_user` connections, and the last `reserved_admin_clients` places of
//! `max_clients` are kept for root and for the daemon's own user, so that an administrator
//! can always connect (`qcop stats --clients`, `qcop monitor`) however many connections other
//! users hold.
//!
//! The component owns only counts and returns decisions; the event loop acts on them.

use std::collections::HashMap;
use std::fmt;

/// The connection limits in force, taken from the configuration on every decision (so a
/// reload applies at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections at most, all users together.
    pub max_clients: u32,
    /// Connections one user may hold (administrators are not limited).
    pub per_user: u32,
    /// Places of `max_clients` only administrators may take.
    pub reserved: u32,
}

/// Why a connection is refused. `Display` is the text of the error sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Every place is taken.
    Full {
        /// `max_clients`.
        max_clients: u32,
    },
    /// Only the places reserved for administrators are left.
    Reserved {
        /// `max_clients`.
        max_clients: u32,
        /// The places kept for administrators.
        reserved: u32,
    },
    /// The user holds as many connections as it may.
    PerUser {
        /// The user.
        uid: u32,
        /// `max_clients_per_user` in force.
        limit: u32,
    },
}

impl Refusal {
    /// Whether the refusal is the user's own limit (counted apart in `qcop stats`).
    pub fn is_per_user(&self) -> bool {
        matches!(self, Refusal::PerUser { .. })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Full { max_clients } => {
                write!(f, "the daemon serves at most {max_clients} clients")
            }
            Refusal::Reserved {
                max_clients,
                reserved,
            } => write!(
                f,
                "the daemon serves at most {max_clients} clients and the last {reserved} \
                 (reserved_admin_clients) are kept for root and the daemon's user"
            ),
            Refusal::PerUser { uid, limit } => write!(
                f,
                "uid {uid} already holds {limit} connections, the limit \
                 max_clients_per_user = {limit}"
            ),
        }
    }
}

/// Why a client holding a partial input frame is dropped. `Display` is the error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRefusal {
    /// The user's partial frames together exceed its share of the budget.
    UserShare {
        /// The user.
        uid: u32,
        /// What its partial frames would hold.
        held: u64,
        /// Its share.
        share: u64,
    },
    /// Partial frames and queued output together exceed the daemon-wide budget.
    Budget {
        /// `max_total_queue_bytes`.
        budget: u64,
    },
}

impl fmt::Display for InputRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputRefusal::UserShare { uid, held, share } => write!(
                f,
                "partial frames of uid {uid} would hold {held} bytes, over its share of \
                 {share} bytes of max_total_queue_bytes"
            ),
            InputRefusal::Budget { budget } => write!(
                f,
                "partial frames and queued messages would exceed max_total_queue_bytes = \
                 {budget}"
            ),
        }
    }
}

/// The memory budget input is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// `max_total_queue_bytes`: partial input frames and queued output together.
    pub budget: u64,
    /// What one user's partial frames may hold (administrators are held only to `budget`).
    pub user_share: u64,
}

/// Per-user totals of subscriptions, all of a user's connections together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionLimits {
    /// Subscriptions (exact channels and patterns) one user may hold.
    pub per_user: u32,
    /// Of those, patterns one user may hold.
    pub patterns_per_user: u32,
}

/// Why a subscription is refused. `Display` is the error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionRefusal {
    /// The user holds as many subscriptions as it may.
    Subscriptions {
        /// The user.
        uid: u32,
        /// `max_subscriptions_per_user`.
        limit: u32,
    },
    /// The user holds as many patterns as it may.
    Patterns {
        /// The user.
        uid: u32,
        /// `max_patterns_per_user`.
        limit: u32,
    },
}

impl fmt::Display for SubscriptionRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscriptionRefusal::Subscriptions { uid, limit } => write!(
                f,
                "uid {uid} already holds {limit} subscriptions on all its connections, the \
                 limit max_subscriptions_per_user = {limit}"
            ),
            SubscriptionRefusal::Patterns { uid, limit } => write!(
                f,
                "uid {uid} already holds {limit} patterns on all its connections, the limit \
                 max_patterns_per_user = {limit}"
            ),
        }
    }
}

/// What one user holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Connections, greeted or still in the handshake.
    pub connections: u32,
    /// Bytes of read buffers holding partial frames.
    pub input_bytes: u64,
    /// Subscriptions, patterns included.
    pub subscriptions: u32,
    /// Of those, patterns.
    pub patterns: u32,
}

impl Usage {
    fn is_empty(&self) -> bool {
        self.connections == 0 && self.input_bytes == 0 && self.subscriptions == 0
    }
}

/// Per-uid usage of every user with something charged.
#[derive(Debug)]
pub struct Quota {
    daemon_uid: u32,
    users: HashMap<u32, Usage>,
    total: u32,
    input_total: u64,
}

impl Quota {
    /// Accounting for a daemon running as `daemon_uid` (its user counts as an administrator).
    pub fn new(daemon_uid: u32) -> Quota {
        Quota {
            daemon_uid,
            users: HashMap::new(),
            total: 0,
            input_total: 0,
        }
    }

    /// Whether `uid` is root or the daemon's own user.
    pub fn is_admin(&self, uid: u32) -> bool {
        uid == 0 || uid == self.daemon_uid
    }

    /// Connections charged, all users together.
    pub fn connections(&self) -> u32 {
        self.total
    }

    /// What `uid` holds now.
    pub fn usage(&self, uid: u32) -> Usage {
        self.users.get(&uid).cloned().unwrap_or_default()
    }

    /// Every user holding something, by uid.
    pub fn users(&self) -> impl Iterator<Item = (u32, &Usage)> {
        self.users.iter().map(|(&uid, u)| (uid, u))
    }

    /// Charges a new connection of `uid`, or says why it is refused (nothing charged then).
    pub fn connect(&mut self, uid: u32, limits: ConnectionLimits) -> Result<(), Refusal> {
        if self.total >= limits.max_clients {
            return Err(Refusal::Full {
                max_clients: limits.max_clients,
            });
        }
        if !self.is_admin(uid) {
            let open = limits.max_clients.saturating_sub(limits.reserved);
            if self.total >= open {
                return Err(Refusal::Reserved {
                    max_clients: limits.max_clients,
                    reserved: limits.reserved,
                });
            }
            if self.usage(uid).connections >= limits.per_user {
                return Err(Refusal::PerUser {
                    uid,
                    limit: limits.per_user,
                });
            }
        }
        self.users.entry(uid).or_default().connections += 1;
        self.total += 1;
        Ok(())
    }

    /// Bytes of read buffers holding partial frames, all users together.
    pub fn input_bytes(&self) -> u64 {
        self.input_total
    }

    /// Charges a read buffer of `uid` that now holds `new` bytes instead of `old` (0 when
    /// it is released). Growth past the user's share, or past the budget with `queued`
    /// output bytes, is refused: nothing changes then and the caller drops the client.
    pub fn charge_input(
        &mut self,
        uid: u32,
        old: u64,
        new: u64,
        queued: u64,
        limits: InputLimits,
    ) -> Result<(), InputRefusal> {
        let admin = self.is_admin(uid);
        let u = self.users.entry(uid).or_default();
        let held = u.input_bytes.saturating_sub(old).saturating_add(new);
        if new > old {
            if !admin && held > limits.user_share {
                let share = limits.user_share;
                if u.is_empty() {
                    self.users.remove(&uid);
                }
                return Err(InputRefusal::UserShare { uid, held, share });
            }
            let total = self.input_total.saturating_sub(old).saturating_add(new);
            if total.saturating_add(queued) > limits.budget {
                if u.is_empty() {
                    self.users.remove(&uid);
                }
                return Err(InputRefusal::Budget {
                    budget: limits.budget,
                });
            }
        }
        u.input_bytes = held;
        self.input_total = self.input_total.saturating_sub(old).saturating_add(new);
        if u.is_empty() {
            self.users.remove(&uid);
        }
        Ok(())
    }

    /// Releases `bytes` of read buffer charged to `uid` by [`Quota::charge_input`].
    pub fn release_input(&mut self, uid: u32, bytes: u64) {
        let limits = InputLimits {
            budget: u64::MAX,
            user_share: u64::MAX,
        };
        let _ = self.charge_input(uid, bytes, 0, 0, limits);
    }

    /// Charges a new subscription of `uid` (a pattern if `pattern`), or says why not.
    pub fn subscribe(
        &mut self,
        uid: u32,
        pattern: bool,
        limits: SubscriptionLimits,
    ) -> Result<(), SubscriptionRefusal> {
        let admin = self.is_admin(uid);
        let u = self.users.entry(uid).or_default();
        let refusal = if admin {
            None
        } else if u.subscriptions >= limits.per_user {
            Some(SubscriptionRefusal::Subscriptions {
                uid,
                limit: limits.per_user,
            })
        } else if pattern && u.patterns >= limits.patterns_per_user {
            Some(SubscriptionRefusal::Patterns {
                uid,
                limit: limits.patterns_per_user,
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if u.is_empty() {
                self.users.remove(&uid);
            }
            return Err(refusal);
        }
        u.subscriptions += 1;
        u.patterns += u32::from(pattern);
        Ok(())
    }

    /// Releases a subscription charged by [`Quota::subscribe`].
    pub fn unsubscribe(&mut self, uid: u32, pattern: bool) {
        if let Some(u) = self.users.get_mut(&uid) {
            u.subscriptions = u.subscriptions.saturating_sub(1);
            if pattern {
                u.patterns = u.patterns.saturating_sub(1);
            }
            if u.is_empty() {
                self.users.remove(&uid);
            }
        }
    }

    /// Releases a connection of `uid` charged by [`Quota::connect`].
    pub fn disconnect(&mut self, uid: u32) {
        if let Some(u) = self.users.get_mut(&uid) {
            if u.connections > 0 {
                u.connections -= 1;
                self.total -= 1;
            }
            if u.is_empty() {
                self.users.remove(&uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        max_clients: 10,
        per_user: 4,
        reserved: 2,
    };

    #[test]
    fn one_user_is_stopped_at_its_limit_and_others_still_connect() {
        let mut q = Quota::new(500);
        for _ in 0..4 {
            q.connect(1000, LIMITS).unwrap();
        }
        let refusal = q.connect(1000, LIMITS).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::PerUser {
                uid: 1000,
                limit: 4
            }
        );
        assert!(refusal.is_per_user());
        let text = refusal.to_string();
        assert!(text.contains("uid 1000") && text.contains("max_clients_per_user = 4"));
        q.connect(1001, LIMITS).unwrap();
        assert_eq!(q.usage(1000).connections, 4);
        assert_eq!(q.connections(), 5);
    }

    #[test]
    fn the_reserved_places_are_for_root_and_the_daemon_user_only() {
        let mut q = Quota::new(500);
        // Two ordinary users fill everything but the reserve.
        for uid in [1000, 1000, 1000, 1000, 1001, 1001, 1001, 1001] {
            q.connect(uid, LIMITS).unwrap();
        }
        let refusal = q.connect(1002, LIMITS).unwrap_err();
        assert!(matches!(refusal, Refusal::Reserved { reserved: 2, .. }));
        assert!(!refusal.is_per_user());
        assert!(refusal.to_string().contains("reserved_admin_clients"));
        q.connect(0, LIMITS).unwrap();
        q.connect(500, LIMITS).unwrap();
        // Now even an administrator finds the daemon full.
        assert_eq!(q.connect(0, LIMITS), Err(Refusal::Full { max_clients: 10 }));
    }

    #[test]
    fn administrators_are_not_held_to_the_per_user_limit() {
        let mut q = Quota::new(500);
        for _ in 0..10 {
            q.connect(0, LIMITS).unwrap();
        }
        assert_eq!(q.usage(0).connections, 10);
    }

    #[test]
    fn disconnecting_releases_the_place_and_forgets_idle_users() {
        let mut q = Quota::new(500);
        for _ in 0..4 {
            q.connect(1000, LIMITS).unwrap();
        }
        q.disconnect(1000);
        q.connect(1000, LIMITS).unwrap();
        for _ in 0..4 {
            q.disconnect(1000);
        }
        assert_eq!(q.connections(), 0);
        assert_eq!(q.users().count(), 0);
        // A stray release changes nothing.
        q.disconnect(1000);
        assert_eq!(q.connections(), 0);
    }

    const INPUT: InputLimits = InputLimits {
        budget: 1000,
        user_share: 400,
    };

    #[test]
    fn partial_frames_are_held_to_the_user_share_and_the_budget() {
        let mut q = Quota::new(500);
        q.charge_input(1000, 0, 300, 0, INPUT).unwrap();
        // A second connection of the same user may not take it past its share.
        let refusal = q.charge_input(1000, 0, 200, 0, INPUT).unwrap_err();
        assert_eq!(
            refusal,
            InputRefusal::UserShare {
                uid: 1000,
                held: 500,
                share: 400
            }
        );
        assert!(refusal.to_string().contains("uid 1000"));
        assert_eq!(q.usage(1000).input_bytes, 300);
        // Another user may, until partial frames and queued output fill the budget.
        q.charge_input(1001, 0, 400, 0, INPUT).unwrap();
        assert_eq!(
            q.charge_input(1002, 0, 200, 200, INPUT),
            Err(InputRefusal::Budget { budget: 1000 })
        );
        // Root has no share but the budget holds it too.
        q.charge_input(0, 0, 300, 0, INPUT).unwrap();
        assert!(q.charge_input(0, 300, 301, 0, INPUT).is_err());
        assert_eq!(q.input_bytes(), 1000);
        // Shrinking is always allowed, and releasing forgets the user.
        q.charge_input(1001, 400, 100, 5000, INPUT).unwrap();
        q.charge_input(1001, 100, 0, 0, INPUT).unwrap();
        assert_eq!(q.users().filter(|(uid, _)| *uid == 1001).count(), 0);
        assert_eq!(q.input_bytes(), 600);
    }

    #[test]
    fn subscriptions_and_patterns_are_counted_over_all_connections_of_a_user() {
        let limits = SubscriptionLimits {
            per_user: 3,
            patterns_per_user: 1,
        };
        let mut q = Quota::new(500);
        q.subscribe(1000, true, limits).unwrap();
        let refusal = q.subscribe(1000, true, limits).unwrap_err();
        assert_eq!(
            refusal,
            SubscriptionRefusal::Patterns {
                uid: 1000,
                limit: 1
            }
        );
        assert!(refusal.to_string().contains("max_patterns_per_user = 1"));
        q.subscribe(1000, false, limits).unwrap();
        q.subscribe(1000, false, limits).unwrap();
        let refusal = q.subscribe(1000, false, limits).unwrap_err();
        assert!(refusal.to_string().contains("uid 1000"));
        assert!(refusal
            .to_string()
            .contains("max_subscriptions_per_user = 3"));
        // Others and administrators are not affected.
        q.subscribe(1001, true, limits).unwrap();
        for _ in 0..5 {
            q.subscribe(0, true, limits).unwrap();
        }
        q.unsubscribe(1000, true);
        q.subscribe(1000, true, limits).unwrap();
        for pattern in [true, false, false] {
            q.unsubscribe(1000, pattern);
        }
        assert_eq!(q.usage(1000), Usage::default());
        assert_eq!(q.users().filter(|(uid, _)| *uid == 1000).count(), 0);
    }

    #[test]
    fn a_lowered_limit_applies_to_new_connections_only() {
        let mut q = Quota::new(500);
        for _ in 0..4 {
            q.connect(1000, LIMITS).unwrap();
        }
        let lower = ConnectionLimits {
            per_user: 2,
            ..LIMITS
        };
        assert!(q.connect(1000, lower).is_err());
        q.disconnect(1000);
        q.disconnect(1000);
        assert!(q.connect(1000, lower).is_err());
        q.disconnect(1000);
        q.connect(1000, lower).unwrap();
    }
}

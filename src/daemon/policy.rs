//! Access policy: which clients may send to, receive from and monitor which channels.
//!
//! Clients are told apart by the credentials the kernel gives for their connection
//! (`SO_PEERCRED`: uid and gid when they connected). The rules come from the `[policy]`
//! section of the configuration:
//!
//! ```toml
//! [policy]
//! default = "deny"                 # what applies when no rule matches
//!
//! [[policy.rule]]
//! deny = ["send"]
//! group = "guests"
//! channel = "QPE/Secure/*"
//!
//! [[policy.rule]]
//! allow = ["send", "receive"]
//! channel = "QPE/*"
//! ```
//!
//! Evaluation, for one client, one action and one channel (and message):
//! 1. root and the daemon's own user are always allowed; rules do not apply to them;
//! 2. otherwise the rules are read in the order written; the **first** rule that names the
//!    action, matches the client (user, group, uid, gid or everyone), the channel and the
//!    message (if it names one) decides;
//! 3. if none matches, `default` decides for `send` and `receive`; `monitor` is denied.
//!
//! Without a `[policy]` section everything the socket permissions let in may send and
//! receive (qcopd's behaviour before policies existed), and only root and the daemon's user
//! may monitor.
//!
//! `receive` is checked when subscribing, on the subscription's name: a rule's channel
//! pattern is matched against the name as written, so `deny receive QPE/Secure/*` refuses a
//! subscription to `QPE/Secure/*` or `QPE/Secure/keys` but not to `QPE/*`. Because a pattern
//! subscription may still match channels the client may not receive, `receive` is checked
//! again for every delivered message, on its channel and message name; a message refused
//! there is not delivered to that client (counted as `policy_filtered`). When subscribing,
//! a matching rule that names a message allows the subscription if it is an allow rule (some
//! messages may pass) and is skipped if it is a deny rule (others may).

use super::config::ConfigError;
use super::names::Names;
use crate::pattern::{is_pattern, Pattern};
use serde::Deserialize;
use std::fmt;
use std::time::{Duration, Instant};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The action is permitted.
    Allow,
    /// The action is refused with a `Denied` error.
    #[default]
    Deny,
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sending messages and calls to a channel.
    Send,
    /// Subscribing to a channel or pattern, and being delivered its messages.
    Receive,
    /// Watching all traffic with `qcop monitor`.
    Monitor,
}

impl Action {
    fn bit(self) -> u8 {
        match self {
            Action::Send => 1,
            Action::Receive => 2,
            Action::Monitor => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Send => "send",
            Action::Receive => "receive",
            Action::Monitor => "monitor",
        }
    }
}

/// The `[policy]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// What applies to `send` and `receive` when no rule matches (default: deny).
    #[serde(default)]
    pub default: Effect,
    /// The rules, in evaluation order (`[[policy.rule]]`).
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

/// One `[[policy.rule]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Actions this rule allows (exactly one of `allow` and `deny`).
    pub allow: Option<Vec<Action>>,
    /// Actions this rule denies.
    pub deny: Option<Vec<Action>>,
    /// Applies to this user (at most one of user, group, uid, gid; none: everyone).
    pub user: Option<String>,
    /// Applies to clients whose gid is this group's or whose user is a listed member.
    pub group: Option<String>,
    /// Applies to this numeric uid.
    pub uid: Option<u32>,
    /// Applies to this numeric gid.
    pub gid: Option<u32>,
    /// Channel name or pattern (default: every channel).
    pub channel: Option<String>,
    /// Message name or pattern, e.g. `reboot()` (default: every message).
    pub message: Option<String>,
}

enum Subject {
    Everyone,
    Uid(u32),
    Group { gid: u32, members: Vec<u32> },
    Gid(u32),
}

impl Subject {
    fn matches(&self, uid: u32, gid: u32) -> bool {
        match self {
            Subject::Everyone => true,
            Subject::Uid(u) => *u == uid,
            Subject::Gid(g) => *g == gid,
            Subject::Group { gid: g, members } => *g == gid || members.contains(&uid),
        }
    }
}

enum Matcher {
    Any,
    Exact(Box<str>),
    Glob(Pattern),
}

impl Matcher {
    fn new(text: Option<&str>) -> Result<Matcher, String> {
        match text {
            None | Some("*") => Ok(Matcher::Any),
            Some(t) if is_pattern(t) => Pattern::new(t)
                .map(Matcher::Glob)
                .map_err(|e| format!("pattern {t:?}: {e}")),
            Some("") => Err("an empty name matches nothing".into()),
            Some(t) => Ok(Matcher::Exact(t.into())),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Exact(t) => **t == *name,
            Matcher::Glob(p) => p.matches(name),
        }
    }
}

struct Rule {
    effect: Effect,
    actions: u8,
    subject: Subject,
    channel: Matcher,
    message: Option<Matcher>,
    /// How the rule reads in messages: `deny send QPE/Secure/* for group guests`.
    text: String,
}

/// A refusal, with the text the client and the log get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The deciding rule's number (1-based, in file order); `None` for the default.
    pub rule: Option<usize>,
    /// `denied by rule 3 (deny send QPE/Secure/* for group guests)`.
    pub text: String,
}

/// What the policy knows about one client, computed when it connects and on reload.
#[derive(Debug, Clone, Default)]
pub struct ClientView {
    /// Root or the daemon's own user: every action is allowed.
    pub trusted: bool,
    uid: u32,
    gid: u32,
    /// Indexes of the rules whose subject matches this client, in order.
    rules: Vec<u16>,
}

/// The compiled policy.
pub struct Policy {
    /// A `[policy]` section was given.
    configured: bool,
    default: Effect,
    rules: Vec<Rule>,
    daemon_uid: u32,
}

/// Most rules a policy may have (rule indexes are kept as `u16`).
pub const MAX_RULES: usize = 4096;

impl Policy {
    /// The policy of a configuration without a `[policy]` section.
    pub fn open(daemon_uid: u32) -> Policy {
        Policy {
            configured: false,
            default: Effect::Allow,
            rules: Vec::new(),
            daemon_uid,
        }
    }

    /// Compiles `cfg` (or the open policy for `None`), resolving names with `names`.
    pub fn compile(
        cfg: Option<&PolicyConfig>,
        names: &dyn Names,
        daemon_uid: u32,
    ) -> Result<Policy, ConfigError> {
        let Some(cfg) = cfg else {
            return Ok(Policy::open(daemon_uid));
        };
        if cfg.rules.len() > MAX_RULES {
            return Err(ConfigError::Invalid(format!(
                "policy: {} rules, at most {MAX_RULES} are supported",
                cfg.rules.len()
            )));
        }
        let rules = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                compile_rule(r, names)
                    .map_err(|e| ConfigError::Invalid(format!("policy rule {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            configured: true,
            default: cfg.default,
            rules,
            daemon_uid,
        })
    }

    /// Whether a `[policy]` section is in force.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// The rule view of a client with these credentials.
    pub fn view(&self, uid: u32, gid: u32) -> ClientView {
        let trusted = uid == 0 || uid == self.daemon_uid;
        let rules = if trusted {
            Vec::new()
        } else {
            self.rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.subject.matches(uid, gid))
                .map(|(i, _)| i as u16)
                .collect()
        };
        ClientView {
            trusted,
            uid,
            gid,
            rules,
        }
    }

    /// May the client `send` this message to `channel`, or be delivered it (`receive`), or
    /// see it in a monitor (`monitor`)?
    pub fn check(
        &self,
        view: &ClientView,
        action: Action,
        channel: &str,
        message: &str,
    ) -> Result<(), Denial> {
        if view.trusted {
            return Ok(());
        }
        for &i in &view.rules {
            let rule = &self.rules[i as usize];
            if rule.actions & action.bit() == 0 || !rule.channel.matches(channel) {
                continue;
            }
            if rule.message.as_ref().is_some_and(|m| !m.matches(message)) {
                continue;
            }
            return self.decide(i as usize);
        }
        self.fallback(view, action, channel)
    }

    /// May the client subscribe to `name` (a channel or a pattern) with `receive`, or monitor
    /// it with `monitor`? See the module documentation for how patterns and rules that name
    /// a message are treated.
    pub fn check_subscription(
        &self,
        view: &ClientView,
        action: Action,
        name: &str,
    ) -> Result<(), Denial> {
        if view.trusted {
            return Ok(());
        }
        for &i in &view.rules {
            let rule = &self.rules[i as usize];
            if rule.actions & action.bit() == 0 || !rule.channel.matches(name) {
                continue;
            }
            if rule.message.is_some() {
                if rule.effect == Effect::Allow {
                    return Ok(());
                }
                continue;
            }
            return self.decide(i as usize);
        }
        self.fallback(view, action, name)
    }

    /// Whether deliveries to this client must be checked one by one.
    pub fn filters_deliveries(&self, view: &ClientView) -> bool {
        self.configured && !view.trusted
    }

    fn decide(&self, i: usize) -> Result<(), Denial> {
        let rule = &self.rules[i];
        match rule.effect {
            Effect::Allow => Ok(()),
            Effect::Deny => Err(Denial {
                rule: Some(i + 1),
                text: format!("denied by rule {} ({})", i + 1, rule.text),
            }),
        }
    }

    fn fallback(&self, view: &ClientView, action: Action, name: &str) -> Result<(), Denial> {
        let who = format!("uid {} gid {}", view.uid, view.gid);
        let text = match (action, self.configured) {
            (Action::Monitor, false) => format!(
                "denied: only root and the daemon's user may monitor unless a [policy] rule \
                 allows it ({who})"
            ),
            (Action::Monitor, true) => {
                format!("denied: no policy rule allows monitor on {name:?} for {who}")
            }
            (_, false) => return Ok(()),
            (_, true) if self.default == Effect::Allow => return Ok(()),
            (_, true) => format!(
                "denied by the policy default (no rule allows {} on {name:?} for {who})",
                action.name()
            ),
        };
        Err(Denial { rule: None, text })
    }
}

fn compile_rule(r: &RuleConfig, names: &dyn Names) -> Result<Rule, String> {
    let (effect, actions) = match (&r.allow, &r.deny) {
        (Some(a), None) => (Effect::Allow, a),
        (None, Some(d)) => (Effect::Deny, d),
        _ => return Err("give exactly one of allow = [...] and deny = [...]".into()),
    };
    if actions.is_empty() {
        return Err("names no action (send, receive, monitor)".into());
    }
    let bits = actions.iter().fold(0u8, |b, a| b | a.bit());
    let subjects = [
        r.user.is_some(),
        r.group.is_some(),
        r.uid.is_some(),
        r.gid.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if subjects > 1 {
        return Err("give at most one of user, group, uid and gid".into());
    }
    let (subject, who) = if let Some(name) = &r.user {
        let (uid, _) = names
            .user(name)
            .ok_or_else(|| format!("unknown user {name:?}"))?;
        (Subject::Uid(uid), format!("user {name}"))
    } else if let Some(name) = &r.group {
        let (gid, members) = names
            .group(name)
            .ok_or_else(|| format!("unknown group {name:?}"))?;
        // Members listed in the group database that are not users (stale entries) are
        // skipped rather than failing the whole configuration.
        let members = members
            .iter()
            .filter_map(|m| names.user(m).map(|(uid, _)| uid))
            .collect();
        (Subject::Group { gid, members }, format!("group {name}"))
    } else if let Some(uid) = r.uid {
        (Subject::Uid(uid), format!("uid {uid}"))
    } else if let Some(gid) = r.gid {
        (Subject::Gid(gid), format!("gid {gid}"))
    } else {
        (Subject::Everyone, "everyone".to_owned())
    };
    let channel = Matcher::new(r.channel.as_deref()).map_err(|e| format!("channel: {e}"))?;
    let message = match &r.message {
        None => None,
        Some(m) => Some(Matcher::new(Some(m)).map_err(|e| format!("message: {e}"))?),
    };
    let action_names: Vec<&str> = actions.iter().map(|a| a.name()).collect();
    let mut text = format!(
        "{} {} {}",
        if effect == Effect::Allow {
            "allow"
        } else {
            "deny"
        },
        action_names.join(","),
        r.channel.as_deref().unwrap_or("*"),
    );
    if let Some(m) = &r.message {
        text.push_str(&format!(" message {m}"));
    }
    text.push_str(&format!(" for {who}"));
    Ok(Rule {
        effect,
        actions: bits,
        subject,
        channel,
        message,
        text,
    })
}

/// Counters of the policy, appended to `qcop stats`.
#[derive(Debug, Default, Clone)]
pub struct PolicyCounters {
    /// Sends and calls refused.
    pub denied_send: u64,
    /// Subscriptions refused.
    pub denied_receive: u64,
    /// Monitor requests refused.
    pub denied_monitor: u64,
    /// Deliveries withheld from a subscriber by a `receive` rule.
    pub filtered: u64,
    /// Subscriptions dropped because a reloaded policy denies them.
    pub revoked: u64,
}

impl PolicyCounters {
    /// The counters as `(name, value)` rows.
    pub fn report(&self) -> [(&'static str, u64); 5] {
        [
            ("policy_denied_send", self.denied_send),
            ("policy_denied_receive", self.denied_receive),
            ("policy_denied_monitor", self.denied_monitor),
            ("policy_filtered", self.filtered),
            ("policy_revoked", self.revoked),
        ]
    }
}

/// Bounds the log lines denials produce: a client retrying a refused send in a loop must
/// not flood the log. At most `burst` lines per `window`; the rest are counted and
/// summarised in one line when the next window opens.
pub struct LogLimiter {
    window: Duration,
    burst: u32,
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter letting `burst` lines through per `window`.
    pub fn new(burst: u32, window: Duration) -> LogLimiter {
        LogLimiter {
            window,
            burst,
            started: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now. When a new window opens after suppressed lines,
    /// `summary` receives how many were suppressed.
    pub fn allow(&mut self, now: Instant, summary: impl FnOnce(u64)) -> bool {
        let expired = self
            .started
            .map_or(true, |s| now.saturating_duration_since(s) >= self.window);
        if expired {
            if self.suppressed > 0 {
                summary(self.suppressed);
            }
            self.started = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < self.burst {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("configured", &self.configured)
            .field("default", &self.default)
            .field(
                "rules",
                &self
                    .rules
                    .iter()
                    .map(|r| r.text.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::names::StaticNames;

    const DAEMON: u32 = 500;

    fn names() -> StaticNames {
        StaticNames {
            users: vec![
                ("alice".into(), 1001, 1001),
                ("bob".into(), 1002, 100),
                ("guest".into(), 1003, 1003),
            ],
            groups: vec![
                ("users".into(), 100, vec![]),
                (
                    "guests".into(),
                    2000,
                    vec!["guest".into(), "nobody-here".into()],
                ),
            ],
        }
    }

    fn policy(text: &str) -> Policy {
        let cfg: PolicyConfig = basic_toml::from_str(text).unwrap();
        Policy::compile(Some(&cfg), &names(), DAEMON).unwrap()
    }

    fn compile_error(text: &str) -> String {
        let cfg: PolicyConfig = basic_toml::from_str(text).unwrap();
        match Policy::compile(Some(&cfg), &names(), DAEMON) {
            Err(e) => e.to_string(),
            Ok(p) => panic!("expected an error, got {p:?}"),
        }
    }

    const EXAMPLE: &str = r#"
        default = "allow"
        [[rule]]
        deny = ["send"]
        group = "guests"
        channel = "QPE/Secure/*"
        [[rule]]
        deny = ["receive"]
        channel = "QPE/Secure/*"
        [[rule]]
        allow = ["send"]
        user = "alice"
        channel = "QPE/System"
        message = "reboot()"
        [[rule]]
        deny = ["send"]
        channel = "QPE/System"
        message = "reboot()"
        [[rule]]
        allow = ["monitor"]
        uid = 1001
    "#;

    #[test]
    fn first_matching_rule_decides_and_its_text_is_named() {
        let p = policy(EXAMPLE);
        let guest = p.view(1003, 1003);
        assert_eq!(
            p.check(&guest, Action::Send, "QPE/Secure/keys", "x()"),
            Err(Denial {
                rule: Some(1),
                text: "denied by rule 1 (deny send QPE/Secure/* for group guests)".into()
            })
        );
        assert_eq!(p.check(&guest, Action::Send, "QPE/Audio", "x()"), Ok(()));
        let alice = p.view(1001, 1001);
        assert_eq!(
            p.check(&alice, Action::Send, "QPE/Secure/keys", "x()"),
            Ok(())
        );
        assert_eq!(
            p.check(&alice, Action::Send, "QPE/System", "reboot()"),
            Ok(())
        );
        let bob = p.view(1002, 100);
        let e = p
            .check(&bob, Action::Send, "QPE/System", "reboot()")
            .unwrap_err();
        assert_eq!(e.rule, Some(4));
        assert!(
            e.text
                .contains("deny send QPE/System message reboot() for everyone"),
            "{e:?}"
        );
        assert_eq!(p.check(&bob, Action::Send, "QPE/System", "halt()"), Ok(()));
    }

    #[test]
    fn group_rules_match_the_gid_or_a_listed_member() {
        let p = policy(EXAMPLE);
        // Listed member, other primary group.
        assert!(p
            .check(&p.view(1003, 5), Action::Send, "QPE/Secure/a", "m()")
            .is_err());
        // The group's gid, any user.
        assert!(p
            .check(&p.view(4242, 2000), Action::Send, "QPE/Secure/a", "m()")
            .is_err());
        assert!(p
            .check(&p.view(4242, 5), Action::Send, "QPE/Secure/a", "m()")
            .is_ok());
    }

    #[test]
    fn root_and_the_daemon_user_are_never_denied() {
        let p =
            policy("default = \"deny\"\n[[rule]]\ndeny = [\"send\", \"receive\", \"monitor\"]\n");
        for uid in [0, DAEMON] {
            let v = p.view(uid, 77);
            assert!(v.trusted);
            assert_eq!(p.check(&v, Action::Send, "a", "m()"), Ok(()));
            assert_eq!(p.check_subscription(&v, Action::Monitor, "*"), Ok(()));
            assert!(!p.filters_deliveries(&v));
        }
        assert!(p
            .check(&p.view(1001, 1001), Action::Send, "a", "m()")
            .is_err());
    }

    #[test]
    fn subscriptions_are_checked_on_their_name() {
        let p = policy(EXAMPLE);
        let bob = p.view(1002, 100);
        assert!(p
            .check_subscription(&bob, Action::Receive, "QPE/Secure/*")
            .is_err());
        assert!(p
            .check_subscription(&bob, Action::Receive, "QPE/Secure/keys")
            .is_err());
        // A broader pattern passes; its deliveries from QPE/Secure are filtered one by one.
        assert!(p.check_subscription(&bob, Action::Receive, "QPE/*").is_ok());
        assert!(p.filters_deliveries(&bob));
        assert!(p
            .check(&bob, Action::Receive, "QPE/Secure/keys", "k()")
            .is_err());
        assert!(p.check(&bob, Action::Receive, "QPE/Audio", "k()").is_ok());
    }

    #[test]
    fn message_rules_when_subscribing() {
        let p = policy(
            r#"
            [[rule]]
            allow = ["receive"]
            channel = "a"
            message = "hello()"
            [[rule]]
            deny = ["receive"]
            channel = "b"
            message = "secret()"
            [[rule]]
            allow = ["receive"]
            channel = "b"
            "#,
        );
        let v = p.view(1001, 1001);
        // Some messages on "a" may be received: the subscription is allowed...
        assert!(p.check_subscription(&v, Action::Receive, "a").is_ok());
        // ...and only those are delivered.
        assert!(p.check(&v, Action::Receive, "a", "hello()").is_ok());
        let e = p.check(&v, Action::Receive, "a", "other()").unwrap_err();
        assert_eq!(e.rule, None);
        assert!(e.text.starts_with("denied by the policy default"), "{e:?}");
        assert!(p.check_subscription(&v, Action::Receive, "b").is_ok());
        assert_eq!(
            p.check(&v, Action::Receive, "b", "secret()")
                .unwrap_err()
                .rule,
            Some(2)
        );
        assert!(p.check(&v, Action::Receive, "b", "public()").is_ok());
        assert!(p.check_subscription(&v, Action::Receive, "c").is_err());
    }

    #[test]
    fn monitor_needs_a_rule_or_trust() {
        let open = Policy::open(DAEMON);
        let v = open.view(1001, 1001);
        assert!(open.check(&v, Action::Send, "x", "m()").is_ok());
        assert!(open.check_subscription(&v, Action::Receive, "*").is_ok());
        assert!(!open.filters_deliveries(&v));
        let e = open
            .check_subscription(&v, Action::Monitor, "*")
            .unwrap_err();
        assert!(e.text.contains("only root and the daemon's user"), "{e:?}");
        assert!(open
            .check_subscription(&open.view(0, 0), Action::Monitor, "*")
            .is_ok());

        let p = policy(EXAMPLE); // default allow, rule 5 allows monitor for uid 1001
        assert!(p
            .check_subscription(&p.view(1001, 1), Action::Monitor, "*")
            .is_ok());
        let e = p
            .check_subscription(&p.view(1002, 100), Action::Monitor, "*")
            .unwrap_err();
        assert!(e.text.contains("no policy rule allows monitor"), "{e:?}");
    }

    #[test]
    fn configuration_errors_name_the_rule() {
        let e = compile_error("[[rule]]\nallow = [\"send\"]\nuser = \"mallory\"\n");
        assert!(e.contains("policy rule 1: unknown user \"mallory\""), "{e}");
        let e = compile_error(
            "[[rule]]\nallow = [\"send\"]\n[[rule]]\nallow = [\"send\"]\ngroup = \"nope\"\n",
        );
        assert!(e.contains("policy rule 2: unknown group \"nope\""), "{e}");
        let e = compile_error("[[rule]]\nallow = [\"send\"]\ndeny = [\"send\"]\n");
        assert!(e.contains("exactly one of allow"), "{e}");
        let e = compile_error("[[rule]]\ndeny = []\n");
        assert!(e.contains("no action"), "{e}");
        let e = compile_error("[[rule]]\ndeny = [\"send\"]\nuser = \"alice\"\nuid = 3\n");
        assert!(e.contains("at most one of user"), "{e}");
        let e = compile_error("[[rule]]\ndeny = [\"send\"]\nchannel = \"a[b\"\n");
        assert!(e.contains("channel: pattern"), "{e}");
        assert!(basic_toml::from_str::<PolicyConfig>("[[rule]]\ndeny = [\"own\"]\n").is_err());
        assert!(basic_toml::from_str::<PolicyConfig>(
            "[[rule]]\ndeny = [\"send\"]\nchanel = \"x\"\n"
        )
        .is_err());
    }

    #[test]
    fn log_limiter_lets_a_burst_through_then_summarises() {
        let mut l = LogLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let mut summary = None;
        let passed: Vec<bool> = (0..5).map(|_| l.allow(t0, |n| summary = Some(n))).collect();
        assert_eq!(passed, [true, true, false, false, false]);
        assert_eq!(summary, None);
        assert!(l.allow(t0 + Duration::from_secs(11), |n| summary = Some(n)));
        assert_eq!(summary, Some(3));
    }
}

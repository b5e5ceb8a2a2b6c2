//! Access policy: which clients may send to, receive from and monitor which channels.
//!
//! Clients are told apart by the credentials the kernel gives for their connection
//! (`SO_PEERCRED`: uid and gid when they connected). The rules are the `policy` key of the
//! configuration:
//!
//! ```toml
//! policy_default = "deny"          # what applies when no rule matches
//! policy = [
//!     "deny send QPE/Secure/* for group guests",
//!     "deny send QPE/System message reboot()",
//!     "allow send,receive QPE/*",
//! ]
//! ```
//!
//! A rule reads `EFFECT ACTIONS CHANNEL [message MESSAGE] [for WHO]`: `allow` or `deny`;
//! one or more of `send`, `receive`, `monitor` joined by commas; a channel name or pattern
//! (`*` for every channel); optionally a message name or pattern; and `everyone` (the
//! default), `user NAME`, `group NAME`, `uid N` or `gid N`. A name containing spaces is
//! written in double quotes. Denials quote the rule in this form.
//!
//! Evaluation, for one client, one action and one channel (and message):
//! 1. root and the daemon's own user are always allowed; rules do not apply to them;
//! 2. otherwise the rules are read in the order written; the **first** rule that names the
//!    action, matches the client (user, group, uid, gid or everyone), the channel and the
//!    message (if it names one) decides;
//! 3. if none matches, `policy_default` decides for `send` and `receive`; `monitor` is
//!    denied.
//!
//! Without a `policy` key everything the socket permissions let in may send and
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
//!
//! Message names are compared in the form Qt's `normalizedSignature` gives them
//! ([`normalize_signature`]): the daemon normalises every message name before this module
//! sees it, and a rule's own message name or pattern is normalised the same way when the
//! configuration loads, so `reboot( )`, `reboot ()` and ` reboot()` are all `reboot()`.

use super::config::ConfigError;
use super::names::Names;
use crate::datastream::normalize_signature;
use crate::pattern::{is_pattern, Pattern};
use std::fmt;
use std::time::{Duration, Instant};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The action is permitted.
    Allow,
    /// The action is refused with a `Denied` error.
    Deny,
}

impl Effect {
    fn parse(word: &str) -> Option<Effect> {
        match word {
            "allow" => Some(Effect::Allow),
            "deny" => Some(Effect::Deny),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    fn parse(word: &str) -> Option<Action> {
        match word {
            "send" => Some(Action::Send),
            "receive" => Some(Action::Receive),
            "monitor" => Some(Action::Monitor),
            _ => None,
        }
    }
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
    /// A `policy` key was given.
    configured: bool,
    default: Effect,
    rules: Vec<Rule>,
    daemon_uid: u32,
}

/// Most rules a policy may have (rule indexes are kept as `u16`).
pub const MAX_RULES: usize = 4096;

impl Policy {
    /// The policy of a configuration without a `policy` key.
    pub fn open(daemon_uid: u32) -> Policy {
        Policy {
            configured: false,
            default: Effect::Allow,
            rules: Vec::new(),
            daemon_uid,
        }
    }

    /// Compiles the `policy` rules (the open policy for `None`) with `policy_default`,
    /// resolving names with `names`.
    pub fn compile(
        rules: Option<&[String]>,
        default: &str,
        names: &dyn Names,
        daemon_uid: u32,
    ) -> Result<Policy, ConfigError> {
        let default = Effect::parse(default).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "policy_default must be \"allow\" or \"deny\", not {default:?}"
            ))
        })?;
        let Some(rules) = rules else {
            return Ok(Policy::open(daemon_uid));
        };
        if rules.len() > MAX_RULES {
            return Err(ConfigError::Invalid(format!(
                "policy: {} rules, at most {MAX_RULES} are supported",
                rules.len()
            )));
        }
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, text) in rules.iter().enumerate() {
            let rule = compile_rule(text, names).map_err(|e| {
                ConfigError::Invalid(format!("policy rule {} ({text:?}): {e}", i + 1))
            })?;
            compiled.push(rule);
        }
        Ok(Policy {
            configured: true,
            default,
            rules: compiled,
            daemon_uid,
        })
    }

    /// Whether `policy` rules are in force.
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
        match (action, self.configured) {
            // Nothing is formatted for what is allowed (every send of a client that is
            // neither root nor the daemon's user comes here when no policy is set).
            (Action::Monitor, _) => {}
            (_, false) => return Ok(()),
            (_, true) if self.default == Effect::Allow => return Ok(()),
            (_, true) => {}
        }
        let who = format!("uid {} gid {}", view.uid, view.gid);
        let text = match (action, self.configured) {
            (Action::Monitor, false) => format!(
                "denied: only root and the daemon's user may monitor unless a policy rule \
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

/// Splits a rule into words; a word in double quotes may contain spaces.
fn words(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (word, after) = match rest.strip_prefix('"') {
            Some(inner) => {
                let end = inner.find('"').ok_or("a quoted name is not closed")?;
                (&inner[..end], &inner[end + 1..])
            }
            None => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        out.push(word);
        rest = after.trim_start();
    }
    Ok(out)
}

/// A name as a rule word: quoted if it contains spaces.
fn quoted(name: &str) -> String {
    if name.is_empty() || name.contains(char::is_whitespace) {
        format!("\"{name}\"")
    } else {
        name.to_owned()
    }
}

/// Parses `EFFECT ACTIONS CHANNEL [message MESSAGE] [for WHO]`.
fn compile_rule(text: &str, names: &dyn Names) -> Result<Rule, String> {
    let w = words(text)?;
    let mut it = w.iter().copied();
    let effect = it
        .next()
        .and_then(Effect::parse)
        .ok_or("a rule starts with allow or deny")?;
    let action_list = it
        .next()
        .ok_or("allow or deny is followed by actions (send, receive, monitor)")?;
    let mut actions = 0u8;
    let mut action_names = Vec::new();
    for a in action_list.split(',') {
        let action = Action::parse(a)
            .ok_or_else(|| format!("unknown action {a:?} (send, receive, monitor)"))?;
        actions |= action.bit();
        action_names.push(action.name());
    }
    let channel_text = it
        .next()
        .ok_or("the actions are followed by a channel or pattern (* for all)")?;
    let channel = Matcher::new(Some(channel_text)).map_err(|e| format!("channel: {e}"))?;
    let mut message = None;
    let mut message_text = None;
    let mut subject = Subject::Everyone;
    let mut who = "everyone".to_owned();
    while let Some(keyword) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .ok_or_else(|| format!("{keyword:?} is followed by {what}"))
        };
        match keyword {
            "message" if message.is_none() => {
                // Compared with message names as the daemon normalises them, so normalised
                // the same way: `reboot( )` in a rule is `reboot()`.
                let m = normalize_signature(value("a message name or pattern")?).into_owned();
                message = Some(Matcher::new(Some(&m)).map_err(|e| format!("message: {e}"))?);
                message_text = Some(m);
            }
            "for" => {
                (subject, who) =
                    parse_subject(value("everyone, user, group, uid or gid")?, &mut it, names)?;
                if let Some(extra) = it.next() {
                    return Err(format!("unexpected {extra:?} after the subject"));
                }
            }
            other => return Err(format!("unexpected {other:?} (expected message or for)")),
        }
    }
    let mut text = format!(
        "{} {} {}",
        effect.name(),
        action_names.join(","),
        quoted(channel_text)
    );
    if let Some(m) = message_text {
        text.push_str(" message ");
        text.push_str(&quoted(&m));
    }
    text.push_str(" for ");
    text.push_str(&who);
    Ok(Rule {
        effect,
        actions,
        subject,
        channel,
        message,
        text,
    })
}

/// The words after `for`: the subject and how it reads in messages.
fn parse_subject<'a>(
    kind: &str,
    it: &mut impl Iterator<Item = &'a str>,
    names: &dyn Names,
) -> Result<(Subject, String), String> {
    if kind == "everyone" {
        return Ok((Subject::Everyone, "everyone".to_owned()));
    }
    let value = it
        .next()
        .ok_or_else(|| format!("{kind:?} is followed by a name or number"))?;
    Ok(match kind {
        "user" => {
            let (uid, _) = names
                .user(value)
                .ok_or_else(|| format!("unknown user {value:?}"))?;
            (Subject::Uid(uid), format!("user {}", quoted(value)))
        }
        "group" => {
            let (gid, members) = names
                .group(value)
                .ok_or_else(|| format!("unknown group {value:?}"))?;
            // Listed members that are not users (stale entries) are skipped rather than
            // failing the whole configuration.
            let members = members
                .iter()
                .filter_map(|m| names.user(m).map(|(uid, _)| uid))
                .collect();
            (
                Subject::Group { gid, members },
                format!("group {}", quoted(value)),
            )
        }
        "uid" | "gid" => {
            let id: u32 = value
                .parse()
                .map_err(|_| format!("{kind} takes a number, not {value:?}"))?;
            let subject = if kind == "uid" {
                Subject::Uid(id)
            } else {
                Subject::Gid(id)
            };
            (subject, format!("{kind} {id}"))
        }
        other => {
            return Err(format!(
                "\"for\" is followed by everyone, user, group, uid or gid, not {other:?}"
            ))
        }
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

    fn compiled(default: &str, rules: &[&str]) -> Result<Policy, String> {
        let rules: Vec<String> = rules.iter().map(|r| (*r).to_owned()).collect();
        Policy::compile(Some(&rules), default, &names(), DAEMON).map_err(|e| e.to_string())
    }

    fn policy(default: &str, rules: &[&str]) -> Policy {
        compiled(default, rules).unwrap()
    }

    fn compile_error(rules: &[&str]) -> String {
        match compiled("deny", rules) {
            Err(e) => e,
            Ok(p) => panic!("expected an error, got {p:?}"),
        }
    }

    const EXAMPLE: [&str; 5] = [
        "deny send QPE/Secure/* for group guests",
        "deny receive QPE/Secure/*",
        "allow send QPE/System message reboot() for user alice",
        "deny send QPE/System message reboot()",
        "allow monitor * for uid 1001",
    ];

    fn example() -> Policy {
        policy("allow", &EXAMPLE)
    }

    #[test]
    fn first_matching_rule_decides_and_its_text_is_named() {
        let p = example();
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
        assert_eq!(
            e.text,
            "denied by rule 4 (deny send QPE/System message reboot() for everyone)"
        );
        assert_eq!(p.check(&bob, Action::Send, "QPE/System", "halt()"), Ok(()));
    }

    #[test]
    fn rule_message_names_are_normalized_at_load() {
        let p = policy(
            "allow",
            &[
                "deny send QPE/System message \"reboot( )\"",
                "deny send QPE/System message \" setTime ( const QString & ) \"",
            ],
        );
        let bob = p.view(1002, 100);
        let e = p
            .check(&bob, Action::Send, "QPE/System", "reboot()")
            .unwrap_err();
        assert_eq!(
            e.text,
            "denied by rule 1 (deny send QPE/System message reboot() for everyone)"
        );
        assert!(p
            .check(&bob, Action::Send, "QPE/System", "setTime(QString)")
            .is_err());
    }

    #[test]
    fn group_rules_match_the_gid_or_a_listed_member() {
        let p = example();
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
        let p = policy("deny", &["deny send,receive,monitor *"]);
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
        let p = example();
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
            "deny",
            &[
                "allow receive a message hello()",
                "deny receive b message secret()",
                "allow receive b",
            ],
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

        let p = example(); // default allow, rule 5 allows monitor for uid 1001
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
        let e = compile_error(&["allow send * for user mallory"]);
        assert!(
            e.contains(
                "policy rule 1 (\"allow send * for user mallory\"): unknown user \"mallory\""
            ),
            "{e}"
        );
        let e = compile_error(&["allow send *", "allow send * for group nope"]);
        assert!(
            e.contains("policy rule 2 ") && e.contains("unknown group \"nope\""),
            "{e}"
        );
        for (rule, why) in [
            ("alow send *", "starts with allow or deny"),
            ("deny", "followed by actions"),
            ("deny own *", "unknown action \"own\""),
            ("deny send", "followed by a channel"),
            ("deny send a[b*", "channel: pattern"),
            ("deny send * message", "followed by a message name"),
            ("deny send * for", "followed by everyone"),
            ("deny send * for users x", "not \"users\""),
            ("deny send * for uid x", "uid takes a number"),
            ("deny send * for everyone now", "unexpected \"now\""),
            ("deny send * chanel x", "unexpected \"chanel\""),
            ("deny send \"a b", "quoted name is not closed"),
        ] {
            let e = compile_error(&[rule]);
            assert!(e.contains(why), "{rule}: {e}");
        }
        let e = compiled("maybe", &[]).unwrap_err();
        assert!(e.contains("policy_default must be"), "{e}");
    }

    #[test]
    fn rules_read_back_as_written() {
        let p = policy(
            "deny",
            &[
                "deny  send,receive   \"QPE/My Channel\"  message  \"a b()\"  for group guests",
                "allow receive * for gid 7",
            ],
        );
        let e = p.check(&p.view(1003, 1003), Action::Send, "QPE/My Channel", "a b()");
        assert_eq!(
            e.unwrap_err().text,
            "denied by rule 1 (deny send,receive \"QPE/My Channel\" message \"a b()\" for group guests)"
        );
        assert!(p
            .check_subscription(&p.view(5, 7), Action::Receive, "x")
            .is_ok());
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

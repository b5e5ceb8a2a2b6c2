//! The daemon's configuration: embedded defaults, optionally overridden by a TOML file.

use super::activate::ServiceConfig;
pub use super::link::config::{LinkConfig, PeerConfig};
use super::names::{Names, SystemNames};
use super::policy::Policy;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// What the daemon does with a subscriber whose outgoing queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// Drop the oldest queued messages to make room, count them, and tell the subscriber how
    /// many it lost (a `Lost` frame at the place of the gap).
    DropOldest,
    /// Send a `SlowConsumer` error and close the connection.
    Disconnect,
}

/// Daemon settings. Every field has an embedded default; see `docs/qcopd.toml` for a
/// commented example.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Socket path (overridden by `--socket` and `$QCOP_SOCKET`).
    pub socket: Option<PathBuf>,
    /// Group allowed to connect. Sets the socket directory to 0750 and the socket to 0660.
    pub socket_group: Option<String>,
    /// Socket file mode as an octal string; default "0600", or "0660" with `socket_group`.
    pub socket_mode: Option<String>,
    /// Maximum connected clients.
    pub max_clients: u32,
    /// Connections one user (uid) may hold, counted from accept, before the Hello; root and
    /// the daemon's user are not limited. Default: a quarter of `max_clients` (at least 1).
    pub max_clients_per_user: Option<u32>,
    /// Places of `max_clients` kept for root and the daemon's user, so that an administrator
    /// can always connect; at most a quarter of `max_clients` is kept.
    pub reserved_admin_clients: u32,
    /// Maximum subscriptions (channels and patterns) per client.
    pub max_subscriptions_per_client: u32,
    /// Subscriptions (channels and patterns) one user (uid) may hold on all its connections
    /// together; root and the daemon's user are not limited. Default: 4 times
    /// `max_subscriptions_per_client`.
    pub max_subscriptions_per_user: Option<u32>,
    /// Patterns (wildcard subscriptions) one user may hold on all its connections together.
    pub max_patterns_per_user: u32,
    /// Longest channel name or pattern, in bytes.
    pub max_channel_len: u16,
    /// Longest message name, in bytes.
    pub max_message_len: u16,
    /// Largest message payload, in bytes.
    pub max_payload: u32,
    /// Bytes queued for one client before the slow-consumer policy applies.
    pub max_queue_bytes: u32,
    /// Bytes queued for all clients together; past it, messages are dropped and counted.
    pub max_total_queue_bytes: u64,
    /// Policy for subscribers that do not keep up.
    pub slow_consumer: SlowConsumerPolicy,
    /// Default and maximum time a call waits for its reply, in milliseconds.
    pub call_timeout_ms: u32,
    /// Upper bound on the timeout a caller may ask for, in milliseconds.
    pub max_call_timeout_ms: u32,
    /// Calls one client may have in flight.
    pub max_calls_per_client: u32,
    /// Time a client may take to complete a frame it started, in milliseconds; past it the
    /// client is dropped and its read buffer released.
    pub partial_frame_timeout_ms: u32,
    /// Time a new connection has to complete its handshake, in milliseconds.
    pub handshake_timeout_ms: u32,
    /// Shared-memory segments that may exist at once (0 disables segments).
    pub shm_max_segments: u32,
    /// Largest shared-memory segment, in bytes.
    pub shm_max_segment_bytes: u64,
    /// Bytes of all shared-memory segments together.
    pub shm_max_total_segment_bytes: u64,
    /// System semaphores that may exist at once (0 disables semaphores).
    pub shm_max_semaphores: u32,
    /// Segments and semaphores one client may have attached or open at once.
    pub shm_max_handles_per_client: u32,
    /// Monitors (`qcop monitor`) connected at once.
    pub max_monitors: u32,
    /// Access policy rules, `EFFECT ACTIONS CHANNEL [message M] [for WHO]`, first match
    /// wins; without this key whoever can connect may send and receive.
    pub policy: Option<Vec<String>>,
    /// `"deny"` or `"allow"`: what applies to send and receive when no rule matches.
    pub policy_default: String,
    /// Time a started service has to subscribe, in milliseconds.
    pub activation_timeout_ms: u32,
    /// Messages queued per service while it starts.
    pub activation_max_queued_messages: u32,
    /// Name and payload bytes queued per service while it starts.
    pub activation_max_queued_bytes: u32,
    /// After a failed start, messages for the service are refused for this long (ms).
    pub activation_restart_delay_ms: u32,
    /// Directory where `persistent` services keep their queues across restarts.
    pub spool_dir: Option<PathBuf>,
    /// Activatable services (`[[service]]`).
    pub service: Vec<ServiceConfig>,
    /// Links to daemons on other boards (none by default).
    pub links: LinkConfig,
    /// Shared-memory streams open at once (0 disables them).
    pub shm_max_streams: u32,
    /// Largest ring of one shared-memory stream, in bytes.
    pub shm_max_ring_bytes: u64,
    /// All shared-memory rings together, in bytes.
    pub shm_max_total_ring_bytes: u64,
    /// Subscribers that may map one stream at once (1 to 255).
    pub shm_max_stream_subscribers: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: None,
            socket_group: None,
            socket_mode: None,
            max_clients: 256,
            max_clients_per_user: None,
            reserved_admin_clients: 4,
            max_subscriptions_per_client: 1024,
            max_subscriptions_per_user: None,
            max_patterns_per_user: 256,
            max_channel_len: 1024,
            max_message_len: 1024,
            max_payload: 64 * 1024,
            max_queue_bytes: 256 * 1024,
            max_total_queue_bytes: 16 * 1024 * 1024,
            slow_consumer: SlowConsumerPolicy::DropOldest,
            call_timeout_ms: 5_000,
            max_call_timeout_ms: 300_000,
            max_calls_per_client: 64,
            handshake_timeout_ms: 5_000,
            partial_frame_timeout_ms: 30_000,
            shm_max_segments: 64,
            shm_max_segment_bytes: 16 * 1024 * 1024,
            shm_max_total_segment_bytes: 32 * 1024 * 1024,
            shm_max_semaphores: 64,
            shm_max_handles_per_client: 64,
            max_monitors: 4,
            policy: None,
            policy_default: "deny".into(),
            activation_timeout_ms: 10_000,
            activation_max_queued_messages: 64,
            activation_max_queued_bytes: 256 * 1024,
            activation_restart_delay_ms: 1_000,
            spool_dir: None,
            service: Vec::new(),
            links: LinkConfig::default(),
            shm_max_streams: 16,
            shm_max_ring_bytes: 4 * 1024 * 1024,
            shm_max_total_ring_bytes: 16 * 1024 * 1024,
            shm_max_stream_subscribers: 16,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io(PathBuf, std::io::Error),
    /// The file is not valid TOML or has unknown or mistyped keys.
    Parse(PathBuf, String),
    /// A value is out of range.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            ConfigError::Parse(p, e) => write!(f, "{}: {e}", p.display()),
            ConfigError::Invalid(e) => write!(f, "invalid configuration: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Largest payload that can be configured (64 MiB less room for names and headers).
pub const MAX_CONFIGURABLE_PAYLOAD: u32 = 63 * 1024 * 1024;

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Io(path.to_owned(), e))?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse(_, m) => ConfigError::Parse(path.to_owned(), m),
            other => other,
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, &SystemNames)
    }

    /// Parses and validates configuration text, resolving user and group names with `names`.
    pub fn parse_with(text: &str, names: &dyn Names) -> Result<Config, ConfigError> {
        let cfg: Config = basic_toml::from_str(text)
            .map_err(|e| ConfigError::Parse(PathBuf::new(), e.to_string()))?;
        cfg.validate_with(names)?;
        Ok(cfg)
    }

    /// Checks ranges and the relations between limits, and resolves the user and group
    /// names of the policy and the services (an unknown name is an error).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&SystemNames)
    }

    /// [`Config::validate`] with names resolved by `names`.
    pub fn validate_with(&self, names: &dyn Names) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.max_clients == 0 {
            return bad("max_clients must be at least 1".into());
        }
        if self.max_clients_per_user == Some(0) {
            return bad("max_clients_per_user must be at least 1".into());
        }
        if self.max_channel_len == 0 || self.max_message_len == 0 {
            return bad("max_channel_len and max_message_len must be at least 1".into());
        }
        if self.max_payload > MAX_CONFIGURABLE_PAYLOAD {
            return bad(format!(
                "max_payload {} exceeds the ceiling of {MAX_CONFIGURABLE_PAYLOAD}",
                self.max_payload
            ));
        }
        let frame = self.max_frame_body() as u64 + crate::wire::HEADER_LEN as u64;
        if (self.max_queue_bytes as u64) < frame {
            return bad(format!(
                "max_queue_bytes ({}) must hold at least one largest frame ({frame} bytes)",
                self.max_queue_bytes
            ));
        }
        if self.max_total_queue_bytes < self.max_queue_bytes as u64 {
            return bad("max_total_queue_bytes must be at least max_queue_bytes".into());
        }
        if self.call_timeout_ms == 0 || self.call_timeout_ms > self.max_call_timeout_ms {
            return bad("call_timeout_ms must be between 1 and max_call_timeout_ms".into());
        }
        if self.partial_frame_timeout_ms == 0 {
            return bad("partial_frame_timeout_ms must be at least 1".into());
        }
        if self.handshake_timeout_ms == 0 {
            return bad("handshake_timeout_ms must be at least 1".into());
        }
        if !(1..=255).contains(&self.shm_max_stream_subscribers) {
            return bad("shm_max_stream_subscribers must be between 1 and 255".into());
        }
        if self.shm_max_ring_bytes > self.shm_max_total_ring_bytes {
            return bad("shm_max_ring_bytes must be at most shm_max_total_ring_bytes".into());
        }
        if let Some(m) = &self.socket_mode {
            parse_mode(m).map_err(ConfigError::Invalid)?;
        }
        if self.shm_max_segment_bytes > self.shm_max_total_segment_bytes {
            return bad("shm_max_segment_bytes must not exceed shm_max_total_segment_bytes".into());
        }
        if self.shm_max_total_segment_bytes > isize::MAX as u64 {
            return bad("shm_max_total_segment_bytes is larger than the address space".into());
        }
        Policy::compile(self.policy.as_deref(), &self.policy_default, names, 0)?;
        super::activate::validate(self, names)?;
        let link_frame = frame + super::link::config::MSG_OVERHEAD as u64;
        self.links
            .validate(link_frame)
            .map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The connection limits in force: `max_clients_per_user` (or its default) and the
    /// reserve for administrators (at most a quarter of `max_clients`).
    pub fn connection_limits(&self) -> super::quota::ConnectionLimits {
        super::quota::ConnectionLimits {
            max_clients: self.max_clients,
            per_user: self
                .max_clients_per_user
                .unwrap_or(self.max_clients / 4)
                .max(1),
            reserved: self.reserved_admin_clients.min(self.max_clients / 4),
        }
    }

    /// The per-user subscription totals in force.
    pub fn subscription_limits(&self) -> super::quota::SubscriptionLimits {
        super::quota::SubscriptionLimits {
            per_user: self
                .max_subscriptions_per_user
                .unwrap_or(self.max_subscriptions_per_client.saturating_mul(4)),
            patterns_per_user: self.max_patterns_per_user,
        }
    }

    /// The budget partial input frames are held to: `max_total_queue_bytes` together with
    /// queued output, and for one user a quarter of it, or at least one largest frame (with
    /// a read's worth of slack).
    pub fn input_limits(&self) -> super::quota::InputLimits {
        let frame = self.max_frame_body() as u64 + crate::wire::HEADER_LEN as u64;
        super::quota::InputLimits {
            budget: self.max_total_queue_bytes,
            user_share: (self.max_total_queue_bytes / 4).max(frame + 64 * 1024),
        }
    }

    /// Largest frame body a client may send under this configuration.
    pub fn max_frame_body(&self) -> u32 {
        let overhead = crate::wire::frame_overhead(
            self.max_channel_len as usize,
            self.max_message_len as usize,
        );
        self.max_payload.saturating_add(overhead as u32)
    }

    /// The socket file mode.
    pub fn socket_mode(&self) -> u32 {
        match &self.socket_mode {
            Some(m) => parse_mode(m).unwrap_or(0o600),
            None if self.socket_group.is_some() => 0o660,
            None => 0o600,
        }
    }

    /// The mode given to a socket directory the daemon creates.
    pub fn dir_mode(&self) -> u32 {
        if self.socket_group.is_some() || self.socket_mode() & 0o077 != 0 {
            // Connecting needs write permission on the socket and search permission on
            // the directory: a socket others may write gets a directory they may enter.
            let others = if self.socket_mode() & 0o002 != 0 {
                0o005
            } else {
                self.socket_mode() & 0o005
            };
            0o750 | others
        } else {
            0o700
        }
    }
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "socket_mode {text:?} is not an octal mode like \"0660\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn documented_example_matches_the_defaults() {
        let text = include_str!("../../docs/qcopd.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn documented_policy_example_decides_as_its_comments_say() {
        use crate::daemon::names::StaticNames;
        use crate::daemon::policy::Action;
        let names = StaticNames {
            users: [
                ("system", 900, 900),
                ("launcher", 901, 901),
                ("camera", 902, 44),
                ("messages", 903, 903),
                ("alice", 1000, 100),
                ("bob", 1001, 1001),
            ]
            .iter()
            .map(|(n, u, g)| ((*n).to_owned(), *u, *g))
            .collect(),
            groups: vec![
                ("guests".into(), 100, vec![]),
                ("developers".into(), 2000, vec!["bob".into()]),
                ("video".into(), 44, vec![]),
            ],
        };
        let text = include_str!("../../docs/policy.toml");
        let cfg = Config::parse_with(text, &names).unwrap();
        assert_eq!(cfg.service.len(), 2);
        assert_eq!(cfg.spool_dir.as_deref(), Some(Path::new("/var/spool/qcop")));
        assert_eq!(cfg.service[0].environment, ["QT_QPA_PLATFORM=linuxfb"]);
        let p = Policy::compile(cfg.policy.as_deref(), &cfg.policy_default, &names, 0).unwrap();
        let alice = p.view(1000, 100);
        let rule = |r: Result<(), crate::daemon::policy::Denial>| r.err().map(|d| d.rule);
        assert_eq!(
            rule(p.check(&alice, Action::Send, "QPE/Secure/keys", "unlock()")),
            Some(Some(2))
        );
        assert_eq!(
            rule(p.check(&alice, Action::Send, "QPE/System", "reboot()")),
            Some(Some(5))
        );
        assert_eq!(
            rule(p.check(&alice, Action::Send, "QPE/System", "setTime(int)")),
            None
        );
        assert_eq!(
            rule(p.check_subscription(&alice, Action::Receive, "QPE/*")),
            None
        );
        assert_eq!(
            rule(p.check(&alice, Action::Receive, "QPE/Secure/keys", "k()")),
            Some(Some(3))
        );
        assert_eq!(
            rule(p.check_subscription(&alice, Action::Receive, "sensors/imu")),
            Some(None)
        );
        assert_eq!(
            rule(p.check_subscription(&alice, Action::Monitor, "*")),
            Some(None)
        );
        let launcher = p.view(901, 901);
        assert_eq!(
            rule(p.check(&launcher, Action::Send, "QPE/System", "reboot()")),
            None
        );
        let bob = p.view(1001, 1001); // a listed member of developers
        assert_eq!(
            rule(p.check_subscription(&bob, Action::Monitor, "QPE/*")),
            None
        );
        // The same file with names this machine lacks is refused, naming the first.
        if nix::unistd::User::from_name("system")
            .ok()
            .flatten()
            .is_none()
        {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(
                e.contains("policy rule 1 (") && e.contains("unknown user \"system\""),
                "{e}"
            );
        }
    }

    #[test]
    #[cfg(not(feature = "links"))]
    fn a_build_without_links_refuses_a_links_section() {
        let e = Config::parse("[links]\nlisten = \"127.0.0.1:4250\"\n").unwrap_err();
        assert!(e.to_string().contains("built without links"), "{e}");
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    #[cfg(feature = "links")]
    fn example_link_configs_parse() {
        for (name, text) in [
            (
                "links-display.toml",
                include_str!("../../docs/links-display.toml"),
            ),
            (
                "links-control.toml",
                include_str!("../../docs/links-control.toml"),
            ),
            (
                "links-triangle-a.toml",
                include_str!("../../docs/links-triangle-a.toml"),
            ),
            (
                "links-triangle-b.toml",
                include_str!("../../docs/links-triangle-b.toml"),
            ),
            (
                "links-triangle-c.toml",
                include_str!("../../docs/links-triangle-c.toml"),
            ),
        ] {
            let c = Config::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(c.links.enabled(), "{name} configures no link");
        }
    }

    #[test]
    fn values_and_policy_parse() {
        let c = Config::parse(
            "max_payload = 1048576\nmax_queue_bytes = 4194304\nslow_consumer = \"disconnect\"\nsocket_group = \"qcop\"\n",
        )
        .unwrap();
        assert_eq!(c.max_payload, 1 << 20);
        assert_eq!(c.slow_consumer, SlowConsumerPolicy::Disconnect);
        assert_eq!(c.socket_mode(), 0o660);
        assert_eq!(c.dir_mode(), 0o750);
        // A socket everyone may connect to needs a directory everyone may enter.
        let open = Config::parse("socket_mode = \"0666\"").unwrap();
        assert_eq!(open.dir_mode(), 0o755);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(matches!(
            Config::parse("max_clientz = 3"),
            Err(ConfigError::Parse(..))
        ));
        assert!(matches!(
            Config::parse("max_clients = -1"),
            Err(ConfigError::Parse(..))
        ));
        assert!(matches!(
            Config::parse("max_payload = 16777216"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(Config::parse(
            "max_payload = 16777216\nmax_queue_bytes = 33554432\nmax_total_queue_bytes = 67108864"
        )
        .is_ok());
        assert!(matches!(
            Config::parse("socket_mode = \"999\""),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse("max_payload = 4294967295"),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn connection_limits_scale_from_max_clients() {
        let l = Config::default().connection_limits();
        assert_eq!((l.max_clients, l.per_user, l.reserved), (256, 64, 4));
        let l = Config::parse("max_clients = 2")
            .unwrap()
            .connection_limits();
        // A tiny daemon keeps no reserve and still admits one connection per user.
        assert_eq!((l.per_user, l.reserved), (1, 0));
        let l = Config::parse(
            "max_clients = 100\nmax_clients_per_user = 90\nreserved_admin_clients = 60",
        )
        .unwrap()
        .connection_limits();
        assert_eq!((l.per_user, l.reserved), (90, 25));
        assert!(matches!(
            Config::parse("max_clients_per_user = 0"),
            Err(ConfigError::Invalid(_))
        ));
    }
}

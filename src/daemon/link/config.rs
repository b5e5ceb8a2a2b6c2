//! The `[links]` section of the daemon's configuration: the listening address, the peers to
//! dial, what crosses each link, the key, and the timing and buffering knobs.
//!
//! The section is read as a plain TOML value and converted by hand: a derived parser for
//! these nested tables and lists would cost more flash than the rest of the link code.

#[cfg(feature = "links")]
use crate::pattern::{check_name, is_pattern, Pattern};
use serde::de::{self, Deserialize, Deserializer};
#[cfg(feature = "links")]
use serde::de::{MapAccess, SeqAccess, Visitor};
#[cfg(feature = "links")]
use std::fmt;
#[cfg(feature = "links")]
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// Bytes a link frame adds to the client frame carrying the same message (origin, origin
/// sequence, call id): the buffer must hold one largest message with them.
pub const MSG_OVERHEAD: usize = 24;

/// Links to qcopd daemons on other boards. Off unless `listen` or a `peer` is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// This daemon's name on its links (default: the host name).
    pub name: Option<String>,
    /// TCP address to accept links on, such as `"0.0.0.0:4250"` (none by default).
    pub listen: Option<String>,
    /// The pre-shared key, as text. Prefer `key_file`.
    pub key: Option<Secret>,
    /// A file holding the pre-shared key (surrounding whitespace is ignored).
    pub key_file: Option<PathBuf>,
    /// Allow links without a key to or from non-loopback addresses. Anyone who can reach
    /// the port can then inject messages: only for isolated networks.
    pub insecure: bool,
    /// Channels sent over links accepted on `listen` (patterns; none by default).
    pub export: Vec<String>,
    /// Channels taken from links accepted on `listen` (patterns; none by default).
    pub import: Vec<String>,
    /// Daemons to dial.
    pub peer: Vec<PeerConfig>,
    /// Interval between keepalive pings on an idle link, in milliseconds.
    pub keepalive_ms: u32,
    /// A peer silent for this long is declared dead and the link closed, in milliseconds.
    pub dead_after_ms: u32,
    /// First delay before redialing a lost peer; doubles up to `reconnect_max_ms`.
    pub reconnect_min_ms: u32,
    /// Longest delay between dial attempts, in milliseconds.
    pub reconnect_max_ms: u32,
    /// Bytes of messages kept per link while it is down or its peer reads slowly; past it
    /// the oldest are dropped and counted.
    pub buffer_bytes: u32,
    /// After a link comes back, how long buffered messages wait for the peer to have a
    /// subscriber again before they are dropped, in milliseconds.
    pub hold_ms: u32,
    /// Time an incoming connection has to authenticate, in milliseconds.
    pub handshake_timeout_ms: u32,
    /// Incoming connections that have not authenticated yet, at most.
    pub max_unauthenticated: u32,
    /// Links accepted on `listen`, at most.
    pub max_links: u32,
    /// Disable Nagle's algorithm on link sockets (lower latency, more packets).
    pub nodelay: bool,
    /// Frames this daemon sends are encrypted (`"encrypt"`, the default) or only
    /// authenticated (`"integrity"`); both are protected against forgery and replay.
    pub integrity_only: bool,
    /// Source addresses (`IP` or `IP/prefix`) of the boards that dial this one: their
    /// handshakes are always served, beside the strangers' share (`max_unauthenticated`).
    /// The addresses of the configured peers are known too.
    pub known_addresses: Vec<String>,
    /// Handshakes in progress from one source address, at most.
    pub handshakes_per_address: u32,
}

/// A key given in the configuration: shown as `<secret>` by `qcopd --check-config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<secret, {} bytes>", self.0.len())
    }
}

/// A daemon this one dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// `IP:PORT` of the peer's `listen` address (IPv6 as `[addr]:port`).
    pub address: String,
    /// Channels sent to this peer (patterns; none by default).
    pub export: Vec<String>,
    /// Channels taken from this peer (patterns; none by default).
    pub import: Vec<String>,
}

/// A TOML value of the `[links]` section.
#[cfg(feature = "links")]
enum Raw {
    Int(i64),
    Str(String),
    Bool(bool),
    List(Vec<Raw>),
    Table(Vec<(String, Raw)>),
    Other,
}

#[cfg(feature = "links")]
impl Raw {
    fn kind(&self) -> &'static str {
        match self {
            Raw::Int(_) => "an integer",
            Raw::Str(_) => "a string",
            Raw::Bool(_) => "a boolean",
            Raw::List(_) => "a list",
            Raw::Table(_) => "a table",
            Raw::Other => "a float or a date",
        }
    }
}

#[cfg(feature = "links")]
struct RawVisitor;

#[cfg(feature = "links")]
impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Raw, E> {
        Ok(Raw::Other)
    }

    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut v = Vec::new();
        while let Some(item) = seq.next_element::<Raw>()? {
            v.push(item);
        }
        Ok(Raw::List(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut v = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Raw>()?;
            v.push((key, value));
        }
        Ok(Raw::Table(v))
    }
}

#[cfg(feature = "links")]
impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

impl<'de> Deserialize<'de> for LinkConfig {
    #[cfg(feature = "links")]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LinkConfig, D::Error> {
        LinkConfig::from_raw(Raw::deserialize(d)?).map_err(de::Error::custom)
    }

    #[cfg(not(feature = "links"))]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LinkConfig, D::Error> {
        de::IgnoredAny::deserialize(d)?;
        Err(de::Error::custom(
            "[links]: this qcopd was built without links (cargo feature `links`)",
        ))
    }
}

#[cfg(feature = "links")]
fn table(what: &str, v: Raw) -> Result<Vec<(String, Raw)>, String> {
    match v {
        Raw::Table(t) => Ok(t),
        other => Err(format!("{what} must be a table, not {}", other.kind())),
    }
}

#[cfg(feature = "links")]
fn string(what: &str, v: Raw) -> Result<String, String> {
    match v {
        Raw::Str(s) => Ok(s),
        other => Err(format!("{what} must be a string, not {}", other.kind())),
    }
}

#[cfg(feature = "links")]
fn strings(what: &str, v: Raw) -> Result<Vec<String>, String> {
    match v {
        Raw::List(l) => l.into_iter().map(|s| string(what, s)).collect(),
        other => Err(format!(
            "{what} must be a list of strings, not {}",
            other.kind()
        )),
    }
}

#[cfg(feature = "links")]
fn number(what: &str, v: Raw) -> Result<u32, String> {
    match v {
        Raw::Int(i) => u32::try_from(i).map_err(|_| format!("{what} = {i} is out of range")),
        other => Err(format!("{what} must be an integer, not {}", other.kind())),
    }
}

#[cfg(feature = "links")]
fn boolean(what: &str, v: Raw) -> Result<bool, String> {
    match v {
        Raw::Bool(b) => Ok(b),
        other => Err(format!(
            "{what} must be true or false, not {}",
            other.kind()
        )),
    }
}

#[cfg(feature = "links")]
impl LinkConfig {
    /// Converts the section, refusing unknown keys and mistyped values.
    fn from_raw(v: Raw) -> Result<LinkConfig, String> {
        let mut c = LinkConfig::default();
        for (key, v) in table("links", v)? {
            let what = format!("links.{key}");
            let w = what.as_str();
            match key.as_str() {
                "name" => c.name = Some(string(w, v)?),
                "listen" => c.listen = Some(string(w, v)?),
                "key" => c.key = Some(Secret(string(w, v)?)),
                "key_file" => c.key_file = Some(string(w, v)?.into()),
                "insecure" => c.insecure = boolean(w, v)?,
                "export" => c.export = strings(w, v)?,
                "import" => c.import = strings(w, v)?,
                "peer" => {
                    let Raw::List(list) = v else {
                        return Err(format!("{w} must be an array of tables ([[links.peer]])"));
                    };
                    for (i, p) in list.into_iter().enumerate() {
                        c.peer.push(PeerConfig::from_raw(&format!("{w}[{i}]"), p)?);
                    }
                }
                "keepalive_ms" => c.keepalive_ms = number(w, v)?,
                "dead_after_ms" => c.dead_after_ms = number(w, v)?,
                "reconnect_min_ms" => c.reconnect_min_ms = number(w, v)?,
                "reconnect_max_ms" => c.reconnect_max_ms = number(w, v)?,
                "buffer_bytes" => c.buffer_bytes = number(w, v)?,
                "hold_ms" => c.hold_ms = number(w, v)?,
                "handshake_timeout_ms" => c.handshake_timeout_ms = number(w, v)?,
                "max_unauthenticated" => c.max_unauthenticated = number(w, v)?,
                "max_links" => c.max_links = number(w, v)?,
                "nodelay" => c.nodelay = boolean(w, v)?,
                "protection" => {
                    c.integrity_only = match string(w, v)?.as_str() {
                        "encrypt" => false,
                        "integrity" => true,
                        other => {
                            return Err(format!(
                                "{w} = {other:?}: expected \"encrypt\" or \"integrity\""
                            ))
                        }
                    }
                }
                "known_addresses" => c.known_addresses = strings(w, v)?,
                "handshakes_per_address" => c.handshakes_per_address = number(w, v)?,
                _ => return Err(format!("unknown field `{w}`")),
            }
        }
        Ok(c)
    }
}

#[cfg(feature = "links")]
impl PeerConfig {
    fn from_raw(what: &str, v: Raw) -> Result<PeerConfig, String> {
        let (mut address, mut export, mut import) = (None, Vec::new(), Vec::new());
        for (key, v) in table(what, v)? {
            let w = format!("{what}.{key}");
            match key.as_str() {
                "address" => address = Some(string(&w, v)?),
                "export" => export = strings(&w, v)?,
                "import" => import = strings(&w, v)?,
                _ => return Err(format!("unknown field `{w}`")),
            }
        }
        Ok(PeerConfig {
            address: address.ok_or_else(|| format!("{what}: missing field `address`"))?,
            export,
            import,
        })
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            name: None,
            listen: None,
            key: None,
            key_file: None,
            insecure: false,
            export: Vec::new(),
            import: Vec::new(),
            peer: Vec::new(),
            keepalive_ms: 1_000,
            dead_after_ms: 5_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 10_000,
            buffer_bytes: 1024 * 1024,
            hold_ms: 10_000,
            handshake_timeout_ms: 3_000,
            max_unauthenticated: 4,
            max_links: 16,
            nodelay: true,
            integrity_only: false,
            known_addresses: Vec::new(),
            handshakes_per_address: 2,
        }
    }
}

impl LinkConfig {
    /// Whether any link is configured.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || !self.peer.is_empty()
    }

    /// Whether a key is configured.
    pub fn has_key(&self) -> bool {
        self.key.is_some() || self.key_file.is_some()
    }

    /// The listening address, if any (validated).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|a| a.parse().ok())
    }

    /// Without the `links` feature the section cannot be set: nothing to check.
    #[cfg(not(feature = "links"))]
    pub fn validate(&self, _max_frame: u64) -> Result<(), String> {
        Ok(())
    }

    /// Checks addresses, patterns, the key rules and the timing relations. `max_frame` is
    /// the largest frame the daemon accepts from clients: one must fit in the buffer.
    #[cfg(feature = "links")]
    pub fn validate(&self, max_frame: u64) -> Result<(), String> {
        if let Some(name) = &self.name {
            check_name(name, 64).map_err(|e| format!("links.name: {e}"))?;
        }
        if self.key.is_some() && self.key_file.is_some() {
            return Err("links: set key or key_file, not both".into());
        }
        if let Some(k) = &self.key {
            if k.0.trim().len() < MIN_KEY_LEN {
                return Err(format!(
                    "links.key must be at least {MIN_KEY_LEN} bytes long"
                ));
            }
        }
        check_patterns("links.export", &self.export)?;
        check_patterns("links.import", &self.import)?;
        if let Some(a) = &self.listen {
            let addr = parse_addr("links.listen", a)?;
            self.check_unkeyed("links.listen", addr)?;
        }
        for (i, p) in self.peer.iter().enumerate() {
            let what = format!("links.peer[{i}]");
            let addr = parse_addr(&format!("{what}.address"), &p.address)?;
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return Err(format!("{what}.address {addr} cannot be dialed"));
            }
            self.check_unkeyed(&format!("{what}.address"), addr)?;
            check_patterns(&format!("{what}.export"), &p.export)?;
            check_patterns(&format!("{what}.import"), &p.import)?;
        }
        if self.keepalive_ms == 0 || self.dead_after_ms <= self.keepalive_ms {
            return Err("links: keepalive_ms must be at least 1 and below dead_after_ms".into());
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            return Err("links: reconnect_min_ms must be between 1 and reconnect_max_ms".into());
        }
        if self.enabled() && (self.buffer_bytes as u64) < max_frame {
            return Err(format!(
                "links.buffer_bytes ({}) must hold at least one largest frame ({max_frame} bytes)",
                self.buffer_bytes
            ));
        }
        if self.handshake_timeout_ms == 0
            || self.max_unauthenticated == 0
            || self.max_links == 0
            || self.handshakes_per_address == 0
        {
            return Err(
                "links: handshake_timeout_ms, max_unauthenticated, handshakes_per_address and \
                 max_links must be at least 1"
                    .into(),
            );
        }
        for (i, a) in self.known_addresses.iter().enumerate() {
            AddrPrefix::parse(a).map_err(|e| format!("links.known_addresses[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// The source addresses whose handshakes are served first: `known_addresses` and the
    /// configured peers' addresses (validated).
    #[cfg(feature = "links")]
    pub fn known_prefixes(&self) -> Vec<AddrPrefix> {
        let listed = self
            .known_addresses
            .iter()
            .filter_map(|a| AddrPrefix::parse(a).ok());
        let peers = self.peer.iter().filter_map(|p| {
            let a: SocketAddr = p.address.parse().ok()?;
            Some(AddrPrefix::host(a.ip()))
        });
        listed.chain(peers).collect()
    }

    /// Without a key only loopback addresses are allowed, unless `insecure` says otherwise.
    #[cfg(feature = "links")]
    fn check_unkeyed(&self, what: &str, addr: SocketAddr) -> Result<(), String> {
        if self.has_key() || self.insecure || addr.ip().is_loopback() {
            return Ok(());
        }
        Err(format!(
            "{what} {addr} is not a loopback address: links to other machines need a key \
             (links.key_file), or links.insecure = true to accept the risk"
        ))
    }
}

/// An IP address or a network (`10.0.0.0/24`, `fd00::/64`).
#[cfg(feature = "links")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrPrefix {
    addr: IpAddr,
    bits: u8,
}

#[cfg(feature = "links")]
impl AddrPrefix {
    /// One address.
    pub fn host(addr: IpAddr) -> AddrPrefix {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        AddrPrefix { addr, bits }
    }

    /// `IP` or `IP/prefix`.
    pub fn parse(text: &str) -> Result<AddrPrefix, String> {
        let (ip, bits) = match text.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (text, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or IP/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(AddrPrefix { addr, bits })
    }

    /// Whether `ip` lies in the prefix (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, width) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let shift = width - self.bits as u32;
        shift >= 128 || (a >> shift) == (b >> shift)
    }
}

#[cfg(feature = "links")]
fn parse_addr(what: &str, text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("{what} {text:?} is not an IP:PORT address (host names are not resolved)")
    })
}

#[cfg(feature = "links")]
fn check_patterns(what: &str, list: &[String]) -> Result<(), String> {
    for p in list {
        check_name(p, u16::MAX as usize).map_err(|e| format!("{what}: {p:?}: {e}"))?;
        if is_pattern(p) {
            Pattern::new(p).map_err(|e| format!("{what}: {p:?}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(all(test, feature = "links"))]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LinkConfig, String> {
        let c: LinkConfig = basic_toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate(70_000)?;
        Ok(c)
    }

    #[test]
    fn off_by_default() {
        let c = parse("").unwrap();
        assert!(!c.enabled());
        assert_eq!(c, LinkConfig::default());
    }

    #[test]
    fn peers_with_patterns() {
        let c = parse(
            "key = \"0123456789abcdef\"\nlisten = \"0.0.0.0:4250\"\n\
             [[peer]]\naddress = \"10.0.0.2:4250\"\nexport = [\"ui/*\"]\nimport = [\"sensors/*\", \"x\"]\n",
        )
        .unwrap();
        assert!(c.enabled());
        assert_eq!(c.peer[0].import, ["sensors/*", "x"]);
    }

    #[test]
    fn no_key_only_on_loopback_unless_insecure() {
        assert!(parse("listen = \"127.0.0.1:4250\"").is_ok());
        assert!(parse("listen = \"[::1]:4250\"").is_ok());
        let e = parse("listen = \"0.0.0.0:4250\"").unwrap_err();
        assert!(e.contains("need a key"), "{e}");
        assert!(parse("[[peer]]\naddress = \"192.168.1.2:1\"").is_err());
        assert!(parse("insecure = true\nlisten = \"0.0.0.0:4250\"").is_ok());
        assert!(parse("key_file = \"/k\"\nlisten = \"0.0.0.0:4250\"").is_ok());
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "listen = \"localhost:4250\"",
            "key = \"short\"",
            "key = \"0123456789abcdef\"\nkey_file = \"/k\"",
            "export = [\"a[b*\"]",
            "[[peer]]\naddress = \"127.0.0.1:0\"",
            "keepalive_ms = 5000\ndead_after_ms = 5000",
            "reconnect_min_ms = 0",
            "listen = \"127.0.0.1:1\"\nbuffer_bytes = 1000",
            "max_links = 0",
        ] {
            assert!(parse(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn protection_and_known_addresses() {
        let c = parse(
            "protection = \"integrity\"\nknown_addresses = [\"10.0.0.0/24\", \"fd00::7\"]\n\
             handshakes_per_address = 3\n[[peer]]\naddress = \"127.0.0.9:4250\"\n",
        )
        .unwrap();
        assert!(c.integrity_only);
        assert!(!parse("").unwrap().integrity_only);
        let known = c.known_prefixes();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let is_known = |s: &str| known.iter().any(|p| p.contains(ip(s)));
        assert!(is_known("10.0.0.200"));
        assert!(is_known("::ffff:10.0.0.1"));
        assert!(is_known("fd00::7"));
        assert!(is_known("127.0.0.9"));
        assert!(!is_known("10.0.1.1"));
        assert!(!is_known("127.0.0.1"));
        assert!(!is_known("fd00::8"));
        assert!(AddrPrefix::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("1.2.3.4")));
        for bad in [
            "protection = \"none\"",
            "known_addresses = [\"10.0.0.1/33\"]",
            "known_addresses = [\"host\"]",
            "handshakes_per_address = 0",
        ] {
            assert!(parse(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn type_errors_name_the_key() {
        for (bad, says) in [
            ("listen = 4250", "links.listen must be a string"),
            ("export = \"a\"", "links.export must be a list"),
            ("keepalive_ms = -1", "out of range"),
            ("insecure = 1", "links.insecure must be true or false"),
            ("colour = 1", "unknown field `links.colour`"),
            ("[[peer]]\nexport = []", "missing field `address`"),
            (
                "[[peer]]\naddress = \"127.0.0.1:1\"\nexprot = []",
                "unknown field `links.peer[0].exprot`",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

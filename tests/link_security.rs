//! Links on a hostile network: a man in the middle that alters, replays, drops, reorders,
//! injects and truncates sealed frames; an old-version peer; a stranger flooding the
//! listener's handshake slots.
//!
//! Every attack on the frames must close the connection with a counted reason
//! (`link_frames_rejected` or `link_frames_truncated`, and the link's own `frames_rejected`
//! or `truncated`), deliver nothing forged, and leave the link delivering every genuine
//! message exactly once after it reconnects.
#![cfg(feature = "links")]

mod common;

use common::{eventually, link_to as link, recv, stat as counter, temp_dir, Daemon};
use qcop::daemon::link::proto::LinkFrame;
use qcop::wire::{ErrorCode, FrameReader};
use qcop::Connection;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const KEY: &str = "a test key of more than 16 bytes";
const MSG: &str = "n(int)";
const CHANNEL: &str = "confidential/telemetry";
const FAST: &str = "keepalive_ms = 250\ndead_after_ms = 2000\nreconnect_min_ms = 50\n\
                    reconnect_max_ms = 400\nhandshake_timeout_ms = 3000\n";

fn config(name: &str, listen: bool, dial: Option<u16>, extra: &str) -> String {
    let mut c = format!("[links]\nname = \"{name}\"\nkey = \"{KEY}\"\n{FAST}{extra}\n");
    if listen {
        c.push_str("listen = \"127.0.0.1:0\"\nexport = [\"*\"]\nimport = [\"*\"]\n");
    }
    if let Some(p) = dial {
        c.push_str(&format!(
            "[[links.peer]]\naddress = \"127.0.0.1:{p}\"\nexport = [\"*\"]\nimport = [\"*\"]\n"
        ));
    }
    c
}

/// A daemon whose log goes to a file the test can read.
fn logged_daemon(config: &str) -> (Daemon, std::path::PathBuf) {
    let dir = temp_dir("sec");
    let socket = dir.join("run/qcopd.sock");
    let cfg = dir.join("qcopd.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.join("qcopd.log");
    let child = Command::new(common::program("qcopd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--config")
        .arg(&cfg)
        .env_remove("QCOP_SOCKET")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn qcopd");
    let d = Daemon {
        child,
        socket,
        dir,
        config: Some(cfg),
    };
    eventually("qcopd listening", || UnixStream::connect(&d.socket).is_ok());
    (d, log)
}

fn port(d: &Daemon) -> u16 {
    counter(d, "link_listen_port") as u16
}

fn link_counter(d: &Daemon, peer: &str, name: &str) -> u64 {
    link(d, peer)
        .and_then(|l| l.get(name))
        .unwrap_or_else(|| panic!("no link counter {name} to {peer}"))
}

fn send_n(conn: &mut Connection, range: std::ops::Range<i32>) {
    for i in range {
        conn.send(CHANNEL, MSG, &i.to_be_bytes()).expect("send");
    }
    conn.flush().expect("flush");
}

fn take(conn: &mut Connection, n: usize) -> Vec<i32> {
    (0..n)
        .map(|_| {
            let m = recv(conn);
            assert_eq!((m.channel.as_str(), m.message.as_str()), (CHANNEL, MSG));
            i32::from_be_bytes(m.data[..4].try_into().expect("4 bytes"))
        })
        .collect()
}

/// Nothing (no forged frame, no duplicate) arrives before a marker sent now.
fn nothing_before_marker(from: &mut Connection, to: &mut Connection) {
    from.send(CHANNEL, "marker()", b"").unwrap();
    from.flush().unwrap();
    let m = recv(to);
    assert_eq!(
        m.message, "marker()",
        "unexpected message before the marker"
    );
}

// ----- the man in the middle -------------------------------------------------------------

/// What the relay does to the next frame from the listener to the dialer (after the
/// handshake's two clear frames).
#[derive(Debug, Clone)]
enum Attack {
    /// Flips one bit in the middle of the frame.
    Alter,
    /// Flips a high bit of the frame's length field (it announces 256 MiB more).
    AlterLength,
    /// Forwards the frame, then the same bytes again.
    Replay,
    /// Does not forward the frame.
    Drop,
    /// Forwards the frame after the next one.
    Reorder,
    /// Sends these bytes before the frame.
    Inject(Vec<u8>),
    /// Forwards the header and half the body, then ends the stream (FIN).
    Truncate,
}

/// A TCP relay between a dialing daemon and a listening one that cuts the listener's
/// stream into frames and attacks one when told to. The other direction is copied as is.
struct Relay {
    port: u16,
    attack: Arc<std::sync::Mutex<Option<Attack>>>,
    /// Attacks carried out.
    done: Arc<AtomicU64>,
    /// Every byte the listener sent through the relay (what an eavesdropper sees).
    tapped: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let attack = Arc::new(std::sync::Mutex::new(None));
        let done = Arc::new(AtomicU64::new(0));
        let tapped = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, d, t) = (Arc::clone(&attack), Arc::clone(&done), Arc::clone(&tapped));
        thread::spawn(move || {
            for dialer in listener.incoming() {
                let Ok(dialer) = dialer else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (up_from, up_to) = (dialer.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || copy(up_from, up_to));
                let (a, d, t) = (Arc::clone(&a), Arc::clone(&d), Arc::clone(&t));
                thread::spawn(move || frames(server, dialer, a, d, t));
            }
        });
        Relay {
            port,
            attack,
            done,
            tapped,
        }
    }

    fn tapped_contains(&self, needle: &[u8]) -> bool {
        self.tapped
            .lock()
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

fn read_frame(from: &mut TcpStream) -> Option<Vec<u8>> {
    let mut frame = vec![0u8; 12];
    from.read_exact(&mut frame).ok()?;
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    frame.resize(12 + len, 0);
    from.read_exact(&mut frame[12..]).ok()?;
    Some(frame)
}

fn frames(
    mut from: TcpStream,
    mut to: TcpStream,
    attack: Arc<std::sync::Mutex<Option<Attack>>>,
    done: Arc<AtomicU64>,
    tapped: Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let mut index = 0u64;
    let mut held: Option<Vec<u8>> = None;
    while let Some(mut frame) = read_frame(&mut from) {
        {
            let mut t = tapped.lock().unwrap();
            if t.len() < 8 << 20 {
                t.extend_from_slice(&frame);
            }
        }
        index += 1;
        let mut out = Vec::new();
        // Hello and Auth travel in the clear; attacks are on what follows.
        let act = if index > 2 && held.is_none() {
            attack.lock().unwrap().take()
        } else {
            None
        };
        let mut end = false;
        // Counted once the attacked frame went out (for a reorder: after the next one).
        let mut carried_out = act.is_some() && !matches!(act, Some(Attack::Reorder));
        match act {
            None if held.is_some() => {
                out.extend_from_slice(&frame);
                out.extend_from_slice(&held.take().unwrap());
                carried_out = true;
            }
            None => out.extend_from_slice(&frame),
            Some(Attack::Alter) => {
                let mid = frame.len() / 2;
                frame[mid] ^= 0x10;
                out.extend_from_slice(&frame);
            }
            Some(Attack::AlterLength) => {
                frame[0] ^= 0x10;
                out.extend_from_slice(&frame);
            }
            Some(Attack::Replay) => {
                out.extend_from_slice(&frame);
                out.extend_from_slice(&frame);
            }
            Some(Attack::Drop) => {}
            Some(Attack::Reorder) => held = Some(frame),
            Some(Attack::Inject(bytes)) => {
                out.extend_from_slice(&bytes);
                out.extend_from_slice(&frame);
            }
            Some(Attack::Truncate) => {
                out.extend_from_slice(&frame[..12 + (frame.len() - 12) / 2]);
                end = true;
            }
        }
        if to.write_all(&out).is_err() {
            break;
        }
        if carried_out {
            done.fetch_add(1, Ordering::SeqCst);
        }
        if end {
            // The dialer sees the stream end inside the frame (a FIN, not a reset).
            let _ = to.shutdown(std::net::Shutdown::Write);
            break;
        }
    }
    thread::sleep(Duration::from_millis(100));
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

impl Relay {
    /// Arms `attack` for the next frame without waiting.
    fn arm(&self, attack: Attack) -> u64 {
        let before = self.done.load(Ordering::SeqCst);
        *self.attack.lock().unwrap() = Some(attack);
        before
    }

    fn wait_done(&self, before: u64) {
        eventually("the attack carried out", || {
            self.done.load(Ordering::SeqCst) > before
        });
    }
}

/// A linked pair through the relay: `a` listens and publishes, `b` dials through the relay
/// and subscribes. 100 messages cross first; then `attack` hits the next frame while 100
/// more are sent. `b` must count the attack on `counter` (global) and `per_link` (its link
/// to `a`), and still receive the 200 messages exactly once, in order.
fn attacked(attack: Attack, counter_name: &str, per_link: &str, a_extra: &str) -> Relay {
    let a = Daemon::start_with(&config("a", true, None, a_extra));
    let relay = Relay::start(port(&a));
    let b = Daemon::start_with(&config("b", false, Some(relay.port), ""));
    let mut sub = b.connect();
    sub.subscribe(CHANNEL).unwrap();
    let mut pa = a.connect();
    eventually("a sees b's subscriber", || {
        pa.registered_counts(CHANNEL).unwrap().1 == 1
    });
    send_n(&mut pa, 0..100);
    assert_eq!(take(&mut sub, 100), (0..100).collect::<Vec<_>>());

    let before = relay.arm(attack.clone());
    send_n(&mut pa, 100..200);
    relay.wait_done(before);
    eventually(&format!("b counts {counter_name}"), || {
        counter(&b, counter_name) == 1
    });
    // Nothing forged or altered arrives; every genuine message does, once, in order.
    assert_eq!(take(&mut sub, 100), (100..200).collect::<Vec<_>>());
    nothing_before_marker(&mut pa, &mut sub);
    assert_eq!(counter(&b, "messages_delivered"), 201, "{attack:?}");
    assert_eq!(link_counter(&b, "a", per_link), 1, "{attack:?}");
    assert!(link_counter(&b, "a", "reconnects") >= 1);
    assert_eq!(link_counter(&b, "a", "duplicates"), 0);
    assert_eq!(counter(&b, counter_name), 1, "{attack:?}");
    // The listener never received anything bad.
    assert_eq!(counter(&a, "link_frames_rejected"), 0);
    relay
}

#[test]
fn an_altered_byte_is_rejected_and_traffic_is_encrypted_by_default() {
    let relay = attacked(Attack::Alter, "link_frames_rejected", "frames_rejected", "");
    // An eavesdropper sees neither channel names nor payloads.
    assert!(!relay.tapped_contains(CHANNEL.as_bytes()));
    assert!(!relay.tapped_contains(MSG.as_bytes()));
}

#[test]
fn integrity_only_is_authenticated_but_readable() {
    let relay = attacked(
        Attack::Alter,
        "link_frames_rejected",
        "frames_rejected",
        "protection = \"integrity\"\n",
    );
    // The frames the listener sends cross in the clear, and were still protected.
    assert!(relay.tapped_contains(CHANNEL.as_bytes()));
}

#[test]
fn an_altered_length_is_rejected() {
    attacked(
        Attack::AlterLength,
        "link_frames_rejected",
        "frames_rejected",
        "",
    );
}

#[test]
fn a_replayed_frame_is_rejected() {
    attacked(
        Attack::Replay,
        "link_frames_rejected",
        "frames_rejected",
        "",
    );
}

#[test]
fn a_dropped_or_reordered_frame_is_detected() {
    attacked(Attack::Drop, "link_frames_rejected", "frames_rejected", "");
    attacked(
        Attack::Reorder,
        "link_frames_rejected",
        "frames_rejected",
        "",
    );
}

#[test]
fn injected_frames_are_rejected_and_never_delivered() {
    // A clear link frame, as version 1 carried them: a message a subscriber would take.
    let forged = LinkFrame::Msg {
        origin: 0x77,
        oseq: 1,
        channel: CHANNEL,
        message: MSG,
        payload: &(-1i32).to_be_bytes(),
    }
    .to_vec();
    attacked(
        Attack::Inject(forged),
        "link_frames_rejected",
        "frames_rejected",
        "",
    );
    // A record made up without the key.
    let mut record = vec![0, 0, 0, 40, 0x4d, 0, 0, 0, 0, 0, 0, 0];
    record.extend_from_slice(&[0xaa; 40]);
    attacked(
        Attack::Inject(record),
        "link_frames_rejected",
        "frames_rejected",
        "",
    );
}

#[test]
fn a_truncated_frame_is_counted() {
    attacked(Attack::Truncate, "link_frames_truncated", "truncated", "");
}

/// A peer of link protocol version 1 (frames in the clear) is refused, and the log says
/// why.
#[test]
fn an_old_version_peer_is_refused_with_a_clear_reason() {
    let (a, log) = logged_daemon(&config("a", true, None, ""));
    let mut s = TcpStream::connect(("127.0.0.1", port(&a))).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let old = LinkFrame::Hello {
        version_min: 1,
        version_max: 1,
        daemon_id: 0x99,
        nonce: [5; 32],
        name: "old board",
    }
    .to_vec();
    s.write_all(&old).unwrap();
    let mut reader = FrameReader::new(1 << 16);
    let mut code = None;
    loop {
        while let Some(f) = reader.next_raw().unwrap() {
            if let Ok(LinkFrame::Close { code: c, .. }) = LinkFrame::decode(f) {
                code = Some(c);
            }
        }
        match s.read(reader.buffer_mut(4096)) {
            Ok(0) | Err(_) => break,
            Ok(n) => reader.filled(n),
        }
    }
    assert_eq!(code, Some(ErrorCode::UnsupportedVersion.to_u16()));
    assert_eq!(counter(&a, "link_protocol_errors"), 1);
    eventually("the refusal logged", || {
        std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("link protocol versions 1..=1, this daemon 2 only"))
    });
}

// ----- handshake starvation ----------------------------------------------------------------

/// A TCP connection to the listener from the source address `127.0.0.<host>`.
fn connect_from(host: u8, port: u16) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, host, 0))?;
    connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port))?;
    Ok(TcpStream::from(fd))
}

/// A stranger without the key floods the listener from three source addresses: each of
/// its connections is held open without a word and reopened as soon as the daemon closes
/// it. The configured peer still links, and the refusals are counted but logged sparingly.
#[test]
fn a_strangers_flood_does_not_keep_the_peer_out() {
    let (a, log) = logged_daemon(&config(
        "a",
        true,
        None,
        "known_addresses = [\"127.0.0.1\"]\n",
    ));
    let p = port(&a);
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (2..5u8)
        .flat_map(|host| (0..3).map(move |_| host))
        .map(|host| {
            let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut s) = connect_from(host, p) else {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    opened.fetch_add(1, Ordering::SeqCst);
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let mut buf = [0u8; 512];
                    // Held until the daemon closes it (or the flood stops).
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                if stop.load(Ordering::SeqCst) {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                                if stop.load(Ordering::SeqCst) {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    let started = Instant::now();
    // The strangers hold the whole share, and more of them are being refused.
    eventually("the strangers' share taken and refusals", || {
        counter(&a, "links_refused") >= 20 && counter(&a, "links_refused_per_address") >= 1
    });
    let b = Daemon::start_with(&config("b", false, Some(p), ""));
    eventually("b links to a during the flood", || {
        counter(&b, "links_up") == 1 && counter(&a, "links_up") == 1
    });
    let mut sub = b.connect();
    sub.subscribe(CHANNEL).unwrap();
    let mut pa = a.connect();
    eventually("a sees b's subscriber", || {
        pa.registered_counts(CHANNEL).unwrap().1 == 1
    });
    send_n(&mut pa, 0..10);
    assert_eq!(take(&mut sub, 10), (0..10).collect::<Vec<_>>());
    let refused_during = counter(&a, "links_refused");
    stop.store(true, Ordering::SeqCst);
    for t in flood {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    assert!(opened.load(Ordering::SeqCst) >= 20);
    // Not authenticated, none of the strangers ever became a link.
    assert_eq!(counter(&a, "links"), 1);
    assert_eq!(counter(&a, "link_auth_failures"), 0);
    // One log line per 10 s at most (and the first), however many were refused.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.matches("refusing a connection").count() as u64;
    assert!(lines >= 1, "{text}");
    assert!(
        lines <= 2 + elapsed.as_secs() / 10,
        "{lines} log lines for {refused_during} refusals"
    );
    assert!(refused_during > lines);
}

//! Group `link`: two qcopd joined by a link over loopback TCP.
//!
//! Request/response: client `call` → qcopd A → (TCP link) → qcopd B → responder, and back.
//! Floor: the same four hops without qcop: the raw client talks over AF_UNIX to a relay,
//! which forwards over TCP (Nagle off) to a second relay, which forwards over AF_UNIX to the
//! raw responder; records of the qcop frame sizes.
//!
//! Streaming: a publisher on A sends N messages (64-byte payload) that one subscriber on B
//! counts. Floors: raw TCP streaming from one process to another over loopback, through a
//! 64 KiB buffer (the kernel's rate), or with one `write` per record (what an unbatched
//! sender pays), with Nagle off and on. The qcop link is measured with Nagle off (the
//! default, `nodelay = true`) and on; qcopd's own `writes` counter gives the messages it
//! gathered per `sendmsg`.

use crate::procs::{die_with_parent, role, Daemon, Placement};
use crate::report::{grouped, latency_cells, median_f64, ratio, us, Summary, Table};
use crate::rr;
use crate::util::{field, mono_ns, role_args, Context, Res, RoleArgs};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use qcop::daemon::link::proto::LinkFrame;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = "qcop bench link key, 32 bytes..";
const PAYLOAD: usize = 64;

/// Iteration counts.
pub struct Params {
    /// Round trips before timing, per run.
    pub warmup: usize,
    /// Timed round trips in total (Nagle off).
    pub iters: usize,
    /// Timed round trips with Nagle on (few: they can be slow).
    pub iters_nagle: usize,
    /// Alternations of floor and figure.
    pub rounds: usize,
    /// Messages per streaming run.
    pub stream: u64,
}

/// The two daemons' configurations: A listens, B dials it.
/// `integrity`: frames sealed but not encrypted (`protection = "integrity"`) both ways.
fn configs(base: &str, port: Option<u16>, nodelay: bool, integrity: bool) -> String {
    let protection = if integrity { "integrity" } else { "encrypt" };
    let common = format!(
        "{base}[links]\nkey = \"{KEY}\"\nexport = [\"bench/*\"]\nimport = [\"bench/*\"]\n\
         buffer_bytes = 67108864\nnodelay = {nodelay}\nprotection = \"{protection}\"\n"
    );
    match port {
        None => format!("{common}name = \"a\"\nlisten = \"127.0.0.1:0\"\n"),
        Some(p) => format!(
            "{common}name = \"b\"\n[[links.peer]]\naddress = \"127.0.0.1:{p}\"\n\
             export = [\"bench/*\"]\nimport = [\"bench/*\"]\n"
        ),
    }
}

/// Two linked daemons, A on hop 1 and B on hop 2 of the placement.
struct Pair {
    a: Daemon,
    b: Daemon,
}

impl Pair {
    fn start(dir: &Path, base: &str, pl: &Placement, nodelay: bool, integrity: bool) -> Res<Pair> {
        let a = Daemon::start(
            dir,
            "link-a",
            &configs(base, None, nodelay, integrity),
            pl.cpus(1),
        )?;
        let port = stats(&a)?
            .get("link_listen_port")
            .ok_or("qcopd has no link_listen_port (built without links?)")?;
        let b = Daemon::start(
            dir,
            "link-b",
            &configs(base, Some(port as u16), nodelay, integrity),
            pl.cpus(2),
        )?;
        let pair = Pair { a, b };
        wait_for("the link to come up", || {
            Ok(stats(&pair.a)?.get("links_up") == Some(1))
        })?;
        Ok(pair)
    }

    /// Waits until A knows of a subscriber of `channel` on B.
    fn wait_remote(&self, channel: &str) -> Res<()> {
        let mut c = crate::procs::connect_retry(&self.a.socket, "bench-probe", WAIT)?;
        wait_for("the subscription to cross the link", || {
            Ok(c.registered_counts(channel).ctx("registered")?.1 > 0)
        })
    }

    fn stop(self) -> Res<()> {
        self.a.stop()?;
        self.b.stop()
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn wait_for(what: &str, mut ok: impl FnMut() -> Res<bool>) -> Res<()> {
    let deadline = Instant::now() + WAIT;
    while !ok()? {
        if Instant::now() > deadline {
            return Err(format!("link: timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn stats(d: &Daemon) -> Res<qcop::wire::StatsReport> {
    let mut c = crate::procs::connect_retry(&d.socket, "bench-probe", WAIT)?;
    c.stats(false).ctx("stats")
}

/// Measures every placement: round trips, then streaming.
pub fn run(dir: &Path, base: &str, placements: &[Placement], p: &Params) -> Res<Vec<Table>> {
    let (req_len, reply_len) = rr::wire_sizes();
    let per_round = p.iters.div_ceil(p.rounds);
    let mut latency = Table::new(
        "Request/response across a link, 64-byte payload (µs per round trip)",
        vec![
            "placement",
            "qcop median",
            "qcop p99",
            "floor median",
            "floor p99",
            "median ÷ floor",
            "p99 ÷ floor",
            "CPU µs/rt qcop (all)",
            "CPU µs/rt floor (all)",
            "qcop median, Nagle on",
        ],
    );
    latency.notes.push(format!(
        "client `call` → qcopd A → TCP link → qcopd B → responder and back, {} timed round \
         trips per cell ({} run(s) of floor then qcop, each after {} warm-up round trips). \
         Floor: raw client → AF_UNIX → relay → TCP (Nagle off) → relay → AF_UNIX → raw \
         responder, {req_len}-byte requests and {reply_len}-byte replies. CPU: on-CPU time of \
         all four processes per round trip. Nagle on: the link with `nodelay = false`, {} \
         round trips.",
        grouped((per_round * p.rounds) as u64),
        p.rounds,
        grouped(p.warmup as u64),
        p.iters_nagle
    ));
    let frame = LinkFrame::Msg {
        origin: 1,
        oseq: 1,
        channel: "bench/bc",
        message: "tick(QByteArray)",
        payload: &[0; PAYLOAD],
    }
    .to_vec()
    .len();
    let mut stream = Table::new(
        "Streaming across a link, 64-byte payload (messages per second)",
        vec![
            "placement",
            "path",
            "msg/s",
            "÷ TCP streamed",
            "messages per sendmsg",
            "dropped",
        ],
    );
    stream.notes.push(format!(
        "N = {} messages, median of {} run(s). qcop: publisher on A, subscriber on B, rate = \
         N ÷ (last message received − first sent); one daemon: the same two clients on a \
         single qcopd, for the cost of the link hop. Raw relays: writer → AF_UNIX → relay → \
         TCP → relay → AF_UNIX → reader, the same hops as qcop. Raw TCP: one process writes \
         {frame}-byte records (the link `Msg` frame size) straight to another over loopback. \
         Encrypted: the default `protection`; integrity only: `protection = \"integrity\"` on \
         both daemons (frames authenticated, not encrypted); the frames ready at once travel \
         in one sealed record, {} bytes longer than they. Messages per sendmsg: qcopd A's link \
         `messages_out ÷ writes`.",
        grouped(p.stream),
        p.rounds,
        qcop::daemon::link::seal::SEAL_OVERHEAD
    ));
    for pl in placements {
        eprintln!("link rr: {}", pl.label());
        let (mut figure, mut floor) = (rr::Outcome::default(), rr::Outcome::default());
        for _ in 0..p.rounds {
            floor.merge(rr_floor(dir, pl, p.warmup, per_round, req_len, reply_len)?);
            figure.merge(rr_qcop(dir, base, pl, p.warmup, per_round, true)?);
        }
        let nagle = rr_qcop(dir, base, pl, p.warmup.min(20), p.iters_nagle, false)?;
        let cpu = |o: &rr::Outcome| (0..3).map(|i| o.cpu_us(i)).sum::<f64>();
        let (q_cpu, f_cpu) = (cpu(&figure), cpu(&floor));
        let q = Summary::of(figure.samples).ok_or("link: no qcop samples")?;
        let f = Summary::of(floor.samples).ok_or("link: no floor samples")?;
        let n = Summary::of(nagle.samples).ok_or("link: no Nagle samples")?;
        let mut row = vec![pl.label()];
        row.extend(latency_cells(&q, &f, us));
        row.extend([format!("{q_cpu:.1}"), format!("{f_cpu:.1}"), us(n.p50)]);
        latency.rows.push(row);

        eprintln!("link streaming: {}", pl.label());
        let mut runs: Vec<(&str, Vec<f64>, f64, u64)> = Vec::new();
        let mut streamed = Vec::new();
        for (label, nodelay, integrity) in [
            ("qcop link, encrypted, Nagle off", true, false),
            ("qcop link, integrity only, Nagle off", true, true),
            ("qcop link, encrypted, Nagle on", false, false),
        ] {
            let (mut rates, mut per_write, mut dropped) = (Vec::new(), Vec::new(), 0);
            for _ in 0..p.rounds {
                let r = stream_qcop(dir, base, pl, p.stream, nodelay, integrity)?;
                rates.push(r.0);
                per_write.push(r.1);
                dropped += r.2;
            }
            runs.push((label, rates, median_f64(&per_write), dropped));
        }
        let mut single = Vec::new();
        for _ in 0..p.rounds {
            single.push(stream_one_daemon(dir, base, pl, p.stream)?);
        }
        runs.push(("qcop, one daemon (no link)", single, f64::NAN, 0));
        let mut relayed = Vec::new();
        for _ in 0..p.rounds {
            relayed.push(stream_relayed(dir, pl, p.stream, frame)?);
        }
        runs.push(("raw relays, same hops, 64 KiB writes", relayed, f64::NAN, 0));
        for (label, buffered, nodelay) in [
            ("raw TCP, 64 KiB writes", true, true),
            ("raw TCP, a write per record, Nagle off", false, true),
            ("raw TCP, a write per record, Nagle on", false, false),
        ] {
            let mut rates = Vec::new();
            for _ in 0..p.rounds {
                rates.push(stream_floor(pl, p.stream, frame, buffered, nodelay)?);
            }
            if buffered {
                streamed = rates.clone();
            }
            runs.push((label, rates, if buffered { f64::NAN } else { 1.0 }, 0));
        }
        let floor = median_f64(&streamed);
        for (label, rates, per_write, dropped) in runs {
            let rate = median_f64(&rates);
            stream.rows.push(vec![
                pl.label(),
                label.to_owned(),
                grouped(rate as u64),
                ratio(rate, floor),
                if per_write.is_nan() {
                    "–".into()
                } else {
                    format!("{per_write:.1}")
                },
                dropped.to_string(),
            ]);
        }
    }
    eprintln!("link sealing");
    Ok(vec![latency, stream, sealing(p.stream, p.rounds)?])
}

/// The cost of sealing alone, in this process: each frame sealed into a record and opened
/// again, against copying it into a buffer and out again (the floor, measured alternately).
fn sealing(stream: u64, rounds: usize) -> Res<Table> {
    use qcop::daemon::link::seal::{Opener, Protection, Sealer};
    use std::hint::black_box;
    let mut t = Table::new(
        "Sealing link frames, in-process (ns per frame: seal, then open)",
        vec![
            "frame bytes",
            "frames per record",
            "protection",
            "ns per frame",
            "copy floor ns",
            "÷ copy floor",
            "MB/s sealed and opened",
        ],
    );
    t.notes.push(format!(
        "One thread seals `Msg` frames into records (ChaCha20-Poly1305, counter nonce; one \
         frame per record, or 128 small ones as when a stream flows) and opens them again, as \
         the two daemons of a link do between them; the floor copies the same bytes into a \
         buffer and out again. Median of {rounds} run(s), each of about \
         {} MB of frames. Encrypted: the default; integrity only: the frame in the clear \
         with its tag.",
        stream * 124 / 1_000_000
    ));
    // A record carries the frames ready at once (up to 16 KiB of them): 128 of the small
    // ones when a stream is flowing, one when a lone message goes out.
    for (payload, per_record) in [(64usize, 1usize), (64, 128), (1024, 1), (16 * 1024, 1)] {
        let body = vec![0x5au8; payload];
        let frame = LinkFrame::Msg {
            origin: 1,
            oseq: 1,
            channel: "bench/bc",
            message: "tick(QByteArray)",
            payload: &body,
        }
        .to_vec();
        let unit = frame.repeat(per_record);
        let iters = (stream * 124 / unit.len() as u64).max(100);
        let time = |mode: Option<Protection>| -> Res<f64> {
            let mut runs = Vec::new();
            for _ in 0..rounds.max(1) {
                let key = [9u8; 32];
                let (mut sealer, mut opener) = (
                    Sealer::new(&key, mode.unwrap_or_default()),
                    Opener::new(&key),
                );
                let (mut wire, mut scratch) = (Vec::new(), Vec::new());
                let start = Instant::now();
                for _ in 0..iters {
                    wire.clear();
                    match mode {
                        Some(_) => {
                            let start = Sealer::begin(&mut wire);
                            wire.extend_from_slice(black_box(&unit));
                            sealer.finish(&mut wire, start).map_err(|_| "seal")?;
                            let f = opener.open(&wire, &mut scratch).map_err(|_| "open")?;
                            black_box(f);
                        }
                        None => {
                            wire.extend_from_slice(black_box(&unit));
                            scratch.clear();
                            scratch.extend_from_slice(&wire);
                            black_box(&scratch);
                        }
                    }
                }
                let frames = iters * per_record as u64;
                runs.push(start.elapsed().as_nanos() as f64 / frames as f64);
            }
            Ok(median_f64(&runs))
        };
        for (label, mode) in [
            ("encrypted", Protection::Encrypt),
            ("integrity only", Protection::Integrity),
        ] {
            let floor = time(None)?;
            let ns = time(Some(mode))?;
            t.rows.push(vec![
                frame.len().to_string(),
                per_record.to_string(),
                label.to_owned(),
                format!("{ns:.0}"),
                format!("{floor:.0}"),
                ratio(ns, floor),
                format!("{:.0}", frame.len() as f64 / ns * 1e3),
            ]);
        }
    }
    Ok(t)
}

fn rr_qcop(
    dir: &Path,
    base: &str,
    pl: &Placement,
    warmup: usize,
    iters: usize,
    nodelay: bool,
) -> Res<rr::Outcome> {
    let pair = Pair::start(dir, base, pl, nodelay, false)?;
    let args = role_args(&[("socket", &pair.b.socket.display())]);
    let mut responder = role("rr-responder", &args, pl.cpus(3))?;
    responder.expect("ready")?;
    pair.wait_remote("bench/rr")?;
    let args = role_args(&[
        ("socket", &pair.a.socket.display()),
        ("warmup", &warmup),
        ("iters", &iters),
    ]);
    let mut client = role("rr-client", &args, pl.cpus(0))?;
    let outcome = rr::drive(
        &mut client,
        &[pair.a.pid(), pair.b.pid()],
        responder.pid(),
        iters,
    )?;
    client.finish()?;
    pair.stop()?;
    responder.finish()?;
    Ok(outcome)
}

fn rr_floor(
    dir: &Path,
    pl: &Placement,
    warmup: usize,
    iters: usize,
    req_len: usize,
    reply_len: usize,
) -> Res<rr::Outcome> {
    let path = |name: &str| {
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p.display().to_string()
    };
    let (near, far) = (path("relay-a.sock"), path("relay-b.sock"));
    let mut relay_b = role(
        "tcp-relay",
        &role_args(&[("unix", &far), ("tag", &true), ("tcp", &"listen")]),
        pl.cpus(2),
    )?;
    let port = relay_b.expect("ready")?;
    let args = role_args(&[("connect", &far), ("reply-len", &reply_len)]);
    let mut responder = role("raw-rr-responder", &args, pl.cpus(3))?;
    responder.expect("ready")?;
    let mut relay_a = role(
        "tcp-relay",
        &role_args(&[("unix", &near), ("tag", &true), ("tcp", &port)]),
        pl.cpus(1),
    )?;
    relay_a.expect("ready")?;
    let args = role_args(&[
        ("connect", &near),
        ("req-len", &req_len),
        ("reply-len", &reply_len),
        ("warmup", &warmup),
        ("iters", &iters),
    ]);
    let mut client = role("raw-rr-client", &args, pl.cpus(0))?;
    let outcome = rr::drive(
        &mut client,
        &[relay_a.pid(), relay_b.pid()],
        responder.pid(),
        iters,
    )?;
    client.finish()?;
    relay_a.finish()?;
    relay_b.finish()?;
    responder.finish()?;
    Ok(outcome)
}

/// One streaming run across a link: (rate, messages per sendmsg, messages dropped).
fn stream_qcop(
    dir: &Path,
    base: &str,
    pl: &Placement,
    n: u64,
    nodelay: bool,
    integrity: bool,
) -> Res<(f64, f64, u64)> {
    let pair = Pair::start(dir, base, pl, nodelay, integrity)?;
    let args = role_args(&[("socket", &pair.b.socket.display()), ("count", &n)]);
    let mut sub = role("bc-sub", &args, pl.cpus(3))?;
    sub.expect("ready")?;
    pair.wait_remote("bench/bc")?;
    let args = role_args(&[("socket", &pair.a.socket.display()), ("count", &n)]);
    let mut publisher = role("bc-pub", &args, pl.cpus(0))?;
    let start: u64 = field(&publisher.expect("result")?, "start_ns")?;
    publisher.finish()?;
    let line = sub.expect("result")?;
    let (end, received): (u64, u64) = (field(&line, "end_ns")?, field(&line, "received")?);
    sub.finish()?;
    let report = stats(&pair.a)?;
    let link = report.links.first().ok_or("link: A reports no link")?;
    let get = |k: &str| link.get(k).unwrap_or(0);
    let dropped = get("dropped_buffer_full") + (n - received);
    let per_write = get("messages_out") as f64 / get("writes").max(1) as f64;
    pair.stop()?;
    Ok((
        received as f64 / ((end - start) as f64 / 1e9),
        per_write,
        dropped,
    ))
}

/// For reference: the same publisher and subscriber on one daemon.
fn stream_one_daemon(dir: &Path, base: &str, pl: &Placement, n: u64) -> Res<f64> {
    let daemon = Daemon::start(dir, "single", base, pl.cpus(1))?;
    let args = role_args(&[("socket", &daemon.socket.display()), ("count", &n)]);
    let mut sub = role("bc-sub", &args, pl.cpus(2))?;
    sub.expect("ready")?;
    let mut publisher = role("bc-pub", &args, pl.cpus(0))?;
    let start: u64 = field(&publisher.expect("result")?, "start_ns")?;
    publisher.finish()?;
    let end: u64 = field(&sub.expect("result")?, "end_ns")?;
    sub.finish()?;
    daemon.stop()?;
    Ok(n as f64 / ((end - start) as f64 / 1e9))
}

/// The floor with qcop's hops: writer → AF_UNIX → relay → TCP → relay → AF_UNIX → reader.
fn stream_relayed(dir: &Path, pl: &Placement, n: u64, len: usize) -> Res<f64> {
    let path = |name: &str| {
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p.display().to_string()
    };
    let (w, r) = (path("stream-w.sock"), path("stream-r.sock"));
    let mut relay_b = role(
        "tcp-relay",
        &role_args(&[("unix", &r), ("tag", &false), ("tcp", &"listen")]),
        pl.cpus(2),
    )?;
    let port = relay_b.expect("ready")?;
    let args = role_args(&[("connect", &r), ("count", &n), ("len", &len)]);
    let mut reader = role("raw-reader", &args, pl.cpus(3))?;
    reader.expect("ready")?;
    let args = role_args(&[
        ("listen", &w),
        ("readers", &1),
        ("count", &n),
        ("len", &len),
        ("streamed", &true),
    ]);
    let mut writer = role("raw-writer", &args, pl.cpus(0))?;
    writer.expect("ready")?;
    let relay_a = role(
        "tcp-relay",
        &role_args(&[("unix-connect", &w), ("tcp", &port)]),
        pl.cpus(1),
    )?;
    let start: u64 = field(&writer.expect("result")?, "start_ns")?;
    let end: u64 = field(&reader.expect("result")?, "end_ns")?;
    writer.finish()?;
    reader.finish()?;
    relay_a.finish()?;
    relay_b.finish()?;
    Ok(n as f64 / ((end - start) as f64 / 1e9))
}

fn stream_floor(pl: &Placement, n: u64, len: usize, buffered: bool, nodelay: bool) -> Res<f64> {
    let mut reader = role(
        "tcp-reader",
        &role_args(&[("count", &n), ("len", &len)]),
        pl.cpus(3),
    )?;
    let port = reader.expect("ready")?;
    let args = role_args(&[
        ("port", &port),
        ("count", &n),
        ("len", &len),
        ("buffered", &buffered),
        ("nodelay", &nodelay),
    ]);
    let mut writer = role("tcp-writer", &args, pl.cpus(0))?;
    let start: u64 = field(&writer.expect("result")?, "start_ns")?;
    writer.finish()?;
    let end: u64 = field(&reader.expect("result")?, "end_ns")?;
    reader.finish()?;
    Ok(n as f64 / ((end - start) as f64 / 1e9))
}

// ----- roles ---------------------------------------------------------------------------

/// `tcp-relay`: one end AF_UNIX, the other TCP, bytes forwarded both ways. AF_UNIX:
/// `--unix PATH` accepts one connection (that starts with a one-byte tag if `--tag true`),
/// `--unix-connect PATH` connects. TCP: `--tcp listen` accepts one connection on a free
/// loopback port (printed with `ready`), `--tcp PORT` connects to it.
pub fn tcp_relay_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let unix = match args.str("unix") {
        Ok(path) => Some(UnixListener::bind(path).ctx("bind relay")?),
        Err(_) => None,
    };
    let tcp = match args.str("tcp")? {
        "listen" => {
            let l = TcpListener::bind("127.0.0.1:0").ctx("bind tcp")?;
            println!("ready {}", l.local_addr().ctx("addr")?.port());
            l.accept().ctx("accept tcp")?.0
        }
        port => {
            let s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().ctx("--tcp")?))
                .ctx("connect tcp")?;
            println!("ready");
            s
        }
    };
    tcp.set_nodelay(true).ctx("nodelay")?;
    let local = match unix {
        Some(l) => {
            let (mut local, _) = l.accept().ctx("accept unix")?;
            if args.num("tag")? {
                let mut tag = [0u8; 1];
                local.read_exact(&mut tag).ctx("read tag")?;
            }
            local
        }
        None => UnixStream::connect(args.str("unix-connect")?).ctx("connect unix")?,
    };
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ctx("epoll")?;
    epoll
        .add(&local, EpollEvent::new(EpollFlags::EPOLLIN, 0))
        .ctx("epoll add")?;
    epoll
        .add(&tcp, EpollEvent::new(EpollFlags::EPOLLIN, 1))
        .ctx("epoll add")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = [EpollEvent::empty(); 2];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        for ev in &events[..n] {
            let got = if ev.data() == 0 {
                (&local).read(&mut buf)
            } else {
                (&tcp).read(&mut buf)
            }
            .ctx("relay read")?;
            if got == 0 {
                return Ok(());
            }
            if ev.data() == 0 {
                (&tcp).write_all(&buf[..got])
            } else {
                (&local).write_all(&buf[..got])
            }
            .ctx("relay write")?;
        }
    }
}

/// `tcp-reader`: accepts one TCP connection on a free port (printed with `ready`) and reads
/// `--count` records of `--len` bytes, checking their order.
pub fn tcp_reader_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let (n, len): (u64, usize) = (args.num("count")?, args.num("len")?);
    let l = TcpListener::bind("127.0.0.1:0").ctx("bind")?;
    println!("ready {}", l.local_addr().ctx("addr")?.port());
    let (mut s, _) = l.accept().ctx("accept")?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end, mut received) = (0usize, 0usize, 0u64);
    while received < n {
        if buf.len() - end < len {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let got = s.read(&mut buf[end..]).ctx("read")?;
        if got == 0 {
            return Err(format!("writer closed after {received} of {n} records"));
        }
        end += got;
        while end - start >= len {
            let seq = u64::from_be_bytes(buf[start + 4..start + 12].try_into().expect("8"));
            if seq != received {
                return Err(format!("record {received}: sequence {seq}"));
            }
            received += 1;
            start += len;
        }
    }
    println!("result end_ns={}", mono_ns());
    Ok(())
}

/// `tcp-writer`: connects to `--port` and writes `--count` records of `--len` bytes, through
/// a 64 KiB buffer (`--buffered true`) or with one `write` each; `--nodelay` sets Nagle off.
pub fn tcp_writer_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let (n, len): (u64, usize) = (args.num("count")?, args.num("len")?);
    let s = TcpStream::connect(("127.0.0.1", args.num::<u16>("port")?)).ctx("connect")?;
    s.set_nodelay(args.num("nodelay")?).ctx("nodelay")?;
    let capacity = if args.num("buffered")? { 64 * 1024 } else { 0 };
    let mut w = BufWriter::with_capacity(capacity, s);
    let mut record = vec![0u8; len];
    record[..4].copy_from_slice(&(len as u32 - 4).to_be_bytes());
    let start = mono_ns();
    for i in 0..n {
        record[4..12].copy_from_slice(&i.to_be_bytes());
        w.write_all(&record).ctx("write")?;
    }
    w.flush().ctx("flush")?;
    println!("result start_ns={start}");
    // Stay connected until the reader has everything (it closes first).
    let mut s = w.into_inner().map_err(|e| e.to_string())?;
    let _ = s.read(&mut [0u8; 1]);
    Ok(())
}

//! Group `rr`: request/response round trip with a 64-byte payload.
//!
//! Figure: client `Connection::call` → qcopd → responder (`recv` + `reply`) → qcopd → client.
//! Floor: the same three processes around a minimal epoll relay that forwards bytes between
//! two AF_UNIX stream sockets, with records of the same sizes as the qcop frames (a 4-byte
//! length prefix, the 64-byte payload at the end). Each round trip is timed in the client.

use crate::procs::{die_with_parent, role, wait_for_parent, Child, Daemon, Placement};
use crate::report::{bytes, grouped, latency_cells, ratio, us, Summary, Table};
use crate::util::{cpu_ns, mem_of, parse_list, role_args, Context, Res, RoleArgs};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use qcop::wire::Frame;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

const CHANNEL: &str = "bench/rr";
const REQUEST: &str = "ping(QByteArray)";
const REPLY: &str = "pong(QByteArray)";
const PAYLOAD: usize = 64;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Iteration counts.
pub struct Params {
    /// Round trips before timing starts, per process run.
    pub warmup: usize,
    /// Timed round trips in total, split over the rounds.
    pub iters: usize,
    /// Alternations of floor and figure (spreads slow drift of the VM over both).
    pub rounds: usize,
}

/// Wire sizes of the qcop `Call` and `Respond` frames carrying the payload.
pub fn wire_sizes() -> (usize, usize) {
    let payload = [0u8; PAYLOAD];
    let call = Frame::Call {
        seq: 1,
        timeout_ms: CALL_TIMEOUT.as_millis() as u32,
        channel: CHANNEL,
        message: REQUEST,
        payload: &payload,
    }
    .to_vec()
    .len();
    let respond = Frame::Respond {
        token: 1,
        error: false,
        message: REPLY,
        payload: &payload,
    }
    .to_vec()
    .len();
    (call, respond)
}

/// What the runs of one path measured.
#[derive(Default)]
pub struct Outcome {
    /// Round-trip times, ns.
    pub samples: Vec<u64>,
    /// CPU time over the timed round trips: client, middle (qcopd or relay), responder.
    pub cpu: [u64; 3],
    /// Peak RSS of qcopd (0 for the relay).
    pub middle_hwm: u64,
}

impl Outcome {
    /// Adds another run's figures.
    pub fn merge(&mut self, other: Outcome) {
        self.samples.extend(other.samples);
        for (a, b) in self.cpu.iter_mut().zip(other.cpu) {
            *a += b;
        }
        self.middle_hwm = self.middle_hwm.max(other.middle_hwm);
    }

    /// CPU µs per round trip of process `i`.
    pub fn cpu_us(&self, i: usize) -> f64 {
        self.cpu[i] as f64 / 1000.0 / self.samples.len().max(1) as f64
    }
}

/// Measures every placement: a latency table and a CPU-time table, one row each.
pub fn run(dir: &Path, config: &str, placements: &[Placement], p: &Params) -> Res<Vec<Table>> {
    let (req_len, reply_len) = wire_sizes();
    let per_round = p.iters.div_ceil(p.rounds);
    let mut latency = Table::new(
        "Request/response round trip, 64-byte payload (µs per round trip)",
        vec![
            "placement",
            "qcop median",
            "qcop p99",
            "floor median",
            "floor p99",
            "median ÷ floor",
            "p99 ÷ floor",
        ],
    );
    latency.notes.push(format!(
        "{} timed round trips per cell ({} run(s) of floor then qcop, each after {} \
         warm-up round trips), timed in the client with `Instant`. Floor: client ↔ epoll \
         relay ↔ responder over AF_UNIX, {req_len}-byte requests and {reply_len}-byte \
         replies (the qcop `Call` and `Respond` frame sizes). Target: median ≤ 1.30× floor \
         same-core.",
        grouped((per_round * p.rounds) as u64),
        p.rounds,
        grouped(p.warmup as u64)
    ));
    let mut cpu = Table::new(
        "CPU time per round trip (µs, from /proc/PID/schedstat over the timed round trips)",
        vec![
            "placement",
            "qcop client",
            "qcopd",
            "qcop responder",
            "floor client",
            "relay",
            "floor responder",
            "total ÷ floor",
            "qcopd peak RSS",
        ],
    );
    cpu.notes.push(
        "On-CPU time of each process (user + kernel, including the kernel's wake-up and \
         context-switch work charged to it) divided by the number of timed round trips. \
         Same-core, the three columns add up to about the round-trip latency."
            .into(),
    );
    for pl in placements {
        eprintln!("rr: {}", pl.label());
        let (mut figure, mut floor) = (Outcome::default(), Outcome::default());
        for _ in 0..p.rounds {
            floor.merge(floor_once(
                dir, pl, p.warmup, per_round, req_len, reply_len,
            )?);
            figure.merge(qcop_once(dir, config, pl, p.warmup, per_round, 0)?);
        }
        let q_cpu: Vec<f64> = (0..3).map(|i| figure.cpu_us(i)).collect();
        let f_cpu: Vec<f64> = (0..3).map(|i| floor.cpu_us(i)).collect();
        let hwm = figure.middle_hwm;
        let q = Summary::of(figure.samples).ok_or("rr: no qcop samples")?;
        let f = Summary::of(floor.samples).ok_or("rr: no floor samples")?;
        let mut lat = vec![pl.label()];
        lat.extend(latency_cells(&q, &f, us));
        latency.rows.push(lat);
        let mut row = vec![pl.label()];
        row.extend(q_cpu.iter().chain(&f_cpu).map(|v| format!("{v:.1}")));
        row.push(ratio(q_cpu.iter().sum(), f_cpu.iter().sum()));
        row.push(bytes(hwm));
        cpu.rows.push(row);
    }
    Ok(vec![latency, cpu])
}

/// Iteration counts of the `patterns` group.
pub struct PatternParams {
    /// Patterns held by the other connection.
    pub patterns: usize,
    /// As for `rr`.
    pub rr: Params,
}

/// Group `patterns`: the `rr` round trip while another connection holds patterns that
/// cannot match the channel, against the same round trip without them.
pub fn run_patterns(
    dir: &Path,
    config: &str,
    placements: &[Placement],
    p: &PatternParams,
) -> Res<Table> {
    let config = format!("{config}max_subscriptions_per_client = {}\n", p.patterns);
    let r = &p.rr;
    let per_round = r.iters.div_ceil(r.rounds);
    let mut table = Table::new(
        format!(
            "Round trip while another connection holds {} patterns that cannot match \
             (µs per round trip)",
            grouped(p.patterns as u64)
        ),
        vec![
            "placement",
            "with patterns median",
            "with patterns p99",
            "without median",
            "without p99",
            "median ÷ without",
            "p99 ÷ without",
        ],
    );
    table.notes.push(format!(
        "The `rr` round trip ({} timed round trips per cell, {} run(s) of each) with a third \
         connection subscribed to {} patterns of four shapes (`noise/N/*`, `*/noiseN`, \
         `?oiseN*`, `bench/[0-9]N`), none matching `{CHANNEL}`, against the same round trip \
         without it. Target: median ≤ 1.2× without.",
        grouped((per_round * r.rounds) as u64),
        r.rounds,
        grouped(p.patterns as u64)
    ));
    for pl in placements {
        eprintln!("patterns: {}", pl.label());
        let (mut with, mut without) = (Outcome::default(), Outcome::default());
        for _ in 0..r.rounds {
            without.merge(qcop_once(dir, &config, pl, r.warmup, per_round, 0)?);
            with.merge(qcop_once(
                dir, &config, pl, r.warmup, per_round, p.patterns,
            )?);
        }
        let w = Summary::of(with.samples).ok_or("patterns: no samples")?;
        let wo = Summary::of(without.samples).ok_or("patterns: no samples")?;
        let mut row = vec![pl.label()];
        row.extend(latency_cells(&w, &wo, us));
        table.rows.push(row);
    }
    Ok(table)
}

/// The non-matching pattern number `i` of the `patterns` group.
fn noise_pattern(i: usize) -> String {
    match i % 4 {
        0 => format!("noise/{i}/*"),
        1 => format!("*/noise{i}"),
        2 => format!("?oise{i}*"),
        _ => format!("bench/[0-9]{i}"),
    }
}

fn qcop_once(
    dir: &Path,
    config: &str,
    pl: &Placement,
    warmup: usize,
    iters: usize,
    patterns: usize,
) -> Res<Outcome> {
    let daemon = Daemon::start(dir, "rr", config, pl.cpus(1))?;
    let socket = daemon.socket.display().to_string();
    let holder = if patterns > 0 {
        let args = role_args(&[("socket", &socket), ("patterns", &patterns)]);
        let mut holder = role("rr-pattern-holder", &args, pl.cpus(2))?;
        holder.expect("ready")?;
        Some(holder)
    } else {
        None
    };
    let mut responder = role(
        "rr-responder",
        &role_args(&[("socket", &socket)]),
        pl.cpus(2),
    )?;
    responder.expect("ready")?;
    let args = role_args(&[("socket", &socket), ("warmup", &warmup), ("iters", &iters)]);
    let mut client = role("rr-client", &args, pl.cpus(0))?;
    let mut outcome = drive(&mut client, &[daemon.pid()], responder.pid(), iters)?;
    client.finish()?;
    outcome.middle_hwm = mem_of(daemon.pid())?.hwm;
    daemon.stop()?;
    responder.finish()?;
    if let Some(holder) = holder {
        holder.finish()?;
    }
    Ok(outcome)
}

fn floor_once(
    dir: &Path,
    pl: &Placement,
    warmup: usize,
    iters: usize,
    req_len: usize,
    reply_len: usize,
) -> Res<Outcome> {
    let path = dir.join("relay.sock");
    let _ = std::fs::remove_file(&path);
    let path = path.display().to_string();
    let mut relay = role("relay", &role_args(&[("listen", &path)]), pl.cpus(1))?;
    relay.expect("ready")?;
    let args = role_args(&[("connect", &path), ("reply-len", &reply_len)]);
    let mut responder = role("raw-rr-responder", &args, pl.cpus(2))?;
    responder.expect("ready")?;
    let args = role_args(&[
        ("connect", &path),
        ("req-len", &req_len),
        ("reply-len", &reply_len),
        ("warmup", &warmup),
        ("iters", &iters),
    ]);
    let mut client = role("raw-rr-client", &args, pl.cpus(0))?;
    let outcome = drive(&mut client, &[relay.pid()], responder.pid(), iters)?;
    client.finish()?;
    relay.finish()?;
    responder.finish()?;
    Ok(outcome)
}

/// Follows a client through warm-up and the timed round trips, sampling the CPU time of
/// the middle processes (added up) and the responder around the timed part (the client
/// waits for the parent at both points, so every process is idle and alive when sampled).
pub fn drive(client: &mut Child, middle: &[u32], responder: u32, iters: usize) -> Res<Outcome> {
    let middle_cpu = || -> Res<u64> { middle.iter().map(|&p| cpu_ns(p)).sum() };
    client.expect("warm")?;
    let before = [middle_cpu()?, cpu_ns(responder)?];
    client.send("go")?;
    let client_cpu: u64 = client.expect("cpu")?.parse().ctx("client cpu")?;
    let after = [middle_cpu()?, cpu_ns(responder)?];
    client.send("done")?;
    let samples = parse_list(&client.expect("samples")?)?;
    if samples.len() != iters {
        return Err(format!("rr: {} samples instead of {iters}", samples.len()));
    }
    Ok(Outcome {
        samples,
        cpu: [client_cpu, after[0] - before[0], after[1] - before[1]],
        middle_hwm: 0,
    })
}

/// Runs `round_trip` for the warm-up, then (after the parent's go-ahead) times `iters`
/// round trips; reports its own CPU time and waits for the parent before printing the
/// samples and closing its connection.
fn timed_loop(
    warmup: usize,
    iters: usize,
    mut round_trip: impl FnMut(usize) -> Res<()>,
) -> Res<()> {
    for i in 0..warmup {
        round_trip(i)?;
    }
    println!("warm");
    wait_for_parent();
    let mut samples = Vec::with_capacity(iters);
    let cpu0 = cpu_ns(0)?;
    for i in warmup..warmup + iters {
        let t0 = Instant::now();
        round_trip(i)?;
        samples.push(t0.elapsed().as_nanos() as u64);
    }
    println!("cpu {}", cpu_ns(0)? - cpu0);
    wait_for_parent();
    print_samples(&samples);
    Ok(())
}

fn print_samples(samples: &[u64]) {
    let text: Vec<String> = samples.iter().map(u64::to_string).collect();
    println!("samples {}", text.join(","));
}

// ----- roles ---------------------------------------------------------------------------

/// `rr-client`: times `call` round trips and prints them.
pub fn client_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let socket = args.str("socket")?;
    let (warmup, iters): (usize, usize) = (args.num("warmup")?, args.num("iters")?);
    let mut conn = crate::procs::connect_retry(Path::new(socket), "rr-client", CALL_TIMEOUT)?;
    let mut payload = [0u8; PAYLOAD];
    timed_loop(warmup, iters, |i| {
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let reply = conn
            .call(CHANNEL, REQUEST, &payload, CALL_TIMEOUT)
            .ctx(format_args!("call {i}"))?;
        if reply.message != REPLY || reply.data != payload {
            return Err(format!("call {i}: wrong reply {reply:?}"));
        }
        Ok(())
    })
}

/// `rr-responder`: answers every call with its own payload until qcopd goes away.
pub fn responder_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let socket = args.str("socket")?;
    let mut conn = crate::procs::connect_retry(Path::new(socket), "rr-responder", CALL_TIMEOUT)?;
    conn.subscribe(CHANNEL).ctx("subscribe")?;
    println!("ready");
    loop {
        let msg = match conn.recv() {
            Ok(m) => m,
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(format!("recv: {e}")),
        };
        match conn.reply(&msg, REPLY, &msg.data) {
            Ok(()) => {}
            Err(e) if e.is_disconnect() => return Ok(()),
            Err(e) => return Err(format!("reply: {e}")),
        }
    }
}

/// `rr-pattern-holder`: subscribes to `--patterns` patterns that cannot match the `rr`
/// channel, says `ready`, and holds them until qcopd goes away.
pub fn pattern_holder_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let socket = args.str("socket")?;
    let n: usize = args.num("patterns")?;
    let mut conn = crate::procs::connect_retry(Path::new(socket), "rr-holder", CALL_TIMEOUT)?;
    for i in 0..n {
        conn.subscribe(&noise_pattern(i))
            .ctx(format_args!("subscribe {i}"))?;
    }
    println!("ready");
    match conn.recv() {
        Ok(m) => Err(format!("a pattern matched {:?}", m.channel)),
        Err(e) if e.is_disconnect() => Ok(()),
        Err(e) => Err(format!("recv: {e}")),
    }
}

/// `relay`: the floor's middle process. Accepts the responder (tag `R`) and the client
/// (tag `C`), then forwards whatever one sends to the other: one `epoll_wait`, one `read`
/// and one `write` per hop, the least a user-space router can do.
pub fn relay_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let listener = UnixListener::bind(args.str("listen")?).ctx("bind relay")?;
    println!("ready");
    let (mut client, mut responder) = (None, None);
    while client.is_none() || responder.is_none() {
        let (mut s, _) = listener.accept().ctx("accept")?;
        let mut tag = [0u8; 1];
        s.read_exact(&mut tag).ctx("read tag")?;
        match tag[0] {
            b'C' => client = Some(s),
            b'R' => responder = Some(s),
            t => return Err(format!("relay: unknown tag {t}")),
        }
    }
    let ends = [client.expect("set above"), responder.expect("set above")];
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ctx("epoll")?;
    for (i, s) in ends.iter().enumerate() {
        epoll
            .add(s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .ctx("epoll add")?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = [EpollEvent::empty(); 2];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        for ev in &events[..n] {
            let from = ev.data() as usize;
            let got = (&ends[from]).read(&mut buf).ctx("relay read")?;
            if got == 0 {
                return Ok(()); // the client is done
            }
            (&ends[1 - from])
                .write_all(&buf[..got])
                .ctx("relay write")?;
        }
    }
}

/// `raw-rr-responder`: answers each length-prefixed request with a reply record of
/// `--reply-len` bytes ending with the request's payload.
pub fn raw_responder_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let reply_len: usize = args.num("reply-len")?;
    let mut stream = UnixStream::connect(args.str("connect")?).ctx("connect relay")?;
    stream.write_all(b"R").ctx("write tag")?;
    println!("ready");
    let mut input = BufReader::new(stream.try_clone().ctx("clone")?);
    let mut reply = vec![0u8; reply_len];
    reply[..4].copy_from_slice(&(reply_len as u32 - 4).to_be_bytes());
    let mut body = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        body.resize(u32::from_be_bytes(len) as usize, 0);
        input.read_exact(&mut body).ctx("read body")?;
        let payload = &body[body.len() - PAYLOAD..];
        reply[reply_len - PAYLOAD..].copy_from_slice(payload);
        stream.write_all(&reply).ctx("write reply")?;
    }
}

/// `raw-rr-client`: the floor's client; times write-request / read-reply round trips.
pub fn raw_client_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let (req_len, reply_len): (usize, usize) = (args.num("req-len")?, args.num("reply-len")?);
    let (warmup, iters): (usize, usize) = (args.num("warmup")?, args.num("iters")?);
    let mut stream = UnixStream::connect(args.str("connect")?).ctx("connect relay")?;
    stream.write_all(b"C").ctx("write tag")?;
    let mut input = BufReader::new(stream.try_clone().ctx("clone")?);
    let mut req = vec![0u8; req_len];
    req[..4].copy_from_slice(&(req_len as u32 - 4).to_be_bytes());
    let mut reply = vec![0u8; reply_len];
    timed_loop(warmup, iters, |i| {
        req[req_len - PAYLOAD..][..8].copy_from_slice(&(i as u64).to_be_bytes());
        stream.write_all(&req).ctx("write request")?;
        input.read_exact(&mut reply).ctx("read reply")?;
        let len_ok = reply[..4] == (reply_len as u32 - 4).to_be_bytes();
        if !len_ok || reply[reply_len - PAYLOAD..] != req[req_len - PAYLOAD..] {
            return Err(format!("round trip {i}: wrong reply"));
        }
        Ok(())
    })
}

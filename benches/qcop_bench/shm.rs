//! Group `shm`: shared-memory streams against their floors, and against the daemon path.
//!
//! - Ping-pong, 64-byte payload: a ping process publishes on stream `bench/ping`, a pong
//!   process maps it and answers on `bench/pong`; the ping process times round trips (in
//!   batches, so the clock's own cost stays out of the sub-microsecond figures).
//!   *Spinning* subscribers (`WaitMode::Spin`) against a raw atomic-word ping-pong in a shared
//!   mapping, on split CPUs; *sleeping* subscribers (`WaitMode::Sleep`, futex) against a raw
//!   futex ping-pong, same-core and split. The daemon path (two `Connection`s through qcopd)
//!   is measured in the same run for comparison.
//! - Streaming, 64 B and 4 KiB: one publisher writes N messages in place (`loan` + copy of
//!   the payload + `commit`), 1 or 4 subscribers copy each out (`recv`); rate = N ×
//!   subscribers ÷ (last subscriber done − publisher start). Floor: memcpy bandwidth of the
//!   same message size over a ring-sized region, in one process. The daemon path (`send` /
//!   `recv` through qcopd) in the same run.

use crate::procs::{collect_readers, die_with_parent, role, Child, Daemon, Placement};
use crate::report::{grouped, latency_cells, median_f64, ratio, us, Summary, Table};
use crate::util::{field, mono_ns, parse_list, role_args, Context, Res, RoleArgs};
use qcop::shm::futex;
use qcop::shm::map::{Access, Mapping};
use qcop::shm::{Policy, Publisher, StreamError, StreamOptions, Subscriber, WaitMode};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PING: &str = "bench/ping";
const PONG: &str = "bench/pong";
const STREAM: &str = "bench/stream";
const MESSAGE: &str = "data(QByteArray)";
const PAYLOAD: usize = 64;
/// Anything slower than this is a failure, not a figure.
const STALL: Duration = Duration::from_secs(20);
/// Slots of the streaming ring (the ping-pong rings need few).
const STREAM_SLOTS: u32 = 256;
/// The ping value that tells the pong process to stop (raw floors).
const STOP: u32 = u32::MAX;

/// Iteration counts.
pub struct Params {
    /// Timed round trips with spinning subscribers, per run.
    pub spin_iters: usize,
    /// Timed round trips with sleeping subscribers, per run.
    pub sleep_iters: usize,
    /// Messages streamed per run, 64-byte messages.
    pub n_small: u64,
    /// Messages streamed per run, 4 KiB messages.
    pub n_large: u64,
    /// Runs per cell (floor and figure alternate); medians are reported.
    pub rounds: usize,
}

/// The transport of one ping-pong run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Shared-memory streams.
    Shm,
    /// The floor: two atomic words in a shared mapping.
    Raw,
    /// Two `Connection`s through qcopd.
    Uds,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Shm => "shm",
            Transport::Raw => "raw",
            Transport::Uds => "uds",
        }
    }

    fn parse(s: &str) -> Res<Transport> {
        match s {
            "shm" => Ok(Transport::Shm),
            "raw" => Ok(Transport::Raw),
            "uds" => Ok(Transport::Uds),
            o => Err(format!("unknown transport {o:?}")),
        }
    }
}

/// Measures every placement; returns the ping-pong and streaming tables.
pub fn run(dir: &Path, config: &str, placements: &[Placement], p: &Params) -> Res<Vec<Table>> {
    let mut spin = Table::new(
        "Shared-memory ping-pong, 64-byte payload, spinning subscribers (ns per round trip)",
        vec![
            "placement",
            "shm median",
            "shm p99",
            "raw atomic median",
            "raw atomic p99",
            "median ÷ floor",
            "p99 ÷ floor",
        ],
    );
    spin.notes.push(format!(
        "{} timed round trips per run, in batches of {SPIN_BATCH} (each sample is a batch's \
         mean), {} run(s) of floor then figure. Figure: ping publishes 64 bytes in place on \
         one stream, pong (`WaitMode::Spin`) borrows it and publishes it back on another; \
         both streams lossless. Floor: the same two processes incrementing and spinning on two \
         atomic words (on separate 64-byte lines) of a shared mapping. Only measured split \
         (a spinner sharing its CPU with its peer waits for the scheduler). Target: median ≤ \
         2× floor.",
        grouped(p.spin_iters as u64),
        p.rounds
    ));
    let mut sleep = Table::new(
        "Shared-memory ping-pong, 64-byte payload, sleeping subscribers (µs per round trip)",
        vec![
            "placement",
            "shm median",
            "shm p99",
            "raw futex median",
            "raw futex p99",
            "median ÷ floor",
            "p99 ÷ floor",
            "daemon path median",
            "daemon ÷ shm",
        ],
    );
    sleep.notes.push(format!(
        "{} timed round trips per run, in batches of {SLEEP_BATCH}, {} run(s) of floor, \
         figure and daemon path. Figure: as above with `WaitMode::Sleep` (futex). Floor: two \
         processes ping-ponging two words of a shared mapping with `FUTEX_WAKE` after each \
         store and `FUTEX_WAIT` while the other's word is unchanged. Daemon path: the same \
         64 bytes as `send`/`recv` on two channels through qcopd (three processes; split puts \
         qcopd on the other CPU). Target: median ≤ 1.3× floor.",
        grouped(p.sleep_iters as u64),
        p.rounds
    ));
    let mut stream = Table::new(
        "Shared-memory streaming throughput",
        vec![
            "placement",
            "size",
            "subscribers",
            "shm msg/s",
            "shm GB/s",
            "memcpy GB/s",
            "shm ÷ memcpy",
            "daemon msg/s",
            "shm ÷ daemon",
        ],
    );
    stream.notes.push(format!(
        "N = {} 64-byte or {} 4 KiB messages per run (the daemon path: a quarter of that), \
         median of {} run(s). shm: one publisher writing each message in place (a copy of \
         the payload into the loaned slot) into a lossless ring of {STREAM_SLOTS} slots, \
         subscribers (`WaitMode::Sleep`) copying each out with `recv`; GB/s counts payload \
         bytes delivered to all subscribers. memcpy: one process copying messages of the same \
         size between two ring-sized buffers (the bandwidth a copy in and a copy out compete \
         for). Daemon path: `send` / `recv` of the same payloads through qcopd. Subscribers are \
         placed one hop from the publisher (split: the other CPU).",
        grouped(p.n_small),
        grouped(p.n_large),
        p.rounds
    ));
    for pl in placements {
        let split = pl.label().starts_with("split");
        if split {
            eprintln!("shm: spinning ping-pong, {}", pl.label());
            let (mut fig, mut floor) = (Vec::new(), Vec::new());
            for _ in 0..p.rounds {
                floor.extend(ping_pong(
                    dir,
                    config,
                    pl,
                    Transport::Raw,
                    true,
                    p.spin_iters,
                )?);
                fig.extend(ping_pong(
                    dir,
                    config,
                    pl,
                    Transport::Shm,
                    true,
                    p.spin_iters,
                )?);
            }
            let (f, q) = (summary(floor)?, summary(fig)?);
            let mut row = vec![pl.label()];
            row.extend(latency_cells(&q, &f, ns));
            spin.rows.push(row);
        }
        eprintln!("shm: sleeping ping-pong, {}", pl.label());
        let (mut fig, mut floor, mut uds) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..p.rounds {
            floor.extend(ping_pong(
                dir,
                config,
                pl,
                Transport::Raw,
                false,
                p.sleep_iters,
            )?);
            fig.extend(ping_pong(
                dir,
                config,
                pl,
                Transport::Shm,
                false,
                p.sleep_iters,
            )?);
            uds.extend(ping_pong(
                dir,
                config,
                pl,
                Transport::Uds,
                false,
                p.sleep_iters,
            )?);
        }
        let (f, q, u) = (summary(floor)?, summary(fig)?, summary(uds)?);
        let mut row = vec![pl.label()];
        row.extend(latency_cells(&q, &f, us));
        row.extend([us(u.p50), ratio(u.p50 as f64, q.p50 as f64)]);
        sleep.rows.push(row);
        for (size, n) in [(64usize, p.n_small), (4096, p.n_large)] {
            for subs in [1usize, 4] {
                eprintln!("shm: streaming {size} B 1→{subs}, {}", pl.label());
                let (mut shm, mut copy, mut daemon) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..p.rounds {
                    copy.push(memcpy_once(pl, size, n * subs as u64)?);
                    shm.push(stream_once(dir, config, pl, Transport::Shm, size, subs, n)?);
                    daemon.push(stream_once(
                        dir,
                        config,
                        pl,
                        Transport::Uds,
                        size,
                        subs,
                        n / 4,
                    )?);
                }
                let (s, c, d) = (median_f64(&shm), median_f64(&copy), median_f64(&daemon));
                let gbs = s * size as f64 / 1e9;
                stream.rows.push(vec![
                    pl.label(),
                    if size == 64 {
                        "64 B".into()
                    } else {
                        "4 KiB".into()
                    },
                    subs.to_string(),
                    grouped(s as u64),
                    format!("{gbs:.2}"),
                    format!("{:.2}", c / 1e9),
                    ratio(gbs * 1e9, c),
                    grouped(d as u64),
                    ratio(s, d),
                ]);
            }
        }
    }
    let mut tables = Vec::new();
    if !spin.rows.is_empty() {
        tables.push(spin);
    }
    tables.push(sleep);
    tables.push(stream);
    Ok(tables)
}

/// Round trips per sample with spinning subscribers (a clock read costs ~20 ns).
const SPIN_BATCH: usize = 256;
/// Round trips per sample with sleeping subscribers.
const SLEEP_BATCH: usize = 8;

fn summary(samples: Vec<u64>) -> Res<Summary> {
    Summary::of(samples).ok_or_else(|| "shm: no samples".to_owned())
}

fn ns(v: u64) -> String {
    v.to_string()
}

/// One ping-pong run; returns the per-round-trip time of each batch, in ns.
fn ping_pong(
    dir: &Path,
    config: &str,
    pl: &Placement,
    transport: Transport,
    spin: bool,
    iters: usize,
) -> Res<Vec<u64>> {
    let batch = if spin { SPIN_BATCH } else { SLEEP_BATCH };
    let iters = iters.div_ceil(batch) * batch;
    let warmup = (iters / 10).max(batch);
    let mode = if spin { "spin" } else { "sleep" };
    let daemon = match transport {
        Transport::Raw => None,
        // qcopd is one hop from ping for the daemon path; idle (setting up only) for shm.
        _ => Some(Daemon::start(dir, "shm", config, pl.cpus(1))?),
    };
    let path = match &daemon {
        Some(d) => d.socket.display().to_string(),
        None => {
            let path = dir.join("pingpong.shared");
            std::fs::write(&path, vec![0u8; 4096]).ctx("create the shared file")?;
            path.display().to_string()
        }
    };
    // The pong side: the other CPU, except for the daemon path (ping, qcopd, pong).
    let pong_hop = if transport == Transport::Uds { 2 } else { 1 };
    let common = |side: &str| {
        role_args(&[
            ("transport", &transport.name()),
            ("side", &side),
            ("mode", &mode),
            ("path", &path),
            ("warmup", &warmup),
            ("iters", &iters),
            ("batch", &batch),
        ])
    };
    let mut pong = role("shm-pp", &common("pong"), pl.cpus(pong_hop))?;
    pong.expect("ready")?;
    let mut ping = role("shm-pp", &common("ping"), pl.cpus(0))?;
    let samples = parse_list(&ping.expect("samples")?)?;
    ping.finish()?;
    pong.finish()?;
    if let Some(d) = daemon {
        d.stop()?;
    }
    if samples.len() != iters / batch {
        return Err(format!("shm ping-pong: {} samples", samples.len()));
    }
    Ok(samples)
}

/// Memcpy bandwidth (bytes/s) for messages of `size`, `count` copies.
fn memcpy_once(pl: &Placement, size: usize, count: u64) -> Res<f64> {
    let args = role_args(&[("size", &size), ("count", &count)]);
    let mut c = role("shm-memcpy", &args, pl.cpus(0))?;
    let rate: f64 = field(&c.expect("result")?, "bytes_per_s")?;
    c.finish()?;
    Ok(rate)
}

/// One streaming run; returns messages delivered per second (over all subscribers).
fn stream_once(
    dir: &Path,
    config: &str,
    pl: &Placement,
    transport: Transport,
    size: usize,
    subs: usize,
    n: u64,
) -> Res<f64> {
    let daemon = Daemon::start(dir, "shm", config, pl.cpus(1))?;
    let socket = daemon.socket.display().to_string();
    let args = |role: &str| {
        role_args(&[
            ("transport", &transport.name()),
            ("socket", &socket),
            ("size", &size),
            ("count", &n),
            ("subscribers", &subs),
            ("role", &role),
        ])
    };
    // Subscribers one hop away (shm: the other CPU; the daemon path: after qcopd).
    let sub_hop = if transport == Transport::Uds { 2 } else { 1 };
    let mut publisher = None;
    if transport == Transport::Shm {
        let mut p = role("shm-stream", &args("pub"), pl.cpus(0))?;
        p.expect("open")?;
        publisher = Some(p);
    }
    let mut readers: Vec<Child> = Vec::new();
    for _ in 0..subs {
        let mut c = role("shm-stream", &args("sub"), pl.cpus(sub_hop))?;
        c.expect("ready")?;
        readers.push(c);
    }
    let mut publisher = match publisher {
        Some(p) => p,
        None => role("shm-stream", &args("pub"), pl.cpus(0))?,
    };
    let start: u64 = field(&publisher.expect("result")?, "start_ns")?;
    publisher.finish()?;
    let (end, received, lost) = collect_readers(readers)?;
    daemon.stop()?;
    if received + lost != n * subs as u64 {
        return Err(format!(
            "shm streaming ({}): {received} received + {lost} lost != {n} × {subs}",
            transport.name()
        ));
    }
    Ok(received as f64 / ((end - start) as f64 / 1e9))
}

// ----- roles ---------------------------------------------------------------------------

/// `shm-pp`: one side of a ping-pong (`--side ping|pong`) over `--transport`.
pub fn ping_pong_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let transport = Transport::parse(args.str("transport")?)?;
    let ping = args.str("side")? == "ping";
    let spin = args.str("mode")? == "spin";
    let path = args.str("path")?;
    let (warmup, iters, batch): (usize, usize, usize) =
        (args.num("warmup")?, args.num("iters")?, args.num("batch")?);
    if !ping && transport != Transport::Uds {
        // Each side opens its own stream, then maps the other's: no order needed.
        println!("ready");
    }
    let mut end: Box<dyn PingPong> = match transport {
        Transport::Shm => Box::new(ShmEnd::open(path, ping, spin)?),
        Transport::Raw => Box::new(RawEnd::open(path, ping, spin)?),
        Transport::Uds => Box::new(UdsEnd::open(path, ping)?),
    };
    if !ping {
        if transport == Transport::Uds {
            println!("ready"); // subscribed: ping may start
        }
        return end.serve();
    }
    for i in 0..warmup {
        end.round_trip(i as u32 + 1)?;
    }
    let mut samples = Vec::with_capacity(iters / batch);
    let mut i = warmup as u32 + 1;
    for _ in 0..iters / batch {
        let t0 = Instant::now();
        for _ in 0..batch {
            end.round_trip(i)?;
            i += 1;
        }
        samples.push(t0.elapsed().as_nanos() as u64 / batch as u64);
    }
    end.stop()?;
    let text: Vec<String> = samples.iter().map(u64::to_string).collect();
    println!("samples {}", text.join(","));
    Ok(())
}

/// One end of a ping-pong.
trait PingPong {
    /// Ping: sends `i` and waits for it to come back.
    fn round_trip(&mut self, i: u32) -> Res<()>;
    /// Ping: tells pong to stop.
    fn stop(&mut self) -> Res<()>;
    /// Pong: echoes until told to stop.
    fn serve(&mut self) -> Res<()>;
}

/// Shared-memory streams: publishes on its own stream, maps the other's.
struct ShmEnd {
    publisher: Publisher,
    subscriber: Subscriber,
}

impl ShmEnd {
    fn open(socket: &str, ping: bool, spin: bool) -> Res<ShmEnd> {
        let opts = qcop::ConnectOptions::new()
            .socket(socket)
            .timeout(STALL)
            .name("shm-pp");
        let (mine, theirs) = if ping { (PING, PONG) } else { (PONG, PING) };
        let stream = StreamOptions::new()
            .slot_size(PAYLOAD as u32)
            .slots(16)
            .policy(Policy::Lossless);
        let mut publisher = Publisher::open(&opts, mine, MESSAGE, &stream).ctx("open stream")?;
        let mut subscriber = Subscriber::open_wait(&opts, theirs, STALL).ctx("map stream")?;
        let mode = if spin {
            WaitMode::Spin
        } else {
            WaitMode::Sleep
        };
        subscriber.set_wait_mode(mode);
        publisher.set_wait_mode(mode);
        let started = Instant::now();
        while publisher.subscribers() < 1 {
            if started.elapsed() > STALL {
                return Err("the other side never mapped the stream".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(ShmEnd {
            publisher,
            subscriber,
        })
    }

    fn publish(&mut self, payload: &[u8]) -> Res<()> {
        let mut loan = self.publisher.loan(STALL).ctx("loan")?;
        loan[..PAYLOAD].copy_from_slice(payload);
        loan.commit(PAYLOAD);
        Ok(())
    }
}

impl PingPong for ShmEnd {
    fn round_trip(&mut self, i: u32) -> Res<()> {
        let mut payload = [0u8; PAYLOAD];
        payload[..4].copy_from_slice(&i.to_le_bytes());
        self.publish(&payload)?;
        let sample = self.subscriber.borrow(STALL).ctx("borrow")?;
        let back = u32::from_le_bytes(sample[..4].try_into().expect("4 bytes"));
        sample.release().ctx("release")?;
        if back != i {
            return Err(format!("round trip {i}: got {back}"));
        }
        Ok(())
    }

    fn stop(&mut self) -> Res<()> {
        let mut payload = [0u8; PAYLOAD];
        payload[..4].copy_from_slice(&STOP.to_le_bytes());
        self.publish(&payload)
    }

    fn serve(&mut self) -> Res<()> {
        loop {
            let mut payload = [0u8; PAYLOAD];
            match self.subscriber.borrow(STALL) {
                Ok(sample) => {
                    payload.copy_from_slice(&sample[..PAYLOAD]);
                    sample.release().ctx("release")?;
                }
                Err(StreamError::Ended) => return Ok(()),
                Err(e) => return Err(format!("borrow: {e}")),
            }
            if payload[..4] == STOP.to_le_bytes() {
                return Ok(());
            }
            self.publish(&payload)?;
        }
    }
}

/// The floor: two 32-bit words of a shared mapping, ping's at 0 and pong's at 64.
struct RawEnd {
    map: Mapping,
    ping: bool,
    spin: bool,
}

impl RawEnd {
    fn open(path: &str, ping: bool, spin: bool) -> Res<RawEnd> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ctx("open the shared file")?;
        let map = Mapping::map(std::os::fd::AsFd::as_fd(&file), Access::ReadWrite)
            .ctx("map the shared file")?;
        Ok(RawEnd { map, ping, spin })
    }

    fn word(&self, pong: bool) -> &AtomicU32 {
        self.map
            .atomic_u32(if pong { 64 } else { 0 })
            .expect("inside the 4 KiB mapping")
    }

    /// Stores `v` in our word (and wakes the other side when sleeping).
    fn put(&self, v: u32) {
        let w = self.word(!self.ping);
        w.store(v, Ordering::Release);
        if !self.spin {
            futex::wake(w, 1);
        }
    }

    /// Waits until the other side's word differs from `old`; returns it.
    fn take(&self, old: u32) -> u32 {
        let w = self.word(self.ping);
        loop {
            let v = w.load(Ordering::Acquire);
            if v != old {
                return v;
            }
            if self.spin {
                std::hint::spin_loop();
            } else {
                futex::wait(w, old, Some(STALL));
            }
        }
    }
}

impl PingPong for RawEnd {
    fn round_trip(&mut self, i: u32) -> Res<()> {
        self.put(i);
        let back = self.take(i - 1);
        if back != i {
            return Err(format!("raw round trip {i}: got {back}"));
        }
        Ok(())
    }

    fn stop(&mut self) -> Res<()> {
        self.put(STOP);
        Ok(())
    }

    fn serve(&mut self) -> Res<()> {
        let mut last = 0;
        loop {
            let v = self.take(last);
            if v == STOP {
                return Ok(());
            }
            self.put(v);
            last = v;
        }
    }
}

/// The daemon path: `send` on one channel, `recv` on the other.
struct UdsEnd {
    conn: qcop::Connection,
    ping: bool,
}

impl UdsEnd {
    fn open(socket: &str, ping: bool) -> Res<UdsEnd> {
        let mut conn = crate::procs::connect_retry(Path::new(socket), "shm-pp", STALL)?;
        let (mine, theirs) = if ping { (PING, PONG) } else { (PONG, PING) };
        conn.subscribe(theirs).ctx("subscribe")?;
        if ping {
            // The pong side subscribed before saying ready; wait until the daemon knows.
            while !conn.is_registered(mine).ctx("registered")? {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(UdsEnd { conn, ping })
    }

    fn send(&mut self, payload: &[u8]) -> Res<()> {
        let channel = if self.ping { PING } else { PONG };
        self.conn.send(channel, MESSAGE, payload).ctx("send")
    }
}

impl PingPong for UdsEnd {
    fn round_trip(&mut self, i: u32) -> Res<()> {
        let mut payload = [0u8; PAYLOAD];
        payload[..4].copy_from_slice(&i.to_le_bytes());
        self.send(&payload)?;
        let m = self
            .conn
            .recv_timeout(STALL)
            .ctx("recv")?
            .ok_or("round trip stalled")?;
        if m.data[..4] != payload[..4] {
            return Err(format!("daemon round trip {i}: wrong echo"));
        }
        Ok(())
    }

    fn stop(&mut self) -> Res<()> {
        let mut payload = [0u8; PAYLOAD];
        payload[..4].copy_from_slice(&STOP.to_le_bytes());
        self.send(&payload)?;
        self.conn.flush().ctx("flush")
    }

    fn serve(&mut self) -> Res<()> {
        loop {
            let m = match self.conn.recv_timeout(STALL) {
                Ok(Some(m)) => m,
                Ok(None) => return Err("ping went quiet".into()),
                Err(e) if e.is_disconnect() => return Ok(()),
                Err(e) => return Err(format!("recv: {e}")),
            };
            if m.data[..4] == STOP.to_le_bytes() {
                return Ok(());
            }
            self.send(&m.data)?;
        }
    }
}

/// `shm-memcpy`: copies `--count` messages of `--size` bytes between two buffers of
/// `STREAM_SLOTS` messages each; prints the bandwidth.
pub fn memcpy_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let (size, count): (usize, u64) = (args.num("size")?, args.num("count")?);
    let slots = STREAM_SLOTS as usize;
    let src: Vec<u8> = (0..size * slots).map(|i| i as u8).collect();
    let mut dst = vec![0u8; size * slots];
    let start = Instant::now();
    for i in 0..count as usize {
        let at = (i % slots) * size;
        dst[at..at + size].copy_from_slice(std::hint::black_box(&src[at..at + size]));
        std::hint::black_box(&mut dst);
    }
    let secs = start.elapsed().as_secs_f64();
    println!("result bytes_per_s={}", (count as f64 * size as f64) / secs);
    Ok(())
}

/// `shm-stream`: a streaming publisher (`--role pub`) or subscriber (`--role sub`).
pub fn stream_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let transport = Transport::parse(args.str("transport")?)?;
    let socket = args.str("socket")?;
    let (size, n, subs): (usize, u64, usize) = (
        args.num("size")?,
        args.num("count")?,
        args.num("subscribers")?,
    );
    let publisher = args.str("role")? == "pub";
    let opts = qcop::ConnectOptions::new()
        .socket(socket)
        .timeout(STALL)
        .name("shm-stream");
    match (transport, publisher) {
        (Transport::Shm, true) => {
            let stream = StreamOptions::new()
                .slot_size(size as u32)
                .slots(STREAM_SLOTS)
                .policy(Policy::Lossless);
            let mut p = Publisher::open(&opts, STREAM, MESSAGE, &stream).ctx("open stream")?;
            println!("open");
            let waiting = Instant::now();
            while p.subscribers() < subs {
                if waiting.elapsed() > STALL {
                    return Err("subscribers never mapped the stream".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut src = vec![0x5au8; size];
            let start = mono_ns();
            for i in 0..n {
                src[..8].copy_from_slice(&i.to_le_bytes());
                let mut loan = p.loan(STALL).ctx(format_args!("loan {i}"))?;
                loan[..size].copy_from_slice(&src);
                loan.commit(size);
            }
            println!("result start_ns={start}");
            Ok(())
        }
        (Transport::Shm, false) => {
            let mut s = Subscriber::open_wait(&opts, STREAM, STALL).ctx("map stream")?;
            println!("ready");
            let (mut received, mut buf) = (0u64, Vec::new());
            while received + s.lost() < n {
                match s.recv(&mut buf, STALL) {
                    Ok(_) => {}
                    Err(StreamError::Ended) => break,
                    Err(e) => return Err(format!("recv after {received}: {e}")),
                }
                let seq = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                if seq != received + s.lost() || buf.len() != size {
                    return Err(format!("message {seq} when {received} was due"));
                }
                received += 1;
            }
            println!(
                "result end_ns={} received={received} lost={}",
                mono_ns(),
                s.lost()
            );
            Ok(())
        }
        (_, true) => {
            let mut conn = crate::procs::connect_retry(Path::new(socket), "shm-stream", STALL)?;
            while (conn.registered_count(STREAM).ctx("registered")? as usize) < subs {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut src = vec![0x5au8; size];
            let start = mono_ns();
            for i in 0..n {
                src[..8].copy_from_slice(&i.to_le_bytes());
                conn.send(STREAM, MESSAGE, &src)
                    .ctx(format_args!("send {i}"))?;
            }
            conn.flush().ctx("flush")?;
            println!("result start_ns={start}");
            Ok(())
        }
        (_, false) => {
            let mut conn = crate::procs::connect_retry(Path::new(socket), "shm-stream", STALL)?;
            conn.subscribe(STREAM).ctx("subscribe")?;
            println!("ready");
            let mut received = 0u64;
            while received + conn.lost() < n {
                let m = conn
                    .recv_timeout(STALL)
                    .ctx("recv")?
                    .ok_or_else(|| format!("stalled after {received} of {n}"))?;
                if m.data.len() != size {
                    return Err("wrong message size".into());
                }
                received += 1;
            }
            println!(
                "result end_ns={} received={received} lost={}",
                mono_ns(),
                conn.lost()
            );
            Ok(())
        }
    }
}

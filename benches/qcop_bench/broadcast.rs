//! Group `broadcast`: one publisher to 1 and to 8 subscribers, 64-byte payloads.
//!
//! Figure: the publisher `send`s N messages through a 64 KiB send buffer
//! (`ConnectOptions::send_buffer`) then `flush`es; each subscriber counts with the borrowing
//! receive (`recv_timeout_borrowed`, no allocation per message) until it has N. Rate = N × subscribers ÷ (last subscriber's last message − the
//! publisher's first send), on CLOCK_MONOTONIC shared by the processes.
//! Floors: one writer streaming N length-prefixed records (as long as the qcop `Message`
//! frame) to 1 or 8 readers over their own AF_UNIX stream sockets; readers read 64 KiB at a
//! time and count. The *streamed* floor writes through a 64 KiB buffer per socket (the raw
//! streaming rate of the kernel); the *per-record* floor makes one `write` per record and
//! reader (what an unbatched sender pays in system calls).
//! Alongside, the CPU time (`/proc/PID/schedstat`) the publisher, qcopd and each subscriber
//! spent per message, which shows where the cost is and is less disturbed than the rates by
//! other load on the machine.

use crate::procs::{collect_readers, die_with_parent, role, Daemon, Placement};
use crate::report::{bytes, grouped, median_f64, ratio, Table};
use crate::util::{cpu_ns, field, mem_of, mono_ns, role_args, Context, Res, RoleArgs};
use qcop::wire::Frame;
use std::io::{BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

const CHANNEL: &str = "bench/bc";
const MESSAGE: &str = "tick(QByteArray)";
const PAYLOAD: usize = 64;
/// A subscriber waiting this long for the next message declares the run failed.
const STALL: Duration = Duration::from_secs(20);
/// The publisher's send buffer, as large as the streamed floor's.
const SEND_BUFFER: usize = 64 * 1024;

/// Message counts.
pub struct Params {
    /// Messages per run with one subscriber.
    pub n_one: u64,
    /// Messages per run with eight subscribers.
    pub n_eight: u64,
    /// Runs per cell; the median rate is reported.
    pub rounds: usize,
}

/// Wire size of the `Message` frame a subscriber receives.
fn record_len() -> usize {
    Frame::Message {
        token: 0,
        call: false,
        channel: CHANNEL,
        message: MESSAGE,
        payload: &[0u8; PAYLOAD],
        sender: None,
    }
    .to_vec()
    .len()
}

/// One run's outcome.
struct Run {
    /// Delivered messages per second.
    rate: f64,
    /// Messages the daemon dropped (slow-consumer policy); 0 for the floor.
    lost: u64,
    /// Peak RSS of qcopd; 0 for the floor.
    hwm: u64,
    /// CPU ns per message of the publisher, qcopd and one subscriber (mean over the
    /// subscribers); zero for the floor.
    cpu: [f64; 3],
}

/// Measures every placement with 1 and 8 subscribers.
pub fn run(dir: &Path, config: &str, placements: &[Placement], p: &Params) -> Res<Table> {
    let len = record_len();
    let mut table = Table::new(
        "Broadcast throughput, 64-byte payload (messages delivered per second)",
        vec![
            "placement",
            "subscribers",
            "qcop msg/s",
            "floor msg/s (streamed)",
            "qcop ÷ floor",
            "per-record floor msg/s",
            "qcop ÷ per-record",
            "dropped",
            "qcopd peak RSS",
            "CPU ns/msg: publisher · qcopd · subscriber",
        ],
    );
    table.notes.push(format!(
        "N = {} messages with 1 subscriber, {} with 8 (each subscriber counts all N); \
         median of {} run(s). Floors: one writer sending {len}-byte length-prefixed records \
         (the qcop `Message` frame size) to each reader over its own AF_UNIX stream socket, \
         streamed through a 64 KiB buffer per socket, or with one `write` per record and \
         reader. Ratios are rate ratios (1.00× = as fast as that floor; below 1 is slower). \
         `dropped` counts messages qcopd dropped under its slow-consumer policy (0 expected \
         with the bench's queue limits). CPU: on-CPU time (user + kernel) of the publisher \
         from its first send to the end of its flush, of qcopd and of each subscriber over \
         the run, per message sent (a subscriber's: per message it received), median of the \
         runs.",
        grouped(p.n_one),
        grouped(p.n_eight),
        p.rounds
    ));
    for pl in placements {
        for (subs, n) in [(1usize, p.n_one), (8, p.n_eight)] {
            eprintln!("broadcast: {} 1→{subs}", pl.label());
            let (mut figure, mut streamed, mut per_record) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..p.rounds {
                streamed.push(floor_once(dir, pl, subs, n, len, true)?.rate);
                per_record.push(floor_once(dir, pl, subs, n, len, false)?.rate);
                figure.push(qcop_once(dir, config, pl, subs, n)?);
            }
            let q = median_f64(&figure.iter().map(|r| r.rate).collect::<Vec<_>>());
            let f = median_f64(&streamed);
            let r = median_f64(&per_record);
            let lost: u64 = figure.iter().map(|r| r.lost).sum();
            let hwm = figure.iter().map(|r| r.hwm).max().unwrap_or(0);
            let cpu = |i: usize| median_f64(&figure.iter().map(|r| r.cpu[i]).collect::<Vec<_>>());
            table.rows.push(vec![
                pl.label(),
                subs.to_string(),
                grouped(q as u64),
                grouped(f as u64),
                ratio(q, f),
                grouped(r as u64),
                ratio(q, r),
                lost.to_string(),
                bytes(hwm),
                format!("{:.0} · {:.0} · {:.0}", cpu(0), cpu(1), cpu(2)),
            ]);
        }
    }
    Ok(table)
}

fn qcop_once(dir: &Path, config: &str, pl: &Placement, subs: usize, n: u64) -> Res<Run> {
    let daemon = Daemon::start(dir, "bc", config, pl.cpus(1))?;
    let socket = daemon.socket.display().to_string();
    let mut readers = Vec::new();
    for _ in 0..subs {
        let args = role_args(&[("socket", &socket), ("count", &n)]);
        let mut c = role("bc-sub", &args, pl.cpus(2))?;
        c.expect("ready")?;
        readers.push(c);
    }
    let mut publisher = role(
        "bc-pub",
        &role_args(&[("socket", &socket), ("count", &n)]),
        pl.cpus(0),
    )?;
    let daemon_cpu = cpu_ns(daemon.pid())?;
    let line = publisher.expect("result")?;
    let (start, publisher_cpu): (u64, u64) = (field(&line, "start_ns")?, field(&line, "cpu_ns")?);
    publisher.finish()?;
    let (mut end, mut received, mut lost, mut subscriber_cpu) = (0u64, 0u64, 0u64, 0u64);
    for mut r in readers {
        let line = r.expect("result")?;
        end = end.max(field(&line, "end_ns")?);
        received += field::<u64>(&line, "received")?;
        lost += field::<u64>(&line, "lost")?;
        subscriber_cpu += field::<u64>(&line, "cpu_ns")?;
        r.finish()?;
    }
    let daemon_cpu = cpu_ns(daemon.pid())? - daemon_cpu;
    let hwm = mem_of(daemon.pid())?.hwm;
    daemon.stop()?;
    if received + lost != n * subs as u64 {
        return Err(format!(
            "broadcast: {received} received + {lost} dropped != {n} × {subs}"
        ));
    }
    Ok(Run {
        rate: received as f64 / ((end - start) as f64 / 1e9),
        lost,
        hwm,
        cpu: [
            publisher_cpu as f64 / n as f64,
            daemon_cpu as f64 / n as f64,
            subscriber_cpu as f64 / (received.max(1)) as f64,
        ],
    })
}

fn floor_once(
    dir: &Path,
    pl: &Placement,
    readers: usize,
    n: u64,
    len: usize,
    streamed: bool,
) -> Res<Run> {
    let path = dir.join("writer.sock");
    let _ = std::fs::remove_file(&path);
    let path = path.display().to_string();
    let args = role_args(&[
        ("listen", &path),
        ("readers", &readers),
        ("count", &n),
        ("len", &len),
        ("streamed", &streamed),
    ]);
    let mut writer = role("raw-writer", &args, pl.cpus(0))?;
    writer.expect("ready")?;
    let mut procs = Vec::new();
    for _ in 0..readers {
        let args = role_args(&[("connect", &path), ("count", &n), ("len", &len)]);
        let mut c = role("raw-reader", &args, pl.cpus(1))?;
        c.expect("ready")?;
        procs.push(c);
    }
    let start: u64 = field(&writer.expect("result")?, "start_ns")?;
    writer.finish()?;
    let (end, received, _) = collect_readers(procs)?;
    if received != n * readers as u64 {
        return Err(format!("broadcast floor: {received} != {n} × {readers}"));
    }
    Ok(Run {
        rate: received as f64 / ((end - start) as f64 / 1e9),
        lost: 0,
        hwm: 0,
        cpu: [0.0; 3],
    })
}

// ----- roles ---------------------------------------------------------------------------

/// `bc-pub`: sends `--count` messages, then flushes.
pub fn publisher_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let n: u64 = args.num("count")?;
    let mut conn = crate::procs::connect_retry(Path::new(args.str("socket")?), "bc-pub", STALL)?;
    conn.set_send_buffer(SEND_BUFFER).ctx("send buffer")?;
    let mut payload = [0u8; PAYLOAD];
    let cpu = cpu_ns(0)?;
    let start = mono_ns();
    for i in 0..n {
        payload[..8].copy_from_slice(&i.to_be_bytes());
        conn.send(CHANNEL, MESSAGE, &payload)
            .ctx(format_args!("send {i}"))?;
    }
    conn.flush().ctx("flush")?;
    let flushed = mono_ns();
    let cpu = cpu_ns(0)? - cpu;
    println!("result start_ns={start} flushed_ns={flushed} cpu_ns={cpu}");
    Ok(())
}

/// `bc-sub`: counts messages (and reported drops) until it has `--count`, checking order.
pub fn subscriber_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let n: u64 = args.num("count")?;
    let mut conn = crate::procs::connect_retry(Path::new(args.str("socket")?), "bc-sub", STALL)?;
    conn.subscribe(CHANNEL).ctx("subscribe")?;
    let cpu = cpu_ns(0)?;
    println!("ready");
    let (mut received, mut next) = (0u64, 0u64);
    while received + conn.lost() < n {
        let msg = conn
            .recv_timeout_borrowed(STALL)
            .ctx("recv")?
            .ok_or_else(|| format!("stalled after {received} of {n} messages"))?;
        if msg.channel != CHANNEL || msg.data.len() != PAYLOAD {
            return Err(format!("unexpected message {msg:?}"));
        }
        let seq = u64::from_be_bytes(msg.data[..8].try_into().expect("8 bytes"));
        if seq < next || (seq > next && conn.lost() == 0) {
            return Err(format!("message {seq} arrived when {next} was due"));
        }
        next = seq + 1;
        received += 1;
    }
    let end = mono_ns();
    let cpu = cpu_ns(0)? - cpu;
    println!(
        "result end_ns={end} received={received} lost={} cpu_ns={cpu}",
        conn.lost()
    );
    Ok(())
}

/// `raw-writer`: accepts `--readers` connections, then writes `--count` records to each,
/// through a 64 KiB buffer per socket with `--streamed true`, else one `write` per record.
pub fn raw_writer_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let (readers, n, len): (usize, u64, usize) =
        (args.num("readers")?, args.num("count")?, args.num("len")?);
    let capacity = if args.num("streamed")? { 64 * 1024 } else { 0 };
    let listener = UnixListener::bind(args.str("listen")?).ctx("bind writer")?;
    println!("ready");
    let mut streams = Vec::new();
    for _ in 0..readers {
        let s = listener.accept().ctx("accept")?.0;
        streams.push(BufWriter::with_capacity(capacity, s));
    }
    let mut record = vec![0u8; len];
    record[..4].copy_from_slice(&(len as u32 - 4).to_be_bytes());
    let start = mono_ns();
    for i in 0..n {
        record[4..12].copy_from_slice(&i.to_be_bytes());
        for s in &mut streams {
            s.write_all(&record).ctx("write")?;
        }
    }
    for s in &mut streams {
        s.flush().ctx("flush")?;
    }
    println!("result start_ns={start}");
    Ok(())
}

/// `raw-reader`: reads records 64 KiB at a time until it has `--count`, checking order.
pub fn raw_reader_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let (n, len): (u64, usize) = (args.num("count")?, args.num("len")?);
    let mut stream = UnixStream::connect(args.str("connect")?).ctx("connect writer")?;
    println!("ready");
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut received = 0u64;
    while received < n {
        if buf.len() - end < len {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let got = stream.read(&mut buf[end..]).ctx("read")?;
        if got == 0 {
            return Err(format!("writer closed after {received} of {n} records"));
        }
        end += got;
        while end - start >= len {
            let rec = &buf[start..start + len];
            let seq = u64::from_be_bytes(rec[4..12].try_into().expect("8 bytes"));
            if rec[..4] != (len as u32 - 4).to_be_bytes() || seq != received {
                return Err(format!("record {received}: bad length or sequence {seq}"));
            }
            received += 1;
            start += len;
        }
    }
    println!("result end_ns={} received={received} lost=0", mono_ns());
    Ok(())
}

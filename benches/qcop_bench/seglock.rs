//! Group `seglock`: the shared-memory segment lock (`SharedMemory::lock` + unlock).
//!
//! Figure: `SharedMemory::lock()`, an 8-byte increment through the guard, and the guard's
//! drop (unlock), on a segment qcopd created. The daemon is not on this path: it only hands
//! out the memory. Floor: a plain futex mutex (the classic three-state one: 0 free, 1 held,
//! 2 held with waiters) on a word of a shared file mapping, with the same increment of a
//! counter one page further (qcop's lock word and data are in separate memory too, so both
//! bounce two cache lines between contending CPUs).
//!
//! - uncontended: one process alternates floor and figure in rounds and reports ns per
//!   lock/increment/unlock;
//! - contended: two processes hammer the same lock (each starts on the parent's signal);
//!   the figure is the wall time of both divided by all their iterations. The final counter
//!   must equal the iterations: a lost update fails the bench.

use crate::procs::{die_with_parent, role, wait_for_parent, Daemon, Placement};
use crate::report::{grouped, ratio, Table};
use crate::util::{field, role_args, Context, Res, RoleArgs};
use qcop::shm::map::{Access, Mapping};
use qcop::shm::robust::RobustLock;
use qcop::shm::token::{Liveness, Token};
use qcop::shm::{futex, SharedMemory};
use qcop::ConnectOptions;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SEGMENT: &str = "bench/seglock";
/// Offset of the record written under the lock in the contended test (after the counter).
const ROW_AT: usize = 64;
/// Record sizes of the contended test: just the counter, and a 512-byte status row.
const ROWS: [usize; 2] = [0, 512];

/// Iteration counts.
pub struct Params {
    /// Lock/unlock pairs per round of the uncontended test.
    pub solo_iters: u64,
    /// Rounds of the uncontended test (floor and figure alternate).
    pub solo_rounds: usize,
    /// Lock/unlock pairs per process in the contended test.
    pub contended_iters: u64,
    /// Runs of the contended test (floor then figure).
    pub contended_rounds: usize,
}

/// Measures every placement: an uncontended and a contended table.
pub fn run(dir: &Path, placements: &[Placement], p: &Params) -> Res<Vec<Table>> {
    let mut solo = Table::new(
        "Segment lock, uncontended (ns per lock + 8-byte increment + unlock)",
        vec![
            "placement",
            "qcop",
            "robust word only",
            "floor",
            "qcop ÷ floor",
        ],
    );
    solo.notes.push(format!(
        "One process, {} pairs per round, {} rounds alternating floor and qcop; the median \
         round. qcop: `SharedMemory::lock()`, increment through the guard, drop. Robust word \
         only: the lock protocol of `qcop::shm::robust` alone (owner token, owner-died and \
         waiters bits) on the floor's word, without the segment API. Floor: a three-state \
         futex mutex on a shared file mapping, incrementing a counter one page away from \
         the lock word (as qcop's data is).",
        grouped(p.solo_iters),
        p.solo_rounds
    ));
    let mut contended = Table::new(
        "Segment lock, two processes contending (ns per lock + increment + unlock)",
        vec![
            "placement",
            "under the lock",
            "qcop",
            "robust word only",
            "floor",
            "qcop ÷ floor",
            "floor contended %",
        ],
    );
    contended.notes.push(format!(
        "Two processes, {} pairs each, started together; wall time of both over all pairs, \
         median of {} run(s). Robust word only: `qcop::shm::robust` on the floor's word. Under \
         the lock: an 8-byte increment, or the increment and a 512-byte record (a longer hold, so more collisions). Floor contended %: share of \
         the floor's acquisitions that found the lock held (how much the two processes \
         actually collided).",
        grouped(p.contended_iters),
        p.contended_rounds
    ));
    let shared = dir.join("seglock.floor");
    for pl in placements {
        eprintln!("seglock: {}", pl.label());
        let daemon = Daemon::start(dir, "seglock", "", pl.cpus(1))?;
        let socket = daemon.socket.display().to_string();
        let file = shared.display().to_string();

        let args = role_args(&[
            ("socket", &socket),
            ("file", &file),
            ("iters", &p.solo_iters),
            ("rounds", &p.solo_rounds),
        ]);
        let mut solo_role = role("seglock-solo", &args, pl.cpus(0))?;
        let line = solo_role.expect("result")?;
        solo_role.finish()?;
        let (q, r, f): (f64, f64, f64) = (
            field(&line, "qcop")?,
            field(&line, "robust")?,
            field(&line, "floor")?,
        );
        solo.rows.push(vec![
            pl.label(),
            format!("{q:.1}"),
            format!("{r:.1}"),
            format!("{f:.1}"),
            ratio(q, f),
        ]);

        for row in ROWS {
            let (mut qs, mut rs, mut fs) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..p.contended_rounds {
                let run = |kind| contend(&socket, &file, kind, pl, p.contended_iters, row);
                fs.push(run("floor")?);
                rs.push(run("robust")?);
                qs.push(run("qcop")?);
            }
            let (q, _) = median(qs);
            let (r, _) = median(rs);
            let (f, f_sleeps) = median(fs);
            contended.rows.push(vec![
                pl.label(),
                if row == 0 {
                    "increment".to_owned()
                } else {
                    format!("increment + {row}-byte row")
                },
                format!("{q:.1}"),
                format!("{r:.1}"),
                format!("{f:.1}"),
                ratio(q, f),
                format!("{f_sleeps:.1}"),
            ]);
        }
        daemon.stop()?;
    }
    Ok(vec![solo, contended])
}

/// The run with the median time per pair, as (ns per pair, % contended acquisitions).
fn median(mut runs: Vec<(f64, f64)>) -> (f64, f64) {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs.get(runs.len() / 2).copied().unwrap_or((0.0, 0.0))
}

/// One contended run of `kind` ("qcop" or "floor"): two processes, started together.
fn contend(
    socket: &str,
    file: &str,
    kind: &str,
    pl: &Placement,
    iters: u64,
    row: usize,
) -> Res<(f64, f64)> {
    // A fresh segment (or file) per run: its counter must end at exactly 2 × iters.
    let opts = ConnectOptions::new().socket(socket);
    let shm = SharedMemory::builder(SEGMENT)
        .size(4096)
        .connect_options(opts)
        .create()
        .ctx("create the bench segment")?;
    std::fs::write(file, [0u8; FLOOR_FILE]).ctx("create the floor file")?;
    let args = role_args(&[
        ("kind", &kind),
        ("socket", &socket),
        ("file", &file),
        ("iters", &iters),
        ("row", &row),
    ]);
    let mut a = role("seglock-contend", &args, pl.cpus(0))?;
    let mut b = role("seglock-contend", &args, pl.cpus(1))?;
    a.expect("ready")?;
    b.expect("ready")?;
    let start = Instant::now();
    a.send("go")?;
    b.send("go")?;
    let sleeps_a: u64 = a.expect("done")?.parse().ctx("sleeps")?;
    let sleeps_b: u64 = b.expect("done")?.parse().ctx("sleeps")?;
    let wall = start.elapsed();
    a.finish()?;
    b.finish()?;
    let total = match kind {
        "qcop" => {
            let mut buf = [0u8; 8];
            shm.read(0, &mut buf).ctx("read the counter")?;
            u64::from_le_bytes(buf)
        }
        _ => {
            let bytes = std::fs::read(file).ctx("read the floor file")?;
            let c = bytes
                .get(FLOOR_COUNTER..FLOOR_COUNTER + 8)
                .unwrap_or_default();
            u64::from_le_bytes(c.try_into().unwrap_or_default())
        }
    };
    if total != 2 * iters {
        return Err(format!(
            "seglock {kind}: counter is {total} after 2 × {iters} locked increments"
        ));
    }
    shm.detach().ctx("detach")?;
    let pairs = (2 * iters) as f64;
    Ok((
        wall.as_nanos() as f64 / pairs,
        (sleeps_a + sleeps_b) as f64 * 100.0 / pairs,
    ))
}

// ----- the floor: a three-state futex mutex ----------------------------------------------

/// Takes the floor's lock; counts in `contended` an acquisition that found it held.
fn raw_lock(w: &AtomicU32, contended: &mut u64) {
    if w.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return;
    }
    *contended += 1;
    while w.swap(2, Ordering::Acquire) != 0 {
        futex::wait(w, 2, Some(Duration::from_secs(1)));
    }
}

fn raw_unlock(w: &AtomicU32) {
    if w.swap(0, Ordering::Release) == 2 {
        futex::wake(w, 1);
    }
}

/// Bytes of the floor's file: the lock word at 0, the counter one page further.
const FLOOR_FILE: usize = 8192;
const FLOOR_COUNTER: usize = 4096;

/// The floor's lock word and counter in a shared file mapping.
fn floor_map(file: &str) -> Res<Mapping> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .ctx("open the floor file")?;
    Mapping::map(f.as_fd(), Access::ReadWrite).ctx("map the floor file")
}

fn floor_words(m: &Mapping) -> Res<(&AtomicU32, &AtomicU64)> {
    Ok((
        m.atomic_u32(0).ok_or("floor lock word")?,
        m.atomic_u64(FLOOR_COUNTER).ok_or("floor counter")?,
    ))
}

/// A plain increment (load, then store) that only mutual exclusion keeps exact.
fn bump(counter: &AtomicU64) {
    let v = counter.load(Ordering::Relaxed);
    counter.store(v + 1, Ordering::Relaxed);
}

// ----- roles -------------------------------------------------------------------------------

/// `seglock-solo`: alternates rounds of floor and qcop lock/unlock pairs; prints the median
/// round of each in ns per pair.
pub fn solo_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let (iters, rounds): (u64, usize) = (args.num("iters")?, args.num("rounds")?);
    let file = args.str("file")?;
    std::fs::write(file, [0u8; FLOOR_FILE]).ctx("create the floor file")?;
    let m = floor_map(file)?;
    let (word, counter) = floor_words(&m)?;
    let opts = ConnectOptions::new().socket(args.str("socket")?);
    let mut shm = SharedMemory::builder("bench/seglock-solo")
        .size(64)
        .connect_options(opts)
        .create()
        .ctx("create the segment")?;
    let (mut q, mut r, mut f) = (Vec::new(), Vec::new(), Vec::new());
    let mut sleeps = 0;
    let me = Token::new(std::process::id(), 0).ok_or("pid does not fit a token")?;
    let robust = RobustLock::new(word);
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        for _ in 0..iters {
            robust.try_lock(me).map_err(|e| format!("{e:?}"))?;
            bump(counter);
            robust.unlock(me).map_err(|e| format!("{e:?}"))?;
        }
        r.push(t.elapsed().as_nanos() as f64 / iters as f64);
        let t = Instant::now();
        for _ in 0..iters {
            raw_lock(word, &mut sleeps);
            bump(counter);
            raw_unlock(word);
        }
        f.push(t.elapsed().as_nanos() as f64 / iters as f64);
        let t = Instant::now();
        for _ in 0..iters {
            let mut g = shm.lock().ctx("lock")?;
            let data = g.data_mut().ctx("data")?;
            let v = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
            data[..8].copy_from_slice(&(v + 1).to_le_bytes());
        }
        q.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    let mut buf = [0u8; 8];
    shm.read(0, &mut buf).ctx("read")?;
    let expect = iters * rounds.max(1) as u64;
    if u64::from_le_bytes(buf) != expect || counter.load(Ordering::Relaxed) != 2 * expect {
        return Err("seglock-solo: counters do not match the iterations".into());
    }
    for v in [&mut q, &mut r, &mut f] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "result qcop={:.2} robust={:.2} floor={:.2}",
        q[q.len() / 2],
        r[r.len() / 2],
        f[f.len() / 2]
    );
    Ok(())
}

/// `seglock-contend`: after the parent's go, `iters` lock/increment/unlock pairs on the
/// shared segment (`kind=qcop`) or the floor's file mapping (`kind=floor`), each also
/// writing a `row`-byte record under the lock; the floor reports how many of its
/// acquisitions found the lock held.
pub fn contend_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let iters: u64 = args.num("iters")?;
    let row: usize = args.num("row")?;
    let record = vec![0x5au8; row];
    let mut sleeps = 0u64;
    match args.str("kind")? {
        "qcop" => {
            let opts = ConnectOptions::new().socket(args.str("socket")?);
            let mut shm = SharedMemory::builder(SEGMENT)
                .connect_options(opts)
                .attach()
                .ctx("attach")?;
            println!("ready");
            wait_for_parent();
            for _ in 0..iters {
                let mut g = shm.lock().ctx("lock")?;
                let data = g.data_mut().ctx("data")?;
                let v = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
                data[..8].copy_from_slice(&(v + 1).to_le_bytes());
                data[ROW_AT..ROW_AT + row].copy_from_slice(&record);
            }
            // Stay attached until both are done: the segment must not vanish under the
            // other process (the parent holds it too, but be explicit).
            println!("done {sleeps}");
            shm.detach().ctx("detach")?;
        }
        "robust" => {
            let m = floor_map(args.str("file")?)?;
            let (word, counter) = floor_words(&m)?;
            let me = Token::new(std::process::id(), 0).ok_or("pid does not fit a token")?;
            let lock = RobustLock::new(word);
            println!("ready");
            wait_for_parent();
            for _ in 0..iters {
                lock.lock(me, None, &mut |_| Liveness::Unknown)
                    .map_err(|e| format!("{e:?}"))?;
                bump(counter);
                if !m.write(FLOOR_COUNTER + ROW_AT, &record) {
                    return Err("record out of bounds".into());
                }
                lock.unlock(me).map_err(|e| format!("{e:?}"))?;
            }
            println!("done 0");
        }
        _ => {
            let m = floor_map(args.str("file")?)?;
            let (word, counter) = floor_words(&m)?;
            println!("ready");
            wait_for_parent();
            for _ in 0..iters {
                raw_lock(word, &mut sleeps);
                bump(counter);
                if !m.write(FLOOR_COUNTER + ROW_AT, &record) {
                    return Err("floor record out of bounds".into());
                }
                raw_unlock(word);
            }
            println!("done {sleeps}");
        }
    }
    Ok(())
}

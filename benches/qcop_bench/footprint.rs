//! Group `footprint`: binary size and daemon memory.
//!
//! Size: a copy of the bench-profile qcopd, run through `strip`. Memory: VmRSS (counts every
//! resident page of glibc and ld.so in full), PSS (shared pages divided among the processes
//! that map them), Private (pages only this process maps) and Anonymous (heap, stacks, data),
//! idle and with 256 clients holding 1,000 channels. Floor: an idle Rust process listening on a Unix socket (this
//! bench binary in the `idle-listener` role); reference: dbus-daemon, if installed.

use crate::procs::{connect_retry, die_with_parent, role, Child, Daemon, Spawn};
use crate::report::{bytes, ratio, Table};
use crate::util::{mem_of, role_args, Context, Mem, Res, RoleArgs};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

/// Clients and channels of the loaded figure.
pub struct Params {
    /// Connections held by the holder process.
    pub clients: usize,
    /// Distinct channels subscribed over all of them.
    pub channels: usize,
}

/// Lets a process settle (lazy page faults of the first requests) before reading its memory.
const SETTLE: Duration = Duration::from_millis(200);

/// Measures everything; placement does not matter here.
pub fn run(dir: &Path, p: &Params) -> Res<Table> {
    eprintln!("footprint");
    let mut table = Table::new(
        "Footprint",
        vec![
            "figure",
            "qcopd",
            "floor",
            "÷ floor",
            "dbus-daemon",
            "target / note",
        ],
    );
    let per_client = p.channels.div_ceil(p.clients);
    table.notes.push(format!(
        "Floor: an idle Rust std process (glibc, dynamic) blocked in `accept` on a Unix \
         socket. dbus-daemon: `dbus-daemon --session` idle, measured in the same run as a \
         reference. Loaded: {} connections, each subscribed to {per_client} channels, {} \
         distinct channels in total, plus the bench's own stats connection (qcopd runs with \
         `max_clients = 300`).",
        p.clients, p.channels
    ));
    let (size, stripped) = stripped_size(dir)?;
    table.rows.push(vec![
        "stripped size".into(),
        format!("{} B ({:.1} KiB)", stripped, stripped as f64 / 1024.0),
        "—".into(),
        "—".into(),
        "—".into(),
        if size == stripped {
            "as built: already stripped".into()
        } else {
            format!("as built: {size} B")
        },
    ]);

    let floor = idle_floor(dir)?;
    let dbus = dbus_reference(dir);
    let config = "max_clients = 300\n";
    let daemon = Daemon::start(dir, "fp", config, None)?;
    std::thread::sleep(SETTLE);
    let idle = mem_of(daemon.pid())?;
    let loaded = loaded(&daemon, p)?;
    std::thread::sleep(SETTLE);
    let after = mem_of(daemon.pid())?;
    daemon.stop()?;

    let dbus_cell = |f: fn(&Mem) -> u64| dbus.as_ref().map_or("n/a".into(), |m| bytes(f(m)));
    let loaded_name = format!("{} clients / {} channels", p.clients, p.channels);
    type Get = fn(&Mem) -> u64;
    let figures: [(&str, Get, &str, &str); 4] = [
        ("VmRSS", |m| m.rss, "≤ 1 MiB", "≤ 4 MiB"),
        ("PSS", |m| m.pss, "", ""),
        ("Private", |m| m.private, "", ""),
        ("Anonymous", |m| m.anon, "", ""),
    ];
    for (state, mem, loaded_state) in [("idle", idle, false), (&*loaded_name, loaded, true)] {
        for (name, get, idle_target, loaded_target) in figures {
            table.rows.push(vec![
                format!("{name}, {state}"),
                bytes(get(&mem)),
                bytes(get(&floor)),
                ratio(get(&mem) as f64, get(&floor) as f64),
                if loaded_state {
                    "—".into()
                } else {
                    dbus_cell(get)
                },
                if loaded_state {
                    loaded_target
                } else {
                    idle_target
                }
                .into(),
            ]);
        }
    }
    table.rows.push(vec![
        format!("VmRSS after the {} clients left", p.clients),
        bytes(after.rss),
        bytes(floor.rss),
        ratio(after.rss as f64, floor.rss as f64),
        "—".into(),
        String::new(),
    ]);
    table.rows.push(vec![
        "VmHWM (peak RSS) over the run".into(),
        bytes(after.hwm),
        "—".into(),
        "—".into(),
        "—".into(),
        String::new(),
    ]);
    Ok(table)
}

/// Size of the bench-profile qcopd and of a stripped copy.
fn stripped_size(dir: &Path) -> Res<(u64, u64)> {
    let src = crate::procs::qcopd_path();
    let copy = dir.join("qcopd.stripped");
    std::fs::copy(&src, &copy).ctx("copy qcopd")?;
    let size = std::fs::metadata(&src).ctx("stat qcopd")?.len();
    let status = std::process::Command::new("strip")
        .arg(&copy)
        .status()
        .ctx("run strip")?;
    if !status.success() {
        return Err(format!("strip failed ({status})"));
    }
    let stripped = std::fs::metadata(&copy).ctx("stat copy")?.len();
    Ok((size, stripped))
}

fn idle_floor(dir: &Path) -> Res<Mem> {
    let path = dir.join("idle.sock");
    let _ = std::fs::remove_file(&path);
    let mut floor = role(
        "idle-listener",
        &role_args(&[("listen", &path.display())]),
        None,
    )?;
    floor.expect("ready")?;
    std::thread::sleep(SETTLE);
    let mem = mem_of(floor.pid())?;
    floor.terminate()?;
    Ok(mem)
}

/// dbus-daemon's idle memory, if it is installed and starts.
fn dbus_reference(dir: &Path) -> Option<Mem> {
    let address = format!("--address=unix:path={}", dir.join("dbus.sock").display());
    let args = [
        "--session".to_owned(),
        "--nofork".to_owned(),
        "--nopidfile".to_owned(),
        "--print-address".to_owned(),
        address,
    ];
    let mut child: Child = Spawn {
        name: "dbus-daemon",
        program: Path::new("dbus-daemon"),
        args: &args,
        cpus: None,
        env: &[],
        stdin: false,
        quiet: true,
    }
    .start()
    .ok()?;
    child.expect("unix:").ok()?;
    std::thread::sleep(SETTLE);
    let mem = mem_of(child.pid()).ok();
    let _ = child.terminate();
    mem
}

/// Connects the holder's clients, checks qcopd's gauges, and reads its memory.
fn loaded(daemon: &Daemon, p: &Params) -> Res<Mem> {
    let socket = daemon.socket.display().to_string();
    let args = role_args(&[
        ("socket", &socket),
        ("clients", &p.clients),
        ("channels", &p.channels),
    ]);
    let mut holder = role("holder", &args, None)?;
    holder.expect("ready")?;
    let mut conn = connect_retry(&daemon.socket, "bench-stats", Duration::from_secs(5))?;
    let stats = conn.stats(false).ctx("stats")?;
    let want = [
        ("clients", p.clients as u64 + 1),
        ("channels", p.channels as u64),
        (
            "subscriptions",
            (p.channels.div_ceil(p.clients) * p.clients) as u64,
        ),
    ];
    for (name, value) in want {
        let got = stats.get(name);
        if got != Some(value) {
            return Err(format!("qcopd reports {name} = {got:?}, expected {value}"));
        }
    }
    std::thread::sleep(SETTLE);
    let mem = mem_of(daemon.pid())?;
    drop(conn);
    holder.send("done")?;
    holder.finish()?;
    Ok(mem)
}

// ----- roles ---------------------------------------------------------------------------

/// `holder`: opens `--clients` connections; connection i subscribes to channels
/// `k·i .. k·i+k` (mod `--channels`), k = ⌈channels ÷ clients⌉, so together they cover every
/// channel. Then holds them until the parent says so.
pub fn holder_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let socket = Path::new(args.str("socket")?);
    let (clients, channels): (usize, usize) = (args.num("clients")?, args.num("channels")?);
    let per_client = channels.div_ceil(clients);
    let mut conns = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut c = connect_retry(socket, &format!("holder-{i}"), Duration::from_secs(5))?;
        for k in 0..per_client {
            let channel = format!("bench/ch{:04}", (per_client * i + k) % channels);
            c.subscribe(&channel)
                .ctx(format_args!("client {i}: subscribe"))?;
        }
        conns.push(c);
    }
    println!("ready");
    crate::procs::wait_for_parent();
    Ok(())
}

/// `idle-listener`: binds a Unix socket and answers each byte it receives with one byte;
/// the floor for memory (idle) and for start-up (first answered connection).
pub fn idle_listener_role(args: &RoleArgs) -> Res<()> {
    die_with_parent();
    let listener = UnixListener::bind(args.str("listen")?).ctx("bind")?;
    println!("ready");
    loop {
        let (mut s, _) = listener.accept().ctx("accept")?;
        let mut b = [0u8; 1];
        while matches!(s.read(&mut b), Ok(1)) {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    }
}

//! qcop benchmarks: each figure measured together with its floor, in the same run and the
//! same process placement, printed as Markdown tables (see `docs/BENCHMARKS.md`).
//!
//! ```text
//! cargo bench --bench qcop_bench                      # every group, every placement
//! cargo bench --bench qcop_bench -- rr --pin same     # one group, one placement
//! taskset -c 0 cargo bench --bench qcop_bench         # children inherit CPU 0
//! cargo bench --bench qcop_bench -- --quick           # smoke run, a few seconds
//! ```
//!
//! Every process of a measurement is separate: the parent only orchestrates. It re-executes
//! this binary with a hidden `--role NAME` argument for clients, responders, relays and
//! readers, and starts the bench-profile `qcopd` on a private socket. The layers:
//! - `util`: errors, role arguments, the shared clock, `/proc` readers;
//! - `procs`: CPU placement, child processes, qcopd, the watchdog;
//! - `report`: percentiles and Markdown tables;
//! - `rr` (also `patterns`), `broadcast`, `link`, `footprint`, `startup`, `seglock`, `shm`:
//!   one group each, with its roles.
#![forbid(unsafe_code)]

#[path = "qcop_bench/broadcast.rs"]
mod broadcast;
#[path = "qcop_bench/footprint.rs"]
mod footprint;
#[cfg(feature = "links")]
#[path = "qcop_bench/link.rs"]
mod link;
#[path = "qcop_bench/procs.rs"]
mod procs;
#[path = "qcop_bench/report.rs"]
mod report;
#[path = "qcop_bench/rr.rs"]
mod rr;
#[path = "qcop_bench/seglock.rs"]
mod seglock;
#[path = "qcop_bench/shm.rs"]
mod shm;
#[path = "qcop_bench/startup.rs"]
mod startup;
#[path = "qcop_bench/util.rs"]
mod util;

use procs::{Pin, Placement};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use util::{Res, RoleArgs};

const USAGE: &str = "\
qcop_bench - qcop figures and their floors, measured in one run

Usage: cargo bench --bench qcop_bench -- [OPTIONS] [GROUP...]

Groups (default: all): rr, patterns, broadcast, link, footprint, startup, seglock, shm

Options:
  --pin LIST   Placements to measure, comma-separated: same (all processes on the first
               CPU), split (each hop crosses CPUs), none (all CPUs), inherit (no taskset;
               keep what the bench was started with). Default: inherit when the bench was
               started with a restricted affinity (taskset -c 0 cargo bench), else
               same,split,none.
  --quick      Smoke run of a few seconds: every group, few iterations. Fails only on
               functional errors, never on a ratio. Also the default when run without
               --bench (as by cargo test --benches).
  --full       Full run even without --bench.
  -h, --help   This text.

Environment: QCOP_BENCH_QCOPD=PATH measures another qcopd binary (for example a static
musl build) instead of the one cargo built with the bench.
";

/// qcopd settings for the traffic groups: room for the bench's own connections, and
/// queues large enough that a publisher outrunning eight subscribers never triggers the
/// drop-oldest policy (the figure is routing throughput, not drop behaviour).
const TRAFFIC_CONFIG: &str = "\
max_clients = 300
max_queue_bytes = 67108864
max_total_queue_bytes = 1073741824
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Rr,
    Patterns,
    Broadcast,
    Link,
    Footprint,
    Startup,
    Seglock,
    Shm,
}

const GROUPS: [(&str, Group); 8] = [
    ("rr", Group::Rr),
    ("patterns", Group::Patterns),
    ("broadcast", Group::Broadcast),
    ("link", Group::Link),
    ("footprint", Group::Footprint),
    ("startup", Group::Startup),
    ("seglock", Group::Seglock),
    ("shm", Group::Shm),
];

struct Options {
    groups: Vec<Group>,
    pins: Option<Vec<Pin>>,
    quick: bool,
}

fn parse_options(args: &[String]) -> Res<Option<Options>> {
    let mut groups = Vec::new();
    let mut pins = None;
    let (mut bench, mut quick, mut full) = (false, false, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        match flag {
            "--bench" => bench = true,
            "--quick" => quick = true,
            "--full" => full = true,
            "--pin" => {
                let list = match inline {
                    Some(v) => v,
                    None => it.next().ok_or("--pin needs a value")?.clone(),
                };
                pins = Some(list.split(',').map(Pin::parse).collect::<Res<Vec<_>>>()?);
            }
            "-h" | "--help" => return Ok(None),
            // Passed by cargo to libtest benches; meaningless here.
            "--nocapture" | "--quiet" | "-q" => {}
            name => match GROUPS.iter().find(|(n, _)| *n == name) {
                Some(&(_, g)) => groups.push(g),
                None => return Err(format!("unknown argument {name:?} (see --help)")),
            },
        }
    }
    if groups.is_empty() {
        groups = GROUPS.iter().map(|&(_, g)| g).collect();
    }
    Ok(Some(Options {
        groups,
        pins,
        quick: quick || !(bench || full),
    }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--role") {
        return run_role(&args[1..]);
    }
    let opts = match parse_options(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("qcop_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = String::new();
    let result = bench(&opts, &mut out);
    print!("{out}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qcop_bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A role's entry point.
type Role = fn(&RoleArgs) -> Res<()>;

fn run_role(args: &[String]) -> ExitCode {
    let Some(name) = args.first() else {
        eprintln!("qcop_bench: --role needs a name");
        return ExitCode::from(2);
    };
    let roles: &[(&str, Role)] = &[
        ("rr-client", rr::client_role),
        ("rr-responder", rr::responder_role),
        ("relay", rr::relay_role),
        ("rr-pattern-holder", rr::pattern_holder_role),
        ("raw-rr-client", rr::raw_client_role),
        ("raw-rr-responder", rr::raw_responder_role),
        ("bc-pub", broadcast::publisher_role),
        ("bc-sub", broadcast::subscriber_role),
        ("raw-writer", broadcast::raw_writer_role),
        ("raw-reader", broadcast::raw_reader_role),
        ("holder", footprint::holder_role),
        ("idle-listener", footprint::idle_listener_role),
        ("startup-probe", startup::probe_role),
        ("seglock-solo", seglock::solo_role),
        ("seglock-contend", seglock::contend_role),
        #[cfg(feature = "links")]
        ("tcp-relay", link::tcp_relay_role),
        #[cfg(feature = "links")]
        ("tcp-reader", link::tcp_reader_role),
        #[cfg(feature = "links")]
        ("tcp-writer", link::tcp_writer_role),
        ("shm-pp", shm::ping_pong_role),
        ("shm-memcpy", shm::memcpy_role),
        ("shm-stream", shm::stream_role),
    ];
    let Some(&(_, f)) = roles.iter().find(|(n, _)| n == name) else {
        eprintln!("qcop_bench: unknown role {name:?}");
        return ExitCode::from(2);
    };
    match RoleArgs::parse(&args[1..]).and_then(|a| f(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qcop_bench role {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The qcopd under test, and where it came from.
fn qcopd_label() -> String {
    let path = procs::qcopd_path();
    if std::env::var_os(procs::QCOPD_ENV).is_some_and(|p| !p.is_empty()) {
        format!("`{}` (from ${})", path.display(), procs::QCOPD_ENV)
    } else {
        format!("`{}` (bench profile)", path.display())
    }
}

/// Runs the selected groups, appending Markdown to `out` as each finishes.
fn bench(opts: &Options, out: &mut String) -> Res<()> {
    let started = Instant::now();
    let online = util::online_cpus();
    let inherited = util::allowed_cpus();
    let pins = opts.pins.clone().unwrap_or_else(|| {
        if inherited.len() < online.len() {
            vec![Pin::Inherit]
        } else {
            vec![Pin::Same, Pin::Split, Pin::None]
        }
    });
    let placements: Vec<Placement> = pins
        .iter()
        .filter_map(|&p| Placement::new(p, &online, &inherited))
        .collect();
    procs::arm_watchdog(Duration::from_secs(if opts.quick { 180 } else { 900 }));
    let dir = tempfile::Builder::new()
        .prefix("qcop-bench")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;

    out.push_str(&format!(
        "## qcop benchmark run, {}\n\n\
         - Machine: {}\n\
         - Load average at start: {} (other work on the machine adds noise)\n\
         - qcopd: {}\n\
         - Mode: {}; placements: {}; bench started with affinity cpus {}\n\n",
        util::utc_now(),
        util::machine(),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        qcopd_label(),
        if opts.quick {
            "quick (smoke run: few iterations, figures are not meaningful)"
        } else {
            "full"
        },
        placements
            .iter()
            .map(Placement::label)
            .collect::<Vec<_>>()
            .join(", "),
        util::cpu_list_string(&inherited),
    ));
    let q = opts.quick;
    for group in &opts.groups {
        let tables = match group {
            Group::Rr => rr::run(
                dir.path(),
                TRAFFIC_CONFIG,
                &placements,
                &rr::Params {
                    warmup: if q { 200 } else { 2_000 },
                    iters: if q { 2_000 } else { 20_000 },
                    rounds: if q { 1 } else { 4 },
                },
            )?,
            Group::Patterns => rr::run_patterns(
                dir.path(),
                TRAFFIC_CONFIG,
                &placements,
                &rr::PatternParams {
                    patterns: 4_096,
                    rr: rr::Params {
                        warmup: if q { 200 } else { 2_000 },
                        iters: if q { 2_000 } else { 20_000 },
                        rounds: if q { 1 } else { 4 },
                    },
                },
            )
            .map(|t| vec![t])?,
            Group::Broadcast => broadcast::run(
                dir.path(),
                TRAFFIC_CONFIG,
                &placements,
                &broadcast::Params {
                    n_one: if q { 5_000 } else { 200_000 },
                    n_eight: if q { 2_000 } else { 50_000 },
                    rounds: if q { 1 } else { 3 },
                },
            )
            .map(|t| vec![t])?,
            #[cfg(feature = "links")]
            Group::Link => link::run(
                dir.path(),
                TRAFFIC_CONFIG,
                &placements,
                &link::Params {
                    warmup: if q { 200 } else { 2_000 },
                    iters: if q { 1_000 } else { 20_000 },
                    iters_nagle: if q { 20 } else { 500 },
                    rounds: if q { 1 } else { 4 },
                    stream: if q { 5_000 } else { 200_000 },
                },
            )?,
            #[cfg(not(feature = "links"))]
            Group::Link => {
                out.push_str("Group `link` skipped: built without the `links` feature.\n\n");
                Vec::new()
            }
            Group::Footprint => footprint::run(
                dir.path(),
                &footprint::Params {
                    clients: 256,
                    channels: 1_000,
                },
            )
            .map(|t| vec![t])?,
            Group::Seglock => seglock::run(
                dir.path(),
                &placements,
                &seglock::Params {
                    solo_iters: if q { 20_000 } else { 1_000_000 },
                    solo_rounds: if q { 3 } else { 7 },
                    contended_iters: if q { 20_000 } else { 500_000 },
                    contended_rounds: if q { 1 } else { 3 },
                },
            )?,
            Group::Startup => vec![startup::run(
                dir.path(),
                &placements,
                if q { 3 } else { 21 },
            )?],
            Group::Shm => shm::run(
                dir.path(),
                TRAFFIC_CONFIG,
                &placements,
                &shm::Params {
                    spin_iters: if q { 20_000 } else { 1_000_000 },
                    sleep_iters: if q { 400 } else { 20_000 },
                    n_small: if q { 20_000 } else { 2_000_000 },
                    n_large: if q { 2_000 } else { 200_000 },
                    rounds: if q { 1 } else { 3 },
                },
            )?,
        };
        for table in tables {
            out.push_str(&table.render());
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "Total bench time: {:.1} s.\n",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

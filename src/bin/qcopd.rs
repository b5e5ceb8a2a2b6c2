//! `qcopd`: the qcop channel server.

use qcop::daemon::{self, Config};
use std::path::PathBuf;
use std::process::ExitCode;

const HELP: &str = "\
qcopd - the qcop channel server

Usage: qcopd [OPTIONS]

Routes QCOP messages between processes over a Unix socket. Runs in the foreground with
embedded defaults; no configuration file is needed.

Options:
  -s, --socket PATH      Listen on PATH (default: $QCOP_SOCKET, else /run/qcop/qcopd.sock
                         for root, $XDG_RUNTIME_DIR/qcop/qcopd.sock or
                         /tmp/qcop-$UID/qcopd.sock for other users)
  -c, --config FILE      Read settings from a TOML file (re-read on SIGHUP)
      --check-config     Validate the configuration, print the effective settings, exit
  -h, --help             Show this help
  -V, --version          Show the version

Signals: SIGTERM/SIGINT shut down cleanly (the socket is removed), SIGHUP reloads FILE
(access policy and services included; clients stay connected).
Logging: RUST_LOG=debug|info|warn|error (default info), to stderr.
systemd: sends READY=1 when NOTIFY_SOCKET is set; accepts a socket via LISTEN_FDS.
Lifecycle events are published on the channel 'qcop/daemon' as newChannel(QString) and
removedChannel(QString).
System bus: 'policy' rules decide who may send, receive and monitor what (by user and
group); [[service]] entries start programs when a message arrives for their channel. See
docs/policy.toml for a commented example; 'qcop services' and 'qcop monitor' show them at
work.
Links to qcopd on other boards over TCP: the [links] section of FILE (off by default; see
docs/qcopd.toml and the README's \"Linking boards\").

Exit status: 0 after a clean shutdown, 1 on a startup error, 2 on a usage error.
";

struct Args {
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
    check: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        socket: None,
        config: None,
        check: false,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_string_lossy().into_owned();
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<PathBuf, String> {
            match inline.clone() {
                Some(v) => Ok(PathBuf::from(v)),
                None => it
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-s" | "--socket" => args.socket = Some(value("--socket")?),
            "-c" | "--config" => args.config = Some(value("--config")?),
            "--check-config" => args.check = true,
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("qcopd {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(format!("unknown option {other:?} (see qcopd --help)")),
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .init();
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qcopd: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("qcopd: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    // Precedence: --socket, then $QCOP_SOCKET, then the file, then the built-in default.
    let socket = args
        .socket
        .or_else(|| std::env::var_os(qcop::paths::SOCKET_ENV).map(PathBuf::from))
        .or_else(|| cfg.socket.clone())
        .unwrap_or_else(qcop::paths::builtin_socket_path);
    if args.check {
        println!("socket = {:?}", socket.display().to_string());
        println!("{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    match daemon::run(cfg, args.config, socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qcopd: {e}");
            ExitCode::FAILURE
        }
    }
}

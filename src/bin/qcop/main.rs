//! `qcop`: send, watch and wait for QCOP messages from the shell, compatible with the
//! Qt Extended tool of the same name.
//!
//! - [`args`]: the command line (commands, `--` chains, modifiers, the old form); every
//!   usage error is found there, before connecting.
//! - [`commands`]: runs the parsed commands in order on one connection.
//! - [`output`]: message lines, tables, and a stdout that may be closed under us.
//! - [`help`]: the help texts.

mod args;
mod commands;
mod help;
mod output;

use args::{Action, UsageError};
use output::Out;
use std::process::ExitCode;

/// Exit status of a failed command (timeout, not registered, daemon error or not running).
const EXIT_FAILURE: u8 = 1;

/// Why a command did not succeed (usage errors are [`UsageError`]s, found before running).
#[derive(Debug)]
pub enum Failure {
    /// Printed as `qcop: <text>` on stderr; exit status 1.
    Error(String),
    /// Exit status 1; the command already said why on stdout (`registered`).
    Negative,
    /// Standard output was closed (`qcop watch x | head -1`): stop quietly with status 0.
    OutputClosed,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let mut invocation =
        match args::utf8_args(std::env::args_os().skip(1)).and_then(|a| args::parse(&a)) {
            Ok(inv) => inv,
            Err(e) => return usage_error(&e),
        };
    for warning in &invocation.global.warnings {
        output::warn(warning);
    }
    if let Some(user) = invocation.global.user.clone() {
        // The daemon of the caller, not the one the user would find by default.
        let global = &mut invocation.global;
        global
            .socket
            .get_or_insert_with(qcop::paths::default_socket_path);
        if let Err(text) = become_user(&user) {
            output::warn(&format!("qcop: {text}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    let mut out = Out::new();
    let result = match &invocation.action {
        Action::Help(topic) => out.text(help::text(*topic)),
        Action::Version => out.line(&format!("qcop {}", env!("CARGO_PKG_VERSION"))),
        Action::Run(steps) => commands::run(&invocation.global, steps, &mut out),
    };
    match result {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Negative) => ExitCode::from(EXIT_FAILURE),
        Err(Failure::Error(text)) => {
            output::warn(&format!("qcop: {text}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn usage_error(e: &UsageError) -> ExitCode {
    output::warn(&format!("qcop: {e}"));
    match e.topic {
        Some(topic) => output::warn(&format!(
            "Run 'qcop help {}' for the syntax and examples.",
            topic.name()
        )),
        None if e.message == args::NO_COMMAND => output::warn(help::SHORT.trim_end()),
        None => output::warn("Run 'qcop --help' for the syntax and examples."),
    }
    ExitCode::from(e.status())
}

/// `-l USER`: takes on the user's identity (supplementary groups, group, user, and
/// `LOGNAME`) before connecting, so the daemon sees that user as the sender. Needs root,
/// unless USER is the caller.
fn become_user(name: &str) -> Result<(), String> {
    use nix::unistd::{self, User};
    let user = match User::from_name(name) {
        Ok(Some(user)) => user,
        Ok(None) => return Err(format!("unknown user {name:?}")),
        Err(e) => return Err(format!("cannot look up user {name:?}: {e}")),
    };
    if unistd::getuid() == user.uid && unistd::geteuid() == user.uid {
        std::env::set_var("LOGNAME", name);
        return Ok(());
    }
    let cname = std::ffi::CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    unistd::initgroups(&cname, user.gid)
        .and_then(|()| unistd::setgid(user.gid))
        .map_err(|e| format!("cannot take the groups of user {name:?}: {e}"))?;
    unistd::setuid(user.uid).map_err(|e| format!("cannot run as user {name:?}: {e}"))?;
    std::env::set_var("LOGNAME", name);
    Ok(())
}

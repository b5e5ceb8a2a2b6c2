//! Application channels: qcopd starts a configured program when a message arrives for its
//! channel, queues the message, and delivers the queue in order once the program subscribes;
//! failures and timeouts drop the queue and answer callers; persistent queues survive a
//! daemon restart; `qcop services` shows it all.
//!
//! The started programs are `/bin/sh` scripts around the `qcop` CLI. A script that must not
//! subscribe yet waits for a gate file the test creates.

mod common;

use common::users::{runnable_copy, users};
use common::{counter, eventually, recv, Daemon, Got, RawClient, WAIT};
use qcop::client::{MonitorEvent, ServiceInfo, ServiceState};
use qcop::wire::{ErrorCode, Frame};
use qcop::{Connection, Error};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn qcop_path() -> String {
    common::program("qcop").display().to_string()
}

/// A `[[service]]` entry running `script` with `/bin/sh -c`.
fn service(name: &str, channel: &str, script: &str, extra: &str) -> String {
    service_env(name, channel, script, extra, &[])
}

/// [`service`] with environment variables. Started programs get a cleared environment, so
/// under qemu-user the variable that points ARM programs at their libraries is passed on.
fn service_env(
    name: &str,
    channel: &str,
    script: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> String {
    let mut vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let Ok(prefix) = std::env::var("QEMU_LD_PREFIX") {
        vars.push(format!("QEMU_LD_PREFIX={prefix}"));
    }
    format!(
        "[[service]]\nname = {name:?}\nchannel = {channel:?}\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\nenvironment = {vars:?}\n{extra}\n"
    )
}

/// A shell loop that waits (at most a minute) until `gate` exists.
fn wait_for(gate: &Path) -> String {
    format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.1 || sleep 1; i=$((i+1)); done",
        gate.display()
    )
}

fn run(d: &Daemon, args: &[&str]) -> Output {
    d.cli().args(args).output().expect("run qcop")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn service_info(conn: &mut Connection, name: &str) -> ServiceInfo {
    conn.services()
        .expect("services")
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// Kills the programs the daemon still tracks (tests must not leave processes behind).
fn kill_services(conn: &mut Connection) {
    for s in conn.services().unwrap_or_default() {
        if s.pid != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(s.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The lines of `path` once it has `n` of them.
fn lines_of(path: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    eventually(&format!("{n} lines in {}", path.display()), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        lines = text.lines().map(str::to_owned).collect();
        lines.len() >= n && text.ends_with('\n')
    });
    lines
}

#[test]
fn a_message_starts_the_program_and_the_queue_is_delivered_in_order() {
    let dir = common::temp_dir("rec");
    let (gate, out) = (dir.join("go"), dir.join("out"));
    let script = format!(
        "{}; exec '{}' --format rich watch --count 3 QPE/Application/rec > '{}'",
        wait_for(&gate),
        qcop_path(),
        out.display()
    );
    let d = Daemon::start_with(&service("rec", "QPE/Application/rec", &script, ""));
    let mut c = d.connect();
    assert_eq!(service_info(&mut c, "rec").state, ServiceState::Idle);
    for (i, word) in ["one", "two", "three"].iter().enumerate() {
        let o = run(
            &d,
            &[
                "send",
                "QPE/Application/rec",
                "say(int,QString)",
                &i.to_string(),
                word,
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    // Started once, three messages waiting for it to subscribe.
    let info = service_info(&mut c, "rec");
    assert_eq!(
        (info.state, info.queued, info.starts),
        (ServiceState::Starting, 3, 1)
    );
    assert!(info.pid > 0);
    let table = stdout(&run(&d, &["services"]));
    let row = table.lines().nth(1).unwrap_or_default().to_owned();
    let cells: Vec<&str> = row.split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(
        cells.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        [
            "rec",
            "QPE/Application/rec",
            &format!("starting (pid {})", info.pid),
            "3",
            &info.queued_bytes.to_string(),
            "1",
            "0"
        ],
        "{table}"
    );
    assert!(table.starts_with("NAME"), "{table}");
    assert!(!c.is_registered("QPE/Application/rec").unwrap());

    std::fs::write(&gate, b"").unwrap();
    assert_eq!(
        lines_of(&out, 3),
        [
            "QPE/Application/rec say(int,QString) 0 \"one\"",
            "QPE/Application/rec say(int,QString) 1 \"two\"",
            "QPE/Application/rec say(int,QString) 2 \"three\"",
        ]
    );
    // watch --count 3 exits: the service is idle again, ready for the next start.
    eventually("the program to exit", || {
        service_info(&mut c, "rec").state == ServiceState::Idle
    });
    assert_eq!(counter(&mut c, "activation_queued"), 3);
    assert_eq!(counter(&mut c, "activation_delivered"), 3);
    assert_eq!(counter(&mut c, "activation_starts"), 1);
    assert_eq!(counter(&mut c, "activation_dropped"), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_call_waits_for_the_started_program_to_answer() {
    let script = format!(
        "exec '{}' serve QPE/Application/calc 'add(int,int)' 'sum(int)' 5 --count 1",
        qcop_path()
    );
    let d = Daemon::start_with(&service("calc", "QPE/Application/calc", &script, ""));
    let o = run(
        &d,
        &["call", "QPE/Application/calc", "add(int,int)", "2", "3"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "sum(int) 5\n");
    // A pattern subscriber (a watcher) does not keep the service from being started.
    let mut w = d.connect();
    w.subscribe("QPE/*").unwrap();
    eventually("serve to exit", || {
        service_info(&mut w, "calc").state == ServiceState::Idle
    });
    let o = run(
        &d,
        &["call", "QPE/Application/calc", "add(int,int)", "1", "1"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(service_info(&mut w, "calc").starts, 2);
    assert_eq!(recv(&mut w).message, "add(int,int)");
}

#[test]
fn a_program_that_never_subscribes_times_out_and_its_queue_is_dropped() {
    let config = service(
        "slow",
        "QPE/Application/slow",
        "sleep 30",
        "timeout_ms = 300",
    );
    let d = Daemon::start_with(&config);
    let mut c = d.connect();
    c.send("QPE/Application/slow", "a()", b"").unwrap();
    c.send("QPE/Application/slow", "b()", b"").unwrap();
    // A caller waiting for the program is told it did not come.
    let o = run(&d, &["call", "QPE/Application/slow", "c()"]);
    assert_eq!(o.status.code(), Some(1));
    // Queued and dropped with the others, or (had they timed out already) refused.
    assert!(
        stderr(&o).contains("application activation failed: service slow")
            && stderr(&o).contains("did not subscribe within 300 ms"),
        "{}",
        stderr(&o)
    );
    let info = service_info(&mut c, "slow");
    assert_eq!((info.state, info.queued), (ServiceState::Failed, 0));
    assert!(info.failures >= 1);
    assert_eq!(info.detail, "did not subscribe within 300 ms");
    let table = stdout(&run(&d, &["services"]));
    assert!(
        table.contains(&format!(
            "failed (did not subscribe within 300 ms; pid {} still runs)",
            info.pid
        )),
        "{table}"
    );
    assert!(counter(&mut c, "activation_timeouts") >= 1);
    // Two sends and the call, whether they timed out together or in turn.
    assert_eq!(counter(&mut c, "activation_dropped"), 3);
    assert_eq!(counter(&mut c, "activation_starts"), 1);
    kill_services(&mut c);
}

#[test]
fn after_a_timeout_messages_are_refused_for_the_restart_delay() {
    let config = format!(
        "activation_restart_delay_ms = 60000\n{}",
        service(
            "late",
            "QPE/Application/late",
            "sleep 30",
            "timeout_ms = 200"
        )
    );
    let d = Daemon::start_with(&config);
    let mut c = d.connect();
    assert_eq!(c.send_acked("QPE/Application/late", "a()", b"").unwrap(), 0);
    eventually("the service to time out", || {
        service_info(&mut c, "late").state == ServiceState::Failed
    });
    // The program still runs, but the daemon no longer waits for it: a client speaking the
    // protocol directly gets a non-fatal ActivationFailed for each message, acked or not,
    // and nothing is queued.
    let mut raw = RawClient::greeted(&d.socket);
    for (seq, ack) in [(1, true), (2, false)] {
        raw.send(&Frame::Send {
            seq,
            ack,
            channel: "QPE/Application/late",
            message: "b()",
            payload: b"",
        });
        match raw.next() {
            Some(Got::Error {
                seq: s,
                fatal: false,
                code: ErrorCode::ActivationFailed,
                text,
            }) if s == seq => assert!(
                text.contains("did not subscribe within 200 ms")
                    && text.contains("next start attempt in"),
                "{text}"
            ),
            other => panic!("send {seq}: expected ActivationFailed, got {other:?}"),
        }
    }
    assert!(raw.sync(3).is_empty());
    let info = service_info(&mut c, "late");
    assert_ne!(info.pid, 0);
    assert_eq!(
        (info.state, info.queued, info.starts),
        (ServiceState::Failed, 0, 1)
    );
    assert_eq!(counter(&mut c, "activation_dropped"), 3);
    kill_services(&mut c);
}

#[test]
fn the_queue_of_a_starting_service_is_bounded() {
    let config = format!(
        "activation_max_queued_messages = 2\n{}",
        service(
            "full",
            "QPE/Application/full",
            "sleep 30",
            "timeout_ms = 60000"
        )
    );
    let d = Daemon::start_with(&config);
    let mut c = d.connect();
    assert_eq!(c.send_acked("QPE/Application/full", "a()", b"").unwrap(), 0);
    assert_eq!(c.send_acked("QPE/Application/full", "b()", b"").unwrap(), 0);
    match c.send_acked("QPE/Application/full", "c()", b"") {
        Err(Error::Refused {
            code: ErrorCode::ActivationQueueFull,
            text,
        }) => assert!(
            text.starts_with("2 messages (") && text.contains("already wait for service full"),
            "{text}"
        ),
        other => panic!("expected ActivationQueueFull, got {other:?}"),
    }
    let o = run(&d, &["send", "QPE/Application/full", "d()"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("activation queue full: 2 messages"),
        "{}",
        stderr(&o)
    );
    let info = service_info(&mut c, "full");
    assert_eq!((info.state, info.queued), (ServiceState::Starting, 2));
    assert_eq!(counter(&mut c, "activation_queue_full"), 2);
    kill_services(&mut c);
}

#[test]
fn a_program_that_fails_answers_callers_with_an_error() {
    let config = format!(
        "activation_restart_delay_ms = 60000\n{}{}",
        service("crash", "QPE/Application/crash", "exit 3", ""),
        "[[service]]\nname = \"missing\"\nchannel = \"QPE/Application/missing\"\ncommand = [\"/nonexistent/qcop-app\"]\n"
    );
    let d = Daemon::start_with(&config);
    let mut c = d.connect();
    let refused = |r: Result<qcop::Reply, Error>| match r {
        Err(Error::Refused {
            code: ErrorCode::ActivationFailed,
            text,
        }) => text,
        other => panic!("expected ActivationFailed, got {other:?}"),
    };
    let text = refused(c.call("QPE/Application/crash", "x()", b"", WAIT));
    assert_eq!(
        text,
        "service crash exited before subscribing (exit status: 3)"
    );
    // Not restarted for every message while it keeps failing.
    let text = refused(c.call("QPE/Application/crash", "x()", b"", WAIT));
    assert!(text.contains("next start attempt in"), "{text}");
    let text = refused(c.call("QPE/Application/missing", "x()", b"", WAIT));
    assert!(
        text.starts_with("service missing: cannot start /nonexistent/qcop-app: "),
        "{text}"
    );
    // The CLI says so and exits 1.
    let o = run(&d, &["send", "QPE/Application/crash", "y()"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("application activation failed: service crash failed"),
        "{}",
        stderr(&o)
    );
    let info = service_info(&mut c, "crash");
    assert_eq!(
        (info.state, info.pid, info.starts),
        (ServiceState::Failed, 0, 1)
    );
    let table = stdout(&run(&d, &["services"]));
    assert!(
        table.contains("failed (exited before subscribing (exit status: 3))"),
        "{table}"
    );
    assert_eq!(counter(&mut c, "activation_failures"), 2);
}

#[test]
fn persistent_queues_survive_a_daemon_restart() {
    let dir = common::temp_dir("spool");
    let spool = dir.join("spool");
    let out = dir.join("out");
    let waiting = format!(
        "spool_dir = {:?}\nactivation_timeout_ms = 60000\n{}",
        spool.display().to_string(),
        service(
            "keep",
            "QPE/Application/keep",
            "sleep 30",
            "persistent = true"
        )
    );
    let mut d = Daemon::start_with(&waiting);
    let mut c = d.connect();
    for i in 0..3i32 {
        c.send("QPE/Application/keep", "n(int)", &i.to_be_bytes())
            .unwrap();
    }
    c.flush().unwrap();
    let waiting_pid = service_info(&mut c, "keep").pid;
    let files = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let queue = spool.join("keep");
    let spooled = files(&queue);
    assert_eq!(spooled.len(), 3, "{spooled:?}");
    assert_eq!(counter(&mut c, "spool_written"), 3);
    drop(c);
    d.kill(); // a crash: nothing is flushed at exit
              // (Its program would have kept waiting; it is not needed any more.)
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(waiting_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );

    // What a crash or a bad disk can leave behind: a half-written temporary file, a
    // truncated message and garbage. None of it may be delivered.
    std::fs::write(queue.join(".tmp-00000000000000000007.msg"), b"QCOPSPL1").unwrap();
    let good = std::fs::read(&spooled[0]).unwrap();
    std::fs::write(
        queue.join("00000000000000000008.msg"),
        &good[..good.len() - 3],
    )
    .unwrap();
    std::fs::write(queue.join("00000000000000000009.msg"), b"not a message").unwrap();

    // The next daemon has a program that subscribes: it is started at once for the spool.
    let script = format!(
        "exec '{}' --format rich watch --count 3 QPE/Application/keep > '{}'",
        qcop_path(),
        out.display()
    );
    let delivering = format!(
        "spool_dir = {:?}\n{}",
        spool.display().to_string(),
        service("keep", "QPE/Application/keep", &script, "persistent = true")
    );
    std::fs::write(d.config.as_ref().unwrap(), delivering).unwrap();
    d.restart();
    assert_eq!(
        lines_of(&out, 3),
        [
            "QPE/Application/keep n(int) 0",
            "QPE/Application/keep n(int) 1",
            "QPE/Application/keep n(int) 2"
        ]
    );
    let mut c = d.connect();
    assert_eq!(counter(&mut c, "spool_restored"), 3);
    assert_eq!(counter(&mut c, "spool_corrupt"), 2);
    assert_eq!(counter(&mut c, "spool_incomplete"), 1);
    assert_eq!(counter(&mut c, "activation_delivered"), 3);
    // Delivered messages leave the spool; the damaged files were moved aside.
    assert!(files(&queue).is_empty(), "{:?}", files(&queue));
    let aside: Vec<String> = files(&queue.join("corrupt"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        aside,
        ["00000000000000000008.msg", "00000000000000000009.msg"]
    );
    eventually("the program to exit", || {
        service_info(&mut c, "keep").state == ServiceState::Idle
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_service_runs_as_its_configured_user() {
    let Some(users) = users("a_service_runs_as_its_configured_user") else {
        return;
    };
    let dir = common::temp_dir("who");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let qcop = runnable_copy(&common::program("qcop"), &dir);
    // The program checks what it was given before answering.
    let script = format!(
        "[ \"$QCOP_TEST\" = 1 ] && [ \"$QCOP_SERVICE\" = who ] && [ \"$(pwd)\" = /tmp ] && \
         exec '{}' serve QPE/Application/who 'who()' 'me()' --count 1",
        qcop.display()
    );
    let config = format!(
        "socket_mode = \"0666\"\n{}",
        service_env(
            "who",
            "QPE/Application/who",
            &script,
            "user = \"qcoptest-a\"\nworking_directory = \"/tmp\"",
            &[("QCOP_TEST", "1")],
        )
    );
    let d = Daemon::start_with(&config);
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut monitor = d.connect();
    monitor.monitor(&["QPE/Application/*"]).unwrap();
    let mut c = d.connect();
    let reply = c.call("QPE/Application/who", "who()", b"", WAIT).unwrap();
    assert_eq!(reply.message, "me()");
    let call = monitor.recv_monitored(WAIT).unwrap().unwrap();
    assert_eq!(call.event, MonitorEvent::Call);
    let answer = monitor.recv_monitored(WAIT).unwrap().unwrap();
    assert_eq!(answer.event, MonitorEvent::Reply);
    assert_eq!(answer.token, call.token);
    // The responder is the started program, running as qcoptest-a.
    assert_eq!(
        (answer.sender.uid, answer.sender.gid),
        (users.a.uid, users.a.gid)
    );
    assert_eq!(call.sender.pid, std::process::id());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_service_gets_the_supplementary_groups_of_its_user() {
    let Some(users) = users("a_service_gets_the_supplementary_groups_of_its_user") else {
        return;
    };
    let dir = common::temp_dir("groups");
    // The program (qcoptest-b) writes its groups here.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let qcop = runnable_copy(&common::program("qcop"), &dir);
    let groups_file = dir.join("groups");
    let script = format!(
        "id -G > '{}' && exec '{}' serve QPE/Application/groups 'groups()' 'listed()' --count 1",
        groups_file.display(),
        qcop.display()
    );
    let config = format!(
        "socket_mode = \"0666\"\n{}",
        service(
            "groups",
            "QPE/Application/groups",
            &script,
            "user = \"qcoptest-b\""
        )
    );
    let d = Daemon::start_with(&config);
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = d.connect();
    let reply = c
        .call("QPE/Application/groups", "groups()", b"", WAIT)
        .unwrap();
    assert_eq!(reply.message, "listed()");
    // Its primary group and the group that lists it, as after a login; none of the
    // daemon's own groups (root's).
    let text = std::fs::read_to_string(&groups_file).unwrap();
    let mut groups: Vec<u32> = text
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let mut expected = vec![users.b.gid, users.extra_gid];
    expected.sort_unstable();
    assert_eq!(groups, expected, "id -G of the started program: {text:?}");
    let _ = std::fs::remove_dir_all(dir);
}

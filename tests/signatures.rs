//! Message signatures as Qt normalises them: what a receiver gets for each spelling a
//! sender may use, through the `qcop` CLI and through the library (which sends names as
//! written, so the daemon does the normalising).

mod common;

use common::{recv, wait_exit, Daemon};
use std::process::Output;

fn qcop(d: &Daemon, args: &[&str]) -> Output {
    let child = d.cli().args(args).spawn().expect("spawn qcop");
    child.wait_with_output().expect("wait for qcop")
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn qt_typedef_names_arrive_as_written() {
    let d = Daemon::start();
    let mut conn = d.connect();
    conn.subscribe("test/sig").unwrap();

    // The CLI keeps qint64 (as Qt does) and encodes it as 8 bytes.
    assert_ok(&qcop(&d, &["send", "test/sig", "f( qint64 )", "-2"]));
    let m = recv(&mut conn);
    assert_eq!(m.message, "f(qint64)");
    assert_eq!(m.data, (-2i64).to_be_bytes());
    assert_ok(&qcop(
        &d,
        &[
            "send",
            "test/sig",
            "g(const quint64 &, qint32, quint32)",
            "7",
            "-1",
            "9",
        ],
    ));
    let m = recv(&mut conn);
    assert_eq!(m.message, "g(quint64,qint32,quint32)");
    let mut want = 7u64.to_be_bytes().to_vec();
    want.extend((-1i32).to_be_bytes());
    want.extend(9u32.to_be_bytes());
    assert_eq!(m.data, want);
    // qlonglong stays qlonglong: a different signature to Qt.
    assert_ok(&qcop(&d, &["send", "test/sig", "f(qlonglong)", "3"]));
    assert_eq!(recv(&mut conn).message, "f(qlonglong)");

    // A library sender's spelling is normalised by the daemon.
    let mut sender = d.connect();
    sender
        .send("test/sig", " f ( qint64 ) ", &5i64.to_be_bytes())
        .unwrap();
    sender
        .send("test/sig", "h(unsigned, const QString &)", b"")
        .unwrap();
    sender.flush().unwrap();
    assert_eq!(recv(&mut conn).message, "f(qint64)");
    assert_eq!(recv(&mut conn).message, "h(uint,QString)");
}

#[test]
fn a_waiter_gets_every_spelling_of_its_message() {
    let d = Daemon::start();
    let mut probe = d.connect();
    let mut child = d
        .cli()
        .args(["wait", "test/w", "done(qint64)"])
        .spawn()
        .unwrap();
    common::eventually("the waiter subscribed", || {
        probe.registered_counts("test/w").unwrap().0 == 1
    });
    let mut sender = d.connect();
    sender
        .send("test/w", "done(qlonglong)", &1i64.to_be_bytes())
        .unwrap();
    sender
        .send("test/w", "done ( qint64 )", &2i64.to_be_bytes())
        .unwrap();
    sender.flush().unwrap();
    assert!(wait_exit(&mut child).success());
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    // Only the qint64 one is the awaited message; its value is printed.
    assert!(out.contains('2') && !out.contains('1'), "{out:?}");
}

#[test]
fn a_started_service_gets_the_queued_message_normalised() {
    let dir = common::temp_dir("sig-svc");
    let out = dir.join("out");
    let script = format!(
        "exec '{}' --format rich watch --count 1 QPE/Application/norm > '{}'",
        common::program("qcop").display(),
        out.display()
    );
    // Started programs get a cleared environment; under qemu-user ARM programs need this.
    let env: Vec<String> = std::env::var("QEMU_LD_PREFIX")
        .map(|p| vec![format!("QEMU_LD_PREFIX={p}")])
        .unwrap_or_default();
    let d = Daemon::start_with(&format!(
        "[[service]]\nname = \"norm\"\nchannel = \"QPE/Application/norm\"\n\
         command = [\"/bin/sh\", \"-c\", {script:?}]\nenvironment = {env:?}\n"
    ));
    let mut sender = d.connect();
    sender
        .send("QPE/Application/norm", " go ( int ) ", &5i32.to_be_bytes())
        .unwrap();
    sender.flush().unwrap();
    common::eventually("the service's output", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.ends_with('\n'))
    });
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "QPE/Application/norm go(int) 5\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

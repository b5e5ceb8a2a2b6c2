//! Shared-memory segments and system semaphores against a real daemon, with real processes
//! killed while they hold the lock or semaphore units, real other users, and a hundred
//! create/attach/kill cycles that must leave nothing behind.
//!
//! Processes that get killed are this test binary run again as a helper
//! (`helper_process_role`, selected by `QCOP_SHM_ROLE`), so they use the library exactly as
//! an application would.

mod common;

use common::{counter, eventually, Daemon, WAIT};
use qcop::shm::{Access, SharedMemory, ShmError, SystemSemaphore};
use qcop::ConnectOptions;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

// ----- helper processes -----------------------------------------------------------------

const ROLE_ENV: &str = "QCOP_SHM_ROLE";

/// A helper process: this test binary running one role, reporting on stdout.
struct Helper {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn spawn(d: &Daemon, args: &[&str]) -> Helper {
        Helper::spawn_as(d, None, args)
    }

    /// Runs a role, as the user with `(uid, gid)` (through `setpriv`) if given.
    fn spawn_as(d: &Daemon, user: Option<(u32, u32)>, args: &[&str]) -> Helper {
        let exe = std::env::current_exe().expect("own path");
        let mut cmd = match user {
            None => Command::new(&exe),
            Some((uid, gid)) => {
                let mut c = setpriv(uid, gid);
                c.arg(&exe);
                c
            }
        };
        cmd.args([
            "--exact",
            "helper_process_role",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, args.join("\u{1f}"))
        .env("QCOP_SOCKET", &d.socket)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn helper");
        let out = child.stdout.take().expect("helper stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper { child, lines }
    }

    /// The next report of the role (what follows `@` on a line), skipping the test
    /// harness's own output (which may start the same line: `test ... @LOCKED`).
    fn report(&mut self) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => {
                    if let Some((_, r)) = line.split_once('@') {
                        return r.to_owned();
                    }
                }
                Err(_) => panic!("helper {} reported nothing within {WAIT:?}", self.pid()),
            }
        }
    }

    fn expect(&mut self, want: &str) {
        let got = self.report();
        assert_eq!(got, want, "helper {} reported {got:?}", self.pid());
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap the process so it is gone (not a zombie).
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for a normal exit.
    fn finish(mut self) {
        let status = common::wait_exit(&mut self.child);
        assert!(status.success(), "helper exited with {status}");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command that runs the program given next as `uid`/`gid`, without supplementary groups.
fn setpriv(uid: u32, gid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups");
    c
}

fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@{line}");
    let _ = out.flush();
}

fn sleep_until_killed() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn error_name(e: &ShmError) -> &'static str {
    match e {
        ShmError::PermissionDenied(_) => "PermissionDenied",
        ShmError::InvalidSize(_) => "InvalidSize",
        ShmError::BadName(_) => "BadName",
        ShmError::AlreadyExists(_) => "AlreadyExists",
        ShmError::NotFound(_) => "NotFound",
        ShmError::LockError(_) => "LockError",
        ShmError::OutOfResources(_) => "OutOfResources",
        ShmError::InvalidArgument(_) => "InvalidArgument",
        ShmError::Unavailable(_) => "Unavailable",
        ShmError::Daemon(_) => "Daemon",
    }
}

fn outcome<T>(r: Result<T, ShmError>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(e) => format!("ERR {}", error_name(&e)),
    }
}

/// The helper roles. Each reports with lines starting with `@`.
fn run_role(args: &[String]) {
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| a(i).parse::<u64>().expect("numeric role argument");
    match a(0) {
        // Attach, lock, write half an update, and wait to be killed.
        "hold-lock" => {
            let mut shm = SharedMemory::builder(a(1))
                .size(4096)
                .create_or_attach()
                .unwrap();
            let mut g = shm.lock().unwrap();
            g.write(0, b"half").unwrap();
            report("LOCKED");
            std::mem::forget(g);
            sleep_until_killed();
        }
        // Open a semaphore and take units, then wait to be killed.
        "hold-units" => {
            let mut sem = SystemSemaphore::open(a(1)).unwrap();
            for _ in 0..num(2) {
                assert!(sem.acquire_timeout(WAIT).unwrap());
            }
            report("HELD");
            sleep_until_killed();
        }
        // Create a segment, write into it, and wait to be killed.
        "create" => {
            let mut shm = SharedMemory::builder(a(1))
                .size(64)
                .persistent(a(2) == "persistent")
                .create()
                .unwrap();
            shm.lock().unwrap().write(0, b"from the creator").unwrap();
            report("CREATED");
            sleep_until_killed();
        }
        // One create/attach/kill cycle: a segment, an undo semaphore, the lock and a unit.
        "cycle" => {
            let mut shm = SharedMemory::builder(a(1))
                .size(8192)
                .create_or_attach()
                .unwrap();
            let mut sem = SystemSemaphore::builder(&format!("{}-sem", a(1)))
                .initial(1)
                .max(1)
                .undo(true)
                .create_or_open()
                .unwrap();
            assert!(sem.acquire_timeout(WAIT).unwrap());
            let g = shm.lock().unwrap();
            report("UP");
            std::mem::forget(g);
            sleep_until_killed();
        }
        // Increment a counter under the segment lock and another under a semaphore used as
        // a mutex, `rounds` times, with plain (non-atomic) reads and writes.
        "count" => {
            let rounds = num(2);
            let mut shm = SharedMemory::attach(a(1), Access::ReadWrite).unwrap();
            let mut sem = SystemSemaphore::open(&format!("{}-sem", a(1))).unwrap();
            report("READY");
            for i in 0..rounds {
                {
                    let mut g = shm.lock().unwrap();
                    let data = g.data_mut().unwrap();
                    let v = u64::from_le_bytes(data[0..8].try_into().unwrap());
                    if i % 97 == 0 {
                        std::thread::yield_now();
                    }
                    data[0..8].copy_from_slice(&(v + 1).to_le_bytes());
                }
                sem.acquire().unwrap();
                let mut b = [0u8; 8];
                shm.read(8, &mut b).unwrap();
                shm.write(8, &(u64::from_le_bytes(b) + 1).to_le_bytes())
                    .unwrap();
                sem.release(1).unwrap();
            }
            report("DONE");
        }
        // One operation, reporting OK or the error's name (permission tests).
        "op" => {
            let r = match a(1) {
                "create-seg" => outcome(
                    SharedMemory::builder(a(2))
                        .size(64)
                        .mode(u16::from_str_radix(a(3), 8).unwrap())
                        .group(a(4).parse().unwrap_or(u32::MAX))
                        .persistent(true)
                        .create(),
                ),
                "attach-ro" => outcome(SharedMemory::attach(a(2), Access::ReadOnly)),
                "attach-rw" => outcome(SharedMemory::attach(a(2), Access::ReadWrite)),
                "write-ro" => {
                    let shm = SharedMemory::attach(a(2), Access::ReadOnly).unwrap();
                    outcome(shm.write(0, b"x"))
                }
                "remove-seg" => outcome(SharedMemory::remove(a(2), &ConnectOptions::new())),
                "create-sem" => outcome(
                    SystemSemaphore::builder(a(2))
                        .initial(1)
                        .mode(u16::from_str_radix(a(3), 8).unwrap())
                        .group(a(4).parse().unwrap_or(u32::MAX))
                        .persistent(true)
                        .create(),
                ),
                "open-sem" => outcome(SystemSemaphore::open(a(2))),
                other => panic!("unknown op {other}"),
            };
            report(&r);
        }
        other => panic!("unknown role {other:?}"),
    }
}

/// Not a test: the entry point of the helper processes the other tests start.
#[test]
#[ignore = "helper: the other tests run it as a child process"]
fn helper_process_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let args: Vec<String> = role.split('\u{1f}').map(str::to_owned).collect();
    run_role(&args);
    std::process::exit(0);
}

// ----- helpers for the tests --------------------------------------------------------------

fn opts(d: &Daemon) -> ConnectOptions {
    d.options().name("shm-test")
}

fn segment(d: &Daemon, name: &str) -> qcop::shm::SegmentBuilder {
    SharedMemory::builder(name).connect_options(opts(d))
}

fn semaphore(d: &Daemon, name: &str) -> qcop::shm::SemaphoreBuilder {
    SystemSemaphore::builder(name).connect_options(opts(d))
}

fn handles(d: &Daemon) -> u64 {
    counter(&mut d.connect(), "shm_handles")
}

// ----- segments -------------------------------------------------------------------------

#[test]
fn two_attachments_share_data_and_the_segment_goes_with_the_last() {
    let d = Daemon::start();
    let mut a = segment(&d, "share").size(100).create().unwrap();
    assert!(a.created());
    assert_eq!(a.size(), 100);
    let mut b = segment(&d, "share").attach().unwrap();
    assert!(!b.created());
    assert_eq!((b.size(), b.access()), (100, Access::ReadWrite));

    b.lock().unwrap().data_mut().unwrap()[10..15].copy_from_slice(b"hello");
    let mut got = [0u8; 5];
    a.read(10, &mut got).unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(&a.lock().unwrap().data()[10..15], b"hello");

    // create_or_attach attaches, keeping the existing size.
    let c = segment(&d, "share").size(5000).create_or_attach().unwrap();
    assert!(!c.created());
    assert_eq!(c.size(), 100);
    c.detach().unwrap();
    b.detach().unwrap();
    a.detach().unwrap();
    assert!(matches!(
        segment(&d, "share").attach(),
        Err(ShmError::NotFound(_))
    ));
    assert_eq!(handles(&d), 0);
}

#[test]
fn lock_excludes_try_lock_and_times_out() {
    let d = Daemon::start();
    let mut a = segment(&d, "excl").size(8).create().unwrap();
    let mut b = segment(&d, "excl").attach().unwrap();
    let g = a.lock().unwrap();
    assert!(!g.previous_owner_died());
    assert!(b.try_lock().unwrap().is_none());
    assert!(b.lock_timeout(Duration::from_millis(50)).unwrap().is_none());
    g.unlock().unwrap();
    assert!(b.try_lock().unwrap().is_some(), "free once unlocked");
    // A guard that is dropped unlocks too.
    assert!(a.lock_timeout(WAIT).unwrap().is_some());
}

#[test]
fn read_only_attachment_reads_and_locks_but_cannot_write() {
    let d = Daemon::start();
    let mut rw = segment(&d, "ro").size(16).create().unwrap();
    rw.write(0, b"abc").unwrap();
    let mut ro = segment(&d, "ro").read_only().attach().unwrap();
    assert_eq!(ro.access(), Access::ReadOnly);
    assert!(matches!(
        ro.write(0, b"x"),
        Err(ShmError::PermissionDenied(_))
    ));
    {
        let mut g = ro.lock().unwrap();
        assert_eq!(&g.data()[..3], b"abc");
        assert!(matches!(g.data_mut(), Err(ShmError::PermissionDenied(_))));
        assert!(
            rw.try_lock().unwrap().is_none(),
            "a read-only attacher holds the lock"
        );
    }
    // The daemon gave it a read-only descriptor: its mapping is not writable.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let seg: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains("memfd:qcop-seg:ro "))
        .collect();
    assert_eq!(seg.len(), 2, "{maps}");
    assert!(seg
        .iter()
        .any(|l| l.split_whitespace().nth(1) == Some("r--s")));
    assert!(seg
        .iter()
        .any(|l| l.split_whitespace().nth(1) == Some("rw-s")));
}

#[test]
fn invalid_names_sizes_and_arguments_are_refused() {
    let d = Daemon::start();
    let long = "n".repeat(256);
    for name in ["", "bad\nname", long.as_str()] {
        assert!(
            matches!(
                segment(&d, name).size(1).create(),
                Err(ShmError::BadName(_))
            ),
            "{name:?}"
        );
        assert!(matches!(
            semaphore(&d, name).initial(1).create(),
            Err(ShmError::BadName(_))
        ));
    }
    assert!(matches!(
        segment(&d, "zero").create(),
        Err(ShmError::InvalidSize(_))
    ));
    assert!(matches!(
        segment(&d, "huge").size(1 << 40).create(),
        Err(ShmError::InvalidSize(_))
    ));
    assert!(matches!(
        segment(&d, "missing").attach(),
        Err(ShmError::NotFound(_))
    ));
    assert!(matches!(
        segment(&d, "mode").size(1).mode(0o1777).create(),
        Err(ShmError::InvalidArgument(_))
    ));
    let _keep = segment(&d, "twice").size(1).create().unwrap();
    assert!(matches!(
        segment(&d, "twice").size(1).create(),
        Err(ShmError::AlreadyExists(_))
    ));
    assert!(matches!(
        semaphore(&d, "s").initial(3).max(2).create(),
        Err(ShmError::InvalidArgument(_))
    ));
    assert!(matches!(
        semaphore(&d, "missing").open(),
        Err(ShmError::NotFound(_))
    ));
    let mut s = semaphore(&d, "s").initial(1).max(2).create().unwrap();
    assert!(matches!(s.release(2), Err(ShmError::InvalidArgument(_))));
    assert_eq!(s.value(), 1, "a refused release changes nothing");
    assert!(matches!(
        SharedMemory::builder("x")
            .connect_options(ConnectOptions::new().socket(d.dir.join("nobody.sock")))
            .size(1)
            .create(),
        Err(ShmError::Daemon(_))
    ));
}

#[test]
fn daemon_limits_give_out_of_resources() {
    let d = Daemon::start_with(
        "shm_max_segments = 2\nshm_max_segment_bytes = 4096\nshm_max_total_segment_bytes = 6144\n\
         shm_max_semaphores = 1\nshm_max_handles_per_client = 64\n",
    );
    let a = segment(&d, "a").size(4096).create().unwrap();
    assert!(matches!(
        segment(&d, "b").size(4096).create(),
        Err(ShmError::OutOfResources(_))
    ));
    let b = segment(&d, "b").size(2048).create().unwrap();
    assert!(matches!(
        segment(&d, "c").size(1).create(),
        Err(ShmError::OutOfResources(_))
    ));
    let _s = semaphore(&d, "s").initial(1).create().unwrap();
    assert!(matches!(
        semaphore(&d, "t").initial(1).create(),
        Err(ShmError::OutOfResources(_))
    ));
    let mut conn = d.connect();
    assert_eq!(counter(&mut conn, "shm_segments"), 2);
    assert_eq!(counter(&mut conn, "shm_segment_bytes"), 6144);
    assert!(counter(&mut conn, "shm_requests_refused") >= 3);
    drop((a, b));
    eventually("the segments to go", || {
        counter(&mut conn, "shm_segment_bytes") == 0
    });
    segment(&d, "c").size(4096).create().unwrap();
}

#[test]
fn killed_lock_holder_hands_the_lock_over_with_owner_died() {
    let d = Daemon::start();
    let mut waiter = segment(&d, "crash").size(4096).create().unwrap();
    let mut holder = Helper::spawn(&d, &["hold-lock", "crash"]);
    holder.expect("LOCKED");
    assert!(waiter.try_lock().unwrap().is_none(), "the helper holds it");

    std::thread::scope(|s| {
        // Sleeping in lock() when the holder is killed.
        let w = s.spawn(|| {
            let g = waiter.lock().expect("lock after the holder died");
            (g.previous_owner_died(), g.data()[..4].to_vec())
        });
        std::thread::sleep(Duration::from_millis(100));
        holder.kill();
        let (died, data) = w.join().unwrap();
        assert!(died, "the next locker must be told the holder died");
        assert_eq!(
            data, b"half",
            "what the dead holder wrote is there to repair"
        );
    });
    // Reported once: the lock is consistent again after the new holder unlocked.
    assert!(!waiter.lock().unwrap().previous_owner_died());
    assert_eq!(counter(&mut d.connect(), "shm_locks_recovered"), 1);
}

#[test]
fn killed_lock_holder_is_found_by_waiters_when_the_daemon_is_gone_too() {
    let mut d = Daemon::start();
    let mut waiter = segment(&d, "orphan").size(4096).create().unwrap();
    let mut holder = Helper::spawn(&d, &["hold-lock", "orphan"]);
    holder.expect("LOCKED");
    d.kill();
    holder.kill();
    let g = waiter
        .lock_timeout(WAIT)
        .unwrap()
        .expect("the waiter must take over from the dead holder");
    assert!(g.previous_owner_died());
    assert_eq!(&g.data()[..4], b"half");
}

#[test]
fn persistent_segment_outlives_its_creator_until_removed() {
    let d = Daemon::start();
    let creator = {
        let mut h = Helper::spawn(&d, &["create", "keep", "persistent"]);
        h.expect("CREATED");
        h
    };
    let mut transient = Helper::spawn(&d, &["create", "gone", "transient"]);
    transient.expect("CREATED");
    creator.kill();
    transient.kill();
    eventually("the daemon to see both creators go", || handles(&d) == 0);

    let shm = segment(&d, "keep").attach().unwrap();
    let mut buf = [0u8; 16];
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from the creator");
    assert!(matches!(
        segment(&d, "gone").attach(),
        Err(ShmError::NotFound(_))
    ));

    // Removing drops the name; the attached memory stays usable until detached.
    SharedMemory::remove("keep", &opts(&d)).unwrap();
    assert!(matches!(
        segment(&d, "keep").attach(),
        Err(ShmError::NotFound(_))
    ));
    assert!(matches!(
        SharedMemory::remove("keep", &opts(&d)),
        Err(ShmError::NotFound(_))
    ));
    shm.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from the creator");
    let fresh = segment(&d, "keep").size(8).create().unwrap();
    assert_eq!(fresh.size(), 8, "the name is free for a new segment");
    let mut conn = d.connect();
    assert_eq!(counter(&mut conn, "shm_segments"), 2);
    shm.detach().unwrap();
    assert_eq!(counter(&mut conn, "shm_segments"), 1);
}

// ----- semaphores -----------------------------------------------------------------------

#[test]
fn semaphore_counts_across_attachments() {
    let d = Daemon::start();
    let mut a = semaphore(&d, "count").initial(2).max(3).create().unwrap();
    let mut b = semaphore(&d, "count").create_or_open().unwrap();
    assert!(a.created() && !b.created());
    assert_eq!((b.value(), b.max()), (2, 3));
    assert!(b.try_acquire().unwrap());
    assert!(a.try_acquire().unwrap());
    assert!(!b.try_acquire().unwrap());
    assert!(!b.acquire_timeout(Duration::from_millis(30)).unwrap());
    std::thread::scope(|s| {
        let w = s.spawn(|| b.acquire_timeout(WAIT).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        a.release(1).unwrap();
        assert!(w.join().unwrap(), "release wakes the sleeper");
    });
    a.release(3).unwrap();
    assert_eq!(a.value(), 3);
}

#[test]
fn units_of_a_killed_holder_come_back_with_undo_only() {
    let d = Daemon::start();
    let mut undo = semaphore(&d, "undo")
        .initial(2)
        .max(2)
        .undo(true)
        .create()
        .unwrap();
    let mut plain = semaphore(&d, "plain").initial(2).max(2).create().unwrap();
    let mut h1 = Helper::spawn(&d, &["hold-units", "undo", "2"]);
    h1.expect("HELD");
    let mut h2 = Helper::spawn(&d, &["hold-units", "plain", "2"]);
    h2.expect("HELD");
    assert!(!undo.try_acquire().unwrap());

    std::thread::scope(|s| {
        let w = s.spawn(|| undo.acquire_timeout(WAIT).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        h1.kill();
        assert!(w.join().unwrap(), "the killed holder's units come back");
    });
    assert_eq!(undo.value(), 1);
    h2.kill();
    eventually("the daemon to see the helpers go", || handles(&d) == 2);
    assert_eq!(
        plain.value(),
        0,
        "without undo, units of the dead stay taken"
    );
    assert!(!plain.try_acquire().unwrap());
    assert_eq!(counter(&mut d.connect(), "shm_undo_units_returned"), 2);
    // Units this opener still holds come back when it closes, too.
    undo.close().unwrap();
    let other = semaphore(&d, "undo").open();
    assert!(
        matches!(other, Err(ShmError::NotFound(_))),
        "non-persistent, last closed"
    );
}

#[test]
fn undo_units_come_back_without_the_daemon() {
    let mut d = Daemon::start();
    let mut sem = semaphore(&d, "orphan-sem")
        .initial(1)
        .max(1)
        .undo(true)
        .create()
        .unwrap();
    let mut h = Helper::spawn(&d, &["hold-units", "orphan-sem", "1"]);
    h.expect("HELD");
    d.kill();
    h.kill();
    assert!(
        sem.acquire_timeout(WAIT).unwrap(),
        "a waiter reclaims a dead opener's units when the daemon is gone"
    );
}

#[test]
fn processes_exclude_each_other_under_lock_and_semaphore() {
    let d = Daemon::start();
    let procs = 4;
    let rounds = 2_000;
    let shm = segment(&d, "race").size(16).create().unwrap();
    let _sem = semaphore(&d, "race-sem")
        .initial(1)
        .max(1)
        .create()
        .unwrap();
    let mut helpers: Vec<Helper> = (0..procs)
        .map(|_| Helper::spawn(&d, &["count", "race", &rounds.to_string()]))
        .collect();
    for h in &mut helpers {
        h.expect("READY");
    }
    for mut h in helpers {
        h.expect("DONE");
        h.finish();
    }
    let mut b = [0u8; 16];
    shm.read(0, &mut b).unwrap();
    let under_lock = u64::from_le_bytes(b[0..8].try_into().unwrap());
    let under_sem = u64::from_le_bytes(b[8..16].try_into().unwrap());
    assert_eq!(
        under_lock,
        procs * rounds,
        "lost updates under the segment lock"
    );
    assert_eq!(
        under_sem,
        procs * rounds,
        "lost updates under the semaphore"
    );
}

// ----- leaks ------------------------------------------------------------------------------

fn daemon_memfd_mappings(d: &Daemon) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{}/maps", d.pid()))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("memfd:") || l.contains("/dev/shm"))
        .map(str::to_owned)
        .collect()
}

fn dev_shm_qcop_entries() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("qcop") || n.contains("qipc"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_hundred_create_attach_kill_cycles_leave_nothing_behind() {
    let d = Daemon::start();
    let mut conn = d.connect();
    let fds_before = d.fd_count();
    assert!(daemon_memfd_mappings(&d).is_empty());
    let shm_before = dev_shm_qcop_entries();
    for i in 0..100 {
        let name = format!("cycle-{}", i % 7);
        let mut h = Helper::spawn(&d, &["cycle", &name]);
        h.expect("UP");
        // Attach alongside the helper half of the time, so the last detach varies.
        let extra = (i % 2 == 0).then(|| segment(&d, &name).read_only().attach().unwrap());
        h.kill();
        drop(extra);
    }
    eventually("every attachment to be released", || {
        counter(&mut conn, "shm_handles") == 0
    });
    assert_eq!(counter(&mut conn, "shm_segments"), 0);
    assert_eq!(counter(&mut conn, "shm_semaphores"), 0);
    assert_eq!(counter(&mut conn, "shm_locks_recovered"), 100);
    eventually("the daemon's descriptors to return to the baseline", || {
        d.fd_count() == fds_before
    });
    assert_eq!(daemon_memfd_mappings(&d), Vec::<String>::new());
    assert_eq!(dev_shm_qcop_entries(), shm_before);
}

// ----- permissions between real users -------------------------------------------------

const USER_A: &str = "qcoptest-a";
const USER_B: &str = "qcoptest-b";

/// Uid and primary gid of a test user, or why the permission tests cannot run here. The
/// users are shared with the access-policy tests; nothing here assumes how their groups
/// are named or whether they share one.
fn test_user(name: &str) -> Result<(u32, u32), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Err("setpriv (util-linux) is not installed".into());
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        _ => Err(format!(
            "user {name} does not exist (.ci/test-users creates it, as root)"
        )),
    }
}

/// Under `CI=true` a test that cannot run fails; elsewhere it is skipped with the reason.
fn users_or_skip() -> Option<((u32, u32), (u32, u32))> {
    match (test_user(USER_A), test_user(USER_B)) {
        (Ok(a), Ok(b)) => Some((a, b)),
        (Err(why), _) | (_, Err(why)) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "permission tests cannot run: {why}"
            );
            eprintln!("SKIPPED: permission tests: {why}");
            None
        }
    }
}

fn op(d: &Daemon, user: (u32, u32), args: &[&str]) -> String {
    let mut all = vec!["op"];
    all.extend_from_slice(args);
    let mut h = Helper::spawn_as(d, Some(user), &all);
    let r = h.report();
    h.finish();
    r
}

#[test]
fn permissions_are_checked_against_the_real_users() {
    let Some((a, b)) = users_or_skip() else {
        return;
    };
    // Other users must reach the socket; the objects' own modes are what is tested.
    let d = Daemon::start_with("socket_mode = \"0777\"\n");
    // Group 0 (root's), which neither test user has as its primary group: B falls under
    // the "other" bits whatever groups the users were created with.
    let other = "0";
    assert_eq!(op(&d, a, &["create-seg", "private", "600", other]), "OK");
    assert_eq!(op(&d, a, &["create-seg", "world-ro", "604", other]), "OK");
    let gid_b = b.1.to_string();
    assert_eq!(op(&d, a, &["create-seg", "group-ro", "640", &gid_b]), "OK");

    assert_eq!(op(&d, b, &["attach-ro", "private"]), "ERR PermissionDenied");
    assert_eq!(op(&d, b, &["attach-rw", "private"]), "ERR PermissionDenied");
    assert_eq!(op(&d, a, &["attach-rw", "private"]), "OK");
    assert_eq!(op(&d, b, &["attach-ro", "world-ro"]), "OK");
    assert_eq!(op(&d, b, &["write-ro", "world-ro"]), "ERR PermissionDenied");
    assert_eq!(
        op(&d, b, &["attach-rw", "world-ro"]),
        "ERR PermissionDenied"
    );
    assert_eq!(op(&d, b, &["attach-ro", "group-ro"]), "OK", "group bits");
    assert_eq!(
        op(&d, b, &["attach-rw", "group-ro"]),
        "ERR PermissionDenied"
    );
    assert_eq!(
        op(&d, b, &["remove-seg", "world-ro"]),
        "ERR PermissionDenied"
    );
    assert_eq!(op(&d, a, &["remove-seg", "world-ro"]), "OK");

    assert_eq!(
        op(&d, a, &["create-sem", "sem-private", "600", other]),
        "OK"
    );
    assert_eq!(op(&d, a, &["create-sem", "sem-shared", "606", other]), "OK");
    assert_eq!(
        op(&d, b, &["open-sem", "sem-private"]),
        "ERR PermissionDenied"
    );
    assert_eq!(op(&d, b, &["open-sem", "sem-shared"]), "OK");

    // Root may attach anything; `qcop shm list` shows B only what B may read.
    segment(&d, "private").attach().unwrap();
    let out = setpriv(b.0, b.1)
        .arg(common::program("qcop"))
        .args(["shm", "list"])
        .env("QCOP_SOCKET", &d.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("group-ro") && text.contains("sem-shared"),
        "{text}"
    );
    assert!(!text.contains("private"), "{text}");
}

// ----- the CLI ----------------------------------------------------------------------------

#[test]
fn cli_lists_segments_with_their_attachers_and_removes_them() {
    let d = Daemon::start();
    let _a = segment(&d, "cli/status")
        .size(4096)
        .persistent(true)
        .create()
        .unwrap();
    let _s = semaphore(&d, "cli/slots")
        .initial(2)
        .max(5)
        .undo(true)
        .create()
        .unwrap();
    let out = d.cli().args(["shm", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let seg = text
        .lines()
        .find(|l| l.contains("cli/status"))
        .unwrap_or_else(|| panic!("no segment line in {text}"));
    assert!(seg.contains("segment") && seg.contains("4096"), "{seg}");
    assert!(seg.contains("persistent"), "{seg}");
    let sem = text
        .lines()
        .find(|l| l.contains("cli/slots"))
        .unwrap_or_else(|| panic!("no semaphore line in {text}"));
    assert!(
        sem.contains("semaphore") && sem.contains("2/5") && sem.contains("undo"),
        "{sem}"
    );
    // Attachers: this process, by pid and client name.
    let pid = std::process::id().to_string();
    assert!(
        text.lines()
            .any(|l| l.contains(&pid) && l.contains("shm-test")),
        "{text}"
    );

    drop(_a);
    let out = d.cli().args(["shm", "rm", "cli/status"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli().args(["shm", "rm", "cli/status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = d
        .cli()
        .args(["shm", "rm", "--semaphore", "cli/slots"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = d.cli().args(["shm", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("cli/status"), "{text}");
    assert!(
        text.contains("cli/slots") && text.contains("removed"),
        "{text}"
    );
}

#[test]
fn requests_for_others_handles_and_daemon_frames_are_refused() {
    use common::{Got, RawClient};
    use qcop::wire::segments::SegFrame;
    use qcop::wire::{ErrorCode, Frame};
    let d = Daemon::start();
    let _a = segment(&d, "mine").size(1).create().unwrap();
    let mut raw = RawClient::greeted(&d.socket);
    // Handle numbers are small and sequential: none of them is this client's.
    for handle in 0..4 {
        raw.send(&Frame::Seg(SegFrame::Close {
            seq: 10 + handle,
            handle,
        }));
        match raw.next() {
            Some(Got::Error { code, .. }) => assert_eq!(code, ErrorCode::SegNotFound),
            other => panic!("expected SegNotFound, got {other:?}"),
        }
    }
    raw.send(&Frame::Seg(SegFrame::Attach {
        seq: 20,
        read_only: false,
        name: "mine",
        pid: 0,
    }));
    match raw.next() {
        Some(Got::Error { code, .. }) => assert_eq!(code, ErrorCode::SegInvalid, "pid 0"),
        other => panic!("expected SegInvalid, got {other:?}"),
    }
    raw.send(&Frame::Seg(SegFrame::List { seq: 21 }));
    assert_eq!(raw.next(), Some(Got::Other(qcop::wire::Kind::SegListing)));
    // A frame only the daemon sends closes the connection; the daemon serves on.
    raw.send(&Frame::Seg(SegFrame::ControlBlock { seq: 0, handle: 1 }));
    let rest = raw.until_closed();
    assert!(rest
        .iter()
        .any(|g| matches!(g, Got::Error { fatal: true, .. })));
    assert_eq!(handles(&d), 1);
}

#[test]
fn cli_reads_and_writes_under_the_lock_and_reports_a_dead_holder() {
    let d = Daemon::start();
    let run = |args: &[&str]| d.cli().args(args).output().unwrap();
    let out = run(&[
        "shm",
        "write",
        "--create",
        "16",
        "--persistent",
        "cli/rw",
        "2",
        "0a0b",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["shm", "read", "cli/rw", "0", "4"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0x00000a0b\n");
    assert!(out.stderr.is_empty());

    // A `qcop shm lock` killed while it holds the lock: the next command is told.
    let mut holder = d.cli().args(["shm", "lock", "cli/rw"]).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked cli/rw\n");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = run(&["shm", "read", "cli/rw", "2", "2"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0x0a0b\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("previous lock holder") && err.contains("died"),
        "{err}"
    );

    let out = run(&["shm", "read", "cli/rw", "10", "7"]);
    assert_eq!(out.status.code(), Some(1), "past the end");
    let out = run(&["shm", "write", "cli/missing", "0", "00"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = run(&["shm", "write", "cli/rw", "0", "0xg0"]);
    assert_eq!(out.status.code(), Some(2), "bad hex is a usage error");
}

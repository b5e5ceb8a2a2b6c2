//! Shared-memory segments and system semaphores against a real daemon, with real processes
//! killed while they hold the lock or semaphore units, real other users, and a hundred
//! create/attach/kill cycles that must leave nothing behind.
//!
//! Processes that get killed are this test binary run again as a helper
//! (`helper_process_role`, selected by `QCOP_SHM_ROLE`), so they use the library exactly as
//! an application would.

mod common;

use common::{counter, eventually, Daemon, WAIT};
use qcop::shm::map::Mapping;
use qcop::shm::{Access, SharedMemory, ShmError, SystemSemaphore};
use qcop::wire::segments::SegFrame;
use qcop::wire::Frame;
use qcop::ConnectOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
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
        // Read-only attacher trying to break the writers' lock, speaking the protocol by
        // hand: it tries to map the control block descriptor it received writable, and to
        // reopen it writable through /proc/self/fd; if either works, it clears the lock
        // word over and over. It also asks the daemon to release the lock for it, and
        // takes the lock itself now and then (through the library), until killed.
        "ro-attack" => {
            let name = a(1);
            let mut shm = SharedMemory::attach(name, Access::ReadOnly).unwrap();
            let mut raw = RawSegClient::attach(name, true);
            let fd = raw.control();
            let mode = fd_access_mode(&fd);
            let reopened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            let direct = Mapping::map(fd.as_fd(), Access::ReadWrite);
            let via_proc = reopened
                .as_ref()
                .ok()
                .and_then(|f| Mapping::map(f.as_fd(), Access::ReadWrite).ok());
            let outcome = |ok: bool| if ok { "writable" } else { "denied" };
            let line = format!(
                "ATTACKING fd={mode} map={} reopen={} unlock={:?}",
                outcome(direct.is_ok()),
                outcome(via_proc.is_some()),
                raw.unlock()
            );
            let writable = direct.ok().or(via_proc);
            let word = writable.as_ref().and_then(|m| m.atomic_u32(0x18));
            report(&line);
            loop {
                if let Some(w) = word {
                    w.store(0, std::sync::atomic::Ordering::Relaxed);
                }
                raw.unlock();
                if let Ok(Some(g)) = shm.try_lock() {
                    drop(g);
                }
            }
        }
        // A writer that counts overlapping holds: it stamps its pid into the data under the
        // lock and finds someone else's stamp there if another writer got in.
        "overlaps" => {
            let rounds = num(2);
            let mut shm = SharedMemory::attach(a(1), Access::ReadWrite).unwrap();
            let me = std::process::id().to_ne_bytes();
            report("READY");
            let mut overlaps = 0u64;
            for i in 0..rounds {
                let mut g = shm.lock().unwrap();
                let d = g.data_mut().unwrap();
                if d[0..4] != [0; 4] {
                    overlaps += 1;
                }
                d[0..4].copy_from_slice(&me);
                let v = u64::from_le_bytes(d[8..16].try_into().unwrap());
                if i % 4 == 0 {
                    std::thread::yield_now();
                }
                d[8..16].copy_from_slice(&(v + 1).to_le_bytes());
                if d[0..4] != me {
                    overlaps += 1;
                }
                d[0..4].copy_from_slice(&[0; 4]);
            }
            report(&format!("OVERLAPS {overlaps}"));
        }
        // An opener of a semaphore (by hand, keeping its read-write descriptor) writing a
        // value and a maximum of its choosing into the shared block, then keeping it open
        // until killed.
        "sem-raise" => {
            let mut raw = RawSegClient::open_semaphore(a(1));
            let map = Mapping::map(raw.control().as_fd(), Access::ReadWrite).unwrap();
            let v = u32::try_from(num(2)).unwrap();
            map.atomic_u32(0x18).unwrap().store(v, Ordering::Relaxed);
            map.atomic_u32(0x20).unwrap().store(v, Ordering::Relaxed);
            report("RAISED");
            sleep_until_killed();
        }
        // An attacher (segment read-write, or semaphore opener) overwriting its whole
        // control block with pseudo-random bytes, then staying attached until killed.
        "scribble" => {
            let mut raw = if a(1) == "segment" {
                RawSegClient::attach(a(2), false)
            } else {
                RawSegClient::open_semaphore(a(2))
            };
            let map = Mapping::map(raw.control().as_fd(), Access::ReadWrite).unwrap();
            let mut x: u32 = 0x9e37_79b9;
            let junk: Vec<u8> = (0..map.len())
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert!(map.write(0, &junk));
            report("SCRIBBLED");
            sleep_until_killed();
        }
        // A read-write attacher writing one word of its segment's control block.
        "poke" => {
            let mut raw = RawSegClient::attach(a(1), false);
            let map = Mapping::map(raw.control().as_fd(), Access::ReadWrite).unwrap();
            let v = u32::from_str_radix(a(3), 16).unwrap();
            let off = usize::try_from(num(2)).unwrap();
            map.atomic_u32(off).unwrap().store(v, Ordering::Relaxed);
            report("POKED");
            sleep_until_killed();
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

/// "ro" or "rw": the access mode of descriptor `fd`, from /proc/self/fdinfo. A writable
/// `MAP_SHARED` mapping needs a descriptor opened for writing, so "ro" means this one can
/// never be mapped writable.
fn fd_access_mode(fd: &OwnedFd) -> &'static str {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap();
    match flags & 0o3 {
        0 => "ro",
        _ => "rw",
    }
}

/// A client speaking the protocol by hand (no library), as a hostile one would: it keeps
/// every descriptor it receives and does with them what the kernel lets it.
struct RawSegClient {
    stream: std::os::unix::net::UnixStream,
    reader: qcop::wire::FrameReader,
    /// Descriptors received, in order.
    fds: Vec<OwnedFd>,
    handle: u32,
    seq: u32,
    /// A semaphore's handle (its control block came with `SemOpened`).
    semaphore: bool,
}

impl RawSegClient {
    fn greeted() -> RawSegClient {
        let socket = std::env::var_os("QCOP_SOCKET").expect("QCOP_SOCKET");
        let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut c = RawSegClient {
            stream,
            reader: qcop::wire::FrameReader::new(qcop::wire::MAX_FRAME_BODY),
            fds: Vec::new(),
            handle: 0,
            seq: 1,
            semaphore: false,
        };
        c.send(&Frame::Hello {
            version_min: qcop::wire::PROTOCOL_VERSION,
            version_max: qcop::wire::PROTOCOL_VERSION,
            name: "raw-attacker",
        });
        c.answer(|_| ());
        c
    }

    /// Attaches segment `name` (read-only or read-write).
    fn attach(name: &str, read_only: bool) -> RawSegClient {
        let mut c = RawSegClient::greeted();
        c.send(&Frame::Seg(SegFrame::Attach {
            seq: 1,
            read_only,
            name,
            pid: std::process::id(),
        }));
        c.handle = c.answer(|f| match f {
            Frame::Seg(SegFrame::Attached { handle, .. }) => handle,
            other => panic!("expected Attached, got {other:?}"),
        });
        c
    }

    /// Opens semaphore `name`; its control block is the last descriptor.
    fn open_semaphore(name: &str) -> RawSegClient {
        let mut c = RawSegClient::greeted();
        c.send(&Frame::Seg(SegFrame::SemOpen {
            seq: 1,
            name,
            pid: std::process::id(),
        }));
        c.handle = c.answer(|f| match f {
            Frame::Seg(SegFrame::SemOpened { handle, .. }) => handle,
            other => panic!("expected SemOpened, got {other:?}"),
        });
        c.semaphore = true;
        c
    }

    fn send(&mut self, f: &Frame<'_>) {
        self.stream.write_all(&f.to_vec()).unwrap();
    }

    /// The next frame, keeping the descriptors that come with the bytes.
    fn answer<T>(&mut self, take: impl FnOnce(Frame<'_>) -> T) -> T {
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        use std::mem::MaybeUninit;
        loop {
            if let Some(f) = self.reader.next_frame().unwrap() {
                return take(f);
            }
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [std::io::IoSliceMut::new(self.reader.buffer_mut(64 * 1024))];
            let n = recvmsg(&self.stream, &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC)
                .unwrap()
                .bytes;
            for m in cmsg.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = m {
                    self.fds.extend(fds);
                }
            }
            assert!(n > 0, "qcopd closed the connection");
            self.reader.filled(n);
        }
    }

    /// The control block: a segment's asked for with `SegControl`, a semaphore's the
    /// descriptor that came with `SemOpened`.
    fn control(&mut self) -> OwnedFd {
        if !self.semaphore {
            self.seq += 1;
            let (seq, handle) = (self.seq, self.handle);
            self.send(&Frame::Seg(SegFrame::Control { seq, handle }));
            self.answer(|f| match f {
                Frame::Seg(SegFrame::ControlBlock { .. }) => {}
                other => panic!("expected ControlBlock, got {other:?}"),
            });
        }
        let fd = self.fds.last().expect("a control block descriptor");
        fd.try_clone().unwrap()
    }

    /// Asks the daemon to release the lock for this attachment.
    fn unlock(&mut self) -> qcop::wire::segments::LockState {
        self.seq += 1;
        let seq = self.seq;
        self.send(&Frame::Seg(SegFrame::Lock {
            seq,
            unlock: true,
            waited: false,
            check: false,
            handle: self.handle,
        }));
        self.answer(|f| match f {
            Frame::Seg(SegFrame::LockState { state, .. }) => state,
            other => panic!("expected LockState, got {other:?}"),
        })
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
    // Its lock word too: it locks through the daemon.
    let ctl: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains("memfd:qcop-segctl:ro "))
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(ctl.len(), 2, "{maps}");
    assert!(ctl.contains(&"r--s") && ctl.contains(&"rw-s"), "{ctl:?}");
    // A read-only waiter times out while a writer holds the lock, and a sleeping one gets
    // it when the writer lets go.
    {
        let g = rw.lock().unwrap();
        assert!(ro.try_lock().unwrap().is_none());
        assert!(ro
            .lock_timeout(Duration::from_millis(30))
            .unwrap()
            .is_none());
        let reader = segment(&d, "ro").read_only();
        let t = std::thread::spawn(move || {
            let mut r = reader.attach().unwrap();
            let g = r.lock().unwrap();
            g.previous_owner_died()
        });
        drop(g);
        assert!(!t.join().unwrap());
    }
    // A read-only holder that detaches gives the lock back rather than leaving it
    // owner-died.
    let g = ro.lock().unwrap();
    std::mem::forget(g);
    ro.detach().unwrap();
    assert!(!rw.lock().unwrap().previous_owner_died());
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

/// `qcop stats`' value of `name`, as a user of the CLI sees it.
fn cli_stat(d: &Daemon, name: &str) -> u64 {
    let out = d.cli().arg("stats").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in qcop stats:\n{text}"))
}

#[test]
fn a_read_only_attacher_of_another_user_cannot_break_the_writers_lock() {
    let Some((_, b)) = users_or_skip() else {
        return;
    };
    let d = Daemon::start_with("socket_mode = \"0777\"\n");
    // Readable by others (B falls under the other bits: group 0 is neither user's).
    let shm = segment(&d, "guarded")
        .size(64)
        .mode(0o604)
        .group(0)
        .create()
        .unwrap();
    let mut attacker = Helper::spawn_as(&d, Some(b), &["ro-attack", "guarded"]);
    let first = attacker.report();
    // Its descriptor of the control block is read-only: it can neither map it writable nor
    // reopen it writable, and the daemon does not release a lock it does not hold.
    assert_eq!(
        first, "ATTACKING fd=ro map=denied reopen=denied unlock=NotOwner",
        "what the read-only attacher managed"
    );
    let rounds = 1_500u64;
    let mut writers: Vec<Helper> = (0..2)
        .map(|_| Helper::spawn(&d, &["overlaps", "guarded", &rounds.to_string()]))
        .collect();
    for w in &mut writers {
        w.expect("READY");
    }
    for mut w in writers {
        w.expect("OVERLAPS 0");
        w.finish();
    }
    attacker.kill();
    let mut b8 = [0u8; 8];
    shm.read(8, &mut b8).unwrap();
    assert_eq!(
        u64::from_le_bytes(b8),
        2 * rounds,
        "lost updates under the lock"
    );
}

#[test]
fn a_semaphore_never_goes_above_its_maximum_whatever_an_opener_writes() {
    let Some((_, b)) = users_or_skip() else {
        return;
    };
    let d = Daemon::start_with("socket_mode = \"0777\"\n");
    let _owner = semaphore(&d, "one-slot")
        .initial(0)
        .max(1)
        .mode(0o606)
        .group(0)
        .create()
        .unwrap();
    let mut waiters: Vec<SystemSemaphore> = (0..20)
        .map(|_| semaphore(&d, "one-slot").open().unwrap())
        .collect();
    // B may use the semaphore, so it may map its block read-write: it writes 1000 into
    // both the value and the block's copy of the maximum.
    let mut opener = Helper::spawn_as(&d, Some(b), &["sem-raise", "one-slot", "1000"]);
    opener.expect("RAISED");
    for w in &waiters {
        assert_eq!(
            (w.value(), w.max()),
            (1, 1),
            "the value reads as at most the maximum"
        );
    }
    let got = waiters
        .iter_mut()
        .map(|w| w.try_acquire().unwrap())
        .filter(|&got| got)
        .count();
    assert_eq!(got, 1, "20 openers got {got} units out of a maximum of 1");
    // The one unit can be given back once, not twice.
    waiters[0].release(1).unwrap();
    assert!(matches!(
        waiters[0].release(1),
        Err(ShmError::InvalidArgument(_))
    ));
    let newcomer = semaphore(&d, "one-slot").open().unwrap();
    assert_eq!((newcomer.value(), newcomer.max()), (1, 1));
    // qcopd put the block's maximum back and counted the damage.
    assert!(cli_stat(&d, "shm_control_blocks_repaired") >= 1);
    let out = d.cli().args(["shm", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("one-slot") && l.contains("1/1")),
        "{text}"
    );
    opener.kill();
}

#[test]
fn a_scribbled_control_block_is_rebuilt_by_qcopd_and_counted() {
    let Some((_, b)) = users_or_skip() else {
        return;
    };
    let d = Daemon::start_with("socket_mode = \"0777\"\n");
    let seg = segment(&d, "kept")
        .size(64)
        .mode(0o606)
        .group(0)
        .persistent(true)
        .create()
        .unwrap();
    seg.write(0, b"data").unwrap();
    drop(seg);
    let sem = semaphore(&d, "kept-sem")
        .initial(3)
        .max(3)
        .undo(true)
        .mode(0o606)
        .group(0)
        .persistent(true)
        .create()
        .unwrap();
    drop(sem);
    assert_eq!(cli_stat(&d, "shm_control_blocks_repaired"), 0);

    // B, allowed to write both, overwrites their whole control blocks and stays attached.
    let mut seg_scribbler = Helper::spawn_as(&d, Some(b), &["scribble", "segment", "kept"]);
    seg_scribbler.expect("SCRIBBLED");
    let mut sem_scribbler = Helper::spawn_as(&d, Some(b), &["scribble", "semaphore", "kept-sem"]);
    sem_scribbler.expect("SCRIBBLED");

    // Later attachers are served: the lock word named no attachment, so the next locker
    // learns the data may be damaged; the data itself is as it was.
    let mut a = segment(&d, "kept").attach().unwrap();
    let mut c = segment(&d, "kept").attach().unwrap();
    {
        let g = a
            .lock_timeout(WAIT)
            .unwrap()
            .expect("the overwritten lock is handed over");
        assert!(g.previous_owner_died(), "the overwritten lock is reported");
        assert_eq!(&g.data()[..4], b"data");
        assert!(c.try_lock().unwrap().is_none(), "the lock excludes again");
    }
    assert!(!c.lock_timeout(WAIT).unwrap().unwrap().previous_owner_died());
    let mut s = semaphore(&d, "kept-sem").open().unwrap();
    assert!(s.value() <= 3 && s.max() == 3, "{s:?}");
    let v = s.value();
    if v > 0 {
        assert!(s.try_acquire().unwrap());
        s.release(1).unwrap();
    }
    assert_eq!(s.value(), v);
    assert!(cli_stat(&d, "shm_control_blocks_repaired") >= 2);

    // The scribblers go away: their own lock and units are handled from qcopd's records,
    // and the objects stay usable.
    seg_scribbler.kill();
    sem_scribbler.kill();
    eventually("the scribblers to be detached", || handles(&d) == 3);
    assert!(a.lock_timeout(WAIT).unwrap().is_some());
    assert!(s.value() <= 3);
    drop((a, c, s));
    let again = segment(&d, "kept").attach().unwrap();
    let mut got = [0u8; 4];
    again.read(0, &mut got).unwrap();
    assert_eq!(&got, b"data");
}

#[test]
fn a_lock_word_overwritten_with_a_token_no_one_holds_does_not_block_waiters() {
    let d = Daemon::start();
    let mut a = segment(&d, "stuck").size(8).create().unwrap();
    // A plausible token (pid 1, nonce 5) that belongs to no attachment, with the waiters
    // bit: nobody will ever unlock it.
    let mut poker = Helper::spawn(&d, &["poke", "stuck", "24", "81400001"]);
    poker.expect("POKED");
    let before = counter(&mut d.connect(), "shm_control_blocks_repaired");
    let g = a
        .lock_timeout(WAIT)
        .unwrap()
        .expect("the waiter gets the lock once qcopd has checked the block");
    assert!(g.previous_owner_died());
    drop(g);
    assert_eq!(
        counter(&mut d.connect(), "shm_control_blocks_repaired"),
        before + 1
    );
    poker.kill();
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
        // Nor may it take or release another client's lock through the daemon.
        for unlock in [false, true] {
            raw.send(&Frame::Seg(SegFrame::Lock {
                seq: 30 + handle,
                unlock,
                waited: false,
                check: false,
                handle,
            }));
            match raw.next() {
                Some(Got::Error { code, .. }) => assert_eq!(code, ErrorCode::SegNotFound),
                other => panic!("expected SegNotFound, got {other:?}"),
            }
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

//! The socket directory: qcopd creates it with its own mode, and leaves an existing one (a
//! `/run`-like system directory) exactly as it found it; an existing directory that others
//! could use to replace the socket is refused with a clear error. Runs as root with the test
//! accounts (tests/common/users.rs) for the directories owned by others.

mod common;

use common::users::users;
use common::{temp_dir, WAIT};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn qcopd(socket: &Path, config: &str) -> Command {
    let mut c = Command::new(common::program("qcopd"));
    c.arg("--socket").arg(socket);
    if !config.is_empty() {
        let p = socket.with_extension("toml");
        std::fs::write(&p, config).unwrap();
        c.arg("--config").arg(p);
    }
    c.env_remove("QCOP_SOCKET")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Starts qcopd on `socket`, waits until it answers, stops it; panics if it does not start.
fn serves(socket: &Path, config: &str) {
    let mut child = qcopd(socket, config).spawn().unwrap();
    let start = Instant::now();
    while UnixStream::connect(socket).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "qcopd exited ({st}): {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(start.elapsed() < WAIT, "qcopd did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

/// Runs qcopd on `socket` expecting it to refuse to start.
fn refused(socket: &Path, config: &str) -> String {
    let child = qcopd(socket, config).spawn().unwrap();
    let o: Output = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "qcopd should refuse to start");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn dir_with_mode(parent: &Path, name: &str, m: u32) -> std::path::PathBuf {
    let d = parent.join(name);
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(m)).unwrap();
    d
}

#[test]
fn an_existing_directory_keeps_its_mode_and_a_created_one_gets_qcopds() {
    let top = temp_dir("sockdir");
    // Like /run: ours (root's, when run as root), 0755. It used to be chmodded to 0700.
    let run = dir_with_mode(&top, "run", 0o755);
    serves(&run.join("x.sock"), "");
    assert_eq!(mode(&run), 0o755);
    serves(&run.join("x.sock"), "socket_mode = \"0666\"\n");
    assert_eq!(mode(&run), 0o755);
    // Like /tmp: sticky and world-writable.
    let tmp = dir_with_mode(&top, "tmp", 0o1777);
    serves(&tmp.join("x.sock"), "");
    assert_eq!(mode(&tmp), 0o1777);
    // A directory qcopd creates (and the missing parents on the way) gets its mode.
    let created = top.join("new/deeper/qcop");
    serves(&created.join("x.sock"), "");
    assert_eq!(mode(&created), 0o700);
    // On the next start it exists, and is left alone, even if the mode would now differ.
    serves(&created.join("x.sock"), "socket_mode = \"0666\"\n");
    assert_eq!(mode(&created), 0o700);
    std::fs::remove_dir_all(&top).unwrap();
}

#[test]
fn an_unsafe_existing_directory_is_refused_with_the_reason() {
    let top = temp_dir("sockdir-unsafe");
    let open = dir_with_mode(&top, "open", 0o777);
    let err = refused(&open.join("x.sock"), "");
    assert!(
        err.contains(&format!("refusing socket directory {}", open.display()))
            && err.contains("everyone may write to it (mode 0777) and it is not sticky"),
        "{err}"
    );
    assert_eq!(mode(&open), 0o777, "a refused directory is not changed");
    assert!(!open.join("x.sock").exists());

    let link = top.join("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    let err = refused(&link.join("x.sock"), "");
    assert!(err.contains("it is a symbolic link"), "{err}");

    let file = top.join("file");
    std::fs::write(&file, b"").unwrap();
    let err = refused(&file.join("x.sock"), "");
    assert!(err.contains("it is not a directory"), "{err}");
    std::fs::remove_dir_all(&top).unwrap();
}

#[test]
fn directories_of_other_users_and_groups_are_checked() {
    let Some(u) = users("directories_of_other_users_and_groups_are_checked") else {
        return;
    };
    let top = temp_dir("sockdir-users");
    // Another user's directory, even one only they may write: not for root's socket.
    let theirs = dir_with_mode(&top, "theirs", 0o755);
    nix::unistd::chown(&theirs, Some(u.a.uid.into()), Some(u.a.gid.into())).unwrap();
    let err = refused(&theirs.join("x.sock"), "");
    assert!(
        err.contains(&format!(
            "it belongs to uid {}, not to qcopd's user (uid 0) or root",
            u.a.uid
        )),
        "{err}"
    );
    assert_eq!(mode(&theirs), 0o755);
    assert_eq!(std::fs::metadata(&theirs).unwrap().uid(), u.a.uid);

    // Root's, but writable by a group: only qcopd's own group or socket_group is trusted.
    let shared = dir_with_mode(&top, "shared", 0o775);
    nix::unistd::chown(&shared, None, Some(u.a.gid.into())).unwrap();
    let err = refused(&shared.join("x.sock"), "");
    assert!(
        err.contains(&format!("group {} may write to it (mode 0775)", u.a.gid)),
        "{err}"
    );
    serves(&shared.join("x.sock"), "socket_group = \"qcoptest\"\n");
    assert_eq!(mode(&shared), 0o775);
    assert_eq!(std::fs::metadata(&shared).unwrap().gid(), u.a.gid);
    std::fs::remove_dir_all(&top).unwrap();
}

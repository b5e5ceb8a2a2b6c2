//! Running clients as other users, for the access-policy tests.
//!
//! The accounts come from `.ci/test-users` (run as root; idempotent):
//! - `qcoptest-a`, primary group `qcoptest`;
//! - `qcoptest-b`, primary group `qcoptest-b`, and listed as a member of `qcoptest-extra`.
//!
//! Clients run through `setpriv --reuid --regid --clear-groups` (util-linux) against a daemon
//! whose socket everyone may connect to. Without root, setpriv or the accounts, a test fails
//! under `CI=true` and is skipped with the reason otherwise (as inside the QEMU boards).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One test account.
#[derive(Debug, Clone)]
pub struct User {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
}

/// The test accounts and the tools to run as them.
pub struct Users {
    pub a: User,
    pub b: User,
    /// gid of `qcoptest-extra` (b is a listed member).
    pub extra_gid: u32,
    setpriv: PathBuf,
}

/// `name` on `$PATH` (or in /usr/bin, /bin).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn user(name: &'static str) -> Result<User, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(User {
            name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }),
        _ => Err(format!("user {name} does not exist")),
    }
}

fn lookup() -> Result<Users, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    let setpriv = find_program("setpriv").ok_or("setpriv (util-linux) is not installed")?;
    let extra = match nix::unistd::Group::from_name("qcoptest-extra") {
        Ok(Some(g)) => g.gid.as_raw(),
        _ => return Err("group qcoptest-extra does not exist".into()),
    };
    Ok(Users {
        a: user("qcoptest-a")?,
        b: user("qcoptest-b")?,
        extra_gid: extra,
        setpriv,
    })
}

/// The accounts, or `None` (after printing why) when this machine cannot run such tests.
/// Under `CI=true` a missing prerequisite fails the test instead.
pub fn users(test: &str) -> Option<Users> {
    match lookup() {
        Ok(u) => Some(u),
        Err(why) => {
            let hint = "as root, run: bash .ci/test-users";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test} cannot run: {why} ({hint})");
            }
            // Straight to the descriptor: libtest would swallow eprintln! of a passing test.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why} ({hint})");
            None
        }
    }
}

/// Whether every directory above `path` lets others through and the file is executable by
/// them.
fn reachable_by_others(path: &Path) -> bool {
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode());
    path.ancestors()
        .skip(1)
        .all(|d| d.as_os_str().is_empty() || mode(d).is_ok_and(|m| m & 0o001 != 0))
        && mode(path).is_ok_and(|m| m & 0o005 == 0o005)
}

/// A copy of `program` other users can run, in `dir` (a hard link when possible), unless
/// the original already is.
pub fn runnable_copy(program: &Path, dir: &Path) -> PathBuf {
    if reachable_by_others(program) {
        return program.to_owned();
    }
    let target = dir.join(program.file_name().expect("a file name"));
    if std::fs::hard_link(program, &target).is_err() {
        std::fs::copy(program, &target).expect("copy the program for other users");
    }
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    target
}

impl Users {
    /// `program` run as `user` (real and effective ids, no supplementary groups).
    pub fn command(&self, user: &User, program: &Path) -> Command {
        let mut c = Command::new(&self.setpriv);
        c.arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--clear-groups")
            .arg(program)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

//! User and group names in the configuration, resolved to ids once, when the configuration
//! is loaded (at start and on SIGHUP), never while routing.
//!
//! Resolution goes through the [`Names`] trait so that configurations naming accounts that do
//! not exist on the build machine (the documented examples) can be checked in tests.

/// Looks up accounts by name.
pub trait Names {
    /// The uid and primary gid of a user.
    fn user(&self, name: &str) -> Option<(u32, u32)>;
    /// The gid of a group and the names of its listed members.
    fn group(&self, name: &str) -> Option<(u32, Vec<String>)>;
}

/// The system's user and group databases (`getpwnam`, `getgrnam`).
pub struct SystemNames;

impl Names for SystemNames {
    fn user(&self, name: &str) -> Option<(u32, u32)> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw())),
            Ok(None) => None,
            Err(e) => {
                log::warn!("looking up user {name:?} failed: {e}");
                None
            }
        }
    }

    fn group(&self, name: &str) -> Option<(u32, Vec<String>)> {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some((g.gid.as_raw(), g.mem)),
            Ok(None) => None,
            Err(e) => {
                log::warn!("looking up group {name:?} failed: {e}");
                None
            }
        }
    }
}

/// A fixed table of accounts, for tests and examples.
#[derive(Default)]
pub struct StaticNames {
    /// `(name, uid, primary gid)`.
    pub users: Vec<(String, u32, u32)>,
    /// `(name, gid, member names)`.
    pub groups: Vec<(String, u32, Vec<String>)>,
}

impl Names for StaticNames {
    fn user(&self, name: &str) -> Option<(u32, u32)> {
        self.users
            .iter()
            .find(|(n, ..)| n == name)
            .map(|&(_, uid, gid)| (uid, gid))
    }

    fn group(&self, name: &str) -> Option<(u32, Vec<String>)> {
        self.groups
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, gid, mem)| (*gid, mem.clone()))
    }
}

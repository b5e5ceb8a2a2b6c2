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
    /// The groups a program started as user `name` with group `gid` belongs to, as a login
    /// would set them (`initgroups`): `gid` and every group that lists the user.
    fn groups_of(&self, name: &str, gid: u32) -> Vec<u32>;
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

    fn groups_of(&self, name: &str, gid: u32) -> Vec<u32> {
        let groups = std::ffi::CString::new(name)
            .map_err(|_| nix::errno::Errno::EINVAL)
            .and_then(|user| nix::unistd::getgrouplist(&user, nix::unistd::Gid::from_raw(gid)));
        match groups {
            Ok(g) => g.into_iter().map(|g| g.as_raw()).collect(),
            Err(e) => {
                log::warn!("looking up the groups of user {name:?} failed: {e}");
                vec![gid]
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

    fn groups_of(&self, name: &str, gid: u32) -> Vec<u32> {
        let mut groups = vec![gid];
        for (_, g, members) in &self.groups {
            if *g != gid && members.iter().any(|m| m == name) {
                groups.push(*g);
            }
        }
        groups
    }
}

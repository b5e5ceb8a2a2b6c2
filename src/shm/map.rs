//! Anonymous memory files (memfd) and shared mappings of them.
//!
//! [`create_memfd`] makes the memory the daemon hands out; [`Mapping`] maps a descriptor and
//! gives bounds-checked access to it. The contents of a mapping may be changed at any moment
//! by another process, which may be buggy or hostile: this module only guarantees that no
//! access leaves the mapping; the layouts built on it validate every value they read.

#![allow(unsafe_code)]

use super::futex;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Creates an anonymous memory file of `size` bytes (zero-filled), sealed so that its size
/// can never change: a peer cannot shrink it under another process's mapping (which would
/// turn accesses into SIGBUS). Nothing appears in `/dev/shm`; the memory is freed when the
/// last descriptor and mapping are gone.
pub fn create_memfd(name: &str, size: u64) -> io::Result<OwnedFd> {
    if size == 0 || size > isize::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid shared memory size",
        ));
    }
    // The name only shows up in /proc/<pid>/fd links ("memfd:<name>"); keep it printable.
    let name: String = name
        .chars()
        .take(200)
        .map(|c| if c == '\0' { '?' } else { c })
        .collect();
    let fd = memfd_create(
        name.as_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let len = libc::off_t::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    nix::unistd::ftruncate(&fd, len)?;
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(fd)
}

/// Read-write or read-only access to a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Loads and stores.
    ReadWrite,
    /// Loads only: the pages are mapped without write permission.
    ReadOnly,
}

/// A `MAP_SHARED` mapping of (part of) a file; unmapped when dropped.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    access: Access,
}

// SAFETY: the mapping is plain memory owned by this value; every access through it goes
// through atomics or explicit copies, which are valid from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared references only permit atomic operations and copies.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the whole file behind `fd` (its size from `fstat`).
    pub fn map(fd: BorrowedFd<'_>, access: Access) -> io::Result<Mapping> {
        let st = nix::sys::stat::fstat(fd)?;
        let size = u64::try_from(st.st_size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative file size"))?;
        let len = usize::try_from(size)
            .ok()
            .filter(|&l| l > 0 && l <= isize::MAX as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unusable file size"))?;
        Mapping::map_range(fd, 0, len, access)
    }

    /// Maps `len` bytes at `offset` (a multiple of the page size) of the file behind `fd`.
    ///
    /// The range must lie inside the file: a mapping past its end would fault on access.
    pub fn map_range(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        access: Access,
    ) -> io::Result<Mapping> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        if len == 0 || len > isize::MAX as usize {
            return Err(invalid("invalid mapping length"));
        }
        if offset % page_size() as u64 != 0 {
            return Err(invalid("mapping offset is not page-aligned"));
        }
        let st = nix::sys::stat::fstat(fd)?;
        let file_len = u64::try_from(st.st_size).unwrap_or(0);
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| invalid("mapping range overflows"))?;
        if end > file_len {
            return Err(invalid("mapping range exceeds the file"));
        }
        let off = libc::off_t::try_from(offset).map_err(|_| invalid("offset too large"))?;
        let prot = match access {
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
            Access::ReadOnly => libc::PROT_READ,
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint), so no existing memory is
        // replaced; `fd` is a valid open descriptor for the duration of the call; the range
        // was checked to lie inside the file and the offset to be page-aligned.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
            access,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: empty mappings are refused.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How the pages are mapped.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Raw base pointer, for the modules that hand out in-place borrows (each documents its
    /// own safety argument).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn in_bounds(&self, offset: usize, size: usize, align: usize) -> bool {
        offset % align == 0 && offset.checked_add(size).is_some_and(|end| end <= self.len)
    }

    /// The 32-bit atomic at `offset`; `None` when out of bounds, not 4-aligned, or the
    /// mapping is read-only (a store would fault: use [`Mapping::load_u32`]).
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        if self.access == Access::ReadOnly {
            return None;
        }
        self.atomic_u32_any(offset)
    }

    fn atomic_u32_any(&self, offset: usize) -> Option<&AtomicU32> {
        if !self.in_bounds(offset, 4, 4) {
            return None;
        }
        // SAFETY: the 4 bytes at `offset` lie inside the mapping (checked above), which lives
        // as long as `&self`; the address is 4-aligned (the base is page-aligned and offset is
        // a multiple of 4); `AtomicU32` has the size and alignment of `u32`, and shared memory
        // is only ever accessed atomically or by explicit copies, so no non-atomic Rust
        // reference aliases it.
        Some(unsafe { &*self.ptr.add(offset).cast::<AtomicU32>() })
    }

    /// The 64-bit atomic at `offset` (8-aligned); `None` as for [`Mapping::atomic_u32`].
    pub fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        if self.access == Access::ReadOnly {
            return None;
        }
        self.atomic_u64_any(offset)
    }

    fn atomic_u64_any(&self, offset: usize) -> Option<&AtomicU64> {
        if !self.in_bounds(offset, 8, 8) {
            return None;
        }
        // SAFETY: as in `atomic_u32_any`, for 8 bytes at an 8-aligned offset; `AtomicU64`
        // has the size and (on every supported target) the 8-byte alignment of `u64`.
        Some(unsafe { &*self.ptr.add(offset).cast::<AtomicU64>() })
    }

    /// Loads (Acquire) the 32-bit word at `offset`; works on read-only mappings too.
    pub fn load_u32(&self, offset: usize) -> Option<u32> {
        self.atomic_u32_any(offset)
            .map(|a| a.load(Ordering::Acquire))
    }

    /// Loads (Acquire) the 64-bit word at `offset`; works on read-only mappings too.
    pub fn load_u64(&self, offset: usize) -> Option<u64> {
        self.atomic_u64_any(offset)
            .map(|a| a.load(Ordering::Acquire))
    }

    /// Futex wait on the word at `offset` (any access mode); `None` when out of bounds.
    pub fn wait_u32(
        &self,
        offset: usize,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Option<futex::Wait> {
        self.atomic_u32_any(offset)
            .map(|a| futex::wait(a, expected, timeout))
    }

    /// Futex wake of up to `count` waiters on the word at `offset` (any access mode: waking
    /// does not write the word); `None` when out of bounds.
    pub fn wake_u32(&self, offset: usize, count: u32) -> Option<usize> {
        self.atomic_u32_any(offset).map(|a| futex::wake(a, count))
    }

    /// Copies `dst.len()` bytes from `offset`; false (and nothing copied) when out of bounds.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> bool {
        if !self.in_bounds(offset, dst.len(), 1) {
            return false;
        }
        // SAFETY: the source range lies inside the mapping (checked above) and cannot overlap
        // `dst`, a Rust-owned buffer. Another process may write the source concurrently: the
        // copy then yields some mix of bytes, which callers validate (seqlock or checksum).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` to `offset`; false (and nothing written) when out of bounds or the
    /// mapping is read-only.
    pub fn write(&self, offset: usize, src: &[u8]) -> bool {
        if self.access == Access::ReadOnly || !self.in_bounds(offset, src.len(), 1) {
            return false;
        }
        // SAFETY: the destination range lies inside a writable mapping (checked above) and
        // cannot overlap `src`, a Rust-owned buffer; no Rust reference to the shared bytes
        // exists outside this module's atomics and copies.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(offset), src.len()) };
        true
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and still owns; no
        // reference into it outlives `self` (they all borrow `self`).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// The system page size.
pub fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&v| v > 0)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn memfd_is_sealed_and_zeroed() {
        let fd = create_memfd("test", 8192).unwrap();
        let m = Mapping::map(fd.as_fd(), Access::ReadWrite).unwrap();
        assert_eq!(m.len(), 8192);
        let mut b = [1u8; 16];
        assert!(m.read(8176, &mut b));
        assert_eq!(b, [0; 16]);
        // Sealed: the size cannot change.
        assert!(nix::unistd::ftruncate(&fd, 4096).is_err());
        assert!(nix::unistd::ftruncate(&fd, 16384).is_err());
    }

    #[test]
    fn bounds_and_alignment_are_checked() {
        let fd = create_memfd("test", 4096).unwrap();
        let m = Mapping::map(fd.as_fd(), Access::ReadWrite).unwrap();
        assert!(m.atomic_u32(4092).is_some());
        assert!(m.atomic_u32(4094).is_none(), "misaligned");
        assert!(m.atomic_u32(4096).is_none(), "out of bounds");
        assert!(m.atomic_u64(4088).is_some());
        assert!(m.atomic_u64(4092).is_none());
        assert!(m.atomic_u32(usize::MAX - 3).is_none(), "overflowing offset");
        let mut b = [0u8; 8];
        assert!(!m.read(4090, &mut b));
        assert!(!m.write(usize::MAX, &b));
        assert!(m.write(4088, &[9; 8]));
        assert!(m.read(4088, &mut b));
        assert_eq!(b, [9; 8]);
    }

    #[test]
    fn two_mappings_share_memory_and_read_only_refuses_stores() {
        let fd = create_memfd("test", 4096).unwrap();
        let rw = Mapping::map(fd.as_fd(), Access::ReadWrite).unwrap();
        let ro = Mapping::map(fd.as_fd(), Access::ReadOnly).unwrap();
        rw.atomic_u32(8).unwrap().store(42, Ordering::Release);
        assert_eq!(ro.load_u32(8), Some(42));
        assert!(ro.atomic_u32(8).is_none());
        assert!(!ro.write(0, &[1]));
        assert_eq!(
            ro.wait_u32(8, 41, Some(Duration::from_secs(1))),
            Some(futex::Wait::Changed)
        );
    }

    #[test]
    fn ranges_past_the_file_are_refused() {
        let fd = create_memfd("test", 4096).unwrap();
        assert!(Mapping::map_range(fd.as_fd(), 0, 8192, Access::ReadOnly).is_err());
        assert!(Mapping::map_range(fd.as_fd(), 1, 100, Access::ReadOnly).is_err());
        assert!(create_memfd("x", 0).is_err());
    }
}

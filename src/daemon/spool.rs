//! The activation spool: messages queued for a persistent service, one file each, so that
//! they survive a daemon restart.
//!
//! A message is written to a hidden temporary file, flushed to disk (`fsync`), then renamed
//! to its final name and the directory flushed: a file with a final name is always complete,
//! and a crash leaves at worst a temporary file, which is removed (never delivered) on the
//! next start. Each file also carries a CRC-32 of its content; a file that fails any check is
//! moved to `corrupt/` beside it and logged, never delivered and never a reason to panic.
//!
//! File layout (big-endian, like the wire protocol):
//!
//! ```text
//! "QCOPSPL1"  8 bytes
//! pid, uid, gid of the sender     3 × u32
//! channel: str   message: str     u16 length + UTF-8
//! payload: bytes                  u32 length + bytes
//! crc32                           u32, of everything before it (IEEE polynomial)
//! ```

use crate::wire::{Credentials, Reader};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"QCOPSPL1";
const SUFFIX: &str = ".msg";
const TEMP_PREFIX: &str = ".tmp-";
/// Where files that fail their checks are moved.
pub const CORRUPT_DIR: &str = "corrupt";

/// One spooled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Channel it was sent to.
    pub channel: String,
    /// Message signature.
    pub message: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Who sent it.
    pub sender: Credentials,
}

/// What loading a spool directory found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Intact messages with their files, oldest first.
    pub records: Vec<(PathBuf, Record)>,
    /// Files that failed their checks (moved to `corrupt/`).
    pub corrupt: u64,
    /// Temporary files of writes a crash interrupted (removed).
    pub incomplete: u64,
}

/// The spool directory of one service.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    next: u64,
}

impl Spool {
    /// Opens (creating it with mode 0700 if needed) the directory `dir`.
    pub fn open(dir: PathBuf) -> io::Result<Spool> {
        DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        Ok(Spool { dir, next: 1 })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every message in the directory, oldest first. Files larger than `max_file`
    /// bytes or failing a check are moved aside; leftovers of interrupted writes removed.
    pub fn load(&mut self, max_file: u64) -> io::Result<Loaded> {
        let mut loaded = Loaded::default();
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let path = entry.path();
            if name.starts_with(TEMP_PREFIX) {
                log::warn!(
                    "spool: removing {} (a write interrupted by a crash; never delivered)",
                    path.display()
                );
                loaded.incomplete += 1;
                if let Err(e) = fs::remove_file(&path) {
                    log::error!("spool: cannot remove {}: {e}", path.display());
                }
                continue;
            }
            let Some(seq) = name
                .strip_suffix(SUFFIX)
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue; // corrupt/ and files that are not ours
            };
            found.push((seq, path));
        }
        found.sort_unstable_by_key(|(seq, _)| *seq);
        for (seq, path) in found {
            self.next = self.next.max(seq + 1);
            match read_record(&path, max_file) {
                Ok(record) => loaded.records.push((path, record)),
                Err(why) => {
                    loaded.corrupt += 1;
                    self.move_aside(&path, &why);
                }
            }
        }
        Ok(loaded)
    }

    fn move_aside(&self, path: &Path, why: &str) {
        let aside = self.dir.join(CORRUPT_DIR);
        let target = aside.join(path.file_name().unwrap_or_default());
        let moved = DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&aside)
            .and_then(|()| fs::rename(path, &target));
        match moved {
            Ok(()) => log::error!(
                "spool: {} is corrupt ({why}); moved to {}",
                path.display(),
                target.display()
            ),
            Err(e) => {
                log::error!(
                    "spool: {} is corrupt ({why}) and cannot be moved aside ({e}); removing it",
                    path.display()
                );
                let _ = fs::remove_file(path);
            }
        }
    }

    /// Writes a message durably; returns its file.
    pub fn write(&mut self, record: &Record) -> io::Result<PathBuf> {
        let seq = self.next;
        self.next += 1;
        let name = format!("{seq:020}{SUFFIX}");
        let temp = self.dir.join(format!("{TEMP_PREFIX}{name}"));
        let path = self.dir.join(name);
        let bytes = encode(record);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&temp, &path))
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(path)
    }
}

/// Deletes a delivered or dropped message's file.
pub fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            log::error!("spool: cannot remove {}: {e}", path.display());
        }
    }
}

fn read_record(path: &Path, max_file: u64) -> Result<Record, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len > max_file {
        return Err(format!(
            "{len} bytes, more than the {max_file} a message can take"
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    decode(&bytes).map_err(str::to_owned)
}

/// The file content for `record`.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + record.payload.len());
    out.extend_from_slice(MAGIC);
    for v in [record.sender.pid, record.sender.uid, record.sender.gid] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    crate::wire::put_str(&mut out, &record.channel);
    crate::wire::put_str(&mut out, &record.message);
    crate::wire::put_bytes(&mut out, &record.payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Parses and checks a file's content.
pub fn decode(bytes: &[u8]) -> Result<Record, &'static str> {
    if bytes.len() < MAGIC.len() + 4 {
        return Err("truncated");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if !body.starts_with(MAGIC) {
        return Err("not a qcop spool file");
    }
    if crc32(body).to_be_bytes() != crc {
        return Err("checksum mismatch");
    }
    let mut r = Reader::new(&body[MAGIC.len()..]);
    let bad = |_| "malformed record";
    let sender = Credentials {
        pid: r.u32().map_err(bad)?,
        uid: r.u32().map_err(bad)?,
        gid: r.u32().map_err(bad)?,
    };
    let channel = r.str().map_err(bad)?.to_owned();
    let message = r.str().map_err(bad)?.to_owned();
    let payload = r.bytes().map_err(bad)?.to_vec();
    r.finish().map_err(bad)?;
    Ok(Record {
        channel,
        message,
        payload,
        sender,
    })
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), bit by bit: spool files are small
/// and written rarely, so a table is not worth its flash.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u8) -> Record {
        Record {
            channel: "QPE/Application/camera".into(),
            message: "shoot(int)".into(),
            payload: vec![0, 0, 0, i],
            sender: Credentials {
                pid: 42,
                uid: 1000,
                gid: 100,
            },
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qcop-spool-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_roundtrip_and_damage_is_detected() {
        let bytes = encode(&record(7));
        assert_eq!(decode(&bytes), Ok(record(7)));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "flipped byte {i}");
        }
    }

    #[test]
    fn written_messages_load_in_order_and_bad_files_go_aside() {
        let d = dir("order");
        let mut s = Spool::open(d.clone()).unwrap();
        let paths: Vec<PathBuf> = (0..3).map(|i| s.write(&record(i)).unwrap()).collect();
        // A write interrupted by a crash, a corrupt file and a stranger.
        fs::write(d.join(".tmp-00000000000000000009.msg"), b"QCOPSPL1 half").unwrap();
        fs::write(d.join("00000000000000000005.msg"), b"garbage").unwrap();
        fs::write(d.join("README"), b"not ours").unwrap();

        let mut again = Spool::open(d.clone()).unwrap();
        let loaded = again.load(1 << 20).unwrap();
        let got: Vec<Record> = loaded.records.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(got, vec![record(0), record(1), record(2)]);
        assert_eq!(
            loaded
                .records
                .iter()
                .map(|(p, _)| p.clone())
                .collect::<Vec<_>>(),
            paths
        );
        assert_eq!((loaded.corrupt, loaded.incomplete), (1, 1));
        assert!(d
            .join(CORRUPT_DIR)
            .join("00000000000000000005.msg")
            .exists());
        assert!(!d.join(".tmp-00000000000000000009.msg").exists());
        assert!(d.join("README").exists());
        // New files continue after the highest number seen.
        let next = again.write(&record(9)).unwrap();
        assert!(
            next.ends_with("00000000000000000006.msg"),
            "{}",
            next.display()
        );
        remove(&paths[0]);
        assert_eq!(again.load(1 << 20).unwrap().records.len(), 3);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn oversized_files_are_refused_before_reading() {
        let d = dir("big");
        let mut s = Spool::open(d.clone()).unwrap();
        s.write(&record(1)).unwrap();
        let loaded = Spool::open(d.clone()).unwrap().load(10).unwrap();
        assert_eq!((loaded.records.len(), loaded.corrupt), (0, 1));
        let _ = fs::remove_dir_all(&d);
    }
}

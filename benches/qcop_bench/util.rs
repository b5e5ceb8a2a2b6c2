//! Small helpers shared by every group: errors with context, role arguments, the shared
//! clock, `/proc` readers and the machine description.

use std::fmt::Display;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors are text with context: the bench prints them and exits non-zero.
pub type Res<T> = Result<T, String>;

/// Adds what was being done to an error.
pub trait Context<T> {
    /// Maps the error to `"{what}: {error}"`.
    fn ctx(self, what: impl Display) -> Res<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// `--key value` pairs handed to a role process.
pub struct RoleArgs(Vec<(String, String)>);

impl RoleArgs {
    /// Parses `--key value ...`.
    pub fn parse(args: &[String]) -> Res<RoleArgs> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let key = key
                .strip_prefix("--")
                .ok_or_else(|| format!("role argument {key:?} is not --key"))?;
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            pairs.push((key.to_owned(), value.clone()));
        }
        Ok(RoleArgs(pairs))
    }

    /// The value of `--key`.
    pub fn str(&self, key: &str) -> Res<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("missing role argument --{key}"))
    }

    /// The value of `--key`, parsed.
    pub fn num<T: FromStr>(&self, key: &str) -> Res<T>
    where
        T::Err: Display,
    {
        self.str(key)?.parse().ctx(format_args!("--{key}"))
    }
}

/// Builds `--key value ...` for a role process.
pub fn role_args(pairs: &[(&str, &dyn Display)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.to_string()])
        .collect()
}

/// `key=value` fields of a result line printed by a role.
pub fn field<T: FromStr>(line: &str, key: &str) -> Res<T>
where
    T::Err: Display,
{
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .ok_or_else(|| format!("no {key}= in {line:?}"))?
        .parse()
        .ctx(format_args!("{key}= in {line:?}"))
}

/// Comma-separated numbers (a role's samples).
pub fn parse_list(text: &str) -> Res<Vec<u64>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ctx(format_args!("sample {s:?}")))
        .collect()
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of a measurement, so a
/// start taken by the publisher and an end taken by a subscriber can be subtracted.
pub fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Memory figures of one process, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// `VmRSS` from `/proc/PID/status` (counts shared library pages in full).
    pub rss: u64,
    /// `VmHWM`: the peak of `VmRSS`.
    pub hwm: u64,
    /// `Pss` from `smaps_rollup`: shared pages divided among the processes mapping them.
    pub pss: u64,
    /// `Private_Clean + Private_Dirty`: pages only this process maps (its own binary's
    /// text is private clean when nothing else runs it).
    pub private: u64,
    /// `Anonymous`: heap, stacks and written data, the memory that cannot be dropped
    /// (unlike `Private_Dirty`, it does not count a freshly built binary's text, whose
    /// page-cache pages stay dirty until written back).
    pub anon: u64,
}

/// Reads a process's memory figures from `/proc`.
pub fn mem_of(pid: u32) -> Res<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ctx("read status")?;
    let rollup =
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ctx("read smaps_rollup")?;
    Ok(Mem {
        rss: kb_field(&status, "VmRSS:")?,
        hwm: kb_field(&status, "VmHWM:")?,
        pss: kb_field(&rollup, "Pss:")?,
        private: kb_field(&rollup, "Private_Clean:")? + kb_field(&rollup, "Private_Dirty:")?,
        anon: kb_field(&rollup, "Anonymous:")?,
    })
}

/// Time a process has spent on a CPU, in nanoseconds (`/proc/PID/schedstat`, first field);
/// `pid` 0 means this process.
pub fn cpu_ns(pid: u32) -> Res<u64> {
    let path = if pid == 0 {
        "/proc/self/schedstat".to_owned()
    } else {
        format!("/proc/{pid}/schedstat")
    };
    let text = std::fs::read_to_string(&path).ctx(&path)?;
    text.split_whitespace()
        .next()
        .unwrap_or("")
        .parse()
        .ctx(path)
}

fn kb_field(text: &str, name: &str) -> Res<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .ok_or_else(|| format!("no {name} line"))?;
    let kb: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ctx(name)?;
    Ok(kb * 1024)
}

/// Parses a kernel CPU list such as `0-1,4`.
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
            cpus.extend(a..=b);
        }
    }
    cpus
}

/// Online CPUs of the machine.
pub fn online_cpus() -> Vec<usize> {
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|t| parse_cpu_list(&t))
        .unwrap_or_default();
    if cpus.is_empty() {
        vec![0]
    } else {
        cpus
    }
}

/// CPUs this process may run on (what a `taskset` around the bench left it).
pub fn allowed_cpus() -> Vec<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(parse_cpu_list)
        })
        .unwrap_or_else(online_cpus)
}

/// Formats a CPU list compactly (`0-3`, `0,2`).
pub fn cpu_list_string(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// One line describing the machine: CPUs, model and kernel.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "{} online CPUs ({}), {model}, Linux {kernel}",
        online_cpus().len(),
        cpu_list_string(&online_cpus())
    )
}

/// The current UTC date and time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant's algorithm), valid for any date after 1970.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

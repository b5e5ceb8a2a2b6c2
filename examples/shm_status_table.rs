//! Two processes sharing a status table in a shared-memory segment, the way Qt programs
//! used `QSharedMemory`: a writer updates its row under the segment lock, a reader attaches
//! read-only and prints the table. Needs a running `qcopd`.
//!
//! ```text
//! cargo run --example shm_status_table            # writer and reader, 3 seconds
//! cargo run --example shm_status_table -- writer  # one writer (run several)
//! cargo run --example shm_status_table -- reader  # one reader
//! ```
//!
//! Kill a writer with `kill -9` while it holds the lock: the next locker is told that the
//! previous holder died, and the table says so.
//!
//! Table layout (fixed-width, little-endian, the same for 32- and 64-bit processes):
//! 8 rows of 32 bytes: `pid: u32`, `state: u32` (0 free, 1 running, 2 done),
//! `updates: u64`, `name: [u8; 16]` (NUL-padded).

use qcop::shm::{Access, SharedMemory, ShmError};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const NAME: &str = "example/status-table";
const ROWS: usize = 8;
const ROW: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    pid: u32,
    state: u32,
    updates: u64,
    name: String,
}

fn parse(table: &[u8]) -> Vec<Row> {
    table
        .chunks_exact(ROW)
        .take(ROWS)
        .map(|r| Row {
            pid: u32::from_le_bytes(r[0..4].try_into().unwrap_or_default()),
            state: u32::from_le_bytes(r[4..8].try_into().unwrap_or_default()),
            updates: u64::from_le_bytes(r[8..16].try_into().unwrap_or_default()),
            name: String::from_utf8_lossy(&r[16..32])
                .trim_end_matches('\0')
                .to_owned(),
        })
        .filter(|r| r.pid != 0)
        .collect()
}

fn encode(row: &Row) -> [u8; ROW] {
    let mut b = [0u8; ROW];
    b[0..4].copy_from_slice(&row.pid.to_le_bytes());
    b[4..8].copy_from_slice(&row.state.to_le_bytes());
    b[8..16].copy_from_slice(&row.updates.to_le_bytes());
    let n = row.name.len().min(16);
    b[16..16 + n].copy_from_slice(&row.name.as_bytes()[..n]);
    b
}

fn writer(rounds: u32) -> Result<(), ShmError> {
    let mut shm = SharedMemory::builder(NAME)
        .size((ROWS * ROW) as u64)
        .mode(0o644)
        .create_or_attach()?;
    let pid = std::process::id();
    for round in 1..=rounds {
        let mut guard = shm.lock()?;
        if guard.previous_owner_died() {
            eprintln!("writer {pid}: the previous lock holder died; clearing rows of dead writers");
            clear_dead_rows(guard.data_mut()?);
        }
        let table = guard.data_mut()?;
        // Our row, or the first free one.
        let index = (0..ROWS)
            .find(|&i| parse(&table[i * ROW..(i + 1) * ROW]).first().map(|r| r.pid) == Some(pid))
            .or_else(|| (0..ROWS).find(|&i| table[i * ROW..i * ROW + 4] == [0; 4]))
            .ok_or_else(|| ShmError::OutOfResources("the status table is full".into()))?;
        let row = Row {
            pid,
            state: if round == rounds { 2 } else { 1 },
            updates: u64::from(round),
            name: format!("writer-{pid}"),
        };
        table[index * ROW..(index + 1) * ROW].copy_from_slice(&encode(&row));
        drop(guard);
        std::thread::sleep(Duration::from_millis(100));
    }
    shm.detach()
}

/// Rows whose process no longer exists are freed (the dead lock holder may have left its
/// row half-written).
fn clear_dead_rows(table: &mut [u8]) {
    for row in table.chunks_exact_mut(ROW) {
        let pid = u32::from_le_bytes(row[0..4].try_into().unwrap_or_default());
        if pid != 0 && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            row.fill(0);
        }
    }
}

fn reader(for_how_long: Duration) -> Result<(), ShmError> {
    let deadline = Instant::now() + for_how_long;
    // The writer may not have created the table yet.
    let mut shm = loop {
        match SharedMemory::attach(NAME, Access::ReadOnly) {
            Ok(shm) => break shm,
            Err(ShmError::NotFound(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    };
    let mut last = Vec::new();
    while Instant::now() < deadline {
        // Lock while copying so no row is read half-written.
        let rows = {
            let guard = shm.lock()?;
            parse(guard.data())
        };
        if rows != last {
            for r in &rows {
                let state = ["free", "running", "done"]
                    .get(r.state as usize)
                    .unwrap_or(&"?");
                println!(
                    "{:<16} pid {:>7}  {:<8} updates {}",
                    r.name, r.pid, state, r.updates
                );
            }
            println!("--");
            last = rows;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    shm.detach()
}

fn main() -> ExitCode {
    let role = std::env::args().nth(1).unwrap_or_default();
    let result = match role.as_str() {
        "writer" => writer(30),
        "reader" => reader(Duration::from_secs(5)),
        "" => {
            // Both roles: a reader process, and this process as the writer.
            let exe = std::env::current_exe().expect("own path");
            let mut child = match Command::new(exe).arg("reader").spawn() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("cannot start the reader: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let r = writer(20);
            let _ = child.wait();
            r
        }
        other => {
            eprintln!("usage: shm_status_table [writer|reader] (not {other:?})");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shm_status_table: {e}");
            ExitCode::FAILURE
        }
    }
}

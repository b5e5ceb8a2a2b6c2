//! Maps a shared-memory stream and reads it in place (zero-copy), checking every message
//! that `shm_publisher` wrote: whole (its two arguments agree) and in order (numbers rise
//! by one, or by one plus what a lossy publisher overwrote). Prints one summary line;
//! exits 1 if a message was torn or out of order, or fewer than COUNT arrived.
//!
//! ```text
//! cargo run --example shm_subscriber -- [CHANNEL] [COUNT] [--spin]
//!     CHANNEL   default sensors/demo
//!     COUNT     messages to expect (default: read until the stream ends)
//!     --spin    spin while waiting instead of sleeping on the futex
//! ```
//!
//! Start it before the publisher or after: it waits up to 60 s for the stream to open.

use qcop::shm::{StreamError, Subscriber, WaitMode};
use qcop::ConnectOptions;
use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> Result<ExitCode, Box<dyn Error>> {
    let mut channel = "sensors/demo".to_owned();
    let mut count = None;
    let mut spin = false;
    for (i, arg) in std::env::args().skip(1).enumerate() {
        match (arg.as_str(), i) {
            ("--spin", _) => spin = true,
            (_, 0) => channel = arg,
            _ => count = Some(arg.parse::<u64>()?),
        }
    }
    let opts = ConnectOptions::new().name("shm_subscriber");
    let mut sub = Subscriber::open_wait(&opts, &channel, Duration::from_secs(60))?;
    if spin {
        sub.set_wait_mode(WaitMode::Spin);
    }
    let (mut received, mut next, mut bad) = (0u64, None::<u64>, 0u64);
    let end = loop {
        if count.is_some_and(|n| received + sub.lost() >= n) {
            break "count";
        }
        let sample = match sub.borrow(Duration::from_secs(30)) {
            Ok(s) => s,
            Err(StreamError::Ended) => break "end-of-stream",
            Err(e) => return Err(e.into()),
        };
        let expected = next.map(|n| n + sample.lost_before());
        let mut bytes = [0u8; 16];
        let len = sample.len();
        if len == 16 {
            bytes.copy_from_slice(&sample);
        }
        let number = u64::from_be_bytes(bytes[..8].try_into()?);
        let check = u64::from_be_bytes(bytes[8..].try_into()?);
        // Read in place: what was read counts only if the publisher did not overwrite it
        // meanwhile (possible with --lossy; the subscriber then counts it as lost).
        if sample.release().is_err() {
            next = expected.map(|e| e + 1);
            continue;
        }
        if len != 16 || check != !number || expected.is_some_and(|e| number != e) {
            bad += 1;
        }
        next = Some(number + 1);
        received += 1;
    };
    let ok = bad == 0 && count.map_or(true, |n| received + sub.lost() >= n);
    println!(
        "shm_subscriber: received={received} lost={} bad={bad} ended={end} arch={} result={}",
        sub.lost(),
        std::env::consts::ARCH,
        if ok { "ok" } else { "FAIL" }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

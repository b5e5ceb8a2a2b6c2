//! Opens a shared-memory stream and publishes numbered messages on it, written in place
//! (zero-copy). With `shm_subscriber` it checks a stream end to end, also between an armv7
//! and an aarch64 process on one board.
//!
//! With a daemon running (`cargo run --bin qcopd`):
//!
//! ```text
//! cargo run --example shm_publisher -- [OPTIONS] [CHANNEL] [COUNT]
//!     CHANNEL             default sensors/demo
//!     COUNT               messages to publish (default 1000)
//!     --lossy             overwrite when a subscriber is a ring behind (default: lossless)
//!     --slots N           ring slots, a power of two (default 256)
//!     --subscribers N     wait for N subscribers to map the stream first (default 1)
//!     --interval-us N     pause between messages (default 0)
//! ```
//!
//! Message `i` is `sample(qulonglong,qulonglong)` with the arguments `i` and `!i`, so a
//! reader can check every message whole and in order. Prints one summary line and ends the
//! stream by exiting.

use qcop::shm::{Policy, Publisher, StreamOptions};
use qcop::ConnectOptions;
use std::error::Error;
use std::time::{Duration, Instant};

const MESSAGE: &str = "sample(qulonglong,qulonglong)";

struct Args {
    channel: String,
    count: u64,
    policy: Policy,
    slots: u32,
    subscribers: usize,
    interval: Duration,
}

fn parse() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        channel: "sensors/demo".into(),
        count: 1000,
        policy: Policy::Lossless,
        slots: 256,
        subscribers: 1,
        interval: Duration::ZERO,
    };
    let mut positional = 0;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--lossy" => a.policy = Policy::Lossy,
            "--slots" => a.slots = value()?.parse()?,
            "--subscribers" => a.subscribers = value()?.parse()?,
            "--interval-us" => a.interval = Duration::from_micros(value()?.parse()?),
            _ if positional == 0 => {
                a.channel = arg;
                positional += 1;
            }
            _ if positional == 1 => {
                a.count = arg.parse()?;
                positional += 1;
            }
            _ => return Err(format!("unexpected argument {arg:?}").into()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn Error>> {
    let a = parse()?;
    let opts = ConnectOptions::new().name("shm_publisher");
    let stream = StreamOptions::new()
        .slot_size(16)
        .slots(a.slots)
        .policy(a.policy);
    let mut publisher = Publisher::open(&opts, &a.channel, MESSAGE, &stream)?;
    let waiting = Instant::now();
    while publisher.subscribers() < a.subscribers {
        if waiting.elapsed() > Duration::from_secs(60) {
            return Err("no subscriber mapped the stream within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    for i in 0..a.count {
        // Zero-copy: the message is written straight into the shared ring.
        let mut loan = publisher.loan(Duration::from_secs(10))?;
        loan[..8].copy_from_slice(&i.to_be_bytes());
        loan[8..16].copy_from_slice(&(!i).to_be_bytes());
        loan.commit(16);
        if !a.interval.is_zero() {
            std::thread::sleep(a.interval);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "shm_publisher: published={} channel={} policy={} slots={} arch={} seconds={secs:.3}",
        a.count,
        a.channel,
        publisher.policy(),
        publisher.slots(),
        std::env::consts::ARCH,
    );
    Ok(())
}

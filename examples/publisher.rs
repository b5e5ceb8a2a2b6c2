//! Publishes `setVolume(int)` on `QPE/Audio` a number of times, one message per interval.
//!
//! With a daemon running (`cargo run --bin qcopd`) and something listening
//! (`cargo run --bin qcop -- watch QPE/Audio`, or the `subscriber` example), run:
//!
//! ```text
//! cargo run --example publisher -- [COUNT] [INTERVAL_MS]     # defaults: 10 messages, 1000 ms
//! ```
//!
//! The socket is taken from `$QCOP_SOCKET` or the built-in default, as for every client.

use qcop::datastream::Value;
use qcop::{ConnectOptions, Connection};
use std::error::Error;
use std::time::Duration;

const CHANNEL: &str = "QPE/Audio";
const MESSAGE: &str = "setVolume(int)";

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let count: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let interval =
        Duration::from_millis(args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000));

    let mut conn = Connection::connect(&ConnectOptions::new().name("publisher"))?;
    for i in 0..count {
        // 0, 10, ..., 100, 0, ...
        let volume = (i % 11 * 10) as i32;
        let mut payload = Vec::new();
        Value::Int(volume).encode(&mut payload);
        conn.send(CHANNEL, MESSAGE, &payload)?;
        // send() only buffers; flush() waits until the daemon has routed the message and
        // reports a refusal (e.g. a payload over its limit) here rather than never.
        conn.flush()?;
        let listeners = conn.registered_count(CHANNEL)?;
        println!("sent {MESSAGE} {volume} ({listeners} exact subscribers)");
        if i + 1 < count {
            std::thread::sleep(interval);
        }
    }
    Ok(())
}

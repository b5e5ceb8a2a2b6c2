//! Answers `add(int,int)` calls on `QPE/Calc` with `result(int)`; other calls on the channel
//! get an error reply, so their callers fail at once instead of timing out.
//!
//! With a daemon running (`cargo run --bin qcopd`), run:
//!
//! ```text
//! cargo run --example responder
//! ```
//!
//! then call it with `cargo run --example caller -- 2 3` or
//! `cargo run --bin qcop -- call QPE/Calc 'add(int,int)' 2 3`.

use qcop::datastream::{self, ArgType, Value};
use qcop::{ConnectOptions, Connection, Message};
use std::error::Error;

const CHANNEL: &str = "QPE/Calc";
const REQUEST: &str = "add(int,int)";
const REPLY: &str = "result(int)";

fn main() -> Result<(), Box<dyn Error>> {
    let mut conn = Connection::connect(&ConnectOptions::new().name("responder"))?;
    conn.subscribe(CHANNEL)?;
    eprintln!("answering {REQUEST} on {CHANNEL}; Ctrl-C to stop");
    loop {
        let msg = conn.recv()?;
        if !msg.is_call() {
            // A plain broadcast on the channel: nobody waits for an answer.
            continue;
        }
        match answer(&msg) {
            Ok(sum) => {
                let mut payload = Vec::new();
                Value::Int(sum).encode(&mut payload);
                conn.reply(&msg, REPLY, &payload)?;
                eprintln!("{REQUEST} -> {REPLY} {sum}");
            }
            Err(why) => {
                conn.reply_error(&msg, &why)?;
                eprintln!("{}: refused ({why})", msg.message);
            }
        }
    }
}

/// The sum asked for, or why the call cannot be answered.
fn answer(call: &Message) -> Result<i32, String> {
    if call.message != REQUEST {
        return Err(format!(
            "unknown message {}; this responder knows {REQUEST}",
            call.message
        ));
    }
    let args = datastream::decode_args(&[ArgType::Int, ArgType::Int], &call.data)
        .map_err(|e| format!("bad arguments: {e}"))?;
    match args.as_slice() {
        [Value::Int(a), Value::Int(b)] => a.checked_add(*b).ok_or_else(|| "overflow".to_owned()),
        _ => Err("bad arguments".to_owned()),
    }
}

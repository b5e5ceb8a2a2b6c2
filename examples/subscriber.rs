//! Subscribes to channels or patterns and prints every message, decoding its arguments with
//! the types named in its signature.
//!
//! With a daemon running (`cargo run --bin qcopd`), run:
//!
//! ```text
//! cargo run --example subscriber -- 'QPE/*' sensors/imu     # default: 'QPE/*'
//! ```
//!
//! and send something, e.g. `cargo run --example publisher` or
//! `cargo run --bin qcop -- send QPE/System 'notify(QString,int)' hello 3`.

use qcop::datastream::{self, ArgType};
use qcop::{ConnectOptions, Connection, Message};
use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let mut channels: Vec<String> = std::env::args().skip(1).collect();
    if channels.is_empty() {
        channels.push("QPE/*".to_owned());
    }
    let mut conn = Connection::connect(&ConnectOptions::new().name("subscriber"))?;
    for channel in &channels {
        conn.subscribe(channel)?;
    }
    eprintln!("subscribed to {}; Ctrl-C to stop", channels.join(", "));

    let mut lost = 0;
    loop {
        let msg = conn.recv()?;
        if conn.lost() != lost {
            eprintln!(
                "(the daemon dropped {} messages: we read too slowly)",
                conn.lost() - lost
            );
            lost = conn.lost();
        }
        println!("{}", describe(&msg));
    }
}

/// `channel message arg, arg, ...`: each argument decoded in turn; from the first one whose
/// type qcop does not know (or that does not decode), the rest of the payload as hex.
fn describe(msg: &Message) -> String {
    let mut text = format!("{} {}", msg.channel, msg.message);
    if msg.is_call() {
        text.push_str(" (a call: a responder should answer it)");
    }
    let types = match datastream::parse_signature_lenient(&msg.message) {
        Ok((_, types)) => types,
        Err(e) => {
            return format!(
                "{text}: bad signature ({e}), payload 0x{}",
                datastream::hex(&msg.data)
            )
        }
    };
    let mut rest = msg.data.as_slice();
    for (i, ty) in types.iter().enumerate() {
        let decoded = ty
            .ok_or(())
            .and_then(|ty: ArgType| datastream::decode_value(ty, rest).map_err(|_| ()));
        match decoded {
            Ok((value, used)) => {
                text.push_str(&format!(
                    "\n  arg {}: {} = {value}",
                    i + 1,
                    value.arg_type()
                ));
                rest = &rest[used..];
            }
            Err(()) => {
                text.push_str(&format!(
                    "\n  arg {}..: undecodable, 0x{}",
                    i + 1,
                    datastream::hex(rest)
                ));
                return text;
            }
        }
    }
    if !rest.is_empty() {
        text.push_str(&format!(
            "\n  {} extra bytes: 0x{}",
            rest.len(),
            datastream::hex(rest)
        ));
    }
    text
}

//! Calls `add(int,int)` on `QPE/Calc` and prints the `result(int)` reply.
//!
//! With a daemon (`cargo run --bin qcopd`) and the `responder` example running, run:
//!
//! ```text
//! cargo run --example caller -- 2 3
//! ```
//!
//! Without a responder the call fails at once with "no responder".

use qcop::datastream::{self, ArgType, Value};
use qcop::{ConnectOptions, Connection, Error};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (a, b) = match args.as_slice() {
        [a, b] => (a.as_str(), b.as_str()),
        _ => {
            eprintln!("usage: caller A B   (two ints)");
            return ExitCode::from(2);
        }
    };
    // The same text-to-QDataStream conversion the qcop tool uses.
    let payload = match datastream::encode_args(&[ArgType::Int, ArgType::Int], &[a, b]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("caller: {e}");
            return ExitCode::from(2);
        }
    };
    match call(&payload) {
        Ok(sum) => {
            println!("{a} + {b} = {sum}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("caller: {e}");
            ExitCode::FAILURE
        }
    }
}

fn call(payload: &[u8]) -> Result<i32, Box<dyn std::error::Error>> {
    let mut conn = Connection::connect(&ConnectOptions::new().name("caller"))?;
    let reply = match conn.call("QPE/Calc", "add(int,int)", payload, Duration::from_secs(2)) {
        Ok(reply) => reply,
        Err(Error::NoResponder) => {
            return Err("no responder: start `cargo run --example responder`".into())
        }
        Err(Error::Timeout) => return Err("the responder did not answer within 2 s".into()),
        Err(Error::Remote(why)) => return Err(format!("the responder refused: {why}").into()),
        Err(e) => return Err(e.into()),
    };
    if reply.message != "result(int)" {
        return Err(format!("unexpected reply {}", reply.message).into());
    }
    match datastream::decode_args(&[ArgType::Int], &reply.data)?.as_slice() {
        [Value::Int(sum)] => Ok(*sum),
        _ => Err("malformed reply".into()),
    }
}

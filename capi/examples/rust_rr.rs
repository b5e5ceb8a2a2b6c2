//! The Rust half of libqcop's round-trip benchmark (capi/bench/run.sh): the same exchange as
//! capi/bench/rr.c through the Rust API, so the two can be compared in one run.
//!
//! `rust_rr SOCKET COUNT`: a child process echoes `ping()` on bench/ping as `pong()` on
//! bench/pong; this process times COUNT round trips and prints the mean in nanoseconds.

use qcop_client::{ConnectOptions, Connection};
use std::process::Command;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let opts = ConnectOptions::new().socket(&args[1]);
    if args.get(3).map(String::as_str) == Some("echo") {
        let mut c = Connection::connect(&opts)?;
        c.subscribe("bench/ping")?;
        loop {
            let m = c.recv()?;
            if m.message == "stop()" {
                return Ok(());
            }
            c.send("bench/pong", "pong()", &m.data)?;
        }
    }
    let count: u32 = args[2].parse()?;
    let mut c = Connection::connect(&opts)?;
    c.subscribe("bench/pong")?;
    let mut echo = Command::new(&args[0])
        .args([&args[1], "0", "echo"])
        .spawn()?;
    while !c.is_registered("bench/ping")? {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let payload = [0u8; 16];
    let round = |c: &mut Connection| -> Result<(), qcop_client::Error> {
        c.send("bench/ping", "ping()", &payload)?;
        c.recv().map(|_| ())
    };
    for _ in 0..count / 10 {
        round(&mut c)?;
    }
    let start = Instant::now();
    for _ in 0..count {
        round(&mut c)?;
    }
    let ns = start.elapsed().as_nanos() / u128::from(count.max(1));
    c.send("bench/ping", "stop()", &[])?;
    c.flush()?;
    echo.wait()?;
    println!("{ns}");
    Ok(())
}

//! The Rust half of libqcop's round-trip benchmark (capi/bench/run.sh): the same exchange as
//! capi/bench/rr.c through the Rust API, so the two can be compared in one run.
//!
//! `rust_rr SOCKET COUNT`: a child process echoes `ping()` on bench/ping as `pong()` on
//! bench/pong; this process times COUNT round trips and prints the mean in nanoseconds.
//! `rust_rr SOCKET COUNT SUBSCRIBERS`: broadcast, as `rr` in capi/bench/rr.c.

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
    if args.get(3).map(String::as_str) == Some("receive") {
        let count: u32 = args[2].parse()?;
        let mut c = Connection::connect(&opts)?;
        c.subscribe("bench/bcast")?;
        // Messages the daemon dropped for a slow reader count too.
        let mut got = 0u64;
        while got + c.lost() < u64::from(count) {
            if c.recv_timeout(std::time::Duration::from_secs(5))?.is_none() {
                break;
            }
            got += 1;
        }
        c.send("bench/done", "done()", &[])?;
        return Ok(c.flush()?);
    }
    let count: u32 = args[2].parse()?;
    if let Some(subscribers) = args.get(3) {
        return broadcast(&opts, &args[0], &args[1], count, subscribers.parse()?);
    }
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

fn broadcast(
    opts: &ConnectOptions,
    exe: &str,
    socket: &str,
    count: u32,
    subscribers: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut c = Connection::connect(opts)?;
    c.subscribe("bench/done")?;
    let mut children = Vec::new();
    for _ in 0..subscribers {
        let n = count.to_string();
        children.push(Command::new(exe).args([socket, &n, "receive"]).spawn()?);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let ready = c
            .channels()?
            .iter()
            .any(|ch| ch.name == "bench/bcast" && ch.subscribers == subscribers);
        if ready {
            break;
        }
    }
    let payload = [0u8; 16];
    let start = Instant::now();
    for _ in 0..count {
        c.send("bench/bcast", "sample()", &payload)?;
    }
    for _ in 0..subscribers {
        c.recv()?;
    }
    let ns = start.elapsed().as_nanos() / u128::from(count.max(1));
    for mut child in children {
        child.wait()?;
    }
    println!("{ns}");
    Ok(())
}

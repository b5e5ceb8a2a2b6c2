//! Drives a [`Connection`] from a `poll(2)` loop together with stdin: each line typed is sent
//! as `say(QString)` on a channel, and every message on the channel is printed.
//!
//! With a daemon running (`cargo run --bin qcopd`), start two of these and type into either:
//!
//! ```text
//! cargo run --example poll_loop -- [CHANNEL]     # default: examples/chat
//! ```
//!
//! The rule for event loops (Qt's `QSocketNotifier`, glib, mio, a hand-written `poll`):
//! watch the connection's descriptor for readability, and when it is readable call
//! [`Connection::try_recv`] until it returns `None`. Drain it before blocking again, too:
//! a blocking library call (`subscribe`, `flush`, `call`) may have read messages into the
//! connection's buffer, where the descriptor no longer signals them.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use qcop::datastream::{self, ArgType, Value};
use qcop::{ConnectOptions, Connection};
use std::error::Error;
use std::io::Write;
use std::os::fd::AsFd;

fn main() -> Result<(), Box<dyn Error>> {
    let channel = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/chat".to_owned());
    // With reconnect, a restarted daemon is picked up again; the descriptor then changes,
    // which is why the PollFd is rebuilt from the connection on every iteration.
    let opts = ConnectOptions::new().name("poll_loop").reconnect(true);
    let mut conn = Connection::connect(&opts)?;
    conn.subscribe(&channel)?;
    eprintln!("type lines to send them on {channel}; Ctrl-D to quit");

    let stdin = std::io::stdin();
    let mut pending = Vec::new();
    loop {
        // Messages may already be buffered (read during subscribe/flush above): handle them
        // before sleeping in poll, or they would wait for the next unrelated wake-up.
        while let Some(msg) = conn.try_recv()? {
            let text = match datastream::decode_args(&[ArgType::QString], &msg.data) {
                Ok(values) => values[0].to_string(),
                Err(_) => format!("0x{}", datastream::hex(&msg.data)),
            };
            println!("{} {} {text}", msg.channel, msg.message);
        }
        std::io::stdout().flush()?;

        // When the connection's descriptor is readable (or hung up), the top of the loop
        // drains it; try_recv reports a lost daemon as an error, or reconnects.
        let stdin_ready = {
            let mut fds = [
                PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                PollFd::new(conn.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            !fds[0].revents().unwrap_or(PollFlags::empty()).is_empty()
        };

        if stdin_ready {
            // Read the descriptor directly: std's buffered stdin could hold lines that poll
            // would then not report.
            let mut buf = [0u8; 4096];
            let n = nix::unistd::read(stdin.as_fd(), &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                let mut payload = Vec::new();
                Value::QString(Some(text)).encode(&mut payload);
                conn.send(&channel, "say(QString)", &payload)?;
            }
            conn.flush()?;
        }
    }
}

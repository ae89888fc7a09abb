//! The benchmark's request/response pair: a client and an echo server, two
//! processes, pass one byte back and forth over pipes. Every INTERVAL_US the
//! client sends a request and records how long the answer took to come back,
//! until DURATION_S has passed. Both processes carry the command name of the
//! path they were started by, so a symlink named after a strategy's `comm`
//! makes the pair a target (the server is started through the same path).
//!
//! `rr DURATION_S INTERVAL_US` prints one line:
//! `rr: requests N p50_us A p99_us B max_us C`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn serve() {
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut byte = [0u8; 1];
    while input.read_exact(&mut byte).is_ok() {
        if output
            .write_all(&byte)
            .and_then(|_| output.flush())
            .is_err()
        {
            break;
        }
    }
}

fn main() {
    let mut args = std::env::args();
    let me = args.next().unwrap_or_else(|| "rr".into());
    let args: Vec<String> = args.collect();
    if args.first().map(String::as_str) == Some("--serve") {
        return serve();
    }
    let nums: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let [duration_s, interval_us] = nums[..] else {
        eprintln!("usage: rr DURATION_S INTERVAL_US");
        std::process::exit(2);
    };
    // Started by the same path, so it shows under the same command name.
    let mut server = Command::new(&me)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("rr: cannot start the server {me}: {e}");
            std::process::exit(1);
        });
    let (mut to, mut from) = (
        server.stdin.take().expect("piped"),
        server.stdout.take().expect("piped"),
    );
    let interval = Duration::from_micros(interval_us);
    let end = Instant::now() + Duration::from_secs(duration_s);
    let mut rtt_us = Vec::new();
    let mut byte = [7u8; 1];
    while Instant::now() < end {
        std::thread::sleep(interval);
        let sent = Instant::now();
        if to.write_all(&byte).is_err() || from.read_exact(&mut byte).is_err() {
            eprintln!("rr: the server went away");
            std::process::exit(1);
        }
        rtt_us.push(sent.elapsed().as_micros() as u64);
    }
    drop(to);
    let _ = server.wait();
    rtt_us.sort_unstable();
    let n = rtt_us.len();
    let at = |q: usize| rtt_us.get((n * q / 100).min(n.saturating_sub(1))).copied();
    let (p50, p99) = (at(50).unwrap_or(0), at(99).unwrap_or(0));
    let max = rtt_us.last().copied().unwrap_or(0);
    println!("rr: requests {n} p50_us {p50} p99_us {p99} max_us {max}");
}

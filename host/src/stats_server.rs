//! The stats socket's server: one thread, a few clients at once, two ways
//! to ask.
//!
//! - Connect and read (or connect, shut down writing, read): one JSON
//!   snapshot, then the connection closes. A client that sends nothing gets
//!   it after [`QUIET`].
//! - scx_stats' line-delimited requests, any number per connection:
//!   `{"req":"stats","args":{"target":"top"}}` answers
//!   `{"errno":0,"args":{"resp":SNAPSHOT}}`, `{"req":"stats_meta"}` answers
//!   the field descriptions (see [`crate::described`]); anything else gets
//!   `errno` 22 (EINVAL) and a message.
//!
//! The thread never allocates per answer: one buffer, touched up front,
//! holds every answer (the host counts its page faults).

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::stats::Shared;

/// How long a client that sends nothing waits for the plain snapshot.
pub const QUIET: Duration = Duration::from_millis(100);
/// A request connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// Clients served at once; more wait in the listener's backlog.
const CLIENTS: usize = 8;
/// Longest request line.
const LINE: usize = 4096;

struct Client {
    conn: UnixStream,
    line: Vec<u8>,
    since: Instant,
    asked: bool,
}

#[derive(Deserialize)]
struct Request {
    req: String,
    #[serde(default)]
    args: std::collections::BTreeMap<String, String>,
}

/// Serves `listener` until the process ends.
pub fn run(listener: UnixListener, shared: Shared, meta: String) {
    let _ = listener.set_nonblocking(true);
    let mut body = vec![0u8; 1 << 16];
    body.clear();
    let mut clients: Vec<Client> = Vec::with_capacity(CLIENTS);
    let mut spare: Vec<Vec<u8>> = (0..CLIENTS).map(|_| vec![0u8; LINE]).collect();
    spare.iter_mut().for_each(Vec::clear);
    let mut fds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; CLIENTS + 1];
    loop {
        fds[0].fd = if clients.len() < CLIENTS {
            listener.as_raw_fd()
        } else {
            -1
        };
        for (i, fd) in fds[1..].iter_mut().enumerate() {
            fd.fd = clients.get(i).map_or(-1, |c| c.conn.as_raw_fd());
            fd.revents = 0;
        }
        fds[0].revents = 0;
        // Without clients nothing times out: sleep until one connects (a
        // timed wake-up here takes a CPU from a workload 20 times a second).
        let timeout = if clients.is_empty() { -1 } else { 50 };
        // SAFETY: fds is a valid array of CLIENTS + 1 pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if fds[0].revents != 0 {
            while clients.len() < CLIENTS {
                let Ok((conn, _)) = listener.accept() else {
                    break;
                };
                let _ = conn.set_nonblocking(true);
                let line = spare.pop().unwrap_or_default();
                clients.push(Client {
                    conn,
                    line,
                    since: Instant::now(),
                    asked: false,
                });
            }
        }
        let mut i = 0;
        while i < clients.len() {
            let ready = fds.get(i + 1).is_some_and(|f| f.revents != 0);
            let keep = serve_client(&mut clients[i], ready, &shared, &meta, &mut body);
            if keep {
                i += 1;
            } else {
                let mut gone = clients.swap_remove(i);
                gone.line.clear();
                spare.push(std::mem::take(&mut gone.line));
                // The swapped-in client's poll result is at the end's slot.
                if let Some(last) = fds.get(clients.len() + 1).map(|f| f.revents) {
                    if let Some(f) = fds.get_mut(i + 1) {
                        f.revents = last;
                    }
                }
            }
        }
    }
}

/// Reads what `c` sent and answers it; false when the connection is done.
fn serve_client(
    c: &mut Client,
    ready: bool,
    shared: &Shared,
    meta: &str,
    body: &mut Vec<u8>,
) -> bool {
    let mut eof = false;
    if ready {
        let mut chunk = [0u8; 512];
        loop {
            match c.conn.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) if c.line.len() + n <= LINE => c.line.extend_from_slice(&chunk[..n]),
                Ok(_) => {
                    answer_error(body, "request line too long");
                    let _ = send(&mut c.conn, body);
                    return false;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
    while let Some(end) = c.line.iter().position(|&b| b == b'\n') {
        c.asked = true;
        c.since = Instant::now();
        answer(&c.line[..end], shared, meta, body);
        c.line.drain(..=end);
        if send(&mut c.conn, body).is_err() {
            return false;
        }
    }
    let quiet = !c.asked && c.line.is_empty();
    if quiet && (eof || c.since.elapsed() >= QUIET) {
        body.clear();
        if snapshot(shared, body) {
            body.push(b'\n');
            let _ = send(&mut c.conn, body);
        }
        return false;
    }
    if eof && !c.line.is_empty() {
        // A last request without its newline.
        answer(&c.line, shared, meta, body);
        let _ = send(&mut c.conn, body);
        return false;
    }
    !eof && c.since.elapsed() < IDLE
}

/// Writes the answer to one request line into `body`.
pub fn answer(line: &[u8], shared: &Shared, meta: &str, body: &mut Vec<u8>) {
    let req: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return answer_error(body, &format!("not a request: {e}")),
    };
    match req.req.as_str() {
        "stats" => match req.args.get("target").map_or("top", String::as_str) {
            "top" => {
                body.clear();
                body.extend_from_slice(br#"{"errno":0,"args":{"resp":"#);
                if !snapshot(shared, body) {
                    return answer_error(body, "the snapshot could not be written");
                }
                body.extend_from_slice(b"}}\n");
            }
            other => answer_error(
                body,
                &format!("unknown stats target {other:?}; the only one is \"top\""),
            ),
        },
        "stats_meta" => {
            body.clear();
            body.extend_from_slice(br#"{"errno":0,"args":{"resp":"#);
            body.extend_from_slice(meta.as_bytes());
            body.extend_from_slice(b"}}\n");
        }
        other => answer_error(
            body,
            &format!("unknown request {other:?}; try \"stats\" or \"stats_meta\""),
        ),
    }
}

fn answer_error(body: &mut Vec<u8>, msg: &str) {
    body.clear();
    let msg = serde_json::Value::from(msg).to_string();
    body.extend_from_slice(
        format!(r#"{{"errno":{},"args":{{"resp":{msg}}}}}"#, libc::EINVAL).as_bytes(),
    );
    body.push(b'\n');
}

fn snapshot(shared: &Shared, body: &mut Vec<u8>) -> bool {
    let s = shared.lock().unwrap_or_else(|e| e.into_inner());
    serde_json::to_writer(&mut *body, &*s).is_ok()
}

/// Writes all of `body`, waiting at most 200 ms for a slow reader.
fn send(conn: &mut UnixStream, body: &[u8]) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_write_timeout(Some(Duration::from_millis(200)))?;
    let sent = conn.write_all(body);
    conn.set_nonblocking(true)?;
    sent
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;

    #[test]
    fn answers_scx_stats_requests_on_one_connection_and_plain_readers() {
        let dir = std::env::temp_dir().join(format!("rthulhu-scx-{}", std::process::id()));
        let socket = dir.join("stats.sock");
        let shared: Shared = Arc::default();
        shared.lock().unwrap().kernel.user_dispatches = 42;
        let _endpoint = crate::stats::serve(&socket, None, shared.clone()).unwrap();

        let conn = UnixStream::connect(&socket).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut ask = |req: &str| -> Value {
            (&conn).write_all(format!("{req}\n").as_bytes()).unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            serde_json::from_str(&line).unwrap()
        };
        let top = ask(r#"{"req":"stats","args":{"target":"top"}}"#);
        assert_eq!(top["errno"], 0);
        assert_eq!(top["args"]["resp"]["kernel"]["user_dispatches"], 42);
        shared.lock().unwrap().kernel.user_dispatches = 43;
        // The same connection again, and the target left out.
        let again = ask(r#"{"req":"stats"}"#);
        assert_eq!(again["args"]["resp"]["kernel"]["user_dispatches"], 43);
        let meta = ask(r#"{"req":"stats_meta","args":{}}"#);
        assert_eq!(meta["errno"], 0);
        assert_eq!(meta["args"]["resp"]["Snapshot"]["top"], "true");
        let field = &meta["args"]["resp"]["HostFigures"]["fields"]["page_faults"];
        assert_eq!(field["datum"], "u64");
        assert!(field["desc"].as_str().unwrap().contains("Page faults"));
        for bad in [
            r#"{"req":"reset"}"#,
            r#"{"req":"stats","args":{"target":"x"}}"#,
            "nonsense",
        ] {
            let e = ask(bad);
            assert_eq!(e["errno"], libc::EINVAL, "{bad}");
            assert!(e["args"]["resp"].is_string(), "{bad}");
        }

        // A reader that only connects and reads still gets the plain snapshot.
        let mut plain = UnixStream::connect(&socket).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut text = String::new();
        plain.read_to_string(&mut text).unwrap();
        let s: crate::stats::Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(s.kernel.user_dispatches, 43);
        assert_eq!(crate::stats::read(&socket).unwrap(), s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

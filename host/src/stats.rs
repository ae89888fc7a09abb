//! Observability: a snapshot of the scheduler's figures, served as JSON on a
//! root-only Unix socket and, optionally, as Prometheus text on a loopback
//! TCP address; and `host --monitor`, which reads the socket.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_api::Counters;
use serde::{Deserialize, Serialize};

use crate::described::described;

/// Default place of the stats socket.
pub const DEFAULT_SOCKET: &str = "/run/rthulhu/stats.sock";

described! {
    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    pub struct Snapshot: "Everything the stats endpoint serves." {
        plugin: String => "Policy name and version.",
        plugin_version: String => "Plugin crate version.",
        uptime_s: f64 => "Seconds since the scheduler attached.",
        kernel: KernelFigures => "Kernel-side counters (BPF).",
        host: HostFigures => "The host loop's figures.",
        #[serde(default)]
        liveness: crate::kernel::Liveness => "How the kernel side kept every CPU busy without the host.",
        plugin_counters: BTreeMap<String, u64> => "Counters the plugin publishes, by name.",
        #[serde(default)]
        classes: Vec<crate::latency::ClassFigures> => "Wake-up latency per task class, measured in the kernel.",
        #[serde(default)]
        cgroups: Vec<crate::cgroup_latency::CgroupFigures> => "Wake-up latency of the tracked cgroups, highest p99 first: at most 64 at once, a cgroup quiet for a minute gives its slot up.",
        #[serde(default)]
        cgroups_untracked: u64 => "Wake-ups of cgroups that found no tracking slot (more than 64 busy at once).",
    }
}

described! {
    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    pub struct KernelFigures: "The BPF side's counters." {
        queued: u64 => "Tasks queued for the host, not yet taken.",
        scheduled: u64 => "Tasks the plugin holds.",
        running: u64 => "Tasks running (host threads excluded).",
        online_cpus: u64 => "CPUs online.",
        user_dispatches: u64 => "Dispatches decided by the plugin.",
        kernel_dispatches: u64 => "Dispatches BPF did itself.",
        bounced_dispatches: u64 => "Dispatches redirected (CPU not allowed).",
        failed_dispatches: u64 => "Dispatches of tasks that had gone.",
        congested: u64 => "Times the queue to the host was full.",
    }
}

impl From<Counters> for KernelFigures {
    fn from(c: Counters) -> Self {
        KernelFigures {
            queued: c.nr_queued,
            scheduled: c.nr_scheduled,
            running: c.nr_running,
            online_cpus: c.nr_online_cpus,
            user_dispatches: c.nr_user_dispatches,
            kernel_dispatches: c.nr_kernel_dispatches,
            bounced_dispatches: c.nr_bounce_dispatches,
            failed_dispatches: c.nr_failed_dispatches,
            congested: c.nr_sched_congested,
        }
    }
}

described! {
    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    pub struct HostFigures: "The host loop's figures." {
        rounds: u64 => "Wake-ups handled.",
        decisions: u64 => "Decisions (tasks dispatched through the plugin).",
        decisions_per_sec: f64 => "Decisions per second over the last interval.",
        pending: u64 => "Tasks the plugin holds.",
        busy_share: f64 => "Host CPU time spent scheduling, as a share of wall time, last interval.",
        #[serde(default)]
        ghosts: u64 => "The plugin's decisions for tasks the kernel side had taken back (skipped).",
        // A loop that faults stalls every task waiting on it; memory is
        // locked and pools sized up front, so this stays flat once warm.
        #[serde(default)]
        page_faults: u64 => "Page faults (minor + major) of the host process since it attached.",
    }
}

/// The shared snapshot the loop updates and the servers read.
pub type Shared = Arc<Mutex<Snapshot>>;

/// Minor + major page faults of this process so far.
pub fn page_faults() -> u64 {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    (ru.ru_minflt + ru.ru_majflt) as u64
}

/// Removes the socket file when the scheduler stops.
pub struct Endpoint {
    socket: PathBuf,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Only ever our socket: a path that is something else now stays.
        if is_socket(&self.socket) {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// The socket's folder: created here (0700), or an existing real folder
/// that is ours and private. An existing folder is never changed.
fn private_folder(dir: &Path) -> std::io::Result<()> {
    let refuse = |why: String| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refusing stats folder {}: {why}", dir.display()),
        )
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        Err(e) => Err(e),
        Ok(m) if !m.file_type().is_dir() => Err(refuse("not a folder".into())),
        // SAFETY: geteuid has no preconditions.
        Ok(m) if m.uid() != unsafe { libc::geteuid() } => {
            Err(refuse(format!("owned by uid {}, not by us", m.uid())))
        }
        Ok(m) if m.mode() & 0o077 != 0 => Err(refuse(format!(
            "mode {:o} lets others in; give --stats-socket a path in a private folder (the host creates a missing one 0700)",
            m.mode() & 0o7777
        ))),
        Ok(_) => Ok(()),
    }
}

/// Starts serving `shared` on `socket` (socket 0600, in a private folder:
/// one the host creates 0700, or an existing one that is ours and private)
/// and, if given, as Prometheus text on `metrics` (a loopback address).
/// Both listeners are bound before either server starts.
pub fn serve(
    socket: &Path,
    metrics: Option<SocketAddr>,
    shared: Shared,
) -> std::io::Result<Endpoint> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_folder(dir)?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(socket)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; leaving it alone",
                    socket.display()
                ),
            ))
        }
        Err(_) => {}
    }
    let tcp = metrics.map(TcpListener::bind).transpose()?;
    // Born 0600: no moment at which others could connect.
    // SAFETY: umask has no preconditions; the host starts this before any
    // thread of its own that creates files.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(socket);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound?;
    let endpoint = Endpoint {
        socket: socket.to_path_buf(),
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let json = shared.clone();
    let meta = serde_json::to_string(&meta()).map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("rthulhu-stats".into())
        .spawn(move || crate::stats_server::run(listener, json, meta))?;
    if let Some(tcp) = tcp {
        std::thread::Builder::new().name("rthulhu-metrics".into()).spawn(move || {
            for mut conn in tcp.incoming().flatten() {
                // A client that stalls cannot hold the one server thread.
                let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = conn.set_write_timeout(Some(Duration::from_millis(200)));
                let mut req = [0u8; 1024];
                let _ = conn.read(&mut req);
                let text = prometheus(&shared.lock().unwrap_or_else(|e| e.into_inner()));
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                    text.len()
                );
                let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(text.as_bytes()));
            }
        })?;
    }
    Ok(endpoint)
}

/// The description of every field the socket serves, in scx_stats'
/// `stats_meta` shape, by struct name.
pub fn meta() -> crate::described::Metas {
    crate::described::metas::<Snapshot>("Snapshot")
}

/// `--help-stats`: every field of the snapshot, with its type and meaning.
pub fn help() -> String {
    crate::described::help(&meta(), "Snapshot")
}

/// Prometheus text exposition of a snapshot.
pub fn prometheus(s: &Snapshot) -> String {
    let k = &s.kernel;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP rthulhu_{name} {help}\n# TYPE rthulhu_{name} {kind}\nrthulhu_{name} {value}\n"
        ));
    };
    metric(
        "queued_tasks",
        "gauge",
        "Tasks queued for the host.",
        k.queued as f64,
    );
    metric(
        "scheduled_tasks",
        "gauge",
        "Tasks the plugin holds.",
        k.scheduled as f64,
    );
    metric("running_tasks", "gauge", "Tasks running.", k.running as f64);
    metric(
        "host_page_faults_total",
        "counter",
        "Page faults of the host process since it attached.",
        s.host.page_faults as f64,
    );
    metric(
        "user_dispatches_total",
        "counter",
        "Dispatches decided by the plugin.",
        k.user_dispatches as f64,
    );
    metric(
        "kernel_dispatches_total",
        "counter",
        "Dispatches BPF did itself.",
        k.kernel_dispatches as f64,
    );
    metric(
        "bounced_dispatches_total",
        "counter",
        "Dispatches redirected.",
        k.bounced_dispatches as f64,
    );
    metric(
        "failed_dispatches_total",
        "counter",
        "Dispatches of tasks that had gone.",
        k.failed_dispatches as f64,
    );
    metric(
        "congested_total",
        "counter",
        "Times the queue to the host was full.",
        k.congested as f64,
    );
    metric(
        "decisions_per_second",
        "gauge",
        "Host decisions per second.",
        s.host.decisions_per_sec,
    );
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since attach.",
        s.uptime_s,
    );
    for (name, value) in &s.plugin_counters {
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        out.push_str(&format!(
            "rthulhu_plugin_counter{{plugin=\"{}\",name=\"{clean}\"}} {value}\n",
            s.plugin
        ));
    }
    crate::latency::prometheus(&s.classes, &mut out);
    crate::cgroup_latency::prometheus(&s.cgroups, &mut out);
    out
}

/// Reads one snapshot from a running host's socket.
pub fn read(socket: &Path) -> std::io::Result<Snapshot> {
    let mut conn = UnixStream::connect(socket)?;
    // Nothing to ask: the server answers with the snapshot at once.
    conn.shutdown(std::net::Shutdown::Write)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// One line for `--monitor`.
pub fn line(s: &Snapshot) -> String {
    let k = &s.kernel;
    let mut l = format!(
        "{} up {:.0}s | {:.0} decisions/s, pending {}, busy {:.1}%, rounds {} | running {} queued {} | dispatched user {} kernel {} bounced {} failed {} | congested {}",
        s.plugin,
        s.uptime_s,
        s.host.decisions_per_sec,
        s.host.pending,
        s.host.busy_share * 100.0,
        s.host.rounds,
        k.running,
        k.queued,
        k.user_dispatches,
        k.kernel_dispatches,
        k.bounced_dispatches,
        k.failed_dispatches,
        k.congested
    );
    let v = &s.liveness;
    l.push_str(&format!(
        " | held {} direct {} keep {} stale {} ghosts {} rescues {} rescued {} bypassed {} reenqueued {} urgent {} (missed: burst {} sleep {} backlog {} cpu {} key {}) quiet {} resumed {} renewed {} woken {} host-waits {}",
        v.held,
        v.direct_dispatches,
        v.keep_running,
        v.stale_dispatches,
        s.host.ghosts,
        v.rescues,
        v.rescued,
        v.bypassed,
        v.reenqueued,
        v.urgent_wakeups,
        v.urgent_missed_burst,
        v.urgent_missed_sleep,
        v.urgent_missed_backlog,
        v.urgent_missed_cpu,
        v.urgent_missed_key,
        v.quiet_records,
        v.resumed,
        v.renewed,
        v.host_wakeups,
        v.host_waits
    ));
    l.push_str(&format!(" | faults {}", s.host.page_faults));
    for (name, value) in &s.plugin_counters {
        l.push_str(&format!(" | {name} {value}"));
    }
    crate::latency::lines(&s.classes, &mut l);
    crate::cgroup_latency::lines(&s.cgroups, s.cgroups_untracked, &mut l);
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_json_on_a_private_socket_and_prometheus_on_loopback() {
        let dir = std::env::temp_dir().join(format!("rthulhu-stats-{}", std::process::id()));
        let socket = dir.join("sub/stats.sock");
        let shared: Shared = Arc::default();
        {
            let mut s = shared.lock().unwrap();
            s.plugin = "simple".into();
            s.kernel.user_dispatches = 42;
            s.plugin_counters.insert("preemptions".into(), 7);
        }
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        drop(tcp);
        let endpoint = serve(&socket, Some(addr), shared.clone()).unwrap();
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let got = read(&socket).unwrap();
        assert_eq!(got, *shared.lock().unwrap());
        assert!(line(&got).contains("user 42") && line(&got).contains("preemptions 7"));
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK"));
        assert!(text.contains("rthulhu_user_dispatches_total 42"));
        assert!(text.contains("name=\"preemptions\"} 7"));
        drop(endpoint);
        assert!(!socket.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn never_touches_a_folder_or_file_it_does_not_own() {
        let dir = std::env::temp_dir().join(format!("rthulhu-stats-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A shared folder like /tmp: refused, and its mode left as it was.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = serve(&dir.join("s.sock"), None, Arc::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("refusing stats folder"), "{e}");
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777);
        // A private folder, but the path is a regular file: left alone.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        let e = serve(&file, None, Arc::default()).err().unwrap();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

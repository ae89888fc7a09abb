//! `host`: Rthulhu's scheduler binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use rthulhu::{
    bpf::{self, BpfKernel, BpfOptions},
    config::Config,
    dispatcher::{Dispatcher, LoopError, SliceOpts},
    input::InputError,
    kernel::ExitKind,
    plugin::Plugin,
    round_watch, safety,
    sim::{self, workload::Workload},
    stats,
};

/// Rthulhu: a CPU scheduler in user space on sched_ext, with the policy in a plugin.
///
/// Examples:
///   host --plugin target/release/libsimple.so --simulate configs/workloads/mixed.toml
///   host --config configs/simple.toml
#[derive(Debug, Parser)]
#[command(name = "host", version, verbatim_doc_comment)]
struct Cli {
    /// Policy plugin to load (a cdylib such as libsimple.so); overrides the
    /// config file's `[scheduler] plugin`.
    #[arg(long, value_name = "PATH")]
    plugin: Option<PathBuf>,

    /// Config file (TOML): `[scheduler]` settings and the `[plugin]` table
    /// handed to the policy.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Check a config file and its plugin (load, ABI, settings) without
    /// attaching anything, then exit: 0 if usable, 2 if not.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "simulate"])]
    check_config: Option<PathBuf>,

    /// Show which class (e.g. which strategy) the config's plugin would give
    /// each thread running now, and the selector behind each class, without
    /// attaching anything (no sched_ext needed); then exit.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "simulate", "check_config"])]
    explain: Option<PathBuf>,

    /// Run against the kernel simulator on this workload instead of the real kernel.
    #[arg(long, value_name = "WORKLOAD.toml")]
    simulate: Option<PathBuf>,

    /// Print the simulation report as one JSON object.
    #[arg(long)]
    json: bool,

    /// Default time slice in µs when the plugin leaves it to the host [default: 5000].
    #[arg(long, value_name = "N")]
    slice_us: Option<u64>,

    /// Smallest slice the host hands out under contention, in µs [default: 1000].
    #[arg(long, value_name = "N")]
    slice_min_us: Option<u64>,

    /// Tasks per CPU handed to the kernel beyond what the CPUs can start now,
    /// kept in the plugin's order, only while the plugin holds a backlog: a
    /// CPU that frees up starts the next task without waiting for the host,
    /// and the host is woken less often; 0 leaves every choice to the plugin
    /// until a CPU is free (a host round trip per hand-over).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(0..=64))]
    queue_ahead: u64,

    /// Root-only Unix socket serving the scheduler's figures as JSON.
    #[arg(long, value_name = "PATH", default_value = stats::DEFAULT_SOCKET)]
    stats_socket: PathBuf,

    /// Also serve Prometheus text metrics on this loopback address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,

    /// Print one live line per interval (--stats SECS, default 1) from the
    /// scheduler already running on this machine, read from --stats-socket.
    #[arg(long, conflicts_with_all = ["plugin", "config", "simulate", "check_config"])]
    monitor: bool,

    /// Describe every field of the stats JSON (the --stats-socket answer,
    /// also served to scx_stats clients as `stats_meta`), then exit.
    #[arg(long, exclusive = true)]
    help_stats: bool,

    /// Print one line of the scheduler's figures every SECS seconds (real
    /// kernel only; at most once a second).
    #[arg(long, value_name = "SECS")]
    stats: Option<f64>,

    /// Watchdog: the kernel ejects the scheduler when a runnable task waits this long (ms).
    #[arg(long, value_name = "MS", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(100..=30000))]
    timeout_ms: u32,

    /// The host's own watchdog: a round of the dispatch loop (the plugin's
    /// calls) that runs longer than this ends the host with exit 1, so a
    /// stuck plugin cannot hold the machine (ms; below --timeout-ms)
    /// [default: half of --timeout-ms]. The kernel side stops waiting for a
    /// late host after two heartbeats (20 ms) anyway; this only decides when
    /// to give up, and too short a bound ends a healthy host on a machine
    /// that stalls now and then (a VM on a busy host).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(10..=30000))]
    round_timeout_ms: Option<u32>,

    /// Send every wake-up through the plugin, even when an idle CPU is free
    /// (by default BPF runs such a task on the idle CPU at once).
    #[arg(long)]
    no_builtin_idle: bool,

    /// Accept plugin and config files that someone other than root could
    /// write, when running as root (for development only: such a file can
    /// make the scheduler run anyone's code as root).
    #[arg(long)]
    allow_untrusted_files: bool,

    /// More logging (-v debug, -vv trace; info by default); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(bad) = e.downcast_ref::<InputError>() {
                eprintln!("host: {bad}");
                ExitCode::from(2)
            } else {
                eprintln!("host: error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(mut cli: Cli) -> Result<ExitCode> {
    if let Some(secs) = cli.stats {
        if !(secs.is_finite() && (0.001..=86_400.0).contains(&secs)) {
            return Err(InputError::new(
                "(command line)".as_ref(),
                format!("--stats {secs}: give a number of seconds between 0.001 and 86400"),
            )
            .into());
        }
    }
    if cli.help_stats {
        print!("{}", stats::help());
        return Ok(ExitCode::SUCCESS);
    }
    if cli.monitor {
        return monitor(&cli);
    }
    if let Some(addr) = cli.metrics_addr {
        if !addr.ip().is_loopback() {
            return Err(InputError::new(
                "(command line)".as_ref(),
                format!("--metrics-addr {addr} is not a loopback address"),
            )
            .into());
        }
    }
    let checking = cli.check_config.take();
    let explaining = cli.explain.take();
    if checking.is_some() || explaining.is_some() {
        cli.config = checking.clone().or(explaining.clone());
    }
    // Every input is read and checked before anything starts.
    let config = match &cli.config {
        Some(path) => Config::read(path, safety::open(path, cli.allow_untrusted_files)?)?,
        None => Config::default(),
    };
    let workload = cli.simulate.as_deref().map(Workload::load).transpose()?;
    let slices = slice_opts(&cli, &config)?;
    let plugin_path = cli
        .plugin
        .clone()
        .or(config.plugin.clone())
        .ok_or_else(|| {
            InputError::new(
                cli.config.as_deref().unwrap_or("(command line)".as_ref()),
                "no plugin given: use --plugin PATH or [scheduler] plugin in the config",
            )
        })?;
    let plugin_file = safety::open(&plugin_path, cli.allow_untrusted_files)?;
    let plugin = Plugin::load_file(&plugin_path, &plugin_file)?;
    tracing::debug!(name = plugin.name(), version = plugin.version(), path = %plugin_path.display(), "plugin loaded");
    let scheduler = plugin.construct(&config.plugin_table).map_err(|msg| {
        let at = cli.config.as_deref().unwrap_or(&plugin_path);
        InputError::new(
            at,
            format!("[plugin] settings refused by {}: {msg}", plugin.name()),
        )
    })?;

    if explaining.is_some() {
        return explain(scheduler);
    }
    if let Some(path) = checking {
        println!(
            "{}: ok (plugin {} {} from {})",
            path.display(),
            plugin.name(),
            plugin.version(),
            plugin_path.display()
        );
        drop(scheduler);
        return Ok(ExitCode::SUCCESS);
    }
    let round_timeout_ms = cli.round_timeout_ms.unwrap_or(cli.timeout_ms / 2);
    if cli.simulate.is_none() && round_timeout_ms >= cli.timeout_ms {
        return Err(InputError::new(
            "(command line)".as_ref(),
            format!(
                "--round-timeout-ms {} must be below --timeout-ms {}: the host must give up on a stuck plugin before the kernel does",
                round_timeout_ms, cli.timeout_ms
            ),
        )
        .into());
    }
    round_watch::arm(
        std::time::Duration::from_millis(round_timeout_ms.into()),
        bpf::stop_requested,
    )
    .context("starting the round watchdog")?;
    let Some(workload) = workload else {
        return attach(&cli, &plugin, &config, scheduler, slices);
    };
    let report = sim::simulate(
        plugin.name(),
        scheduler,
        &workload,
        slices,
        !cli.no_builtin_idle,
    )
    .context("simulation stopped")?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding the report")?
        );
    } else {
        println!("{report}");
    }
    Ok(if report.ejected {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--explain`: the plugin's class for every thread running now.
fn explain(mut scheduler: plugin_api::SchedulerBox) -> Result<ExitCode> {
    let names = scheduler.classes().map_err(anyhow::Error::msg)?;
    let selectors = scheduler.class_selectors().map_err(anyhow::Error::msg)?;
    let root = Path::new("/sys/fs/cgroup");
    let threads = rthulhu::explain::threads(Path::new("/proc"), root);
    let classes = rthulhu::explain::classify(&mut scheduler, &threads, root)
        .map_err(anyhow::Error::msg)
        .context("asking the plugin")?;
    print!(
        "{}",
        rthulhu::explain::report(&names, &selectors, &threads, &classes)
    );
    Ok(ExitCode::SUCCESS)
}

/// Kernel-requested restarts (CPU hotplug) allowed within [`RESTART_WINDOW`]
/// before the host gives up.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Schedules the real machine until a signal, an ejection or a plugin failure.
fn attach(
    cli: &Cli,
    plugin: &Plugin,
    config: &Config,
    mut scheduler: plugin_api::SchedulerBox,
    slices: SliceOpts,
) -> Result<ExitCode> {
    bpf::preflight::check()?;
    bpf::install_signal_handlers();
    let shared = stats::Shared::default();
    {
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        s.plugin = plugin.name().to_string();
        s.plugin_version = plugin.version().to_string();
    }
    let _endpoint = match stats::serve(&cli.stats_socket, cli.metrics_addr, shared.clone()) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!("no stats endpoint at {}: {e}", cli.stats_socket.display());
            None
        }
    };
    if let Some(secs) = cli.stats {
        start_printer(shared.clone(), std::time::Duration::from_secs_f64(secs))?;
    }
    let opts = BpfOptions {
        slice_ns: slices.default_ns,
        timeout_ms: cli.timeout_ms,
        builtin_idle: !cli.no_builtin_idle,
        heartbeat_ns: 10_000_000,
    };
    let mut reload = reloader(cli, config)?;
    // The `[plugin]` table in force: a restart rebuilds the plugin with it.
    let mut table = config.plugin_table.clone();
    let mut restarts = std::collections::VecDeque::new();
    loop {
        let mut object = std::mem::MaybeUninit::uninit();
        let mut kernel =
            BpfKernel::load(&mut object, opts).context("preparing the BPF scheduler")?;
        lock_memory();
        kernel.attach().context("attaching to sched_ext")?;
        rthulhu::notify::send("READY=1");
        eprintln!(
            "host: scheduling with plugin {} {} (Ctrl-C to stop)",
            plugin.name(),
            plugin.version()
        );
        let mut d = Dispatcher::new(scheduler, kernel, slices);
        d.reloader = reload.take();
        d.observer = Some(observer(shared.clone()));
        let outcome = d.run();
        d.kernel.detach();
        reload = d.reloader.take();
        if let Some(t) = d.applied.take() {
            table = t;
        }
        let info = match outcome {
            Ok(info) => info,
            Err(LoopError::Plugin(msg)) => {
                eprintln!("host: {msg}; detached, the kernel's default scheduler has taken over");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e).context("dispatch loop failed; detached"),
        };
        if info.code & bpf::ECODE_RESTART != 0 {
            let now = std::time::Instant::now();
            restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
            if restarts.len() >= MAX_RESTARTS {
                eprintln!(
                    "host: the kernel asked for a restart ({}: {}) {} times within {} s: giving up; the kernel's default scheduler has taken over",
                    info.reason,
                    info.message,
                    restarts.len() + 1,
                    RESTART_WINDOW.as_secs()
                );
                return Ok(ExitCode::from(1));
            }
            // 0, 0.25, 0.5, 1, 2 s: a CPU coming and going settles first.
            let backoff = match restarts.len() {
                0 => std::time::Duration::ZERO,
                n => std::time::Duration::from_millis(125 << n),
            };
            restarts.push_back(now);
            eprintln!(
                "host: the kernel asked for a restart ({}: {}): restarting in {} ms with the settings last applied",
                info.reason,
                info.message,
                backoff.as_millis()
            );
            std::thread::sleep(backoff);
            if bpf::stop_requested() {
                return Ok(ExitCode::SUCCESS);
            }
            scheduler = plugin.construct(&table).map_err(anyhow::Error::msg)?;
            continue;
        }
        if info.kind.is_ejection() {
            eprintln!(
                "host: ejected by the kernel ({:?}): {}: {}",
                info.kind, info.reason, info.message
            );
            if !info.dump.is_empty() {
                eprintln!("host: the kernel's debug dump:\n{}", info.dump.trim_end());
            }
            return Ok(ExitCode::from(1));
        }
        let how = if info.kind == ExitKind::Unregistered {
            "detached"
        } else {
            "stopped"
        };
        eprintln!(
            "host: {how} ({}), {} tasks dispatched",
            info.reason, d.stats.decisions
        );
        return Ok(ExitCode::SUCCESS);
    }
}

/// Keeps the stats endpoint's snapshot current from the loop's ticks. The
/// loop never waits for the snapshot's lock: while a reader holds it (the
/// endpoint, the `--stats` printer), that second's figures are skipped.
fn observer(shared: stats::Shared) -> rthulhu::dispatcher::Observer {
    let start = std::time::Instant::now();
    let mut last = (start, 0u64, std::time::Duration::ZERO);
    let faults_at_attach = stats::page_faults();
    Box::new(move |t| {
        let Ok(mut s) = shared.try_lock() else {
            return;
        };
        let now = std::time::Instant::now();
        let wall = (now - last.0).as_secs_f64().max(1e-9);
        s.uptime_s = (now - start).as_secs_f64();
        s.kernel = t.counters.into();
        s.liveness = t.liveness;
        s.host = stats::HostFigures {
            rounds: t.stats.rounds,
            decisions: t.stats.decisions,
            decisions_per_sec: (t.stats.decisions - last.1) as f64 / wall,
            pending: t.pending,
            busy_share: (t.stats.busy - last.2).as_secs_f64() / wall,
            ghosts: t.stats.ghosts,
            page_faults: stats::page_faults().saturating_sub(faults_at_attach),
        };
        s.plugin_counters = t.plugin_counters.into_iter().collect();
        s.classes = rthulhu::latency::figures(t.classes, &t.latency);
        s.cgroups = t.cgroups;
        s.cgroups_untracked = t.latency.cgroups_untracked;
        last = (now, t.stats.decisions, t.stats.busy);
    })
}

/// `--stats SECS`: prints the snapshot as one line per interval, on a thread
/// of its own, so a slow or closed stdout (`host --stats 1 | head -1`)
/// never reaches the dispatch loop.
fn start_printer(shared: stats::Shared, every: std::time::Duration) -> Result<()> {
    std::thread::Builder::new()
        .name("rthulhu-stats".into())
        .spawn(move || loop {
            use std::io::Write;
            std::thread::sleep(every);
            let line = stats::line(&shared.lock().unwrap_or_else(|e| e.into_inner()));
            if writeln!(std::io::stdout().lock(), "{line}").is_err() {
                tracing::warn!("stdout is closed: no more --stats lines (scheduling goes on)");
                return;
            }
        })
        .context("starting the --stats printer")?;
    Ok(())
}

/// `--monitor`: one line per interval from a running scheduler.
fn monitor(cli: &Cli) -> Result<ExitCode> {
    let every = std::time::Duration::from_secs_f64(cli.stats.unwrap_or(1.0).max(0.1));
    loop {
        let s = stats::read(&cli.stats_socket).with_context(|| {
            format!(
                "no running scheduler answers at {}",
                cli.stats_socket.display()
            )
        })?;
        println!("{}", stats::line(&s));
        std::thread::sleep(every);
    }
}

/// SIGHUP: re-read the config file, on a helper thread, and hand its
/// `[plugin]` table over. A file that is now unusable keeps the old settings,
/// with one line saying why.
fn reloader(cli: &Cli, first: &Config) -> Result<Option<rthulhu::dispatcher::Reloader>> {
    let Some(path) = cli.config.clone() else {
        return Ok(None);
    };
    let allow_untrusted = cli.allow_untrusted_files;
    let plugin = first.plugin.clone();
    // One request may wait (SIGHUPs meanwhile fold into it), one table.
    let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
    let (give, tables) = std::sync::mpsc::sync_channel::<String>(1);
    std::thread::Builder::new()
        .name("rthulhu-reload".into())
        .spawn(move || {
            while asked.recv().is_ok() {
                match safety::open(&path, allow_untrusted).and_then(|f| Config::read(&path, f)) {
                    Ok(c) => {
                        if c.plugin != plugin {
                            tracing::warn!("{}: a different plugin takes a restart; only [plugin] settings are reloaded", path.display());
                        }
                        if give.send(c.plugin_table).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!("{e}; keeping the old settings"),
                }
            }
        })
        .context("starting the reload thread")?;
    Ok(Some(Box::new(move |sighup| {
        if sighup {
            let _ = ask.try_send(());
        }
        tables.try_recv().ok()
    })))
}

/// Keeps every page resident so that no page fault can stall the loop:
/// malloc never gives memory back to the kernel (so it never faults it in
/// again) nor maps a block of its own per large allocation, the main
/// thread's stack is touched deep enough for any round, everything mapped
/// now or later is locked in, and no transparent huge page is made of it
/// (khugepaged collapsing locked memory under the loop showed as a page
/// fault in a VM run: `thp_collapse_alloc` went up by one with it).
fn lock_memory() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        tracing::warn!(
            "disabling transparent huge pages failed: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: mallopt only changes malloc's tuning.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
    prefault_stack();
    // SAFETY: mlockall has no memory-safety preconditions.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        tracing::warn!("mlockall failed: {}", std::io::Error::last_os_error());
    }
}

/// Touches 1 MiB of stack below the caller, so those pages exist (and get
/// locked) before the loop needs them.
#[inline(never)]
fn prefault_stack() {
    let mut pages = [0u8; 1 << 20];
    std::hint::black_box(&mut pages);
}

fn slice_opts(cli: &Cli, config: &Config) -> Result<SliceOpts, InputError> {
    let default = SliceOpts::default();
    let bad = |msg: &str| InputError::new("(command line)".as_ref(), msg.to_string());
    // More than a second is no slice: the kernel would never take the CPU back.
    let us = |v: Option<u64>, d: u64| match v {
        None => Ok(d),
        Some(v) if v <= 1_000_000 => Ok(v * 1000),
        Some(v) => Err(bad(&format!("a slice of {v} µs is over a second"))),
    };
    let s = SliceOpts {
        default_ns: us(cli.slice_us.or(config.slice_us), default.default_ns)?,
        min_ns: us(cli.slice_min_us.or(config.slice_min_us), default.min_ns)?,
        queue_ahead: cli.queue_ahead,
    };
    if s.default_ns == 0 || s.min_ns == 0 || s.min_ns > s.default_ns {
        return Err(InputError::new(
            "(command line)".as_ref(),
            "slices must be positive and --slice-min-us at most --slice-us",
        ));
    }
    Ok(s)
}

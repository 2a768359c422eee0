//! What `veer-demo` and `veer-bench` share (included by both with `#[path]`): errors, Ctrl-C
//! handling, child processes in their own process group, and a real `veer daemon` in a
//! topology's node namespace.
//!
//! Unlike `veer_tests::daemon::Daemon` (made for `cargo test`, where it panics and finds `veer`
//! above `target/*/deps/`), this wrapper returns errors, takes the `veer` binary next to the
//! running executable (`target/release/veer` beside `target/release/veer-bench`), and puts the
//! daemon in its own process group, so a Ctrl-C reaches only the tool, which stops everything
//! in order.

use std::{
    fmt::Display,
    fs,
    io::Read as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::{Duration, Instant},
};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use veer_tests::{
    config::{ConfigBuilder, Family, web},
    netns::{Netns, Topology},
    servers::TcpServer,
};

/// Any error, with its message.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
/// `Result` with [`Error`].
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with an error made from a format string.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(format!($($arg)*).into())
    };
}
pub(crate) use bail;

/// Adds what was being done to an error.
pub(crate) trait Context<T> {
    /// Wraps the error with `what`.
    fn context(self, what: impl Display) -> Result<T>;
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|e| format!("{what}: {e}").into())
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Display) -> Result<T> {
        self.ok_or_else(|| what.to_string().into())
    }
}

/// Set by SIGINT or SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set a flag instead of ending the process, so that every loop stops
/// at its next check and everything created is removed on the way out.
pub(crate) fn handle_interrupts() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `sigaction` is plain data for which zero is valid; the handler only stores to
        // an atomic, which is async-signal-safe.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(sig, &raw const action, std::ptr::null_mut())
        };
        if rc != 0 {
            bail!(
                "installing the handler of signal {sig}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Shorter runs, for development (`veer-bench --quick`).
static QUICK: AtomicBool = AtomicBool::new(false);

/// Asks for shorter runs.
pub(crate) fn set_quick() {
    QUICK.store(true, Ordering::Relaxed);
}

/// Whether shorter runs were asked for.
pub(crate) fn quick() -> bool {
    QUICK.load(Ordering::Relaxed)
}

/// Whether Ctrl-C (or SIGTERM) arrived.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Fails with "interrupted" once Ctrl-C arrived.
pub(crate) fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, in short naps, returning early (with an error) on Ctrl-C.
pub(crate) fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// A binary next to the running executable (`target/release/veer` beside
/// `target/release/veer-bench`).
pub(crate) fn sibling_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let bin = exe
        .parent()
        .context("the executable has no directory")?
        .join(name);
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (`cargo xtask demo` and `cargo xtask bench` do)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Whether `program` is on `PATH`.
pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `sig` to process `pid`.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a pid we started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// A child process in its own process group (Ctrl-C on the terminal does not reach it), stopped
/// on drop: SIGTERM to its group, then SIGKILL after `grace`.
pub(crate) struct Proc {
    name: String,
    child: Option<Child>,
    grace: Duration,
}

impl Proc {
    /// Spawns `cmd` in a new process group.
    pub(crate) fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .context(format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            grace: Duration::from_secs(3),
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for it to exit by itself within `timeout`; kills it after that. Returns its output
    /// (when stdout/stderr were piped).
    pub(crate) fn wait_output(mut self, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && c.try_wait()
                    .context(format!("waiting for {}", self.name))?
                    .is_some()
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!("{} did not finish within {timeout:?}", self.name);
            }
            if interrupted() {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let child = self.child.take().context("no child")?;
        child
            .wait_with_output()
            .context(format!("collecting the output of {}", self.name))
    }

    /// Stops it now (SIGTERM to the group, SIGKILL after the grace period).
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group we created for this child.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        drop(child.wait());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes names of files and pins unique per process and call.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique `{tag}-{pid}-{n}`.
pub(crate) fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scratch directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates `/tmp/{tag}-{pid}-{n}`.
    pub(crate) fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(unique(tag));
        // A leftover of an earlier run with the same pid is not ours to keep.
        drop(fs::remove_dir_all(&dir));
        fs::create_dir_all(&dir).context(format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Backend `v1`'s address.
pub(crate) const V1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
/// Backend `v2`'s address.
pub(crate) const V2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 21));
/// Service `web`.
pub(crate) const VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 80);

/// The bed of the demo and the benchmarks: a client, the node, and backend namespaces `v1` and
/// `v2` holding `V1` and `V2`, at the kernel's defaults (offloads and sysctls as a container
/// runtime leaves them: veer sets what it needs itself).
pub(crate) fn two_group_topology() -> Result<Topology> {
    Topology::builder()
        .client()
        .backend("v1", &[V1])
        .backend("v2", &[V2])
        .build()
        .context("building the namespaces")
}

/// Turns the node's kernel forwarding on, for the plain-forwarding baselines: they route through
/// the node's kernel, which forwards nothing at the defaults. (veer turns forwarding on by itself
/// on the interfaces it is attached to; with it on everywhere, veer finds nothing to change.)
pub(crate) fn enable_kernel_forwarding(topo: &Topology) -> Result<()> {
    topo.enable_forwarding()
        .context("turning forwarding on in the node for the plain-forwarding baselines")
}

/// Servers on `V1:8080` and `V2:8080` answering with their group's name. Keep them declared
/// after the topology, so they are dropped before it.
pub(crate) fn name_servers(topo: &Topology) -> Result<[TcpServer; 2]> {
    Ok([
        TcpServer::start(topo.backend("v1"), SocketAddr::new(V1, 8080), "v1")
            .context("starting backend v1")?,
        TcpServer::start(topo.backend("v2"), SocketAddr::new(V2, 8080), "v2")
            .context("starting backend v2")?,
    ])
}

/// The config of the demo and the benchmarks: service `web` at `192.0.2.10:80/tcp`, group `v1`
/// (`198.51.100.11:8080`) and group `v2` (`198.51.100.21:8080`), attached to `interfaces`.
pub(crate) fn config(interfaces: &[String], v1: &str, v2: &str, conntrack_max: u32) -> String {
    ConfigBuilder::new(interfaces)
        .conntrack_max(conntrack_max)
        .service(web(Family::V4, v1, v2))
        .to_toml()
}

/// A `veer daemon` in a node namespace with its own socket, state directory and pin directory
/// (`/sys/fs/bpf/veer-bench-…`). On drop it is killed and `veer teardown --force` removes its
/// links and pins.
pub(crate) struct Veer {
    bin: PathBuf,
    node: PathBuf,
    dir: TempDir,
    /// Control socket.
    pub(crate) socket: PathBuf,
    config: PathBuf,
    /// Pin directory.
    pub(crate) pin_dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// `--metrics` (`off`, or an address in the node namespace).
    metrics: String,
    /// More `veer daemon` arguments.
    extra: Vec<String>,
}

impl Veer {
    /// Writes `config` and starts the daemon in `node`; returns once its socket answers.
    pub(crate) fn start(node: &Netns, config: &str) -> Result<Self> {
        Self::start_full(node, config, "off", &[])
    }

    /// Like `start`, serving metrics on `metrics` (an address in the node namespace).
    pub(crate) fn start_with_metrics(node: &Netns, config: &str, metrics: &str) -> Result<Self> {
        Self::start_full(node, config, metrics, &[])
    }

    /// Like `start`, with more `veer daemon` arguments (`--source etcd ...`).
    pub(crate) fn start_with(node: &Netns, config: &str, extra: &[&str]) -> Result<Self> {
        Self::start_full(node, config, "off", extra)
    }

    /// Like `start`, with metrics on `metrics` and more `veer daemon` arguments.
    fn start_full(node: &Netns, config: &str, metrics: &str, extra: &[&str]) -> Result<Self> {
        let dir = TempDir::new("veer-bench")?;
        let name = dir
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .context("temp dir name")?
            .to_owned();
        let mut veer = Self {
            bin: sibling_bin("veer")?,
            node: node.path().to_owned(),
            socket: dir.path().join("veer.sock"),
            config: dir.path().join("veer.toml"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/{name}")),
            dir,
            child: None,
            starts: 0,
            metrics: metrics.to_owned(),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        fs::write(&veer.config, config).context("writing the config")?;
        veer.spawn()?;
        Ok(veer)
    }

    /// Starts the daemon process and waits (at most 20 s) until `veer status` answers.
    pub(crate) fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the daemon is already running");
        }
        self.starts += 1;
        let log_path = self.log_path(self.starts);
        let log = fs::File::create(&log_path).context(format!("{}", log_path.display()))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.node.display()))
            .arg("--")
            .arg(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(["daemon", "--metrics", &self.metrics, "--config"])
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(&self.extra)
            .env("RUST_LOG", "veer=info")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log)
            .spawn()
            .context("starting veer daemon")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            check_interrupted()?;
            if self.cli(&["status"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                bail!(
                    "veer daemon exited ({status}) at start:\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!("veer daemon did not answer in 20 s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("daemon-{start}.log"))
    }

    /// The last lines of the current log.
    pub(crate) fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The daemon's process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9` (a crash).
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Already exited is fine: it only has to be gone.
            drop(c.kill());
            drop(c.wait());
        }
    }

    /// SIGTERM, then waits (at most 10 s) for a clean exit.
    pub(crate) fn stop(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = c.try_wait().context("waiting for veer daemon")? {
                if !status.success() {
                    bail!("veer daemon exited with {status} on SIGTERM");
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                drop(c.kill());
                drop(c.wait());
                bail!("veer daemon ignored SIGTERM for 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `veer --socket SOCKET ARGS...`.
    pub(crate) fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context(format!("running veer {}", args.join(" ")))
    }

    /// Runs a command that must succeed; returns its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "veer {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a command with `--output json` that must succeed and parses its stdout.
    pub(crate) fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let text = self.ok(&a)?;
        serde_json::from_str(&text).context(format!("veer {} printed no JSON", a.join(" ")))
    }

    /// Active flows per group of service `web`, from `veer status -o json`.
    pub(crate) fn active_flows(&self) -> Result<Vec<(String, u64)>> {
        let status = self.json(&["status"])?;
        let groups = status["services"][0]["groups"]
            .as_array()
            .context("status has no groups")?;
        Ok(groups
            .iter()
            .map(|g| {
                (
                    g["name"].as_str().unwrap_or("?").to_owned(),
                    g["active_flows"].as_u64().unwrap_or(0),
                )
            })
            .collect())
    }

    /// A per-backend counter of `veer status -o json` (`new_flows`, `packets` ...) summed per
    /// group of service `web`.
    pub(crate) fn group_sums(&self, field: &str) -> Result<Vec<(String, u64)>> {
        let status = self.json(&["status"])?;
        let groups = status["services"][0]["groups"]
            .as_array()
            .context("status has no groups")?;
        Ok(groups
            .iter()
            .map(|g| {
                let sum = g["backends"]
                    .as_array()
                    .map_or(0, |bs| bs.iter().filter_map(|b| b[field].as_u64()).sum());
                (g["name"].as_str().unwrap_or("?").to_owned(), sum)
            })
            .collect())
    }

    /// Reads a field of `/proc/PID/status` (e.g. `VmRSS`) in KiB.
    pub(crate) fn proc_status_kib(&self, field: &str) -> Result<u64> {
        let pid = self.pid().context("the daemon is not running")?;
        let mut text = String::new();
        fs::File::open(format!("/proc/{pid}/status"))
            .and_then(|mut f| f.read_to_string(&mut text))
            .context(format!("reading /proc/{pid}/status"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context(format!("no {field} in /proc/{pid}/status"))
    }
}

impl Drop for Veer {
    fn drop(&mut self) {
        self.kill9();
        let out = Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(["teardown", "--force", "--pin-dir"])
            .arg(&self.pin_dir)
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("teardown of {} failed: {out:?}", self.pin_dir.display());
        }
        if self.pin_dir.exists() {
            drop(fs::remove_dir_all(&self.pin_dir));
        }
    }
}

//! A real `veer daemon` process in a topology's node namespace, the real `veer` CLI against it,
//! and traffic to drive through it.
//!
//! Each daemon gets its own state directory, socket and pin directory (`/sys/fs/bpf/veer-test-…`),
//! so tests run in parallel; on drop the process is killed and `veer teardown` removes its
//! links and pins.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    config::Family,
    netns::{Netns, Topology},
    servers::{TcpServer, ask_tcp},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How long a [`Load`] request may take to connect, to be written and to be answered.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The `veer` binary next to the test executable (`cargo xtask test` builds it).
pub fn veer_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let bin = exe.parent().and_then(Path::parent).map_or_else(
        || panic!("no target directory above {}", exe.display()),
        |d| d.join("veer"),
    );
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        bin.display()
    );
    bin
}

/// A running (or stopped) daemon and its files.
pub struct Daemon {
    node: PathBuf,
    dir: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    /// Config file the daemon reads.
    pub config: PathBuf,
    /// Pin directory.
    pub pin_dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    extra: Vec<String>,
    /// A command that runs the daemon (`prlimit --nofile=…`), which must exec it.
    wrapper: Vec<String>,
    /// More environment for the daemon.
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes `config` and starts `veer daemon` in the node namespace of `topo`; returns once
    /// the control socket answers.
    pub fn start(topo: &Topology, config: &str) -> Self {
        Self::start_with_metrics(topo, config, "off")
    }

    /// Like `start`, with Prometheus metrics on `addr` (an address in the node namespace, or
    /// `off`).
    pub fn start_with_metrics(topo: &Topology, config: &str, addr: &str) -> Self {
        Self::start_with(topo, config, &["--metrics", addr])
    }

    /// Like `start`, with more `veer daemon` arguments (`--metrics off` unless they set it).
    pub fn start_with(topo: &Topology, config: &str, args: &[&str]) -> Self {
        Self::start_full(topo, config, args, &[], &[])
    }

    /// Like `start_with`, the daemon run by `wrapper` (`["prlimit", "--nofile=100:256", "--"]`),
    /// which must exec it (so `pid` is the daemon's).
    pub fn start_under(topo: &Topology, config: &str, args: &[&str], wrapper: &[&str]) -> Self {
        Self::start_full(topo, config, args, wrapper, &[])
    }

    /// Like `start_with`, with more environment for the daemon (`NOTIFY_SOCKET` ...).
    pub fn start_with_env(
        topo: &Topology,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_full(topo, config, args, &[], env)
    }

    /// Like `start_with`, run by `wrapper` (empty: none) with more environment `env`.
    fn start_full(
        topo: &Topology,
        config: &str,
        args: &[&str],
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        crate::require_root();
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("veer-test-{id}"));
        // A leftover of a crashed earlier run with the same pid is not ours to keep.
        drop(std::fs::remove_dir_all(&dir));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut d = Self {
            node: topo.node().path().to_owned(),
            socket: dir.join("veer.sock"),
            config: dir.join("veer.toml"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/veer-test-{id}")),
            dir,
            child: None,
            starts: 0,
            wrapper: wrapper.iter().map(|a| (*a).to_owned()).collect(),
            extra: if args.contains(&"--metrics") {
                args.iter().map(|a| (*a).to_owned()).collect()
            } else {
                ["--metrics", "off"]
                    .iter()
                    .chain(args)
                    .map(|a| (*a).to_owned())
                    .collect()
            },
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        d.write_config(config);
        d.spawn();
        d
    }

    /// Replaces the config file (atomically, as an editor would).
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.join(".veer.toml.tmp");
        std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&tmp, &self.config).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the daemon process and waits (at most 60 s: loading and verifying the programs
    /// took 6 s with both cores busy) for its socket to answer.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("daemon-{}.log", self.starts)))
            .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.node.display()))
            .arg("--")
            .args(&self.wrapper)
            .arg(veer_bin())
            .arg("--socket")
            .arg(&self.socket)
            .arg("daemon")
            .args(&self.extra)
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .env("RUST_LOG", "veer=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting veer daemon: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if self.cli(&["version"]).status.success() && self.cli(&["status"]).status.success() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("veer daemon exited ({status}) at start:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "veer daemon did not answer in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs another `veer daemon` on this daemon's config, state directory and pin directory
    /// (answering on `socket`) in the same namespace, and waits at most `within` for it to
    /// exit; one still running then is killed. Returns its exit code (`None`: it had to be
    /// killed) and everything it logged.
    pub fn second(&self, socket: &Path, within: Duration) -> (Option<i32>, String) {
        let log = self.dir.join("second-daemon.log");
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.node.display()))
            .arg("--")
            .arg(veer_bin())
            .arg("--socket")
            .arg(socket)
            .args(["daemon", "--metrics", "off", "--config"])
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting a second veer daemon: {e}"));
        let deadline = Instant::now() + within;
        let code = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status.code();
            }
            if Instant::now() >= deadline {
                // Still running: it is ours to stop, and the test fails on `None`.
                drop(child.kill());
                drop(child.wait());
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, std::fs::read_to_string(&log).unwrap_or_default())
    }

    /// `kill -9` (a crash).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Already exited is fine: we only need it gone.
            drop(c.kill());
            drop(c.wait());
        }
    }

    /// SIGTERM and wait for a clean exit (at most 30 s).
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                assert!(
                    status.success(),
                    "veer daemon exited with {status} on SIGTERM:\n{}",
                    self.log()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "veer daemon ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's pid (`nsenter` execs it), 0 when it is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Every log line of every start.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("daemon-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("--- restart ---\n")
    }

    /// Runs `veer --socket SOCKET ARGS...` (from the test's namespace: the socket is a file).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(veer_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running veer {args:?}: {e}"))
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "veer {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command with `--output json` that must succeed and parses its stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let text = self.ok(&a);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("veer {a:?} printed no JSON ({e}): {text}"))
    }

    /// Waits, at most `within`, until `service`'s rollout has ended (completed, rolled back or
    /// aborted). Returns its `rollout status`, ended or not (the caller's assertion on `phase`
    /// says what it was).
    pub fn ended_rollout(&self, service: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.json(&["rollout", "status", service]);
            let ended = ["completed", "rolled_back", "aborted"]
                .contains(&r["phase"].as_str().unwrap_or_default());
            if ended || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The live revision number.
    pub fn revision(&self) -> u64 {
        self.json(&["status"])["revision"]["number"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// A directory of this daemon's that is removed with it (for a test's own files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- veer daemon log ----\n{}", self.log());
        }
        self.kill9();
        let out = Command::new(veer_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(["teardown", "--force", "--pin-dir"])
            .arg(&self.pin_dir)
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!(
                "veer-tests: teardown of {} failed: {out:?}",
                self.pin_dir.display()
            );
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("veer-tests: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests answered.
    pub ok: u64,
    /// Requests that failed (connect, reset, timeout), with the reasons of the first few.
    pub failed: u64,
    /// First failures.
    pub errors: Vec<String>,
    /// Answers by backend name.
    pub answers: HashMap<String, u64>,
}

impl LoadReport {
    /// Panics unless some requests went through and none failed, saying `when`.
    pub fn assert_clean(&self, when: &str) {
        assert!(self.ok > 0, "{when}: no request went through");
        assert_eq!(
            self.failed,
            0,
            "{when}: {} of {} requests failed: {:?}",
            self.failed,
            self.ok + self.failed,
            self.errors
        );
    }
}

/// New connections to `dst` from the client namespace, one after another, until stopped (or
/// `max` connections, or `max_time`): each connects, asks once, closes.
pub struct Load {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<LoadReport>>,
}

impl Load {
    /// Starts the load.
    pub fn new_connections(ns: &Netns, dst: SocketAddr, max: u64, max_time: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let path = ns.path().to_owned();
        let handle = std::thread::spawn(move || {
            let mut report = LoadReport::default();
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
            // SAFETY: `ns` is an open namespace file; CLONE_NEWNET moves only this thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into the client namespace");
            let deadline = Instant::now() + max_time;
            while !flag.load(Ordering::Relaxed)
                && report.ok + report.failed < max
                && Instant::now() < deadline
            {
                // A request fails (and `assert_clean` with it) on a refusal, a reset or these
                // limits: 10 s, so that only a lost connection, not a loaded machine, reaches them.
                let r = TcpStream::connect_timeout(&dst, LOAD_TIMEOUT).and_then(|mut s| {
                    s.set_read_timeout(Some(LOAD_TIMEOUT))?;
                    s.set_write_timeout(Some(LOAD_TIMEOUT))?;
                    ask_tcp(&mut s)
                });
                match r {
                    Ok(name) => {
                        report.ok += 1;
                        *report.answers.entry(name).or_default() += 1;
                    }
                    Err(e) => {
                        report.failed += 1;
                        if report.errors.len() < 10 {
                            report.errors.push(e.to_string());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            report
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the load and returns what it saw.
    pub fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().unwrap_or_else(|_| panic!("load thread panicked")))
            .unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            // A panic in the load thread already failed the test; do not panic in drop.
            drop(h.join());
        }
    }
}

/// Long-lived connections opened through the VIP, asked again and again.
pub struct Held {
    conns: Vec<TcpStream>,
    /// The backend each one answered first.
    pub first: Vec<String>,
}

impl Held {
    /// Opens `n` connections and records their first answer.
    pub fn open(ns: &Netns, dst: SocketAddr, n: usize) -> Self {
        let mut conns = Vec::new();
        let mut first = Vec::new();
        for i in 0..n {
            let mut c = ns
                .tcp_connect(dst, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("long-lived connection {i}: {e}"));
            first
                .push(ask_tcp(&mut c).unwrap_or_else(|e| panic!("long-lived connection {i}: {e}")));
            conns.push(c);
        }
        Self { conns, first }
    }

    /// Asks every connection once; panics (saying which and why) if one fails or moved.
    pub fn check(&mut self, when: &str) {
        for (i, c) in self.conns.iter_mut().enumerate() {
            let answer = ask_tcp(c)
                .unwrap_or_else(|e| panic!("{when}: long-lived connection {i} failed: {e}"));
            assert_eq!(
                answer, self.first[i],
                "{when}: long-lived connection {i} moved"
            );
        }
    }

    /// The connections, in the order they were opened.
    pub fn streams_mut(&mut self) -> &mut [TcpStream] {
        &mut self.conns
    }

    /// Closes every connection.
    pub fn close(self) {
        drop(self.conns);
    }
}

/// The groups of the first service of a `veer status -o json` answer, with their weights.
pub fn weights(status: &serde_json::Value) -> Vec<(String, f64)> {
    status["services"][0]["groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .map(|g| {
                    (
                        g["name"].as_str().unwrap_or_default().to_owned(),
                        g["weight"].as_f64().unwrap_or(f64::NAN),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The bed most daemon tests stand on: a client, a node and two backends whose servers answer
/// "v1" and "v2", and a daemon on the node. Field order drops the daemon first, then the
/// servers, then the namespaces.
pub struct Bed {
    /// The daemon.
    pub daemon: Daemon,
    /// v1's server (port 8080).
    pub s1: TcpServer,
    /// v2's server (`None` once a test stopped it).
    pub s2: Option<TcpServer>,
    /// The namespaces.
    pub topo: Topology,
}

impl Bed {
    /// The namespaces in `family`, v1's server on port 8080 and v2's on `v2_port` (another port
    /// leaves v2's backend refusing connections, as a stopped service does), and the daemon
    /// `start` starts with the config file `config` writes for the topology.
    pub fn start(
        family: Family,
        v2_port: u16,
        config: impl FnOnce(&Topology) -> String,
        start: impl FnOnce(&Topology, &str) -> Daemon,
    ) -> Self {
        let (a1, a2) = (family.backend("v1"), family.backend("v2"));
        let topo = Topology::builder()
            .client()
            .backend("v1", &[a1])
            .backend("v2", &[a2])
            .build()
            .unwrap_or_else(|e| panic!("building the topology: {e}"));
        let s1 = TcpServer::start(topo.backend("v1"), SocketAddr::new(a1, 8080), "v1")
            .unwrap_or_else(|e| panic!("v1's server: {e}"));
        let s2 = TcpServer::start(topo.backend("v2"), SocketAddr::new(a2, v2_port), "v2")
            .unwrap_or_else(|e| panic!("v2's server: {e}"));
        let daemon = start(&topo, &config(&topo));
        Self {
            daemon,
            s1,
            s2: Some(s2),
            topo,
        }
    }
}

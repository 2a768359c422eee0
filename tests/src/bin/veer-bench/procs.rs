//! The Debian programs the benchmarks drive: nginx (backends, and a reverse proxy on the node),
//! `HAProxy` (on the node), wrk (in the client namespace). Each runs in a namespace through
//! `nsenter --net=…`, in its own process group, with its files in a scratch directory, and is
//! stopped on drop.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use veer_tests::netns::Netns;

use crate::bed::{self, Context as _, Proc, Result, TempDir, bail};

/// Waits until `addr` accepts TCP connections from inside `ns` (at most 10 s).
pub(crate) fn wait_listening(ns: &Netns, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        bed::check_interrupted()?;
        if ns.tcp_connect(addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on {addr} in {} after 10 s", ns.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An nginx master process (and its workers) in a namespace.
pub(crate) struct Nginx {
    proc: Proc,
    dir: TempDir,
    ns: PathBuf,
}

/// The part of an nginx config every instance shares; `server` goes inside `http {}`.
fn nginx_conf(dir: &std::path::Path, workers: u32, server: &str) -> String {
    let d = dir.display();
    format!(
        "worker_processes {workers};\n\
         user root;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n\
           access_log off;\n\
           default_type text/plain;\n\
           keepalive_requests 1000000;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           {server}\n\
         }}\n"
    )
}

impl Nginx {
    /// An nginx answering `200 {name}\n` to every request on `listen`.
    pub(crate) fn backend(
        ns: &Netns,
        listen: SocketAddr,
        name: &str,
        workers: u32,
    ) -> Result<Self> {
        Self::start(
            ns,
            workers,
            &format!("server {{ listen {listen}; location / {{ return 200 \"{name}\\n\"; }} }}"),
            listen,
        )
    }

    /// An nginx reverse proxy on `listen` in front of `upstream`.
    pub(crate) fn proxy(ns: &Netns, listen: SocketAddr, upstream: SocketAddr) -> Result<Self> {
        Self::start(ns, 2, &proxy_server(listen, upstream), listen)
    }

    fn start(ns: &Netns, workers: u32, server: &str, listen: SocketAddr) -> Result<Self> {
        let dir = TempDir::new("veer-bench-nginx")?;
        let conf = nginx_conf(dir.path(), workers, server);
        fs::write(dir.path().join("nginx.conf"), conf).context("writing nginx.conf")?;
        let log = fs::File::create(dir.path().join("stderr.log")).context("nginx log")?;
        let proc = Proc::spawn(
            "nginx",
            ns.command("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .args(["-g", "daemon off;"])
                .stdout(Stdio::null())
                .stderr(log),
        )?;
        let mut nginx = Self {
            proc,
            dir,
            ns: ns.path().to_owned(),
        };
        if let Err(e) = wait_listening(ns, listen) {
            let log = fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default();
            nginx.proc.stop();
            bail!("{e}; nginx error log:\n{log}");
        }
        Ok(nginx)
    }

    /// Rewrites the proxy's upstream and runs `nginx -s reload`.
    pub(crate) fn reload_proxy(&self, listen: SocketAddr, upstream: SocketAddr) -> Result<()> {
        let conf = nginx_conf(self.dir.path(), 2, &proxy_server(listen, upstream));
        fs::write(self.dir.path().join("nginx.conf"), conf).context("rewriting nginx.conf")?;
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.display()))
            .args(["--", "nginx", "-p"])
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .args(["-s", "reload"])
            .output()
            .context("running nginx -s reload")?;
        if !out.status.success() {
            bail!(
                "nginx -s reload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The master's pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
}

fn proxy_server(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "upstream web {{ server {upstream}; }}\n\
         server {{ listen {listen}; location / {{ proxy_pass http://web; }} }}"
    )
}

/// `HAProxy` on the node: `listen` split between `servers` `(name, address, weight)`, round
/// robin, HTTP mode, runtime API on a Unix socket.
pub(crate) struct Haproxy {
    proc: Proc,
    dir: TempDir,
}

impl Haproxy {
    /// Starts `haproxy -db` in `ns` and waits until it listens.
    pub(crate) fn start(
        ns: &Netns,
        listen: SocketAddr,
        servers: &[(&str, SocketAddr, u32)],
    ) -> Result<Self> {
        let dir = TempDir::new("veer-bench-haproxy")?;
        let servers: Vec<String> = servers
            .iter()
            .map(|(n, a, w)| format!("    server {n} {a} weight {w}"))
            .collect();
        let conf = format!(
            "global\n    nbthread 2\n    maxconn 4000\n    stats socket {}/admin.sock mode 600 level admin\n\
             defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
             frontend web\n    bind {listen}\n    default_backend web\n\
             backend web\n    balance roundrobin\n{}\n",
            dir.path().display(),
            servers.join("\n")
        );
        fs::write(dir.path().join("haproxy.cfg"), conf).context("writing haproxy.cfg")?;
        let log = fs::File::create(dir.path().join("haproxy.log")).context("haproxy log")?;
        let mut proc = Proc::spawn(
            "haproxy",
            ns.command("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(dir.path().join("haproxy.cfg"))
                .stdout(log.try_clone().context("haproxy log")?)
                .stderr(log),
        )?;
        if let Err(e) = wait_listening(ns, listen) {
            let log = fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default();
            proc.stop();
            bail!("{e}; haproxy log:\n{log}");
        }
        Ok(Self { proc, dir })
    }

    /// Sends one command to the runtime API and returns its answer.
    pub(crate) fn command(&self, cmd: &str) -> Result<String> {
        let mut s = UnixStream::connect(self.dir.path().join("admin.sock"))
            .context("connecting to the HAProxy runtime API")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .context("socket timeout")?;
        s.write_all(format!("{cmd}\n").as_bytes())
            .context("writing to the HAProxy runtime API")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)
            .context("reading the HAProxy runtime API")?;
        Ok(answer)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
}

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct Wrk {
    /// Requests completed.
    pub(crate) requests: u64,
    /// Requests per second.
    pub(crate) rps: f64,
    /// Socket errors (connect + read + write + timeout).
    pub(crate) socket_errors: u64,
    /// Answers other than 2xx/3xx.
    pub(crate) non_2xx: u64,
}

/// Runs `wrk -t{threads} -c{conns} -d{secs}s [-H "Connection: close"] URL` in `ns`.
pub(crate) fn wrk(
    ns: &Netns,
    url: &str,
    threads: u32,
    conns: u32,
    secs: u32,
    close: bool,
) -> Result<Wrk> {
    let mut cmd = ns.command("wrk");
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("5s");
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out =
        Proc::spawn("wrk", &mut cmd)?.wait_output(Duration::from_secs(u64::from(secs) + 30))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).context(format!("unexpected wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Wrk> {
    let mut w = Wrk::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().ok()?;
        } else if line.contains(" requests in ") {
            w.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            w.socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse().ok()?;
        }
    }
    (w.requests > 0).then_some(w)
}

/// Busy and total CPU time of the whole machine from `/proc/stat` (clock ticks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    /// Reads `/proc/stat`.
    pub(crate) fn now() -> Result<Self> {
        let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = text.lines().next().context("empty /proc/stat")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 5 {
            bail!("unexpected /proc/stat line {line:?}");
        }
        // user nice system idle iowait irq softirq steal ...; idle and iowait are not busy.
        let total: u64 = v.iter().take(8).sum();
        Ok(Self {
            busy: total - v[3] - v[4],
            total,
        })
    }

    /// Busy CPU seconds between `self` and `later`.
    pub(crate) fn busy_secs_until(&self, later: &Self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (later.busy.saturating_sub(self.busy)) as f64 / hz
    }

    /// Fraction of the machine busy between `self` and `later`.
    pub(crate) fn busy_share_until(&self, later: &Self) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

//! A real etcd (Debian's `etcd-server`, 3.4) for a test: on loopback, on free ports, with a
//! data directory of its own, started healthy and removed on drop (pass or fail).
//!
//! Variants, from [`Etcd::builder`]:
//! - plain (`http://`);
//! - TLS-only with client-certificate auth (`https://`, `--client-cert-auth`): a CA, a server
//!   and a client certificate generated for the test with `rcgen` (nothing committed), plus an
//!   unrelated CA to show what a wrong `--etcd-cacert` does;
//! - user/password auth: `root`, one user per node with the README's `veer-node-<node>` role
//!   (plus `veer-driver` for nodes that may drive rollouts), operators with `veer-operator`.
//!   Roles are granted with the very `etcdctl` commands `veer::fleet::Grant` prints.
//!
//! [`Etcd::stop`], [`Etcd::kill`] and [`Etcd::restart`] (same data directory, same ports) play
//! an outage; [`Proxy`] cuts a client off while etcd keeps serving the others, and
//! [`Proxy::in_netns`] lets a daemon in a node namespace reach the test's etcd.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rand::Rng as _;
use veer::{
    fleet::{KeyLayout, NodeName, Role},
    sources::etcd::EtcdOptions,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How long etcd may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
#[derive(Default)]
pub struct Builder {
    tls: bool,
    auth: Option<AuthSpec>,
}

/// Users and roles to create before auth is enabled.
#[derive(Clone, Debug)]
pub struct AuthSpec {
    prefix: String,
    nodes: Vec<(String, bool)>,
    operators: Vec<String>,
}

impl AuthSpec {
    /// Users for a fleet under `prefix`.
    pub fn new(prefix: &str) -> AuthSpec {
        AuthSpec {
            prefix: prefix.to_owned(),
            nodes: Vec::new(),
            operators: Vec::new(),
        }
    }

    /// A node user `node` with role `veer-node-<node>`.
    #[must_use]
    pub fn node(mut self, node: &str) -> AuthSpec {
        self.nodes.push((node.to_owned(), false));
        self
    }

    /// A node user `node` with roles `veer-node-<node>` and `veer-driver`.
    #[must_use]
    pub fn driver_node(mut self, node: &str) -> AuthSpec {
        self.nodes.push((node.to_owned(), true));
        self
    }

    /// An operator user with role `veer-operator`.
    #[must_use]
    pub fn operator(mut self, name: &str) -> AuthSpec {
        self.operators.push(name.to_owned());
        self
    }
}

/// TLS material of a TLS-only etcd, as PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA that signed etcd's certificate and the client's.
    pub ca: PathBuf,
    /// A client certificate etcd accepts.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// A CA that signed nothing here (a wrong `--etcd-cacert`).
    pub foreign_ca: PathBuf,
}

/// A user with its password file (mode 0600).
#[derive(Clone, Debug)]
pub struct User {
    /// Name.
    pub name: String,
    /// Password file.
    pub password_file: PathBuf,
    password: String,
}

/// A running (or stopped) etcd and its files.
pub struct Etcd {
    dir: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    tls: Option<TlsFiles>,
    root: Option<User>,
    users: Vec<User>,
    child: Option<Child>,
    starts: u32,
}

impl Builder {
    /// TLS only, with client-certificate auth.
    #[must_use]
    pub fn tls(mut self) -> Builder {
        self.tls = true;
        self
    }

    /// User/password auth with these users.
    #[must_use]
    pub fn auth(mut self, spec: AuthSpec) -> Builder {
        self.auth = Some(spec);
        self
    }

    /// Starts etcd and waits until it is healthy (and set up).
    pub fn start(self) -> Etcd {
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("veer-etcd-{id}"));
        // A leftover of a crashed earlier run with the same pid is not ours to keep.
        drop(std::fs::remove_dir_all(&dir));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let tls = self.tls.then(|| write_pki(&dir));
        let mut etcd = Etcd {
            name: format!("veer-test-{id}"),
            client_port: free_port(),
            peer_port: free_port(),
            dir,
            tls,
            root: None,
            users: Vec::new(),
            child: None,
            starts: 0,
        };
        // A free port can be taken by another test between our probe and etcd's bind: try
        // fresh ports (and a fresh data directory) a few times.
        for attempt in 1..=3 {
            match etcd.try_spawn() {
                Ok(()) => break,
                Err(why) if attempt < 3 => {
                    eprintln!("etcd did not start ({why}); retrying on other ports");
                    etcd.client_port = free_port();
                    etcd.peer_port = free_port();
                    drop(std::fs::remove_dir_all(etcd.dir.join("data")));
                }
                Err(why) => panic!("{why}"),
            }
        }
        if let Some(spec) = self.auth {
            etcd.enable_auth(&spec);
        }
        etcd
    }
}

impl Etcd {
    /// A plain etcd.
    pub fn start() -> Etcd {
        Builder::default().start()
    }

    /// Choose a variant.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `http://127.0.0.1:PORT` or `https://…`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// TLS files, for a TLS-only etcd.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// A user created by the auth spec.
    pub fn user(&self, name: &str) -> &User {
        self.users
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no etcd user {name} in this fixture"))
    }

    /// The root user (auth variant).
    pub fn root(&self) -> &User {
        self.root
            .as_ref()
            .unwrap_or_else(|| panic!("this etcd has no auth"))
    }

    /// veer's options for this etcd (TLS files when TLS-only; no user), with short timeouts.
    pub fn options(&self, prefix: &str) -> EtcdOptions {
        let mut o = EtcdOptions {
            endpoints: vec![self.endpoint()],
            prefix: prefix.to_owned(),
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(2),
            ..EtcdOptions::default()
        };
        if let Some(t) = &self.tls {
            o.cacert = Some(t.ca.clone());
            o.cert = Some(t.cert.clone());
            o.key = Some(t.key.clone());
        }
        o
    }

    /// [`options`](Self::options) as `user`.
    pub fn options_as(&self, prefix: &str, user: &User) -> EtcdOptions {
        EtcdOptions {
            user: Some(user.name.clone()),
            password_file: Some(user.password_file.clone()),
            ..self.options(prefix)
        }
    }

    /// Runs `etcdctl` against this etcd (as root when auth is on).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.cert.display()))
                .arg(format!("--key={}", t.key.display()));
        }
        if let Some(root) = &self.root {
            cmd.arg(format!("--user=root:{}", root.password));
        }
        cmd.args(args)
            .output()
            .unwrap_or_else(|e| panic!("running etcdctl (`cargo xtask setup` installs it): {e}"))
    }

    /// Like [`etcdctl`](Self::etcdctl), panicking with its output unless it succeeds.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// etcd's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl_ok(&["endpoint", "status", "--write-out=json"]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no revision in {out}"))
    }

    /// Compacts every revision before the current one away.
    pub fn compact(&self) -> i64 {
        let rev = self.revision();
        self.etcdctl_ok(&["compact", &rev.to_string(), "--physical"]);
        rev
    }

    /// SIGTERM and wait (at most 30 s).
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(c.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                drop(c.kill());
                drop(c.wait());
                panic!("etcd ignored SIGTERM for 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.kill());
            drop(c.wait());
        }
    }

    /// Starts etcd again on the same data directory and ports; waits until healthy.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The etcd process id, while it runs (to sample its CPU and memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let path = self.dir.join(format!("etcd-{n}.log"));
            out.push_str("--- ");
            out.push_str(&path.display().to_string());
            out.push_str(" ---\n");
            out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
        out
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{why}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "etcd already running");
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("etcd-{}.log", self.starts)))
            .unwrap_or_else(|e| panic!("{e}"));
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(self.endpoint())
            .arg("--advertise-client-urls")
            .arg(self.endpoint())
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .arg("--initial-cluster-token")
            .arg(&self.name)
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn");
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(self.dir.join("pki/server.pem"))
                .arg("--key-file")
                .arg(self.dir.join("pki/server-key.pem"))
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting etcd (`cargo xtask setup` installs Debian's etcd-server): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.etcdctl(&["endpoint", "health"]).status.success() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited ({status}) at start:\n{}", self.log()));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "etcd was not healthy within {START_TIMEOUT:?}:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates root, the roles and users of `spec` (roles granted with the commands
    /// `veer::fleet::Grant::etcdctl_args` gives), then enables auth.
    fn enable_auth(&mut self, spec: &AuthSpec) {
        let layout = KeyLayout::new(&spec.prefix).unwrap_or_else(|e| panic!("{e}"));
        let root = self.new_user("root");
        self.etcdctl_ok(&["user", "add", &format!("root:{}", root.password)]);
        let mut roles: Vec<Role> = vec![Role::Driver, Role::Operator];
        for (node, _) in &spec.nodes {
            roles.push(Role::Node(
                NodeName::new(node).unwrap_or_else(|e| panic!("{e}")),
            ));
        }
        for role in &roles {
            let name = role.name();
            self.etcdctl_ok(&["role", "add", &name]);
            for grant in layout.grants(role) {
                let args = grant.etcdctl_args(&name);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                self.etcdctl_ok(&args);
            }
        }
        for (node, driver) in &spec.nodes {
            let user = self.new_user(node);
            self.etcdctl_ok(&["user", "add", &format!("{node}:{}", user.password)]);
            self.etcdctl_ok(&["user", "grant-role", node, &format!("veer-node-{node}")]);
            if *driver {
                self.etcdctl_ok(&["user", "grant-role", node, "veer-driver"]);
            }
            self.users.push(user);
        }
        for op in &spec.operators {
            let user = self.new_user(op);
            self.etcdctl_ok(&["user", "add", &format!("{op}:{}", user.password)]);
            self.etcdctl_ok(&["user", "grant-role", op, "veer-operator"]);
            self.users.push(user);
        }
        self.etcdctl_ok(&["auth", "enable"]);
        self.root = Some(root);
    }

    fn new_user(&self, name: &str) -> User {
        let password: String = rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        let password_file = self.dir.join(format!("password-{name}"));
        std::fs::write(&password_file, format!("{password}\n")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        User {
            name: name.to_owned(),
            password_file,
            password,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

/// A free TCP port on loopback (bound, then released for etcd to take).
/// A port free on 127.0.0.1 now, below the kernel's ephemeral range, and not given out before
/// by this process. etcd keeps its ports across [`Etcd::restart`]: while it is down, a port of
/// the ephemeral range could go to a connection's source port or to another test's etcd (from
/// `bind(:0)`), and its restart would fail. The kernel picks no port below that range, and a
/// counter (starting at a random place, so that other processes start elsewhere) never gives
/// one out twice.
fn free_port() -> u16 {
    /// The lowest port used (below: well-known and registered services).
    const FIRST: u32 = 10_000;
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static GIVEN: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(FIRST).max(1);
    let start = *START.get_or_init(|| rand::thread_rng().gen_range(0..span));
    for _ in 0..span {
        let n = GIVEN.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(FIRST + (start + n) % span) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{ephemeral} on 127.0.0.1")
}

/// Writes a CA, a server certificate (127.0.0.1, localhost), a client certificate and an
/// unrelated CA under `dir/pki`.
fn write_pki(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, pem: String| {
        let path = pki.join(name);
        std::fs::write(&path, pem).unwrap_or_else(|e| panic!("{e}"));
        path
    };
    let ca = |cn: &str| {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = CertificateParams::new(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        (cert, Issuer::new(params, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>, cn: &str, sans: Vec<String>, usage| {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = CertificateParams::new(sans).unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), key.serialize_pem())
    };
    let (ca_cert, issuer) = ca("veer test CA");
    let (server, server_key) = leaf(
        &issuer,
        "etcd",
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = leaf(
        &issuer,
        "veer-test-client",
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (foreign, _) = ca("some other CA");
    write("server.pem", server);
    write("server-key.pem", server_key);
    TlsFiles {
        ca: write("ca.pem", ca_cert.pem()),
        cert: write("client.pem", client),
        key: write("client-key.pem", client_key),
        foreign_ca: write("foreign-ca.pem", foreign.pem()),
    }
}

/// A TCP forwarder on loopback to an etcd, that a test can cut (every connection closed, new
/// ones closed at once) and restore: one node losing etcd while etcd serves the others.
pub struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards a fresh loopback port to `127.0.0.1:port`.
    pub fn new(port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        Proxy::serve(listener, port)
    }

    /// Forwards a fresh loopback port **inside network namespace `ns`** to etcd's
    /// `127.0.0.1:port` in the test's own namespace: a daemon in a topology's node namespace
    /// reaches the test's etcd through it (its loopback is not the test's), and the test can cut
    /// that one node off. No interface is created: the listening socket lives in `ns`, the
    /// connections to etcd in the test's namespace.
    pub fn in_netns(ns: &crate::netns::Netns, port: u16) -> Proxy {
        let listener = ns
            .enter(|| TcpListener::bind("127.0.0.1:0"))
            .and_then(|r| r)
            .unwrap_or_else(|e| panic!("listening in {}: {e}", ns.name()));
        Proxy::serve(listener, port)
    }

    fn serve(listener: TcpListener, port: u16) -> Proxy {
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let thread = {
            let (cut, stop, conns) = (Arc::clone(&cut), Arc::clone(&stop), Arc::clone(&conns));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if cut.load(Ordering::Relaxed) {
                                drop(client.shutdown(Shutdown::Both));
                                continue;
                            }
                            forward(&client, port, &conns);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Proxy {
            addr,
            cut,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://` when `tls`).
    pub fn endpoint(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Closes every forwarded connection; new ones are closed at once until `restore`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        let conns = std::mem::take(
            &mut *self
                .conns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for c in conns {
            drop(c.shutdown(Shutdown::Both));
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        if let Some(t) = self.thread.take() {
            drop(t.join());
        }
    }
}

/// Copies both ways between `client` and etcd, each direction on its own thread; both end when
/// either side closes (or the proxy shuts the sockets down).
fn forward(client: &TcpStream, port: u16, conns: &Mutex<Vec<TcpStream>>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
        drop(client.shutdown(Shutdown::Both));
        return;
    };
    drop(client.set_nonblocking(false));
    let pairs = [
        (client.try_clone(), server.try_clone()),
        (server.try_clone(), client.try_clone()),
    ];
    {
        let mut c = conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
            c.push(a);
            c.push(b);
        }
    }
    for pair in pairs {
        if let (Ok(mut from), Ok(mut to)) = pair {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                drop(to.shutdown(Shutdown::Both));
                drop(from.shutdown(Shutdown::Both));
            });
        }
    }
}

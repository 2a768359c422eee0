//! A fleet of three: one real etcd, three node namespaces each running a real `veer daemon
//! --source etcd`, backends v1 and v2 behind every node, client traffic through every node, and
//! the real CLI (`veer fleet ...`, `veer ... --fleet`) against etcd.
//!
//! Each node's daemon reaches the test's etcd through a forwarder listening on the loopback of
//! its own namespace (`Proxy::in_netns`); the CLI talks to etcd directly. Leases last 2 s, so a
//! dead daemon's status and driver key go within seconds.

// This binary links every dependency of `veer-tests`.
use {aya as _, libc as _, rand as _, rcgen as _, tokio as _, veer_common as _};

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use veer::{
    config::{parse_fleet, services_to_toml},
    model::DesiredState,
};
use veer_tests::{
    config::{ConfigBuilder, Family, web},
    daemon::{Daemon, Load, veer_bin, weights as status_weights},
    etcd::{Etcd, Proxy},
    metrics::value as metric,
    netns::Topology,
    servers::{TcpServer, ask_once, http_get},
};

const V1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
const V2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 21));
const PREFIX: &str = "/veer";
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a change may take to reach every node (it takes well under a second unloaded).
const PROPAGATION: Duration = Duration::from_secs(20);

fn vip() -> SocketAddr {
    Family::V4.vip()
}

/// The fleet's config: `web` over v1 and v2 at these weights.
fn fleet_config(v1: &str, v2: &str) -> String {
    services_to_toml(&DesiredState {
        services: vec![web(Family::V4, v1, v2)],
    })
}

/// One node: its namespaces, backends answering "v1" and "v2", the forwarder to etcd and the
/// daemon. Fields drop in order: the daemon first, the namespaces last.
struct Node {
    name: String,
    daemon: Daemon,
    _v1: TcpServer,
    _v2: TcpServer,
    _proxy: Proxy,
    topo: Topology,
}

/// What a node is started with.
#[derive(Clone, Copy)]
struct NodeSpec {
    /// v2's server port: another one than 8080 leaves v2 refusing connections.
    v2_port: u16,
    /// Prometheus metrics on 127.0.0.1:9464 in the node's namespace.
    metrics: bool,
}

const HEALTHY: NodeSpec = NodeSpec {
    v2_port: 8080,
    metrics: false,
};

/// One etcd and three nodes following it.
struct Bed {
    nodes: Vec<Node>,
    etcd: Etcd,
    dir: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Drop for Bed {
    fn drop(&mut self) {
        // The daemons go before etcd (the field order), the files last.
        self.nodes.clear();
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

impl Bed {
    /// etcd (TLS-only with client certificates when `tls`), and nodes `edge-1`... started in
    /// parallel.
    fn start(tls: bool, specs: &[NodeSpec]) -> Bed {
        veer_tests::require_root();
        let etcd = if tls {
            Etcd::builder().tls().start()
        } else {
            Etcd::start()
        };
        let dir = std::env::temp_dir().join(format!(
            "veer-fleet-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes = std::thread::scope(|s| {
            let handles: Vec<_> = specs
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let etcd = &etcd;
                    s.spawn(move || start_node(etcd, &format!("edge-{}", i + 1), *spec))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        Bed { nodes, etcd, dir }
    }

    /// `--etcd-endpoints ... --etcd-prefix ...` (and the TLS files) for the CLI.
    fn etcd_args(&self) -> Vec<String> {
        let mut a = vec![
            "--etcd-endpoints".to_owned(),
            self.etcd.endpoint(),
            "--etcd-prefix".to_owned(),
            PREFIX.to_owned(),
        ];
        if let Some(t) = self.etcd.tls() {
            for (flag, path) in [
                ("--etcd-cacert", &t.ca),
                ("--etcd-cert", &t.cert),
                ("--etcd-key", &t.key),
            ] {
                a.push(flag.to_owned());
                a.push(path.display().to_string());
            }
        }
        a
    }

    /// `veer ARGS... --etcd-…` (no daemon involved).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(veer_bin());
        c.args(args)
            .args(self.etcd_args())
            .stdin(Stdio::null())
            .env_remove("VEER_ETCD_ENDPOINTS");
        c
    }

    fn veer(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("veer {args:?}: {e}"))
    }

    /// `veer ARGS... -o json`, which must succeed.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.veer(&a);
        assert!(
            out.status.success(),
            "veer {a:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "veer {a:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Writes `text` to a file and applies it to the fleet; returns the config's mod revision.
    fn apply(&self, text: &str) -> i64 {
        let file = self.dir.join("fleet.toml");
        std::fs::write(&file, text).unwrap();
        let out = self.json(&["apply", "-f", &file.display().to_string(), "--fleet"]);
        out["mod_revision"].as_i64().unwrap()
    }

    /// The nodes' rows of `veer fleet status`.
    fn rows(&self) -> Vec<Value> {
        self.json(&["fleet", "status"])["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until every node reports `ok` about its status row.
    fn wait_nodes(&self, what: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Vec<Value> {
        eventually(what, timeout, || {
            let rows = self.rows();
            let good = rows.iter().filter(|r| ok(r)).count();
            if rows.len() == self.nodes.len() && good == rows.len() {
                Ok(rows)
            } else {
                Err(format!("{good} of {} nodes: {rows:#?}", self.nodes.len()))
            }
        })
    }

    /// Waits until every node applied config mod revision `rev` and reports no error.
    fn wait_applied(&self, rev: i64) -> Vec<Value> {
        self.wait_nodes(
            &format!("every node applied mod revision {rev}"),
            PROPAGATION,
            |r| {
                r["ready"] == true
                    && r["config"]["mod_revision"] == rev
                    && r["sync"] == "in_sync"
                    && r["errors"].as_array().is_some_and(Vec::is_empty)
            },
        )
    }

    /// The fleet's config as etcd holds it now.
    fn config_now(&self) -> DesiredState {
        let out = self
            .etcd
            .etcdctl_ok(&["get", &format!("{PREFIX}/config"), "--print-value-only"]);
        parse_fleet("/veer/config", out.trim_end())
            .unwrap_or_else(|e| panic!("the fleet's config does not parse: {e}\n{out}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// A fleet rollout's JSON status.
    fn rollout(&self, service: &str) -> Value {
        self.json(&["fleet", "rollout", "status", service])
    }

    /// `veer fleet rollout ARGS... -o json` (a `start` of `service`, without `--wait`), retried
    /// until the plan it writes has every node of the bed in its waves; returns its output.
    ///
    /// `start` plans with the nodes whose `status/<node>` it reads at that moment, and a status
    /// lives under its node's lease. Every daemon's keep-alives go through this test process
    /// (its [`Proxy`] threads) to one etcd, so a stall of this process or of etcd that outlasts
    /// the lease drops every status at once, until each daemon has taken a new lease and written
    /// it again: a start in that moment fails with "no node can take part" (nothing written)
    /// or plans without the nodes it missed. So: wait until every node reports, idle, then
    /// start; a failure of that kind, or a partial plan (aborted, the config put back if it
    /// completed meanwhile), means wait and start again.
    fn start_rollout(&self, service: &str, args: &[&str]) -> Value {
        let before = services_to_toml(&self.config_now());
        eventually(
            "a fleet rollout that every node takes part in",
            Duration::from_mins(2),
            || {
                self.wait_nodes(
                    "every node reports, with no rollout running",
                    PROPAGATION,
                    |r| {
                        r["ready"] == true
                            && r["rollouts"].as_array().is_some_and(|rs| {
                                rs.iter()
                                    .all(|x| x["phase"] != "running" && x["phase"] != "paused")
                            })
                    },
                );
                let mut a = args.to_vec();
                a.extend(["-o", "json"]);
                let out = self.veer(&a);
                let stderr = String::from_utf8_lossy(&out.stderr);
                if !out.status.success() {
                    assert!(
                        stderr.contains("no node can take part"),
                        "veer {a:?} failed ({}): {}{stderr}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                    );
                    eprintln!("statuses missing at the start, starting again: {stderr}");
                    return Err(format!("statuses missing at the start: {stderr}"));
                }
                let shown: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "veer {a:?} printed no JSON ({e}): {}",
                        String::from_utf8_lossy(&out.stdout)
                    )
                });
                let planned = shown["plan"]["waves"].as_array().map_or(0, |w| {
                    w.iter().filter_map(Value::as_array).map(Vec::len).sum()
                });
                if planned == self.nodes.len() {
                    return Ok(shown);
                }
                // A partial rollout may already have completed (and set the config's weights):
                // then the config from before is put back.
                let abort = self.veer(&[
                    "fleet",
                    "rollout",
                    "abort",
                    service,
                    "--reason",
                    "the test's start missed a node",
                ]);
                let why = String::from_utf8_lossy(&abort.stderr);
                assert!(
                    abort.status.success() || why.contains("nothing to abort"),
                    "abort: {why}"
                );
                if services_to_toml(&self.config_now()) != before {
                    self.wait_applied(self.apply(&before));
                }
                eprintln!(
                    "{planned} nodes planned, aborted, starting again: {}",
                    shown["plan"]
                );
                Err(format!("{planned} nodes planned: {}", shown["plan"]))
            },
        )
    }

    /// Load on every node at once (bounded in count and time).
    fn loads(&self, max_time: Duration) -> Vec<Load> {
        self.nodes
            .iter()
            .map(|n| Load::new_connections(n.topo.client(), vip(), 200_000, max_time))
            .collect()
    }
}

/// Starts one node: topology, backends, forwarder, `veer daemon --source etcd`.
fn start_node(etcd: &Etcd, name: &str, spec: NodeSpec) -> Node {
    let topo = Topology::builder()
        .client()
        .backend("v1", &[V1])
        .backend("v2", &[V2])
        .build()
        .unwrap();
    let v1 = TcpServer::start(topo.backend("v1"), SocketAddr::new(V1, 8080), "v1").unwrap();
    let v2 = TcpServer::start(topo.backend("v2"), SocketAddr::new(V2, spec.v2_port), "v2").unwrap();
    let proxy = Proxy::in_netns(topo.node(), etcd.port());
    // The local file: [node] only; the services come from etcd.
    let local = ConfigBuilder::new(topo.node_ifnames())
        .conntrack_max(65_536)
        .tcp_closing(Duration::from_hours(1))
        .to_toml();
    let endpoint = proxy.endpoint(etcd.tls().is_some());
    let mut args: Vec<String> = [
        "--source",
        "etcd",
        "--etcd-endpoints",
        &endpoint,
        "--etcd-prefix",
        PREFIX,
        "--node",
        name,
        // Renewed every TTL/3: at 2 s, a stall of a second on a loaded machine could hand
        // the rollout's driver role (or a status) over mid-test.
        "--fleet-lease-ttl",
        "5s",
        "--metrics",
        if spec.metrics {
            "127.0.0.1:9464"
        } else {
            "off"
        },
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(t) = etcd.tls() {
        for (flag, path) in [
            ("--etcd-cacert", &t.ca),
            ("--etcd-cert", &t.cert),
            ("--etcd-key", &t.key),
        ] {
            args.push(flag.to_owned());
            args.push(path.display().to_string());
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start_with(&topo, &local, &args);
    Node {
        name: name.to_owned(),
        daemon,
        _v1: v1,
        _v2: v2,
        _proxy: proxy,
        topo,
    }
}

/// Polls `f` until it gives a value, at most `timeout`; panics with its last reason.
fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(why) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Asks `n` new connections through `node` and returns the answers.
fn answers(node: &Node, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            ask_once(node.topo.client(), vip(), TIMEOUT)
                .unwrap_or_else(|e| panic!("{}: connection {i}: {e}", node.name))
        })
        .collect()
}

/// A node's weights as its own `veer status` says.
fn local_weights(node: &Node) -> Vec<(String, f64)> {
    status_weights(&node.daemon.json(&["status"]))
}

fn weights(v1: f64, v2: f64) -> Vec<(String, f64)> {
    vec![("v1".to_owned(), v1), ("v2".to_owned(), v2)]
}

/// `GET path` on `addr` from inside the node's namespace.
fn node_get(node: &Node, addr: &str, path: &str) -> Option<String> {
    http_get(node.topo.node(), addr, path, TIMEOUT)
}

/// (1) a change put into etcd is in force on all three nodes, status reporting it; (2) a bad
/// config is refused everywhere and nothing changes; (7) two concurrent `veer shift --fleet`
/// lose neither change. Against a TLS-only etcd with client certificates.
#[test]
fn changes_in_etcd_reach_every_node_bad_ones_none_and_concurrent_edits_all_stay() {
    let bed = Bed::start(true, &[HEALTHY; 3]);

    // (1) The fleet's config, then a shift of it, in force everywhere.
    let rev = bed.apply(&fleet_config("100", "0"));
    let rows = bed.wait_applied(rev);
    for n in &bed.nodes {
        assert!(answers(n, 5).iter().all(|a| a == "v1"), "{} before", n.name);
    }
    let hash = rows[0]["state_hash"].clone();
    let out = bed.json(&["shift", "web", "v1=0", "v2=100", "--fleet"]);
    assert_eq!(out["changed"], true, "{out}");
    let rev = out["mod_revision"].as_i64().unwrap();
    let rows = bed.wait_applied(rev);
    let hashes: Vec<&Value> = rows.iter().map(|r| &r["state_hash"]).collect();
    assert!(
        hashes.iter().all(|h| **h == *hashes[0]) && *hashes[0] != hash,
        "every node runs the same new state: {hashes:?}"
    );
    for n in &bed.nodes {
        assert!(
            answers(n, 5).iter().all(|a| a == "v2"),
            "{} after the shift",
            n.name
        );
        assert_eq!(local_weights(n), weights(0.0, 100.0), "{}", n.name);
        let s = n.daemon.json(&["status"]);
        assert_eq!(s["source"]["config"]["mod_revision"], rev, "{s}");
        assert_eq!(s["source"]["ready"], true);
        assert_eq!(s["revision"]["origin"], "etcd");
    }
    // The same shift again changes nothing.
    let again = bed.json(&["shift", "web", "v1=0", "v2=100", "--fleet"]);
    assert_eq!(again["changed"], false, "{again}");

    // (2) A bad config: refused by every node with key:line:column, nothing changes.
    let before: Vec<(Value, Value)> = rows
        .iter()
        .map(|r| (r["local_revision"].clone(), r["state_hash"].clone()))
        .collect();
    let bad = fleet_config("0", "100").replace("weight = 100", "weight = 120");
    bed.etcd
        .etcdctl_ok(&["put", &format!("{PREFIX}/config"), &bad]);
    let rows = bed.wait_nodes("every node refused the bad config", PROPAGATION, |r| {
        r["sync"] == "refused"
            && r["errors"].as_array().is_some_and(|e| {
                e.iter().any(|e| {
                    e["key"] == "/veer/config"
                        && e["message"].as_str().is_some_and(|m| {
                            m.starts_with("/veer/config:") && m.contains("120 is out of range")
                        })
                })
            })
    });
    for (r, (rev_before, hash_before)) in rows.iter().zip(&before) {
        assert_eq!(&r["local_revision"], rev_before, "nothing changed: {r}");
        assert_eq!(&r["state_hash"], hash_before, "nothing changed: {r}");
        assert_eq!(
            r["config"]["mod_revision"], rev,
            "the good one stays in force"
        );
    }
    for n in &bed.nodes {
        assert!(
            answers(n, 5).iter().all(|a| a == "v2"),
            "{} with the bad config",
            n.name
        );
        let text = n.daemon.ok(&["status"]);
        assert!(
            text.contains("config in etcd REFUSED: /veer/config:"),
            "{text}"
        );
    }
    // An edit of a broken document is refused too: it would build on nothing.
    let refused = bed.veer(&["shift", "web", "v1=50", "--fleet"]);
    assert_eq!(refused.status.code(), Some(1));

    // (7) Concurrent shifts of two groups: both land, every round.
    concurrent_shifts(&bed);
}

/// Rounds of two `veer shift --fleet` at once, each on another group: both changes land.
fn concurrent_shifts(bed: &Bed) {
    let rev = bed.apply(&fleet_config("50", "50"));
    bed.wait_applied(rev);
    let mut retried = 0;
    for round in 1..=6_u32 {
        let (a, b) = (round * 3, 100 - round * 5);
        let spawn = |args: &[&str]| {
            let mut c = bed.command(args);
            c.args(["-o", "json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        };
        let first = spawn(&["shift", "web", &format!("v1={a}"), "--fleet"]);
        let second = spawn(&["shift", "web", &format!("v2={b}"), "--fleet"]);
        for child in [first, second] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            retried += v["attempts"].as_u64().unwrap_or(1) - 1;
        }
        let now = bed.config_now();
        let web = now.service("web").unwrap();
        assert_eq!(
            (
                web.group("v1").unwrap().weight.to_string(),
                web.group("v2").unwrap().weight.to_string()
            ),
            (a.to_string(), b.to_string()),
            "round {round}: a concurrent change was lost"
        );
    }
    eprintln!("concurrent shifts: {retried} writes found the document changed and were redone");
    let last = bed.json(&["fleet", "history"])["versions"][0]["mod_revision"]
        .as_i64()
        .unwrap();
    bed.wait_applied(last);
}

/// (3) etcd killed: traffic goes on unchanged, the nodes say stale (status and metrics); etcd
/// restarted: they resync and follow the next change.
#[test]
fn with_etcd_down_traffic_goes_on_the_nodes_say_stale_and_resync_after() {
    let first = NodeSpec {
        metrics: true,
        ..HEALTHY
    };
    let mut bed = Bed::start(false, &[first, HEALTHY, HEALTHY]);
    let rev = bed.apply(&fleet_config("30", "70"));
    bed.wait_applied(rev);
    let loads = bed.loads(Duration::from_secs(90));

    bed.etcd.kill();
    for n in &bed.nodes {
        let s = eventually(&format!("{} says stale", n.name), PROPAGATION, || {
            let s = n.daemon.json(&["status"]);
            if s["source"]["stale_since"].is_string() {
                Ok(s)
            } else {
                Err(s["source"].to_string())
            }
        });
        assert!(s["source"]["error"].is_string(), "{s}");
        assert_eq!(s["source"]["config"]["mod_revision"], rev, "still in force");
        let text = n.daemon.ok(&["status"]);
        assert!(text.contains(": STALE since "), "{text}");
    }
    let metrics = node_get(&bed.nodes[0], "127.0.0.1:9464", "/metrics").unwrap();
    assert_eq!(
        metric(&metrics, "veer_source_stale"),
        Some(1.0),
        "{metrics}"
    );
    // Every series of a node following etcd (the source's beside the rest) as Prometheus
    // reads them.
    veer_tests::metrics::promtool_accepts(&metrics);
    assert!(
        metric(&metrics, "veer_source_stale_since_timestamp_seconds").is_some_and(|t| t > 0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "veer_source_config_mod_revision"),
        Some(rev as f64)
    );
    // Traffic goes on while etcd is down.
    std::thread::sleep(Duration::from_secs(2));
    for n in &bed.nodes {
        assert_eq!(local_weights(n), weights(30.0, 70.0), "{}", n.name);
    }

    bed.etcd.restart();
    for n in &bed.nodes {
        eventually(&format!("{} in sync again", n.name), PROPAGATION, || {
            let s = n.daemon.json(&["status"]);
            if s["source"]["stale_since"].is_null() {
                Ok(())
            } else {
                Err(s["source"].to_string())
            }
        });
    }
    let metrics = node_get(&bed.nodes[0], "127.0.0.1:9464", "/metrics").unwrap();
    assert_eq!(
        metric(&metrics, "veer_source_stale"),
        Some(0.0),
        "{metrics}"
    );
    // The statuses are back, and the next change reaches everyone.
    let rev = bed.apply(&fleet_config("100", "0"));
    bed.wait_applied(rev);
    for (n, load) in bed.nodes.iter().zip(loads) {
        let report = load.finish();
        report.assert_clean(&format!("{} through the outage", n.name));
        assert!(
            report.answers.get("v2").copied().unwrap_or(0) > 0
                && report.answers.get("v1").copied().unwrap_or(0) > 0,
            "{}: {:?}",
            n.name,
            report.answers
        );
        assert!(answers(n, 5).iter().all(|a| a == "v1"), "{}", n.name);
    }
}

/// The per-node options of the fleet rollouts below: two steps, short pauses.
const NODE_PLAN: [&str; 8] = [
    "--steps",
    "50,100",
    "--pause",
    "1s",
    "--min-flows",
    "5",
    "--max-failure-rate",
    "1%",
];

/// The time of each node's revisions, by summary.
fn revision_times(node: &Node) -> Vec<(String, String)> {
    node.daemon.json(&["history"])["revisions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["summary"].as_str().unwrap_or_default().to_owned(),
                r["time"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// (4) A fleet rollout through every wave, under load through every node: zero failed
/// requests, each wave after the one before it completed, the config left at the target.
#[test]
fn a_fleet_rollout_goes_through_every_wave_without_a_failed_request() {
    let bed = Bed::start(false, &[HEALTHY; 3]);
    let rev = bed.apply(&fleet_config("100", "0"));
    bed.wait_applied(rev);
    let loads = bed.loads(Duration::from_mins(2));

    let mut args = vec![
        "fleet", "rollout", "start", "web", "--to", "v2", "--waves", "1,2,100%", "--wait",
    ];
    args.extend(NODE_PLAN);
    let out = bed.veer(&args);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = bed.rollout("web");
    assert_eq!(r["progress"]["state"]["state"], "completed", "{r}");
    let waves: Vec<Vec<String>> = serde_json::from_value(r["plan"]["waves"].clone()).unwrap();
    assert_eq!(waves, [["edge-1"], ["edge-2"], ["edge-3"]]);

    for (n, load) in bed.nodes.iter().zip(loads) {
        load.finish()
            .assert_clean(&format!("{} during the rollout", n.name));
        assert_eq!(local_weights(n), weights(0.0, 100.0), "{}", n.name);
    }
    // The driver left the target weights in the fleet's config.
    let web = bed.config_now().services[0].clone();
    assert_eq!(web.group("v2").unwrap().weight.to_string(), "100");
    // Wave k started only once wave k-1 completed (revision times, to the second).
    let times: Vec<Vec<(String, String)>> = bed.nodes.iter().map(revision_times).collect();
    let when = |node: usize, what: &str| {
        times[node]
            .iter()
            .find(|(s, _)| s.contains(what))
            .map_or_else(
                || panic!("edge-{}: no revision `{what}`: {:?}", node + 1, times[node]),
                |(_, t)| t.clone(),
            )
    };
    for k in 1..3 {
        assert!(
            when(k, "started") >= when(k - 1, "completed"),
            "wave {} started before wave {k} completed: {times:?}",
            k + 1
        );
    }
    let rows = bed.rows();
    for r in &rows {
        assert_eq!(r["rollouts"][0]["phase"], "completed", "{r}");
    }
}

/// (5) A fleet rollout in which one node's v2 refuses connections: that node breaks its
/// failure-rate gate, and the whole fleet (the canary that already completed included) goes
/// back to the weights from before, with the node and the gate recorded.
#[test]
fn a_breach_on_one_node_rolls_the_whole_fleet_back() {
    let broken = NodeSpec {
        v2_port: 8081,
        ..HEALTHY
    };
    let bed = Bed::start(false, &[HEALTHY, HEALTHY, broken]);
    let rev = bed.apply(&fleet_config("100", "0"));
    bed.wait_applied(rev);
    let loads = bed.loads(Duration::from_mins(2));

    let mut args = vec![
        "fleet", "rollout", "start", "web", "--to", "v2", "--waves", "1,100%", "--wait",
    ];
    args.extend(NODE_PLAN);
    let out = bed.veer(&args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ROLLED BACK") && stderr.contains("node edge-3"),
        "{stderr}"
    );
    let r = bed.rollout("web");
    let state = &r["progress"]["state"];
    assert_eq!(state["state"], "rolled_back", "{r}");
    assert_eq!(state["node"], "edge-3", "{r}");
    assert_eq!(state["gate"], "failure-rate", "{r}");
    assert!(
        state["reason"]
            .as_str()
            .is_some_and(|w| w.contains("failed")),
        "{r}"
    );

    // Every node is back at the weights from before, the canary that completed included.
    for n in &bed.nodes {
        eventually(&format!("{} restored", n.name), PROPAGATION, || {
            let w = local_weights(n);
            if w == weights(100.0, 0.0) {
                Ok(())
            } else {
                Err(format!("{w:?}"))
            }
        });
    }
    let rows = bed.rows();
    for r in &rows {
        assert_eq!(r["rollouts"][0]["phase"], "rolled_back", "{r}");
    }
    let web = bed.config_now().services[0].clone();
    assert_eq!(
        web.group("v2").unwrap().weight.to_string(),
        "0",
        "config untouched"
    );
    for (n, load) in bed.nodes.iter().zip(loads) {
        let report = load.finish();
        if n.name == "edge-3" {
            assert!(report.failed > 0, "edge-3's v2 refused: {report:?}");
        } else {
            report.assert_clean(&format!("{} during the rollout", n.name));
        }
        assert!(answers(n, 5).iter().all(|a| a == "v1"), "{}", n.name);
    }
}

/// (6) `kill -9` of the daemon driving a rollout: another daemon is elected within the lease
/// TTL, goes on from the recorded progress, and the rollout completes (the killed node comes
/// back and reports its part).
#[test]
fn killing_the_driver_hands_the_rollout_to_another_daemon() {
    let mut bed = Bed::start(false, &[HEALTHY; 3]);
    let rev = bed.apply(&fleet_config("100", "0"));
    bed.wait_applied(rev);
    let loads = bed.loads(Duration::from_secs(150));

    let mut args = vec![
        "fleet",
        "rollout",
        "start",
        "web",
        "--to",
        "v2",
        "--waves",
        "1,2,100%",
        "--node-timeout",
        "60s",
    ];
    args.extend(NODE_PLAN);
    bed.start_rollout("web", &args);
    // Wait for the second wave, then kill the daemon that drives.
    eventually("wave 2 started", Duration::from_mins(1), || {
        let r = bed.rollout("web");
        if r["progress"]["wave"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(r["progress"].to_string())
        }
    });
    let driver = bed.json(&["fleet", "status"])["driver"]
        .as_str()
        .unwrap_or_else(|| panic!("no driver"))
        .to_owned();
    let killed_at = Instant::now();
    bed.node_mut(&driver).daemon.kill9();
    let next = eventually("another daemon drives", Duration::from_secs(30), || {
        let d = bed.json(&["fleet", "status"])["driver"].clone();
        match d.as_str() {
            Some(d) if d != driver => Ok(d.to_owned()),
            _ => Err(d.to_string()),
        }
    });
    eprintln!(
        "{driver} killed; {next} drives {:?} later",
        killed_at.elapsed()
    );
    // The killed node comes back (its data path kept serving meanwhile) and reports its part.
    bed.node_mut(&driver).daemon.spawn();
    eventually("the rollout completes", Duration::from_secs(90), || {
        let r = bed.rollout("web");
        match r["progress"]["state"]["state"].as_str() {
            Some("completed") => Ok(r),
            Some("running") => Err(r["progress"].to_string()),
            _ => panic!("the rollout did not complete: {r}"),
        }
    });
    let r = bed.rollout("web");
    assert_eq!(
        r["progress"]["driver"], next,
        "the new driver carried on: {r}"
    );
    for (n, load) in bed.nodes.iter().zip(loads) {
        load.finish()
            .assert_clean(&format!("{} during the rollout", n.name));
        eventually(&format!("{} at v2", n.name), PROPAGATION, || {
            let w = local_weights(n);
            if w == weights(0.0, 100.0) {
                Ok(())
            } else {
                Err(format!("{w:?}"))
            }
        });
    }
}

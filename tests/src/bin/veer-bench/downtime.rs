//! Section 4: zero downtime under load. The same load (new connections back to back from four
//! client threads, plus 16 keep-alive connections asked every 100 ms) runs through each event,
//! and every failed request and broken connection is counted:
//!
//! - veer: a full cutover `v1` → `v2` in five `veer shift` steps; a `kill -9` of the daemon and a
//!   restart; a program upgrade (SIGTERM, start again: the new daemon swaps its programs onto the
//!   pinned links);
//! - nginx on the node as a reverse proxy: upstream `v1`, config rewritten to `v2`,
//!   `nginx -s reload`;
//! - `HAProxy` on the node: weights moved from `v1` to `v2` through its runtime API.
//!
//! Backends are the test bed's name-answering servers (`v1`, `v2`).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use veer_tests::netns::Topology;

use crate::{
    bed::{self, Context as _, Result, V1, V2, VIP, Veer, bail},
    load::{Load, Plan, Snapshot},
    procs::{Haproxy, Nginx},
};

/// Load before the event.
const BEFORE: Duration = Duration::from_secs(2);
/// Load after the event.
const AFTER: Duration = Duration::from_secs(4);
/// Held keep-alive connections.
pub(crate) const HELD: usize = 16;
/// Client threads opening new connections.
pub(crate) const WORKERS: usize = 4;

/// One scenario's outcome.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    /// What happened.
    pub(crate) name: &'static str,
    /// What the load saw.
    pub(crate) load: Snapshot,
    /// How long the event itself took (ms), e.g. the restart until the socket answered.
    pub(crate) event_ms: f64,
}

fn plan() -> Plan {
    Plan {
        workers: WORKERS,
        pause: Duration::ZERO,
        max_requests: 1_000_000,
        max_time: Duration::from_mins(1),
        held: HELD,
        held_every: Duration::from_millis(100),
    }
}

/// Runs `event` under load, `BEFORE` after the load starts, and keeps the load `AFTER` it.
fn under_load(
    topo: &Topology,
    name: &'static str,
    event: impl FnOnce() -> Result<()>,
) -> Result<Scenario> {
    let load = Load::start(topo.client(), VIP, &plan())?;
    bed::sleep(BEFORE)?;
    let t = Instant::now();
    event()?;
    let event_ms = t.elapsed().as_secs_f64() * 1e3;
    bed::sleep(AFTER)?;
    let snapshot = load.finish();
    let s = Scenario {
        name,
        load: snapshot,
        event_ms,
    };
    println!(
        "  {name:<44} requests {:>6}  failed {} (refused {}, reset {}, timeout {}, bad {})  held broken {} moved {}  answers {:?}",
        s.load.sent(),
        s.load.failed(),
        s.load.refused,
        s.load.reset,
        s.load.timeout,
        s.load.bad,
        s.load.held_broken,
        s.load.held_moved,
        s.load.answers
    );
    if !s.load.errors.is_empty() {
        println!("      first failures: {:?}", s.load.errors);
    }
    Ok(s)
}

/// Runs section 4.
pub(crate) fn run() -> Result<Vec<Scenario>> {
    let topo = bed::two_group_topology()?;
    topo.client()
        .sysctl(&[("net.ipv4.ip_local_port_range", "1024 65000")])
        .context("client port range")?;
    topo.node()
        .sysctl(&[
            ("net.ipv4.ip_local_port_range", "1024 65000"),
            ("net.ipv4.tcp_tw_reuse", "1"),
        ])
        .context("node sysctls")?;
    let _servers = bed::name_servers(&topo)?;
    let mut out = Vec::new();

    {
        let mut veer = Veer::start(
            topo.node(),
            &bed::config(&topo.node_ifnames(), "100", "0", 1 << 20),
        )?;
        out.push(under_load(
            &topo,
            "veer: cutover v1 → v2 in 5 shifts",
            || {
                for (w1, w2) in [(90, 10), (75, 25), (50, 50), (25, 75), (0, 100)] {
                    veer.ok(&["shift", "web", &format!("v1={w1}"), &format!("v2={w2}")])?;
                    bed::sleep(Duration::from_millis(500))?;
                }
                Ok(())
            },
        )?);
        veer.ok(&["shift", "web", "v1=50", "v2=50"])?;
        out.push(under_load(&topo, "veer: daemon kill -9, restart", || {
            veer.kill9();
            veer.spawn()
        })?);
        out.push(under_load(
            &topo,
            "veer: program upgrade (SIGTERM, start)",
            || {
                veer.stop()?;
                veer.spawn()
            },
        )?);
        let weights = veer.json(&["status"])?;
        let w: Vec<f64> = weights["services"][0]["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(|g| g["weight"].as_f64()).collect())
            .unwrap_or_default();
        if w != [50.0, 50.0] {
            bail!("after the restarts the weights are {w:?}, not 50/50");
        }
    }

    topo.node()
        .run(&["ip", "addr", "add", "192.0.2.10/32", "dev", "lo"])
        .context("adding the VIP to the node")?;
    {
        let nginx = Nginx::proxy(topo.node(), VIP, SocketAddr::new(V1, 8080))?;
        out.push(under_load(
            &topo,
            "nginx: upstream v1 → v2, nginx -s reload",
            || nginx.reload_proxy(VIP, SocketAddr::new(V2, 8080)),
        )?);
        if nginx.pid().is_none() {
            bail!("nginx is gone");
        }
    }
    {
        let haproxy = Haproxy::start(
            topo.node(),
            VIP,
            &[
                ("v1", SocketAddr::new(V1, 8080), 100),
                ("v2", SocketAddr::new(V2, 8080), 0),
            ],
        )?;
        out.push(under_load(
            &topo,
            "HAProxy: weights v1 → v2 (runtime API)",
            || {
                let a = haproxy.command("set weight web/v2 100")?;
                let b = haproxy.command("set weight web/v1 0")?;
                if !(a.trim().is_empty() && b.trim().is_empty()) {
                    bail!("HAProxy refused a weight: {a} {b}");
                }
                Ok(())
            },
        )?);
        if haproxy.pid().is_none() {
            bail!("haproxy is gone");
        }
    }
    topo.node()
        .run(&["ip", "addr", "del", "192.0.2.10/32", "dev", "lo"])
        .context("removing the VIP from the node")?;
    Ok(out)
}

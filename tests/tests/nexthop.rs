//! The next-hop cache under real traffic: a held TCP connection through veer keeps working when
//! its backend's neighbour entry changes, and then when its route does, on the default bed (TC on
//! the veths) and with XDP on the client side. Each change makes the old next hop a dead end (the
//! backend's interface no longer answers to the old MAC, the old path no longer carries
//! requests), so a packet sent from a stale cache entry is lost, and the connection's next
//! request would time out.
//!
//! Needs root: each test panics with the missing prerequisite otherwise.

// This binary links every dependency of `veer-tests`.
use {aya as _, libc as _, rand as _, rcgen as _, serde_json as _, tokio as _, veer_common as _};

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use veer::model::{DesiredState, HookChoice};
use veer_tests::{
    config as cfg,
    netns::{NODE_CLIENT_IFNAME, Netns, Offload, PEER_IFNAME, Topology},
    node::{NodeOptions, SteeredNode},
    servers::{TcpServer, ask_tcp},
};

const VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 80);
const V1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
const PORT: u16 = 8080;
/// Longer than a lost request takes to be retransmitted a few times (200 ms, 400 ms ...), far
/// shorter than a stale cache entry would last (it never expires while the daemon runs).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// Requests on the held connection after each change.
const REQUESTS: usize = 20;

fn state() -> DesiredState {
    DesiredState {
        services: vec![cfg::service(
            "web",
            VIP,
            vec![cfg::group("v1", "100", &[SocketAddr::new(V1, PORT)])],
        )],
    }
}

fn ip(ns: &Netns, line: &str) {
    let args: Vec<&str> = std::iter::once("ip").chain(line.split(' ')).collect();
    ns.run(&args)
        .unwrap_or_else(|e| panic!("`ip {line}` in {}: {e}", ns.name()));
}

/// Asks `REQUESTS` times on the held connection; every answer must come from v1 in time.
fn ask_all(conn: &mut TcpStream, what: &str) {
    for i in 0..REQUESTS {
        match ask_tcp(conn) {
            Ok(name) => assert_eq!(name, "v1", "{what}: request {i}"),
            Err(e) => panic!("{what}: request {i} on the held connection failed: {e}"),
        }
    }
}

fn neighbour_then_route_change_mid_flow(opts: &NodeOptions, prepare: impl FnOnce(&Topology)) {
    veer_tests::require_root();
    let topo = Topology::builder()
        .client()
        .backend("v1", &[V1])
        .build()
        .unwrap();
    prepare(&topo);
    let _server = TcpServer::start(topo.backend("v1"), SocketAddr::new(V1, PORT), "v1").unwrap();
    let node = SteeredNode::start_with(&topo, opts, &state());
    assert!(
        node.dataplane.nexthop_cache_on(),
        "the next-hop cache is off on a node with default rules"
    );
    let node_if = topo.node_backend_ifname("v1").to_owned();
    let mut conn = topo
        .client()
        .tcp_connect(VIP, ANSWER_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to the VIP: {e}"));
    conn.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    ask_all(&mut conn, "before any change (the cache fills)");

    // The backend's interface takes a new MAC and the node learns it (what a gratuitous ARP
    // would teach it): frames to the old MAC are dropped by the backend's interface.
    ip(
        topo.backend("v1"),
        &format!("link set dev {PEER_IFNAME} address 02:00:00:00:77:11"),
    );
    ip(
        topo.node(),
        &format!("neigh replace {V1} lladdr 02:00:00:00:77:11 dev {node_if} nud reachable"),
    );
    ask_all(&mut conn, "after the neighbour change");

    // A second link to the backend, and the route to it moved there. The backend's first
    // interface changes its MAC again, unknown to the node: the old path is a dead end.
    let (node_b, backend_b) = ("n-v1b", "v1b");
    ip(
        topo.node(),
        &format!(
            "link add {node_b} type veth peer name {backend_b} netns {}",
            topo.backend("v1").name()
        ),
    );
    ip(topo.backend("v1"), &format!("link set {backend_b} up"));
    ip(topo.node(), &format!("link set {node_b} up"));
    ip(
        topo.backend("v1"),
        &format!("link set dev {PEER_IFNAME} address 02:00:00:00:78:11"),
    );
    ip(topo.node(), &format!("route replace {V1}/32 dev {node_b}"));
    ask_all(&mut conn, "after the route change");
    drop(conn);
    drop(node);
}

#[test]
fn tc_a_held_flow_follows_its_backends_neighbour_then_its_route() {
    neighbour_then_route_change_mid_flow(&NodeOptions::default(), |_| {});
}

#[test]
fn xdp_a_held_flow_follows_its_backends_neighbour_then_its_route() {
    // XDP forced on the client-facing veth: the client writes complete checksums (as frames off
    // a wire carry), and the backend's peer has GRO so the node's veth takes redirected frames.
    neighbour_then_route_change_mid_flow(
        &NodeOptions {
            hooks: vec![(NODE_CLIENT_IFNAME.to_owned(), HookChoice::Xdp)],
            ..NodeOptions::default()
        },
        |topo| {
            topo.client()
                .set_offload(PEER_IFNAME, Offload::TxChecksum, false)
                .unwrap();
            topo.backend("v1")
                .set_offload(PEER_IFNAME, Offload::Gro, true)
                .unwrap();
        },
    );
}

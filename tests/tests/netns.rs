//! Real traffic in network namespaces. `topology` and `servers`: the test bed without veer (the
//! routing every data-path test builds on, teardown on pass and on panic, parallel topologies).
//! `steering`: real TCP/UDP connections through veer's programs on the node, driven through the
//! dataplane module directly.
//!
//! Needs root: each test panics with the missing prerequisite otherwise.

// This binary links every dependency of `veer-tests`; it only needs the test bed itself.
use aya as _;
use libc as _;
use rand as _;
use rcgen as _;
use serde_json as _;
use tokio as _;
use veer_common as _;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use veer_tests::netns::{Netns, Topology};

/// Bound on every connect, read and write in these tests.
const TIMEOUT: Duration = Duration::from_secs(5);

const V1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
const V1_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0x11));
const V2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 21));

/// The namespaces `ip netns list` shows right now.
fn listed_netns() -> HashSet<String> {
    let output = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run `ip netns list`");
    assert!(
        output.status.success(),
        "`ip netns list` failed: {output:?}"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Client plus backend groups v1 (IPv4 and IPv6) and v2 (IPv4), at kernel defaults.
fn two_group_topology() -> Topology {
    veer_tests::require_root();
    Topology::builder()
        .client()
        .backend("v1", &[V1, V1_V6])
        .backend("v2", &[V2])
        .build()
        .expect("build topology")
}

/// [`two_group_topology`] with the node forwarding like a router: for the bed's own routing
/// tests, which run without veer.
fn routed_two_group_topology() -> Topology {
    let topology = two_group_topology();
    topology.enable_forwarding().expect("enable forwarding");
    topology
}

mod topology {
    use std::collections::HashSet;
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::panic::{self, AssertUnwindSafe};

    use veer_tests::netns::{NODE_CLIENT_IFNAME, Topology};
    use veer_tests::servers::{TcpServer, UdpServer, ask_once, ask_once_from, ask_udp};

    use super::{
        TIMEOUT, V1, V1_V6, V2, listed_netns, routed_two_group_topology, two_group_topology,
    };

    #[test]
    fn topology_routes_client_to_backend_without_veer() {
        let topology = routed_two_group_topology();
        let v1 = TcpServer::start(topology.backend("v1"), SocketAddr::new(V1, 8080), "v1")
            .expect("start v1");
        let v1_v6 = TcpServer::start(topology.backend("v1"), SocketAddr::new(V1_V6, 8080), "v1")
            .expect("start v1 (IPv6)");
        let v2 = TcpServer::start(topology.backend("v2"), SocketAddr::new(V2, 8080), "v2")
            .expect("start v2");
        let v1_udp = UdpServer::start(topology.backend("v1"), SocketAddr::new(V1, 5353), "v1")
            .expect("start v1 udp");

        let client = topology.client();
        for _ in 0..3 {
            assert_eq!(ask_once(client, v1.addr(), TIMEOUT).expect("ask v1"), "v1");
            assert_eq!(ask_once(client, v2.addr(), TIMEOUT).expect("ask v2"), "v2");
        }
        assert_eq!(
            ask_once(client, v1_v6.addr(), TIMEOUT).expect("ask v1 over IPv6"),
            "v1"
        );
        assert_eq!(
            ask_udp(client, v1_udp.addr(), TIMEOUT).expect("ask v1 over udp"),
            "v1"
        );
        assert_eq!(v1.connections(), 3);
        assert_eq!(v2.connections(), 3);
        assert_eq!(v1_v6.connections(), 1);
        assert_eq!(v1_udp.datagrams(), 1);
    }

    #[test]
    fn topology_names_interfaces_and_leaves_kernel_defaults() {
        let topology = two_group_topology();
        assert_eq!(topology.node_client_ifname(), NODE_CLIENT_IFNAME);
        assert_eq!(topology.node_backend_ifname("v1"), "n-v1");
        assert_eq!(topology.node_ifnames(), ["n-client", "n-v1", "n-v2"]);
        assert_eq!(topology.client_addr().to_string(), "203.0.113.2");
        assert_eq!(topology.client_addr_v6().to_string(), "2001:db8:c::2");
        assert_eq!(topology.node_addr().to_string(), "203.0.113.1");
        assert_eq!(topology.backend_addrs("v1"), [V1, V1_V6]);

        let links = topology
            .node()
            .run(&["ip", "-o", "link", "show"])
            .expect("ip link");
        let links = String::from_utf8_lossy(&links.stdout);
        for ifname in topology.node_ifnames() {
            assert!(
                links.contains(&format!(" {ifname}@")),
                "{ifname} missing in {links}"
            );
        }
        let sysctl = |key: &str| {
            let out = topology.node().run(&["sysctl", "-n", key]).expect("sysctl");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        // Nothing tuned: what a new namespace gets (rp_filter is inherited from the host).
        let host = |key: &str| {
            let out = std::process::Command::new("sysctl")
                .args(["-n", key])
                .output()
                .expect("sysctl on the host");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        assert_eq!(sysctl("net.ipv4.ip_forward"), "0");
        assert_eq!(sysctl("net.ipv6.conf.all.forwarding"), "0");
        assert_eq!(sysctl("net.ipv6.conf.n-v1.accept_ra"), "1");
        assert_eq!(
            sysctl("net.ipv4.conf.all.rp_filter"),
            host("net.ipv4.conf.all.rp_filter")
        );
        // Offloads as the kernel makes a veth: TX checksum offload on, GRO off.
        let features = topology
            .client()
            .run(&["ethtool", "-k", "eth0"])
            .expect("ethtool -k");
        let features = String::from_utf8_lossy(&features.stdout);
        assert!(
            features.contains("tx-checksumming: on")
                && features.contains("generic-receive-offload: off"),
            "{features}"
        );
        topology.enable_forwarding().expect("enable forwarding");
        assert_eq!(sysctl("net.ipv4.ip_forward"), "1");
    }

    #[test]
    fn client_extra_address_is_routed_back() {
        veer_tests::require_root();
        let extra = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 50));
        let topology = Topology::builder()
            .client_addrs(&[extra])
            .backend("v1", &[V1])
            .build()
            .expect("build topology");
        topology.enable_forwarding().expect("enable forwarding");
        let v1 = TcpServer::start(topology.backend("v1"), SocketAddr::new(V1, 8080), "v1")
            .expect("start v1");
        let from = SocketAddr::new(extra, 0);
        assert_eq!(
            ask_once_from(topology.client(), from, v1.addr(), TIMEOUT).expect("ask from extra"),
            "v1"
        );
        let from_udp = topology.client().udp_socket(from).expect("bind extra udp");
        assert_eq!(from_udp.local_addr().expect("local addr").ip(), extra);
    }

    #[test]
    fn local_backend_topology_has_only_node_and_client() {
        veer_tests::require_root();
        let topology = Topology::builder()
            .client()
            .build()
            .expect("build topology");
        assert_eq!(topology.netns_names().len(), 2);
        assert_eq!(topology.node_ifnames(), ["n-client"]);
        let local = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        topology
            .node()
            .run(&["ip", "addr", "add", "192.0.2.10/32", "dev", "lo"])
            .expect("add local address");
        let server = TcpServer::start(topology.node(), SocketAddr::new(local, 80), "local")
            .expect("start local backend");
        assert_eq!(
            ask_once(topology.client(), server.addr(), TIMEOUT).expect("ask local backend"),
            "local"
        );
    }

    #[test]
    fn builder_rejects_bad_input_before_creating_anything() {
        veer_tests::require_root();
        let cases = [
            Topology::builder().backend("v1", &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]),
            Topology::builder()
                .backend("v1", &[V1])
                .backend("v2", &[V1]),
            Topology::builder().backend("v1", &[]),
            Topology::builder().backend("node", &[V1]),
            Topology::builder().backend("bad name", &[V1]),
            Topology::builder()
                .backend("a-very-long-group-1", &[V1])
                .backend("a-very-long-group-2", &[V2]),
        ];
        for builder in cases {
            let described = format!("{builder:?}");
            let err = builder.build().expect_err(&described);
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidInput,
                "{described}: {err}"
            );
        }
    }

    #[test]
    fn teardown_removes_namespaces() {
        let topology = two_group_topology();
        let names = topology.netns_names();
        assert_eq!(names.len(), 4);
        let listed = listed_netns();
        assert!(
            names.iter().all(|n| listed.contains(n)),
            "{names:?} not in {listed:?}"
        );
        drop(topology);
        let listed = listed_netns();
        assert!(
            names.iter().all(|n| !listed.contains(n)),
            "{names:?} left in {listed:?}"
        );

        // Also when the test panics: the namespaces go while unwinding.
        let mut names = Vec::new();
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let topology = two_group_topology();
            let _v1 = TcpServer::start(topology.backend("v1"), SocketAddr::new(V1, 8080), "v1")
                .expect("start v1");
            names = topology.netns_names();
            panic!("deliberate panic with a live topology");
        }));
        assert!(result.is_err());
        assert_eq!(names.len(), 4);
        let listed = listed_netns();
        assert!(
            names.iter().all(|n| !listed.contains(n)),
            "{names:?} left in {listed:?}"
        );
    }

    #[test]
    fn concurrent_topologies_do_not_collide() {
        veer_tests::require_root();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    let topology = routed_two_group_topology();
                    let name = format!("v1-{i}");
                    let v1 =
                        TcpServer::start(topology.backend("v1"), SocketAddr::new(V1, 8080), &name)
                            .expect("start v1");
                    for _ in 0..3 {
                        let answer =
                            ask_once(topology.client(), v1.addr(), TIMEOUT).expect("ask v1");
                        assert_eq!(
                            answer, name,
                            "topology {i} reached another topology's backend"
                        );
                    }
                    topology.netns_names()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for thread in threads {
            let names = thread.join().expect("topology thread");
            for name in names {
                assert!(all.insert(name.clone()), "netns {name} used twice");
            }
        }
        assert_eq!(all.len(), 16);
        let listed = listed_netns();
        assert!(
            all.iter().all(|n| !listed.contains(n)),
            "{all:?} left in {listed:?}"
        );
    }
}

mod servers {
    use std::io::{Read as _, Write as _};
    use std::net::SocketAddr;
    use std::time::Instant;

    use veer_tests::netns::Topology;
    use veer_tests::servers::{TcpServer, UdpServer, ask_http, ask_tcp, ask_udp};

    use super::{Netns, TIMEOUT, V1};

    /// A node with backend group v1 only: servers are asked from the node namespace.
    fn backend_only() -> Topology {
        veer_tests::require_root();
        Topology::builder()
            .backend("v1", &[V1])
            .build()
            .expect("build topology")
    }

    fn connect(ns: &Netns, dst: SocketAddr) -> std::net::TcpStream {
        ns.tcp_connect(dst, TIMEOUT).expect("connect")
    }

    #[test]
    fn tcp_server_answers_every_line_on_one_connection() {
        let topology = backend_only();
        let server = TcpServer::start(topology.backend("v1"), SocketAddr::new(V1, 9000), "blue")
            .expect("start");
        let mut stream = connect(topology.node(), server.addr());
        for _ in 0..5 {
            assert_eq!(ask_tcp(&mut stream).expect("ask"), "blue");
        }
        // Two lines in one write get two answers.
        stream.write_all(b"a\nb\n").expect("write");
        let mut answers = [0_u8; 10];
        stream.read_exact(&mut answers).expect("read two answers");
        assert_eq!(&answers, b"blue\nblue\n");
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn tcp_server_speaks_http_with_keep_alive_and_close() {
        let topology = backend_only();
        let server = TcpServer::start(topology.backend("v1"), SocketAddr::new(V1, 80), "green")
            .expect("start");
        let mut stream = connect(topology.node(), server.addr());
        for _ in 0..3 {
            assert_eq!(ask_http(&mut stream).expect("GET"), "green");
        }
        stream
            .write_all(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read until close");
        assert_eq!(
            response,
            "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\n\
             Connection: close\r\n\r\ngreen\n"
        );
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn udp_server_answers_each_datagram() {
        let topology = backend_only();
        let server = UdpServer::start(topology.backend("v1"), SocketAddr::new(V1, 5353), "v1")
            .expect("start");
        for _ in 0..3 {
            assert_eq!(
                ask_udp(topology.node(), server.addr(), TIMEOUT).expect("ask"),
                "v1"
            );
        }
        assert_eq!(server.datagrams(), 3);
    }

    #[test]
    fn dropping_a_server_closes_live_connections_promptly() {
        let topology = backend_only();
        let server = TcpServer::start(topology.backend("v1"), SocketAddr::new(V1, 9001), "v1")
            .expect("start");
        let addr = server.addr();
        let mut streams: Vec<_> = (0..8).map(|_| connect(topology.node(), addr)).collect();
        for stream in &mut streams {
            assert_eq!(ask_tcp(stream).expect("ask"), "v1");
        }
        assert_eq!(server.live_connections(), 8);

        let started = Instant::now();
        drop(server);
        // Below the server's 5 s stop deadline (what a thread that never woke would cost), with
        // room for a loaded machine to schedule the nine threads it joins.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        for stream in &mut streams {
            let mut byte = [0_u8; 1];
            // EOF or reset: the server side is gone, nothing hangs.
            assert!(matches!(stream.read(&mut byte), Ok(0) | Err(_)));
        }
        assert!(
            topology.node().tcp_connect(addr, TIMEOUT).is_err(),
            "a dropped server still accepts"
        );
    }
}

mod steering {
    //! client ns -> node ns running veer -> backend namespaces v1 and v2 answering with their name.

    use std::{
        net::{IpAddr, SocketAddr},
        time::{Duration, Instant},
    };

    use veer::model::{Backend, DesiredState, Group, Pin, Protocol, Service, Weight};
    use veer_tests::{
        netns::Topology,
        node::SteeredNode,
        servers::{TcpServer, UdpServer, ask_once, ask_once_from, ask_tcp, ask_udp},
    };

    use super::{TIMEOUT, V1, V2};

    const VIP: &str = "192.0.2.10";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn group(name: &str, weight: &str, backends: &[&str]) -> Group {
        Group {
            name: name.into(),
            weight: Weight::from_percent_str(weight).unwrap(),
            backends: backends.iter().map(|a| Backend { addr: sa(a) }).collect(),
        }
    }

    fn service(
        name: &str,
        vip: &str,
        port: u16,
        protocol: Protocol,
        groups: Vec<Group>,
    ) -> Service {
        Service {
            name: name.into(),
            vip: vip.parse().unwrap(),
            port,
            protocol,
            groups,
            pins: vec![],
            health: None,
            rollout: None,
        }
    }

    /// web: VIP:80/tcp over v1 (198.51.100.11:8080) and v2 (198.51.100.21:8080).
    fn web(v1: &str, v2: &str) -> DesiredState {
        DesiredState {
            services: vec![service(
                "web",
                VIP,
                80,
                Protocol::Tcp,
                vec![
                    group("v1", v1, &["198.51.100.11:8080"]),
                    group("v2", v2, &["198.51.100.21:8080"]),
                ],
            )],
        }
    }

    /// The bed: topology, then servers (dropped first), answering with their group's name.
    fn bed() -> (Topology, TcpServer, TcpServer) {
        let topo = Topology::builder()
            .client()
            .backend("v1", &[V1])
            .backend("v2", &[V2])
            .build()
            .unwrap();
        let s1 = TcpServer::start(topo.backend("v1"), SocketAddr::new(V1, 8080), "v1").unwrap();
        let s2 = TcpServer::start(topo.backend("v2"), SocketAddr::new(V2, 8080), "v2").unwrap();
        (topo, s1, s2)
    }

    fn vip(port: u16) -> SocketAddr {
        SocketAddr::new(VIP.parse().unwrap(), port)
    }

    /// Opens `n` short connections to the VIP, one after another, and counts the answers.
    /// Bounded by `n` and by a deadline; any failed connection fails the test.
    fn count_answers(topo: &Topology, n: usize) -> (usize, usize) {
        let deadline = Instant::now() + Duration::from_mins(2);
        let (mut v1, mut v2) = (0, 0);
        for i in 0..n {
            assert!(
                Instant::now() < deadline,
                "only {i} of {n} connections within the deadline"
            );
            match ask_once(topo.client(), vip(80), TIMEOUT)
                .unwrap_or_else(|e| panic!("connection {i} through the VIP failed: {e}"))
                .as_str()
            {
                "v1" => v1 += 1,
                "v2" => v2 += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
        (v1, v2)
    }

    /// A paced drain's end of a flow (`dataplane::ending`): the client's next read sees a reset,
    /// the backend's connection is gone, and a flow of the other group is untouched. On IPv4
    /// through TC steering (the default bed's veth) and the reply program.
    #[test]
    fn ending_a_flow_resets_both_ends_and_nothing_else() {
        use std::io::Read as _;

        use veer::dataplane::ending::{Ended, Ender};
        use veer_common::flow::STATE_CLOSING;

        let (topo, s1, s2) = bed();
        let node = SteeredNode::start(&topo, &web("50", "50"));
        let mut conns = Vec::new();
        while conns.len() < 40 {
            let mut c = topo
                .client()
                .tcp_connect(vip(80), TIMEOUT)
                .unwrap_or_else(|e| panic!("connect: {e}"));
            let name = ask_tcp(&mut c).unwrap_or_else(|e| panic!("ask: {e}"));
            let port = c.local_addr().unwrap().port();
            conns.push((c, name, port));
        }
        assert!(s1.live_connections() > 0 && s2.live_connections() > 0);
        let v2_before = s2.live_connections();
        // The node's maps and raw sockets, from the node namespace (this thread entered it).
        let mut maps_node = node;
        let sender = Ender::new().unwrap_or_else(|e| panic!("{e}"));
        let flows = maps_node.dataplane.maps().flows().unwrap();
        let mut ended = 0;
        for (key, entry) in &flows {
            let port = u16::from_be(key.src_port);
            let Some((_, name, _)) = conns.iter().find(|(_, _, p)| *p == port) else {
                continue;
            };
            if name == "v1" && entry.state != STATE_CLOSING {
                let r = sender
                    .end(maps_node.dataplane.maps_mut(), key)
                    .unwrap_or_else(|e| panic!("{}", veer_tests::prog::error_chain(&e)));
                assert_eq!(r, Ended::Reset);
                ended += 1;
            }
        }
        assert!(ended > 0);
        for (c, name, port) in &mut conns {
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            if name == "v1" {
                let mut buf = [0u8; 16];
                let e = c
                    .read(&mut buf)
                    .expect_err("the client of an ended flow reads a reset, not data or EOF");
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset,
                    "client port {port}: {e}"
                );
            } else {
                assert_eq!(ask_tcp(c).unwrap_or_else(|e| panic!("v2 flow: {e}")), "v2");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while s1.live_connections() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            s1.live_connections(),
            0,
            "v1's ends of the flows were reset"
        );
        assert_eq!(s2.live_connections(), v2_before, "no v2 flow touched");
        let ended_kernel: u64 = [1, 2, 3, 4]
            .iter()
            .filter_map(|id| {
                maps_node
                    .dataplane
                    .maps()
                    .backend_signals(*id)
                    .ok()
                    .flatten()
            })
            .map(|s| s.ended)
            .sum();
        assert_eq!(ended_kernel, ended, "each client reset counted once");
    }

    /// The same end of flows for a backend on the node itself (v2's address on the node's `lo`:
    /// probe and reset go over loopback, the client's reset leaves through `n-client` egress)
    /// and for an IPv6 service with a remote backend.
    #[test]
    fn ending_flows_of_a_local_backend_and_over_ipv6() {
        use std::io::Read as _;

        use veer::dataplane::ending::{Ended, Ender};
        use veer_common::flow::STATE_CLOSING;

        const V1_6: &str = "2001:db8:b::11";
        const LOCAL: &str = "198.51.100.21";
        let topo = Topology::builder()
            .client()
            .backend("v1", &[V1, V1_6.parse().unwrap()])
            .build()
            .unwrap();
        topo.node()
            .run(&["ip", "addr", "add", &format!("{LOCAL}/32"), "dev", "lo"])
            .unwrap();
        let s1 = TcpServer::start(topo.backend("v1"), SocketAddr::new(V1, 8080), "v1").unwrap();
        let s16 =
            TcpServer::start(topo.backend("v1"), sa(&format!("[{V1_6}]:8080")), "v1").unwrap();
        let local = TcpServer::start(topo.node(), sa(&format!("{LOCAL}:8080")), "local").unwrap();
        let mut state = web("50", "50");
        state.services[0].groups[1].backends[0].addr = sa(&format!("{LOCAL}:8080"));
        state.services.push(service(
            "web6",
            "2001:db8::10",
            80,
            Protocol::Tcp,
            vec![group("v1", "100", &[&format!("[{V1_6}]:8080")])],
        ));
        let mut node = SteeredNode::start(&topo, &state);
        let vip6 = sa("[2001:db8::10]:80");
        let mut conns = Vec::new();
        for i in 0..40 {
            let dst = if i % 2 == 0 { vip(80) } else { vip6 };
            let mut c = topo
                .client()
                .tcp_connect(dst, TIMEOUT)
                .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
            let name = ask_tcp(&mut c).unwrap_or_else(|e| panic!("ask: {e}"));
            let v6 = dst == vip6;
            conns.push((c, name, v6));
        }
        let sender = Ender::new().unwrap_or_else(|e| panic!("{e}"));
        let ports: Vec<u16> = conns
            .iter()
            .filter(|(_, n, v6)| n == "local" || *v6)
            .map(|(c, _, _)| c.local_addr().unwrap().port())
            .collect();
        let mut ended = 0;
        for (key, entry) in node.dataplane.maps().flows().unwrap() {
            if ports.contains(&u16::from_be(key.src_port)) && entry.state != STATE_CLOSING {
                let r = sender
                    .end(node.dataplane.maps_mut(), &key)
                    .unwrap_or_else(|e| panic!("{}", veer_tests::prog::error_chain(&e)));
                assert_eq!(r, Ended::Reset);
                ended += 1;
            }
        }
        assert_eq!(ended, ports.len());
        let kept_v1 = s1.live_connections();
        for (c, name, v6) in &mut conns {
            if name == "local" || *v6 {
                c.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut buf = [0u8; 16];
                let e = c.read(&mut buf).expect_err("a reset, not data or EOF");
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset,
                    "{name} (IPv6: {v6}): {e}"
                );
            } else {
                assert_eq!(ask_tcp(c).unwrap(), "v1", "the remote IPv4 flows go on");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while (local.live_connections() > 0 || s16.live_connections() > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            local.live_connections(),
            0,
            "the local backend's ends were reset"
        );
        assert_eq!(
            s16.live_connections(),
            0,
            "the IPv6 backend's ends were reset"
        );
        assert_eq!(s1.live_connections(), kept_v1);
    }

    #[test]
    fn split_accuracy_90_10_over_5000_connections() {
        let (topo, _s1, _s2) = bed();
        let _node = SteeredNode::start(&topo, &web("90", "10"));
        let (v1, v2) = count_answers(&topo, 5000);
        let share = v2 as f64 / 5000.0 * 100.0;
        assert_eq!(v1 + v2, 5000);
        assert!(
            (share - 10.0).abs() <= 1.5,
            "v2 got {share:.2}% of new connections, want 10 ± 1.5"
        );
    }

    #[test]
    fn long_lived_connections_stay_on_v1_across_shifts() {
        let (topo, _s1, _s2) = bed();
        let mut node = SteeredNode::start(&topo, &web("100", "0"));
        let mut conns: Vec<_> = (0..50)
            .map(|i| {
                topo.client()
                    .tcp_connect(vip(80), TIMEOUT)
                    .unwrap_or_else(|e| panic!("connect {i}: {e}"))
            })
            .collect();
        let ask_all = |conns: &mut Vec<std::net::TcpStream>, when: &str| {
            for (i, c) in conns.iter_mut().enumerate() {
                let answer = ask_tcp(c)
                    .unwrap_or_else(|e| panic!("{when}: long-lived connection {i} failed: {e}"));
                assert_eq!(answer, "v1", "{when}: long-lived connection {i} moved");
            }
        };
        ask_all(&mut conns, "at 100/0");
        node.apply(&web("50", "50"));
        ask_all(&mut conns, "after shift to 50/50");
        let (n1, n2) = count_answers(&topo, 200);
        assert!(
            n1 > 50 && n2 > 50,
            "new connections at 50/50 went {n1}/{n2}"
        );
        node.apply(&web("0", "100"));
        ask_all(&mut conns, "after shift to 0/100");
        assert_eq!(
            count_answers(&topo, 100),
            (0, 100),
            "new connections at 0/100"
        );
        ask_all(&mut conns, "at the end");
        // The flows are still tracked on their backend.
        let v1_id = node.dataplane.applied().ids.backends
            [&("web".into(), "v1".into(), sa("198.51.100.11:8080"))];
        let active = node.dataplane.active_flows().unwrap();
        assert!(
            active.get(&v1_id).copied().unwrap_or(0) >= 50,
            "active flows {active:?}"
        );
    }

    #[test]
    fn local_backends_on_two_ports_of_the_node() {
        // The edge case of old and new versions of a proxy on the node itself: the VIP is an
        // address of the node, the backends are two ports on it.
        let topo = Topology::builder().client().build().unwrap();
        let local = "192.0.2.1";
        topo.node()
            .run(&["ip", "addr", "add", &format!("{local}/32"), "dev", "lo"])
            .unwrap();
        let _old = TcpServer::start(topo.node(), sa(&format!("{local}:8081")), "v1").unwrap();
        let _new = TcpServer::start(topo.node(), sa(&format!("{local}:8082")), "v2").unwrap();
        let state = |w1: &str, w2: &str| DesiredState {
            services: vec![service(
                "proxy",
                local,
                80,
                Protocol::Tcp,
                vec![
                    group("v1", w1, &["192.0.2.1:8081"]),
                    group("v2", w2, &["192.0.2.1:8082"]),
                ],
            )],
        };
        let mut node = SteeredNode::start(&topo, &state("50", "50"));
        let dst = sa(&format!("{local}:80"));
        let mut seen = [0; 2];
        for i in 0..100 {
            match ask_once(topo.client(), dst, TIMEOUT)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
                .as_str()
            {
                "v1" => seen[0] += 1,
                "v2" => seen[1] += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
        assert!(
            seen[0] > 10 && seen[1] > 10,
            "50/50 over two local ports went {seen:?}"
        );
        let mut held = topo.client().tcp_connect(dst, TIMEOUT).unwrap();
        let first = ask_tcp(&mut held).unwrap();
        node.apply(&state("0", "100"));
        for i in 0..20 {
            assert_eq!(
                ask_once(topo.client(), dst, TIMEOUT).unwrap(),
                "v2",
                "new connection {i} after the shift"
            );
        }
        assert_eq!(
            ask_tcp(&mut held).unwrap(),
            first,
            "the held connection kept its port"
        );
    }

    #[test]
    fn udp_request_and_response_through_the_vip() {
        let topo = Topology::builder()
            .client()
            .backend("v1", &[V1])
            .build()
            .unwrap();
        let server = UdpServer::start(topo.backend("v1"), SocketAddr::new(V1, 5353), "v1").unwrap();
        let state = DesiredState {
            services: vec![service(
                "dns",
                VIP,
                53,
                Protocol::Udp,
                vec![group("v1", "100", &["198.51.100.11:5353"])],
            )],
        };
        let _node = SteeredNode::start(&topo, &state);
        for i in 0..20 {
            // ask_udp checks the answer comes from the VIP, i.e. was reverse-NATed.
            assert_eq!(
                ask_udp(topo.client(), vip(53), TIMEOUT)
                    .unwrap_or_else(|e| panic!("query {i}: {e}")),
                "v1"
            );
        }
        assert_eq!(server.datagrams(), 20);
    }

    #[test]
    fn a_source_prefix_pin_sends_one_client_prefix_to_v2() {
        let office: IpAddr = "203.0.113.50".parse().unwrap();
        let topo = Topology::builder()
            .client_addrs(&[office])
            .backend("v1", &[V1])
            .backend("v2", &[V2])
            .build()
            .unwrap();
        let _s1 = TcpServer::start(topo.backend("v1"), SocketAddr::new(V1, 8080), "v1").unwrap();
        let _s2 = TcpServer::start(topo.backend("v2"), SocketAddr::new(V2, 8080), "v2").unwrap();
        let mut state = web("100", "0");
        state.services[0].pins.push(Pin {
            prefix: "203.0.113.48".parse().unwrap(),
            len: 29,
            group: "v2".into(),
        });
        let _node = SteeredNode::start(&topo, &state);
        for i in 0..20 {
            let from_office =
                ask_once_from(topo.client(), SocketAddr::new(office, 0), vip(80), TIMEOUT)
                    .unwrap_or_else(|e| panic!("office connection {i}: {e}"));
            assert_eq!(from_office, "v2", "office connection {i}");
            assert_eq!(
                ask_once(topo.client(), vip(80), TIMEOUT).unwrap(),
                "v1",
                "other client, connection {i}"
            );
        }
    }

    mod ipv6 {
        //! The same through IPv6: VIP `2001:db8::10`, backends `2001:db8:b::11` (v1) and `::21` (v2).

        use super::*;

        const V1_6: &str = "2001:db8:b::11";
        const V2_6: &str = "2001:db8:b::21";
        const VIP6: &str = "2001:db8::10";

        fn web6(v1: &str, v2: &str) -> DesiredState {
            DesiredState {
                services: vec![service(
                    "web6",
                    VIP6,
                    80,
                    Protocol::Tcp,
                    vec![
                        group("v1", v1, &["[2001:db8:b::11]:8080"]),
                        group("v2", v2, &["[2001:db8:b::21]:8080"]),
                    ],
                )],
            }
        }

        fn bed6() -> (Topology, TcpServer, TcpServer) {
            let a1: IpAddr = V1_6.parse().unwrap();
            let a2: IpAddr = V2_6.parse().unwrap();
            let topo = Topology::builder()
                .client()
                .backend("v1", &[a1])
                .backend("v2", &[a2])
                .build()
                .unwrap();
            let s1 = TcpServer::start(topo.backend("v1"), SocketAddr::new(a1, 8080), "v1").unwrap();
            let s2 = TcpServer::start(topo.backend("v2"), SocketAddr::new(a2, 8080), "v2").unwrap();
            (topo, s1, s2)
        }

        fn vip6() -> SocketAddr {
            SocketAddr::new(VIP6.parse().unwrap(), 80)
        }

        #[test]
        fn split_accuracy_90_10_over_5000_ipv6_connections() {
            let (topo, _s1, _s2) = bed6();
            let _node = SteeredNode::start(&topo, &web6("90", "10"));
            let (mut v1, mut v2) = (0, 0);
            let deadline = Instant::now() + Duration::from_mins(2);
            for i in 0..5000 {
                assert!(
                    Instant::now() < deadline,
                    "only {i} connections within the deadline"
                );
                match ask_once(topo.client(), vip6(), TIMEOUT)
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"))
                    .as_str()
                {
                    "v1" => v1 += 1,
                    "v2" => v2 += 1,
                    other => panic!("unexpected answer {other:?}"),
                }
            }
            let share = f64::from(v2) / 5000.0 * 100.0;
            assert_eq!(v1 + v2, 5000);
            assert!(
                (share - 10.0).abs() <= 1.5,
                "v2 got {share:.2}% of new IPv6 connections"
            );
        }

        #[test]
        fn long_lived_ipv6_connections_stay_across_a_shift() {
            let (topo, _s1, _s2) = bed6();
            let mut node = SteeredNode::start(&topo, &web6("100", "0"));
            let mut conns: Vec<_> = (0..30)
                .map(|i| {
                    topo.client()
                        .tcp_connect(vip6(), TIMEOUT)
                        .unwrap_or_else(|e| panic!("connect {i}: {e}"))
                })
                .collect();
            for c in &mut conns {
                assert_eq!(ask_tcp(c).unwrap(), "v1");
            }
            node.apply(&web6("0", "100"));
            for (i, c) in conns.iter_mut().enumerate() {
                assert_eq!(
                    ask_tcp(c).unwrap_or_else(|e| panic!("connection {i} after the shift: {e}")),
                    "v1"
                );
            }
            for i in 0..20 {
                assert_eq!(
                    ask_once(topo.client(), vip6(), TIMEOUT).unwrap(),
                    "v2",
                    "new connection {i}"
                );
            }
        }
    }
}

//! Kernel-program tests: real frames through `veer_xdp` and `veer_tc_reply` with
//! `BPF_PROG_TEST_RUN`, checking verdicts and the exact bytes that come out.

use std::net::{IpAddr, SocketAddr};

// This binary links every dependency of `veer-tests`.
use {libc as _, rcgen as _, serde_json as _, tokio as _};

use veer_common::{PROTO_TCP, PROTO_UDP, counters::Reason};
use veer_tests::{
    packet::{PacketBuilder, ethernet_only, tcp_flags},
    prog::{
        Case, Expect, Harness, LOCAL_ADDR, NODE_MAC, Program, Seed, Step, UNRESOLVED_BACKEND,
        neighbour_mac, run_cases,
    },
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const XDP_TX: u32 = 3;
const TC_ACT_OK: u32 = 0;

const CLIENT: &str = "203.0.113.7:40000";
const VIP: &str = "192.0.2.10:80";
const VIP_UDP: &str = "192.0.2.10:53";
const V1: &str = "198.51.100.11:8080";
const V2: &str = "198.51.100.21:8080";
const UDP_BACKEND: &str = "198.51.100.12:5353";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// web: 192.0.2.10:80/tcp, group 1 (v1, backend 1) and group 2 (v2, backend 2) with `weights`;
/// dns: 192.0.2.10:53/udp, group 3 (backend 3).
fn web(weights: (u32, u32)) -> Vec<Seed> {
    vec![
        Seed::group(1, &[(1, V1)]),
        Seed::group(2, &[(2, V2)]),
        Seed::group(3, &[(3, UDP_BACKEND)]),
        Seed::service(1, VIP, PROTO_TCP, &[(1, weights.0), (2, weights.1)]),
        Seed::service(2, VIP_UDP, PROTO_UDP, &[(3, 10_000)]),
    ]
}

fn syn(client: &str, dst: &str) -> PacketBuilder {
    PacketBuilder::tcp(sa(client), sa(dst))
        .tcp_flags(tcp_flags::SYN)
        .seq(1000)
}

/// What a client packet looks like after veer steered it to `backend` through the harness node's
/// `vb0`: destination rewritten, MACs from the neighbour table, TTL decremented.
fn steered(request: &PacketBuilder, client: &str, backend: &str) -> Vec<u8> {
    let b = sa(backend);
    request
        .clone()
        .with_addrs(sa(client), b)
        .eth(NODE_MAC, neighbour_mac(b.ip()))
        .ttl(63)
        .build()
}

mod pass_untouched {
    use super::*;

    fn passes(name: &'static str, input: Vec<u8>) -> Case {
        Case {
            name,
            program: Program::Xdp,
            setup: web((10_000, 0)),
            before: vec![],
            input,
            expect_action: XDP_PASS,
            expect_output: Expect::Unchanged,
        }
    }

    #[test]
    fn not_for_a_service_comes_back_byte_for_byte() {
        let syn_to_vip = syn(CLIENT, VIP).payload(b"hello").build();
        run_cases(&[
            passes("non-IP frame (ARP)", ethernet_only(0x0806, &[0x5a; 28])),
            passes(
                "IPv4 first fragment to the VIP",
                syn(CLIENT, VIP).fragment(0, true).build(),
            ),
            passes(
                "IPv4 later fragment to the VIP",
                syn(CLIENT, VIP).fragment(185, false).build(),
            ),
            passes("truncated TCP header", syn_to_vip[..14 + 20 + 10].to_vec()),
            passes("truncated IPv4 header", syn_to_vip[..14 + 12].to_vec()),
            // Shorter than an Ethernet header cannot be tested: BPF_PROG_TEST_RUN refuses
            // inputs under ETH_HLEN (EINVAL), and drivers never deliver such runts.
            passes("Ethernet header only", syn_to_vip[..14].to_vec()),
            passes("IPv4 total length past the frame", {
                let mut f = syn_to_vip.clone();
                f[16] = 0x05;
                f[17] = 0xdc;
                f
            }),
            passes("IHL below 5", {
                let mut f = syn_to_vip.clone();
                f[14] = 0x44;
                f
            }),
            passes(
                "address with no service",
                syn(CLIENT, "192.0.2.99:80").build(),
            ),
            passes("VIP on another port", syn(CLIENT, "192.0.2.10:81").build()),
            passes("UDP to a TCP-only VIP port", {
                PacketBuilder::udp(sa(CLIENT), sa(VIP))
                    .payload(b"x")
                    .build()
            }),
            passes("ICMP to the VIP", {
                PacketBuilder::ip_proto(
                    "203.0.113.7".parse().unwrap(),
                    "192.0.2.10".parse().unwrap(),
                    1,
                )
                .payload(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0])
                .build()
            }),
            passes("IPv6 with no service", {
                PacketBuilder::tcp(sa("[2001:db8:c::2]:40000"), sa("[2001:db8::10]:80")).build()
            }),
            passes("two VLAN tags (QinQ)", {
                // Outer 802.1ad tag in front of an 802.1Q-tagged SYN to the VIP.
                let mut f = syn(CLIENT, VIP).vlan(200).build();
                f.splice(12..12, [0x88, 0xa8, 0x00, 0x64]);
                f
            }),
        ]);
    }

    #[test]
    fn reply_program_leaves_other_traffic_alone() {
        let tc = |name, input| Case {
            name,
            program: Program::Tc,
            setup: web((10_000, 0)),
            before: vec![],
            input,
            expect_action: TC_ACT_OK,
            expect_output: Expect::Unchanged,
        };
        run_cases(&[
            tc(
                "reply of no flow",
                PacketBuilder::tcp(sa(V1), sa(CLIENT))
                    .tcp_flags(tcp_flags::SYN | tcp_flags::ACK)
                    .build(),
            ),
            tc("ARP", ethernet_only(0x0806, &[0; 28])),
            // An skb test run needs a whole IPv4 header (the kernel refuses shorter inputs).
            tc(
                "truncated TCP header",
                syn(V1, CLIENT).build()[..14 + 20 + 10].to_vec(),
            ),
        ]);
    }
}

mod steering {
    use super::*;

    fn xdp(
        name: &'static str,
        setup: Vec<Seed>,
        before: Vec<Step>,
        input: Vec<u8>,
        action: u32,
        out: Vec<u8>,
    ) -> Case {
        Case {
            name,
            program: Program::Xdp,
            setup,
            before,
            input,
            expect_action: action,
            expect_output: Expect::Frame(out),
        }
    }

    #[test]
    fn new_flows_are_rewritten_to_the_chosen_backend() {
        let req = syn(CLIENT, VIP);
        let udp = PacketBuilder::udp(sa(CLIENT), sa(VIP_UDP)).payload(b"query");
        let with_opts = syn(CLIENT, VIP).ip_options(&[0x94, 0x04, 0, 0]);
        let tagged = syn(CLIENT, VIP).vlan(42);
        run_cases(&[
            xdp(
                "SYN at 100/0 goes to v1",
                web((10_000, 0)),
                vec![],
                req.build(),
                XDP_REDIRECT,
                steered(&req, CLIENT, V1),
            ),
            xdp(
                "SYN at 0/100 goes to v2",
                web((0, 10_000)),
                vec![],
                req.build(),
                XDP_REDIRECT,
                steered(&req, CLIENT, V2),
            ),
            xdp(
                "UDP request",
                web((10_000, 0)),
                vec![],
                udp.build(),
                XDP_REDIRECT,
                steered(&udp, CLIENT, UDP_BACKEND),
            ),
            xdp(
                "SYN with IPv4 options",
                web((10_000, 0)),
                vec![],
                with_opts.build(),
                XDP_REDIRECT,
                steered(&with_opts, CLIENT, V1),
            ),
            xdp(
                "VLAN-tagged SYN: DNAT, tag kept, then the kernel's VLAN device forwards",
                web((10_000, 0)),
                vec![],
                tagged.build(),
                XDP_PASS,
                tagged.clone().with_addrs(sa(CLIENT), sa(V1)).build(),
            ),
        ]);
    }

    #[test]
    fn an_established_flow_keeps_its_backend_after_a_shift() {
        let first = syn(CLIENT, VIP);
        let later = PacketBuilder::tcp(sa(CLIENT), sa(VIP))
            .tcp_flags(tcp_flags::ACK)
            .seq(1001)
            .payload(b"GET /");
        let other_client = syn("203.0.113.8:40001", VIP);
        run_cases(&[
            xdp(
                "data after 100/0 -> 0/100 stays on v1",
                web((10_000, 0)),
                vec![
                    Step::Run(Program::Xdp, first.build()),
                    Step::Seed(web((0, 10_000))),
                ],
                later.build(),
                XDP_REDIRECT,
                steered(&later, CLIENT, V1),
            ),
            xdp(
                "a new flow after the shift goes to v2",
                web((10_000, 0)),
                vec![
                    Step::Run(Program::Xdp, first.build()),
                    Step::Seed(web((0, 10_000))),
                ],
                other_client.build(),
                XDP_REDIRECT,
                steered(&other_client, "203.0.113.8:40001", V2),
            ),
        ]);
    }

    #[test]
    fn a_new_connection_on_a_reused_tuple_follows_the_weights_of_now() {
        // The first connection (to v1) ended; the client reuses its port after the shift. A
        // SYN retransmit (entry still in SYN state) keeps its backend instead.
        let first = syn(CLIENT, VIP);
        let fin =
            PacketBuilder::tcp(sa(CLIENT), sa(VIP)).tcp_flags(tcp_flags::FIN | tcp_flags::ACK);
        let again = syn(CLIENT, VIP).seq(9000);
        run_cases(&[
            xdp(
                "SYN after FIN and a shift goes to v2",
                web((10_000, 0)),
                vec![
                    Step::Run(Program::Xdp, first.build()),
                    Step::Run(Program::Xdp, fin.build()),
                    Step::Seed(web((0, 10_000))),
                ],
                again.build(),
                XDP_REDIRECT,
                steered(&again, CLIENT, V2),
            ),
            xdp(
                "a retransmitted SYN after a shift stays on v1",
                web((10_000, 0)),
                vec![
                    Step::Run(Program::Xdp, first.build()),
                    Step::Seed(web((0, 10_000))),
                ],
                first.build(),
                XDP_REDIRECT,
                steered(&first, CLIENT, V1),
            ),
        ]);
    }

    #[test]
    fn replies_get_the_vip_back() {
        let synack = PacketBuilder::tcp(sa(V1), sa(CLIENT))
            .tcp_flags(tcp_flags::SYN | tcp_flags::ACK)
            .seq(5000)
            .ack(1001);
        let udp_reply = PacketBuilder::udp(sa(UDP_BACKEND), sa(CLIENT)).payload(b"answer");
        let tc = |name, before, input: &PacketBuilder, from: &str| Case {
            name,
            program: Program::Tc,
            setup: web((10_000, 0)),
            before,
            input: input.build(),
            expect_action: TC_ACT_OK,
            expect_output: Expect::Frame(input.clone().with_addrs(sa(from), sa(CLIENT)).build()),
        };
        run_cases(&[
            tc(
                "TCP SYN-ACK",
                vec![Step::Run(Program::Xdp, syn(CLIENT, VIP).build())],
                &synack,
                VIP,
            ),
            tc(
                "UDP answer",
                vec![Step::Run(
                    Program::Xdp,
                    PacketBuilder::udp(sa(CLIENT), sa(VIP_UDP))
                        .payload(b"q")
                        .build(),
                )],
                &udp_reply,
                VIP_UDP,
            ),
        ]);
    }

    #[test]
    fn kernel_handles_local_backends_and_unresolved_neighbours() {
        let req = syn(CLIENT, VIP);
        let local = format!("{LOCAL_ADDR}:8080");
        let unresolved = format!("{UNRESOLVED_BACKEND}:8080");
        let dnat_only = |to: &str| req.clone().with_addrs(sa(CLIENT), sa(to)).build();
        let one_backend = |backend: &str| {
            vec![
                Seed::group(1, &[(1, backend)]),
                Seed::service(1, VIP, PROTO_TCP, &[(1, 10_000)]),
            ]
        };
        run_cases(&[
            xdp(
                "local backend: DNAT, then the kernel delivers",
                one_backend(&local),
                vec![],
                req.build(),
                XDP_PASS,
                dnat_only(&local),
            ),
            xdp(
                "unresolved neighbour: DNAT, then the kernel resolves and forwards",
                one_backend(&unresolved),
                vec![],
                req.build(),
                XDP_PASS,
                dnat_only(&unresolved),
            ),
        ]);
    }

    #[test]
    fn a_source_prefix_pin_beats_the_weights() {
        let pinned = syn("203.0.113.50:40000", VIP);
        let mut setup = web((10_000, 0));
        setup.push(Seed::pin(1, "203.0.113.48/29", 2));
        let other = syn("203.0.113.60:40000", VIP);
        run_cases(&[
            xdp(
                "pinned client goes to v2",
                setup.clone(),
                vec![],
                pinned.build(),
                XDP_REDIRECT,
                steered(&pinned, "203.0.113.50:40000", V2),
            ),
            xdp(
                "client outside the prefix goes to v1",
                setup,
                vec![],
                other.build(),
                XDP_REDIRECT,
                steered(&other, "203.0.113.60:40000", V1),
            ),
        ]);
    }

    #[test]
    fn a_service_with_no_takers_drops_new_flows_and_counts_them() {
        let mut h = Harness::new();
        h.seed(&web((0, 0)));
        let run = h.run(Program::Xdp, &syn(CLIENT, VIP).build());
        assert_eq!(run.action, XDP_DROP);
        assert_eq!(h.maps.reason_count(Reason::NoBackend).unwrap(), 1);
        // A group with weight but no backend takes nothing either.
        let mut h = Harness::new();
        h.seed(&[
            Seed::group(1, &[]),
            Seed::service(1, VIP, PROTO_TCP, &[(1, 10_000)]),
        ]);
        assert_eq!(
            h.run(Program::Xdp, &syn(CLIENT, VIP).build()).action,
            XDP_DROP
        );
    }

    #[test]
    fn tcp_non_syn_without_a_flow_is_steered_by_hash_and_tracked_as_established() {
        // Documented behaviour: a mid-flow packet whose conntrack entry is gone (evicted, or the
        // flow predates veer) gets the backend the flow hash picks now, which is the one it had
        // while weights are unchanged, and an ESTABLISHED entry that keeps it there from now on.
        let mut h = Harness::new();
        h.seed(&web((10_000, 0)));
        let ack = PacketBuilder::tcp(sa(CLIENT), sa(VIP))
            .tcp_flags(tcp_flags::ACK)
            .payload(b"x");
        let run = h.run(Program::Xdp, &ack.build());
        assert_eq!(run.action, XDP_REDIRECT);
        veer_tests::packet::assert_frames_eq(
            "mid-flow ACK",
            &steered(&ack, CLIENT, V1),
            &run.output,
        );
        let flows = h.maps.flows().unwrap();
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].1.state, veer_common::flow::STATE_ESTABLISHED);
        assert_eq!(h.maps.service_counters(1).unwrap().midflow_misses, 1);
    }

    #[test]
    fn conntrack_and_counters_follow_the_tcp_lifecycle() {
        let mut h = Harness::new();
        h.seed(&web((10_000, 0)));
        let client = sa(CLIENT);
        let vip = sa(VIP);
        h.run(Program::Xdp, &syn(CLIENT, VIP).build());
        let state = |h: &Harness| h.maps.flows().unwrap()[0].1.state;
        assert_eq!(state(&h), veer_common::flow::STATE_SYN);
        h.run(
            Program::Tc,
            &PacketBuilder::tcp(sa(V1), client)
                .tcp_flags(tcp_flags::SYN | tcp_flags::ACK)
                .build(),
        );
        assert_eq!(
            state(&h),
            veer_common::flow::STATE_SYN,
            "SYN-ACK alone does not establish"
        );
        h.run(
            Program::Xdp,
            &PacketBuilder::tcp(client, vip)
                .tcp_flags(tcp_flags::ACK)
                .build(),
        );
        assert_eq!(state(&h), veer_common::flow::STATE_ESTABLISHED);
        h.run(
            Program::Tc,
            &PacketBuilder::tcp(sa(V1), client)
                .tcp_flags(tcp_flags::FIN | tcp_flags::ACK)
                .build(),
        );
        assert_eq!(state(&h), veer_common::flow::STATE_CLOSING);
        let c = h.maps.backend_counters(1).unwrap();
        assert_eq!((c.packets, c.new_flows, c.failed_flows), (4, 1, 0));
        assert_eq!(h.maps.backend_counters(2).unwrap().packets, 0);
    }

    #[test]
    fn an_rst_answering_a_syn_counts_as_a_failed_flow() {
        let mut h = Harness::new();
        h.seed(&web((10_000, 0)));
        h.run(Program::Xdp, &syn(CLIENT, VIP).build());
        let rst = PacketBuilder::tcp(sa(V1), sa(CLIENT)).tcp_flags(tcp_flags::RST | tcp_flags::ACK);
        let run = h.run(Program::Tc, &rst.build());
        assert_eq!(run.action, TC_ACT_OK);
        assert_eq!(h.maps.backend_counters(1).unwrap().failed_flows, 1);
    }

    #[test]
    fn flow_entries_name_the_backend_and_the_reverse_nat() {
        let mut h = Harness::new();
        h.seed(&web((10_000, 0)));
        h.run(Program::Xdp, &syn(CLIENT, VIP).build());
        let (key, entry) = h.maps.flows().unwrap()[0];
        let ip = |w: [u32; 4]| veer::dataplane::maps::words_addr(w, key.family);
        assert_eq!(ip(key.src_addr), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            ip(entry.backend_addr),
            "198.51.100.11".parse::<IpAddr>().unwrap()
        );
        assert_eq!(u16::from_be(entry.backend_port), 8080);
        assert_eq!(
            (entry.backend_id, entry.group_id, entry.service_id),
            (1, 1, 1)
        );
    }
}

mod fuzz {
    //! 100,000 random and mutated frames through both programs: no `XDP_ABORTED`, no drop (the
    //! only documented drops, `no_backend` and `rewrite_failed`, cannot happen with this state),
    //! and every frame not addressed to a service comes back byte for byte. Seeded and
    //! reproducible: `VEER_FUZZ_SEED=<n>` replays another seed.

    use rand::Rng as _;
    use veer_tests::packet::{Mutator, decode};

    use super::*;

    const FRAMES: usize = 100_000;
    const DEFAULT_SEED: u64 = 0x7665_6572_2026;

    /// Whether a frame may be steered by `veer_xdp`: it decodes as one non-fragmented TCP/UDP
    /// packet to a service endpoint of `web()`. Frames that fail this must come back untouched.
    /// (Lenient on purpose: any doubt exempts a frame from the byte check, never the reverse.)
    fn maybe_for_a_service(frame: &[u8]) -> bool {
        let Ok(d) = decode(frame) else { return false };
        let Some(dst) = d.dst() else { return false };
        if d.ipv4()
            .is_some_and(veer_tests::packet::Ipv4Header::is_fragment)
        {
            return false;
        }
        (d.tcp().is_some() && dst == sa(VIP)) || (d.udp().is_some() && dst == sa(VIP_UDP))
    }

    /// Whether a frame may be reverse-NATed by `veer_tc_reply`: it comes from a backend.
    fn maybe_a_reply(frame: &[u8]) -> bool {
        let Ok(d) = decode(frame) else { return false };
        d.src()
            .is_some_and(|src| [V1, V2, UDP_BACKEND].iter().any(|b| sa(b) == src))
    }

    /// Outcomes so far, and what went wrong.
    #[derive(Default)]
    struct Tally {
        steered: usize,
        untouched: usize,
        refused: usize,
        replies: usize,
        failures: Vec<String>,
    }

    type RunResult = Result<veer_tests::prog::Run, aya::programs::ProgramError>;

    impl Tally {
        fn xdp(&mut self, i: usize, frame: &[u8], result: RunResult) {
            match result {
                // The kernel refuses test inputs under ETH_HLEN; a driver never delivers them.
                Err(_) if frame.len() < 14 => self.refused += 1,
                Err(e) => self
                    .failures
                    .push(format!("frame {i}: XDP test run failed: {e}")),
                Ok(run) => {
                    if ![XDP_PASS, XDP_REDIRECT, XDP_TX].contains(&run.action) {
                        self.failures.push(format!(
                            "frame {i}: XDP verdict {} for {frame:02x?}",
                            run.action
                        ));
                    }
                    if run.output == frame {
                        self.untouched += 1;
                    } else if maybe_for_a_service(frame) {
                        self.steered += 1;
                    } else {
                        self.failures.push(format!(
                            "frame {i}: not for a service but changed by XDP: {:?}",
                            veer_tests::packet::diff(frame, &run.output)
                        ));
                    }
                }
            }
        }

        fn tc(&mut self, i: usize, frame: &[u8], result: RunResult) {
            match result {
                // The kernel refuses skb test inputs under ETH_HLEN or with a short IP header.
                Err(_) => self.refused += 1,
                Ok(run) => {
                    if run.action != TC_ACT_OK {
                        self.failures.push(format!(
                            "frame {i}: TC verdict {} for {frame:02x?}",
                            run.action
                        ));
                    }
                    if run.output != frame {
                        if maybe_a_reply(frame) {
                            self.replies += 1;
                        } else {
                            self.failures.push(format!(
                                "frame {i}: not a reply but changed by TC: {:?}",
                                veer_tests::packet::diff(frame, &run.output)
                            ));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn random_and_mutated_frames_are_passed_untouched_or_steered_never_aborted() {
        let seed = std::env::var("VEER_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_SEED);
        let mut h = Harness::new();
        let mut setup = web((9_000, 1_000));
        setup.push(Seed::pin(1, "203.0.113.0/25", 2));
        h.seed(&setup);
        let bases: Vec<Vec<u8>> = vec![
            syn(CLIENT, VIP).build(),
            syn(CLIENT, VIP)
                .ip_options(&[0x94, 0x04, 0, 0])
                .payload(b"abc")
                .build(),
            syn(CLIENT, VIP).vlan(7).build(),
            PacketBuilder::tcp(sa(CLIENT), sa(VIP))
                .tcp_flags(tcp_flags::ACK)
                .payload(&[1; 60])
                .build(),
            PacketBuilder::udp(sa(CLIENT), sa(VIP_UDP))
                .payload(b"query")
                .build(),
            PacketBuilder::tcp(sa(V1), sa(CLIENT))
                .tcp_flags(tcp_flags::SYN | tcp_flags::ACK)
                .build(),
            PacketBuilder::udp(sa(UDP_BACKEND), sa(CLIENT))
                .payload(b"answer")
                .build(),
            PacketBuilder::tcp(sa("[2001:db8:c::2]:40000"), sa("[2001:db8::10]:80")).build(),
        ];
        let mut m = Mutator::new(seed);
        let mut tally = Tally::default();
        for i in 0..FRAMES {
            let frame = if m.rng().gen_bool(0.5) {
                m.random_frame()
            } else {
                let base = &bases[m.rng().gen_range(0..bases.len())];
                m.mutate(base)
            };
            tally.xdp(i, &frame, h.try_run(Program::Xdp, &frame));
            tally.tc(i, &frame, h.try_run(Program::Tc, &frame));
            if tally.failures.len() > 20 {
                break;
            }
        }
        let Tally {
            steered,
            untouched,
            refused,
            replies,
            failures,
        } = tally;
        eprintln!(
            "fuzz seed {seed:#x}: {FRAMES} frames, {steered} steered, {untouched} untouched by XDP, \
             {replies} reverse-NATed, {refused} test runs refused by the kernel"
        );
        assert!(
            failures.is_empty(),
            "seed {seed:#x}:\n{}",
            failures.join("\n")
        );
        // The test must exercise both outcomes, or it proves nothing.
        assert!(
            steered > 1_000 && untouched > 10_000 && replies > 100,
            "too few of each outcome"
        );
    }
}

mod ipv6 {
    //! IPv6 parity: DNAT and reverse NAT with the L4 pseudo-header checksum (no IP checksum),
    //! `bpf_fib_lookup` for `AF_INET6`, option headers skipped, routing headers and fragments
    //! passed untouched, pins by IPv6 prefix, VLAN tags kept.

    use super::*;

    const CLIENT6: &str = "[2001:db8:c::2]:40000";
    const VIP6: &str = "[2001:db8::10]:80";
    const VIP6_UDP: &str = "[2001:db8::10]:53";
    const V1_6: &str = "[2001:db8:b::11]:8080";
    const V2_6: &str = "[2001:db8:b::21]:8080";
    const UDP6_BACKEND: &str = "[2001:db8:b::21]:5353";

    fn web6(weights: (u32, u32)) -> Vec<Seed> {
        vec![
            Seed::group(1, &[(1, V1_6)]),
            Seed::group(2, &[(2, V2_6)]),
            Seed::group(3, &[(3, UDP6_BACKEND)]),
            Seed::service(1, VIP6, PROTO_TCP, &[(1, weights.0), (2, weights.1)]),
            Seed::service(2, VIP6_UDP, PROTO_UDP, &[(3, 10_000)]),
        ]
    }

    /// Inserts an IPv6 option header of `kind` (8 bytes, `PadN`) after the IPv6 header of `frame`.
    fn with_option_header(mut frame: Vec<u8>, kind: u8) -> Vec<u8> {
        let l3 = if frame[12..14] == [0x81, 0x00] {
            18
        } else {
            14
        };
        let upper = frame[l3 + 6];
        frame[l3 + 6] = kind;
        let plen = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) + 8;
        frame[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        frame.splice(l3 + 40..l3 + 40, [upper, 0, 1, 4, 0, 0, 0, 0]);
        frame
    }

    fn xdp(
        name: &'static str,
        setup: Vec<Seed>,
        before: Vec<Step>,
        input: Vec<u8>,
        action: u32,
        out: Expect,
    ) -> Case {
        Case {
            name,
            program: Program::Xdp,
            setup,
            before,
            input,
            expect_action: action,
            expect_output: out,
        }
    }

    #[test]
    fn requests_are_rewritten_with_valid_pseudo_header_checksums() {
        let tcp = syn(CLIENT6, VIP6);
        let udp = PacketBuilder::udp(sa(CLIENT6), sa(VIP6_UDP)).payload(b"query");
        let tagged = syn(CLIENT6, VIP6).vlan(42);
        let hop = with_option_header(syn(CLIENT6, VIP6).build(), 0);
        let hop_out = with_option_header(steered(&syn(CLIENT6, VIP6), CLIENT6, V1_6), 0);
        let mut setup_pin = web6((10_000, 0));
        setup_pin.push(Seed::pin(1, "2001:db8:c::/64", 2));
        run_cases(&[
            xdp(
                "TCP SYN",
                web6((10_000, 0)),
                vec![],
                tcp.build(),
                XDP_REDIRECT,
                Expect::Frame(steered(&tcp, CLIENT6, V1_6)),
            ),
            xdp(
                "TCP SYN at 0/100",
                web6((0, 10_000)),
                vec![],
                tcp.build(),
                XDP_REDIRECT,
                Expect::Frame(steered(&tcp, CLIENT6, V2_6)),
            ),
            xdp(
                "UDP request",
                web6((10_000, 0)),
                vec![],
                udp.build(),
                XDP_REDIRECT,
                Expect::Frame(steered(&udp, CLIENT6, UDP6_BACKEND)),
            ),
            xdp(
                "VLAN-tagged SYN: DNAT, tag kept, then the kernel's VLAN device forwards",
                web6((10_000, 0)),
                vec![],
                tagged.build(),
                XDP_PASS,
                Expect::Frame(tagged.clone().with_addrs(sa(CLIENT6), sa(V1_6)).build()),
            ),
            xdp(
                "hop-by-hop options are skipped and kept",
                web6((10_000, 0)),
                vec![],
                hop,
                XDP_REDIRECT,
                Expect::Frame(hop_out),
            ),
            xdp(
                "a /64 pin sends the client to v2",
                setup_pin,
                vec![],
                tcp.build(),
                XDP_REDIRECT,
                Expect::Frame(steered(&tcp, CLIENT6, V2_6)),
            ),
            xdp(
                "an established flow stays after a shift",
                web6((10_000, 0)),
                vec![
                    Step::Run(Program::Xdp, tcp.build()),
                    Step::Seed(web6((0, 10_000))),
                ],
                PacketBuilder::tcp(sa(CLIENT6), sa(VIP6))
                    .tcp_flags(tcp_flags::ACK)
                    .payload(b"x")
                    .build(),
                XDP_REDIRECT,
                Expect::Frame(steered(
                    &PacketBuilder::tcp(sa(CLIENT6), sa(VIP6))
                        .tcp_flags(tcp_flags::ACK)
                        .payload(b"x"),
                    CLIENT6,
                    V1_6,
                )),
            ),
        ]);
    }

    #[test]
    fn what_must_not_be_rewritten_passes_untouched() {
        let routed = with_option_header(syn(CLIENT6, VIP6).build(), 43);
        let fragment = with_option_header(syn(CLIENT6, VIP6).build(), 44);
        run_cases(&[
            xdp(
                "routing header",
                web6((10_000, 0)),
                vec![],
                routed,
                XDP_PASS,
                Expect::Unchanged,
            ),
            xdp(
                "fragment header",
                web6((10_000, 0)),
                vec![],
                fragment,
                XDP_PASS,
                Expect::Unchanged,
            ),
            xdp(
                "IPv6 to another port",
                web6((10_000, 0)),
                vec![],
                syn(CLIENT6, "[2001:db8::10]:81").build(),
                XDP_PASS,
                Expect::Unchanged,
            ),
        ]);
    }

    #[test]
    fn replies_get_the_vip_back() {
        let synack = PacketBuilder::tcp(sa(V1_6), sa(CLIENT6))
            .tcp_flags(tcp_flags::SYN | tcp_flags::ACK)
            .seq(5000)
            .ack(1001);
        let answer = PacketBuilder::udp(sa(UDP6_BACKEND), sa(CLIENT6)).payload(b"answer");
        let tc = |name, before: Vec<u8>, reply: &PacketBuilder, from: &str| Case {
            name,
            program: Program::Tc,
            setup: web6((10_000, 0)),
            before: vec![Step::Run(Program::Xdp, before)],
            input: reply.build(),
            expect_action: TC_ACT_OK,
            expect_output: Expect::Frame(reply.clone().with_addrs(sa(from), sa(CLIENT6)).build()),
        };
        run_cases(&[
            tc("TCP SYN-ACK", syn(CLIENT6, VIP6).build(), &synack, VIP6),
            tc(
                "UDP answer",
                PacketBuilder::udp(sa(CLIENT6), sa(VIP6_UDP))
                    .payload(b"q")
                    .build(),
                &answer,
                VIP6_UDP,
            ),
        ]);
    }
}

mod ports {
    use super::*;

    #[test]
    fn a_route_through_an_interface_veer_is_not_attached_to_goes_to_the_kernel() {
        // Redirecting into a device without XDP transmit support (a VLAN device, a bond ...)
        // would drop the frame, so veer redirects only to its own ports and passes the rest,
        // rewritten but with MACs and TTL untouched, for the kernel to forward.
        let mut h = Harness::new();
        h.seed(&web((10_000, 0)));
        let vb0 = veer::dataplane::ifindex("vb0").unwrap();
        h.maps.remove_tx_port(vb0).unwrap();
        let req = syn(CLIENT, VIP);
        let run = h.run(Program::Xdp, &req.build());
        assert_eq!(run.action, XDP_PASS);
        veer_tests::packet::assert_frames_eq(
            "not a veer port",
            &req.clone().with_addrs(sa(CLIENT), sa(V1)).build(),
            &run.output,
        );
    }
}

mod conntrack_scan {
    use super::*;

    #[test]
    fn a_full_scan_returns_every_flow_exactly_once() {
        // Thousands of flows: the scan reads them in batches across many hash buckets.
        let mut h = Harness::new();
        h.seed(&web((5_000, 5_000)));
        let n = 12_000u16;
        for port in 0..n {
            let client = format!("203.0.113.7:{}", 10_000 + port);
            let run = h.run(Program::Xdp, &syn(&client, VIP).build());
            assert_eq!(run.action, XDP_REDIRECT);
        }
        let flows = h.maps.flows().unwrap();
        assert_eq!(flows.len(), usize::from(n));
        let ports: std::collections::BTreeSet<u16> = flows
            .iter()
            .map(|(k, _)| u16::from_be(k.src_port))
            .collect();
        assert_eq!(ports.len(), usize::from(n), "no flow twice");
        assert_eq!(*ports.first().unwrap(), 10_000);
        assert_eq!(*ports.last().unwrap(), 10_000 + n - 1);
        let by_backend = flows.iter().filter(|(_, e)| e.backend_id == 1).count();
        assert!(
            by_backend > 5_000 && by_backend < 7_000,
            "50/50 split: {by_backend} on v1"
        );
    }
}

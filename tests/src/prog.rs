//! `BPF_PROG_TEST_RUN` harness: loads veer's kernel object (`veer::EBPF_OBJECT`, the daemon's own
//! bytes) with private maps, seeds the maps through the daemon's `Maps` handles with domain
//! helpers, and runs `veer_xdp` / `veer_tc_reply` on given frames.
//!
//! Each harness lives in its own network namespace, entered by the calling thread for the
//! harness's lifetime, so `bpf_fib_lookup` sees a small fixed node and its results are
//! deterministic:
//!
//! | what | value |
//! |---|---|
//! | backend-facing device `vb0` (a veth, peer `vb1`) | MAC `NODE_MAC`, `198.51.100.254/24`, `2001:db8:b::fe/64` |
//! | client-facing device `vc0` (a veth, peer `vc1`) | `203.0.113.254/24`, `2001:db8:c::fe/64` |
//! | resolved neighbours on `vb0` | every address in `NEIGHBOURS`, MAC `02:00:00:00:00:<last byte>` |
//! | unresolved backend | `UNRESOLVED_BACKEND` (no neighbour entry) |
//! | local address (a local backend) | `LOCAL_ADDR` on `lo` |
//! | forwarding | on |
//! | veer's ports (`VEER_TX_PORTS`) | `vb0` |
//! | where `veer_tc_reply`'s frames come in (`__sk_buff.ingress_ifindex`) | `vb0`, unless a test says otherwise (`set_reply_arrival`) |
//!
//! Test cases are data (`Case`): program, map seeds, input, expected verdict and output; a
//! mismatch prints a field-level diff of the frames (`packet::diff`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions},
};
use veer::dataplane::{loader, maglev, maps::Maps};
use veer_common::{
    FAMILY_V4, FAMILY_V6,
    addr::{addr_words, family_of},
    backend::BackendValue,
    flow::{BackendKey, RevNatValue},
    maps::{MAGLEV_TABLE_SIZE, MAX_GROUPS_PER_SERVICE},
    select::cumulative_weights,
    service::{ServiceKey, ServiceValue},
};

use crate::{
    netns::{EnteredNetns, Netns},
    packet,
};

/// MAC address of the harness node's backend-facing device.
pub const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0xfe];
/// Backend addresses with a resolved (permanent) neighbour entry on the harness node.
pub const NEIGHBOURS: [&str; 6] = [
    "198.51.100.11",
    "198.51.100.12",
    "198.51.100.21",
    "198.51.100.22",
    "2001:db8:b::11",
    "2001:db8:b::21",
];
/// A backend address on the backend subnet with no neighbour entry.
pub const UNRESOLVED_BACKEND: &str = "198.51.100.99";
/// An address of the harness node itself (for local backends).
pub const LOCAL_ADDR: &str = "192.0.2.1";

/// The MAC the harness node's neighbour table gives `addr` (one of `NEIGHBOURS`).
pub fn neighbour_mac(addr: IpAddr) -> [u8; 6] {
    let last = match addr {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    [0x02, 0, 0, 0, 0, last]
}

/// One piece of desired state to write into the maps before a run.
#[derive(Clone, Debug)]
pub enum Seed {
    /// A service and its groups `(group id, weight in basis points)`.
    Service {
        /// Service id (counters index).
        id: u32,
        /// VIP and port.
        vip: SocketAddr,
        /// `PROTO_TCP` or `PROTO_UDP`.
        proto: u8,
        /// Groups in order, with their weights.
        groups: Vec<(u32, u32)>,
    },
    /// A group's backends `(backend id, address)`; its Maglev table is built by the daemon's
    /// builder and swapped in.
    Group {
        /// Group id.
        id: u32,
        /// (backend id, address) of every backend of the group.
        backends: Vec<(u32, SocketAddr)>,
    },
    /// A source-prefix pin.
    Pin {
        /// Service id.
        service: u32,
        /// Client prefix.
        prefix: IpAddr,
        /// Prefix length.
        len: u8,
        /// Group id.
        group: u32,
    },
}

fn sock(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad socket address {s:?} in a test seed: {e}"))
}

impl Seed {
    /// A service at `vip` (`"192.0.2.10:80"`) with `groups` `(group id, weight)`.
    pub fn service(id: u32, vip: &str, proto: u8, groups: &[(u32, u32)]) -> Self {
        Seed::Service {
            id,
            vip: sock(vip),
            proto,
            groups: groups.to_vec(),
        }
    }

    /// A group with `backends` `(backend id, "ip:port")`.
    pub fn group(id: u32, backends: &[(u32, &str)]) -> Self {
        Seed::Group {
            id,
            backends: backends.iter().map(|(i, a)| (*i, sock(a))).collect(),
        }
    }

    /// A pin of `prefix` (`"203.0.113.0/24"`) to `group`.
    pub fn pin(service: u32, prefix: &str, group: u32) -> Self {
        let (addr, len) = prefix
            .split_once('/')
            .unwrap_or_else(|| panic!("pin prefix {prefix:?} needs a /length"));
        Seed::Pin {
            service,
            prefix: addr
                .parse()
                .unwrap_or_else(|e| panic!("pin {prefix:?}: {e}")),
            len: len
                .parse()
                .unwrap_or_else(|e| panic!("pin {prefix:?}: {e}")),
            group,
        }
    }
}

/// Which program a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// `veer_xdp`.
    Xdp,
    /// `veer_tc_reply`.
    Tc,
    /// `veer_tc_steer`.
    TcSteer,
}

/// What a case expects to come out.
#[derive(Clone, Debug)]
pub enum Expect {
    /// The input, byte for byte.
    Unchanged,
    /// These bytes.
    Frame(Vec<u8>),
}

/// A step before the frame under test.
#[derive(Clone, Debug)]
pub enum Step {
    /// Run a frame through a program.
    Run(Program, Vec<u8>),
    /// Write more state (e.g. new weights).
    Seed(Vec<Seed>),
}

/// A table-driven test case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Shown on failure.
    pub name: &'static str,
    /// Program to run.
    pub program: Program,
    /// Map state before the run.
    pub setup: Vec<Seed>,
    /// Steps run after `setup` and before `input` (e.g. the SYN that creates a flow, then a
    /// shift), with no check of their own.
    pub before: Vec<Step>,
    /// The frame under test.
    pub input: Vec<u8>,
    /// Expected verdict (`XDP_*` or `TC_ACT_*` as u32).
    pub expect_action: u32,
    /// Expected output frame.
    pub expect_output: Expect,
}

/// Result of one program run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The program's return value.
    pub action: u32,
    /// The frame after the program.
    pub output: Vec<u8>,
}

/// A loaded kernel object with private maps, in its own namespace.
///
/// No `Default`: creating one builds a namespace and loads programs, and panics when it cannot.
pub struct Harness {
    ebpf: Ebpf,
    /// The maps, through the daemon's handles.
    pub maps: Maps,
    /// Backends of each seeded group, and the groups of each seeded service (VIP, protocol), to
    /// write the VIPs each backend serves as the daemon's sync does.
    groups: BTreeMap<u32, Vec<(u32, SocketAddr)>>,
    services: BTreeMap<u32, (SocketAddr, u8, Vec<u32>)>,
    /// The interface `veer_tc_reply`'s frames come in on (0: sent by the node itself).
    reply_arrival: u32,
    // Field order: the thread leaves the namespace before it is deleted.
    _entered: EnteredNetns,
    ns: Netns,
}

impl Harness {
    /// Creates the namespace, enters it and loads the object. Panics with the reason on failure
    /// (not root, no BPF, verifier refusal with its log).
    #[expect(
        clippy::new_without_default,
        reason = "building a harness creates a namespace and loads programs; not a default value"
    )]
    pub fn new() -> Self {
        Self::with(&crate::TEST_LOAD)
    }

    /// Like `new`, loading the object with `opts` (private maps: `pin_dir` must be `None`).
    pub fn with(opts: &loader::LoadOptions) -> Self {
        crate::require_root();
        let ns =
            Netns::create("prog").unwrap_or_else(|e| panic!("creating the harness netns: {e}"));
        let mut script = vec![
            "link add vb0 type veth peer name vb1".to_owned(),
            "link set vb1 up".to_owned(),
            format!(
                "link set vb0 address {} up",
                NODE_MAC.map(|b| format!("{b:02x}")).join(":")
            ),
            "addr add 198.51.100.254/24 dev vb0".to_owned(),
            "addr add 2001:db8:b::fe/64 dev vb0 nodad".to_owned(),
            format!("addr add {LOCAL_ADDR}/32 dev lo"),
            "link add vc0 type veth peer name vc1".to_owned(),
            "link set vc1 up".to_owned(),
            "link set vc0 up".to_owned(),
            "addr add 203.0.113.254/24 dev vc0".to_owned(),
            "addr add 2001:db8:c::fe/64 dev vc0 nodad".to_owned(),
        ];
        for n in NEIGHBOURS {
            let mac = neighbour_mac(n.parse().unwrap_or_else(|e| panic!("{n}: {e}")));
            script.push(format!(
                "neigh add {n} lladdr {} dev vb0 nud permanent",
                mac.map(|b| format!("{b:02x}")).join(":")
            ));
        }
        for line in &script {
            let args: Vec<&str> = std::iter::once("ip").chain(line.split(' ')).collect();
            ns.run(&args)
                .unwrap_or_else(|e| panic!("harness netns setup `ip {line}`: {e}"));
        }
        ns.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.forwarding", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ])
        .unwrap_or_else(|e| panic!("harness netns sysctls: {e}"));
        let entered = ns
            .enter_current_thread()
            .unwrap_or_else(|e| panic!("entering the harness netns: {e}"));
        let mut ebpf = loader::load(opts)
            .unwrap_or_else(|e| panic!("loading veer's kernel object: {}", error_chain(&e)));
        let mut maps = Maps::take(&mut ebpf).unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        let vb0 = veer::dataplane::ifindex("vb0").unwrap_or_else(|e| panic!("{e}"));
        maps.add_tx_port(vb0)
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        Self {
            ebpf,
            maps,
            groups: BTreeMap::new(),
            services: BTreeMap::new(),
            reply_arrival: vb0,
            _entered: entered,
            ns,
        }
    }

    /// Writes seeds into the maps.
    pub fn seed(&mut self, seeds: &[Seed]) {
        for seed in seeds {
            let r = match seed {
                Seed::Service {
                    id,
                    vip,
                    proto,
                    groups,
                } => {
                    self.services.insert(
                        *id,
                        (*vip, *proto, groups.iter().map(|(g, _)| *g).collect()),
                    );
                    self.maps.set_service(
                        ServiceKey {
                            addr: addr_words(vip.ip()),
                            port: vip.port().to_be(),
                            proto: *proto,
                            family: if vip.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 },
                        },
                        service_value(*id, groups),
                    )
                }
                Seed::Group { id, backends } => {
                    self.groups.insert(*id, backends.clone());
                    self.seed_group(*id, backends)
                }
                Seed::Pin {
                    service,
                    prefix,
                    len,
                    group,
                } => self.maps.set_pin(*service, *prefix, *len, *group),
            };
            r.unwrap_or_else(|e| panic!("seeding {seed:?}: {}", error_chain(&e)));
        }
        self.seed_vips();
    }

    /// Writes the VIPs each seeded backend serves (what `dataplane::sync` writes from a state).
    fn seed_vips(&mut self) {
        for (id, (vip, proto, groups)) in &self.services {
            let rev = RevNatValue {
                vip: addr_words(vip.ip()),
                port: vip.port().to_be(),
                _pad: [0; 2],
            };
            for (_, addr) in groups.iter().filter_map(|g| self.groups.get(g)).flatten() {
                let key = BackendKey {
                    addr: addr_words(addr.ip()),
                    port: addr.port().to_be(),
                    proto: *proto,
                    family: family_of(addr.ip()),
                };
                self.maps
                    .merge_backend_vips(key, &[(rev, *id)], |_| true)
                    .unwrap_or_else(|e| panic!("seeding the VIPs of {addr}: {}", error_chain(&e)));
            }
        }
    }

    fn seed_group(
        &mut self,
        id: u32,
        backends: &[(u32, SocketAddr)],
    ) -> Result<(), veer::dataplane::DataplaneError> {
        for (bid, addr) in backends {
            self.maps.set_backend(
                *bid,
                BackendValue {
                    addr: addr_words(addr.ip()),
                    port: addr.port().to_be(),
                    family: if addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 },
                    _pad: 0,
                },
            )?;
        }
        self.maps
            .set_maglev_table(id, &maglev::build(backends, MAGLEV_TABLE_SIZE))
    }

    /// Writes the next-hop cache's clock (`veer_common::nexthop::clock`), as the daemon's keeper
    /// does; the harness starts with the cache off (0).
    pub fn set_nexthop_clock(&mut self, value: u64) {
        let map = self
            .ebpf
            .map_mut(veer_common::maps::NH_CLOCK)
            .unwrap_or_else(|| panic!("{} missing", veer_common::maps::NH_CLOCK));
        let mut clock = aya::maps::Array::<_, u64>::try_from(map).unwrap_or_else(|e| panic!("{e}"));
        clock
            .set(0, value, 0)
            .unwrap_or_else(|e| panic!("writing the next-hop clock: {e}"));
    }

    /// The ifindex of the harness device `name` (`vb0`, `vc0`).
    pub fn ifindex(&self, name: &str) -> u32 {
        veer::dataplane::ifindex(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sets the interface the frames `veer_tc_reply` runs on came in on (`__sk_buff`'s
    /// `ingress_ifindex`, the kernel's `skb_iif`): `vb0` by default, where the harness's backends
    /// are reached; 0 for a frame the node itself sent (a local backend's reply on egress).
    pub fn set_reply_arrival(&mut self, ifindex: u32) {
        self.reply_arrival = ifindex;
    }

    /// Runs `ip ARGS` (space-separated) in the harness namespace: a test changing the node's
    /// neighbours or routes.
    pub fn ip(&self, line: &str) {
        let args: Vec<&str> = std::iter::once("ip").chain(line.split(' ')).collect();
        self.ns
            .run(&args)
            .unwrap_or_else(|e| panic!("harness netns `ip {line}`: {e}"));
    }

    /// Runs `program` once on `input`, panicking if the kernel refuses the test run.
    pub fn run(&mut self, program: Program, input: &[u8]) -> Run {
        self.try_run(program, input).unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN of {program:?} on {} bytes failed: {}",
                input.len(),
                error_chain(&e)
            )
        })
    }

    /// Runs `program` once on `input`. The kernel refuses some inputs itself (EINVAL): frames
    /// under 14 bytes, and for the TC program IPv4 frames without a whole IP header.
    pub fn try_run(
        &mut self,
        program: Program,
        input: &[u8],
    ) -> Result<Run, aya::programs::ProgramError> {
        // Room for the frame plus what a program could add; veer's programs never grow frames.
        let mut out = vec![0u8; input.len() + 256];
        // `struct __sk_buff` up to `tc_index`: every field zero but `ingress_ifindex` (offset 36),
        // which the kernel's test run copies into the skb's `skb_iif` (net/bpf/test_run.c,
        // `convert___skb_to_skb`).
        let mut skb_ctx = [0u8; 48];
        skb_ctx[36..40].copy_from_slice(&self.reply_arrival.to_ne_bytes());
        let opts = TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: (program == Program::Tc).then_some(&skb_ctx[..]),
            ..TestRunOptions::default()
        };
        let result = match program {
            Program::Xdp => loader::xdp_mut(&mut self.ebpf)
                .unwrap_or_else(|e| panic!("{e}"))
                .test_run(opts),
            Program::Tc => loader::tc_mut(&mut self.ebpf)
                .unwrap_or_else(|e| panic!("{e}"))
                .test_run(opts),
            Program::TcSteer => loader::tc_steer_mut(&mut self.ebpf)
                .unwrap_or_else(|e| panic!("{e}"))
                .test_run(opts),
        }?;
        out.truncate(result.data_size_out as usize);
        Ok(Run {
            action: result.return_value,
            output: out,
        })
    }
}

/// Builds a service's map value from `(group id, weight)`.
pub fn service_value(id: u32, groups: &[(u32, u32)]) -> ServiceValue {
    assert!(
        groups.len() <= MAX_GROUPS_PER_SERVICE,
        "too many groups in a test seed"
    );
    let mut ids = [0; MAX_GROUPS_PER_SERVICE];
    for (slot, (g, _)) in ids.iter_mut().zip(groups) {
        *slot = *g;
    }
    let weights: Vec<u32> = groups.iter().map(|(_, w)| *w).collect();
    ServiceValue {
        service_id: id,
        group_count: groups.len() as u32,
        groups: ids,
        cumulative: cumulative_weights(&weights)
            .unwrap_or_else(|| panic!("bad weights {weights:?}")),
    }
}

/// Formats an error with its sources (the verifier log is in a source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Runs every case on a fresh harness and panics once, listing every failed case with its diff.
pub fn run_cases(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let mut h = Harness::new();
        h.seed(&case.setup);
        for step in &case.before {
            match step {
                Step::Run(program, frame) => {
                    h.run(*program, frame);
                }
                Step::Seed(seeds) => h.seed(seeds),
            }
        }
        let run = h.run(case.program, &case.input);
        let expected = match &case.expect_output {
            Expect::Unchanged => &case.input,
            Expect::Frame(f) => f,
        };
        let mut problems = Vec::new();
        if run.action != case.expect_action {
            problems.push(format!(
                "action: expected {}, got {}",
                case.expect_action, run.action
            ));
        }
        problems.extend(packet::diff(expected, &run.output));
        // A rewritten frame must carry valid checksums; an untouched one is whatever it was.
        if let (Expect::Frame(_), Err(e)) =
            (&case.expect_output, packet::verify_checksums(&run.output))
        {
            problems.push(format!("checksum: {e}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case `{}`:\n    {}",
                case.name,
                problems.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

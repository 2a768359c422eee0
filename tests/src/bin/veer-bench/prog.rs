//! Section 1: per-packet cost through `BPF_PROG_TEST_RUN`, veer's programs beside the baselines
//! of `ebpf/src/bench.rs`, in a private namespace whose neighbour table makes `bpf_fib_lookup`
//! answer (as in `veer_tests::prog::Harness`).
//!
//! # Method
//!
//! The kernel runs a program `repeat` times on one buffer and reports the mean time per run. The
//! buffer is *not* restored between runs, so a DNAT program sees its own output from the second
//! run on. To keep every run on the path being measured:
//!
//! - Established flow ("ping-pong"): service A (`198.51.100.11:80`) has one backend, B
//!   (`198.51.100.12:80`), and service B has one backend, A. The client's flows to A and to B are
//!   both confirmed (entries in `VEER_FLOWS`, written by the benchmark), so each run is a hit in
//!   the table of confirmed flows that rewrites A to B or B to A, with fib lookup and redirect. veer decrements the TTL as a router does, so frames start at TTL 255
//!   and a call runs at most [`REPEAT`] = 250 times; a sample is [`CALLS`] calls.
//! - Reply: the same two flows seen from the backends: each run finds its flow through the
//!   backend's VIPs (`VEER_BE_VIPS`) and reverse-NATs B to A or A to B. The backend's
//!   acknowledgment number is the same on every run, so after the first the entry's
//!   `backend_ack` is compared, not stored; single runs with a new acknowledgment number each
//!   time measure the store beside single runs with the same one.
//! - `veer_tc_reply`'s frames come in on the backends' interface (`__sk_buff.ingress_ifindex`), as
//!   real replies do: a segment that changes its flow (SYN-ACK, first response, a new
//!   acknowledgment number) passes the reverse-path check, from its per-CPU cache while the
//!   next-hop clock is on.
//! - The next-hop cache is on, its clock written as the daemon's keeper writes it, so every run
//!   after the first takes the backend's next hop from the cache; one row turns it off (a route
//!   lookup per packet, what the programs do while no daemon watches the node's routes).
//! - `veer_tc_steer` runs the same established frames: a client packet on a TC interface.
//! - The baselines use the same frames and, for the lookup, the same two flows.
//! - New flow (conntrack miss): every run must see a flow it has not seen, so each call runs once
//!   (`repeat = 1`) on a frame from a new source port; the figure is the median over
//!   [`SINGLE_SHOTS`] calls. A single run includes the kernel's timing overhead, so
//!   `bench_pass` and an established flow are measured the same way beside it.
//!
//! Every sample checks the verdict of the last run and that the map counters moved by exactly
//! the number of runs, so a run that took another path fails the benchmark instead of skewing it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData},
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use veer::dataplane::maps::FlowTable;
use veer::dataplane::{
    self,
    loader::{self, LoadOptions},
    maglev,
    maps::Maps,
};
use veer_common::{
    FAMILY_V4, PROTO_TCP,
    addr::addr_words,
    backend::BackendValue,
    counters::Reason,
    flow::{BackendKey, FlowEntry, FlowKey, RevNatValue, STATE_ESTABLISHED},
    maps::MAGLEV_TABLE_SIZE,
    service::ServiceKey,
};
use veer_tests::{
    netns::Netns,
    packet::{PacketBuilder, tcp_flags},
    prog::service_value,
};

use crate::bed::{self, Context as _, Result, bail};

/// Runs per call in steady state (frames start at TTL 255; veer decrements it per run).
pub(crate) const REPEAT: u32 = 250;
/// Calls per sample.
pub(crate) const CALLS: u32 = 2000;
/// Samples per program; the median is reported.
pub(crate) const SAMPLES: usize = 7;
/// Calls of the single-run measurements.
pub(crate) const SINGLE_SHOTS: u32 = 20_000;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

/// An idle veth (no address, no traffic) that each XDP program is attached to, in native mode,
/// while it is measured: `BPF_PROG_TEST_RUN` of an XDP program that is attached nowhere adds it
/// to and removes it from the kernel's XDP dispatcher around every call (`bpf_prog_change_xdp`
/// in `net/bpf/test_run.c`), an update costing milliseconds; attached, the program stays in the
/// dispatcher, the call costs microseconds, and runs go through the dispatcher as on a real
/// interface.
const IDLE_IF: &str = "vx0";

/// Node MAC and neighbour MACs of the namespace.
const NODE_MAC: &str = "02:00:00:00:0b:fe";
const NEIGHBOURS: [(&str, &str); 3] = [
    ("198.51.100.11", "02:00:00:00:00:11"),
    ("198.51.100.12", "02:00:00:00:00:12"),
    ("198.51.100.21", "02:00:00:00:00:21"),
];

/// One measured row.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    /// Name of the program measured.
    pub(crate) program: &'static str,
    /// What the frame is.
    pub(crate) case: &'static str,
    /// Median ns per packet.
    pub(crate) ns: f64,
    /// Every sample's ns per packet.
    pub(crate) samples: Vec<f64>,
}

/// Section 1's figures.
#[derive(Clone, Debug)]
pub(crate) struct Results {
    /// Steady state (repeat), by row.
    pub(crate) steady: Vec<Row>,
    /// Single runs (repeat = 1).
    pub(crate) single: Vec<Row>,
    /// Conntrack upkeep's delete of one expired entry (`Maps::expire_flow`: read again,
    /// compare, delete), in ns, sorted: the window in which a refresh is still lost.
    pub(crate) expiry_ns: Vec<f64>,
}

/// Expired entries deleted to time `Maps::expire_flow`.
pub(crate) const EXPIRIES: u32 = 20_000;

impl Results {
    /// The steady-state median of `program` on `case`.
    pub(crate) fn steady(&self, program: &str, case: &str) -> f64 {
        self.steady
            .iter()
            .find(|r| r.program == program && r.case == case)
            .map_or(f64::NAN, |r| r.ns)
    }

    /// The single-run median of `program` on `case`.
    pub(crate) fn single(&self, program: &str, case: &str) -> f64 {
        self.single
            .iter()
            .find(|r| r.program == program && r.case == case)
            .map_or(f64::NAN, |r| r.ns)
    }
}

/// The median of `v` (NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    }
}

fn sock(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}

const CLIENT: [u8; 4] = [203, 0, 113, 2];
const A: [u8; 4] = [198, 51, 100, 11];
const B: [u8; 4] = [198, 51, 100, 12];
const VIP: [u8; 4] = [192, 0, 2, 10];

/// A client frame (TTL 255, 18 bytes of payload: a 72-byte frame).
fn client_frame(src: SocketAddr, dst: SocketAddr, flags: u8) -> Vec<u8> {
    PacketBuilder::tcp(src, dst)
        .tcp_flags(flags)
        .ttl(255)
        .payload(b"GET / HTTP/1.1\r\n\r\n")
        .build()
}

/// Runs section 1 on its own thread (it enters a namespace).
pub(crate) fn run() -> Result<Results> {
    std::thread::Builder::new()
        .name("prog".into())
        .spawn(measure)
        .context("starting the measuring thread")?
        .join()
        .map_err(|_| "the measuring thread panicked")?
}

/// Sets up the namespace: a backend-facing veth with resolved neighbours, forwarding on.
fn namespace() -> Result<Netns> {
    let ns = Netns::create("bench").context("creating the namespace")?;
    ns.sysctl(&[
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
    ])
    .context("disabling IPv6")?;
    let mut script = vec![
        format!("link add {IDLE_IF} type veth peer name vx1"),
        "link set vx1 up".to_owned(),
        format!("link set {IDLE_IF} up"),
        "link add vb0 type veth peer name vb1".to_owned(),
        "link set vb1 up".to_owned(),
        format!("link set vb0 address {NODE_MAC} up"),
        "addr add 198.51.100.254/24 dev vb0".to_owned(),
    ];
    for (ip, mac) in NEIGHBOURS {
        script.push(format!("neigh add {ip} lladdr {mac} dev vb0 nud permanent"));
    }
    for line in &script {
        let args: Vec<&str> = std::iter::once("ip").chain(line.split(' ')).collect();
        ns.run(&args).context(format!("ip {line}"))?;
    }
    ns.sysctl(&[("net.ipv4.ip_forward", "1")])
        .context("forwarding")?;
    Ok(ns)
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .context(format!("no program {name}"))?
        .try_into()
        .context(format!("{name} is not XDP"))
}

/// veer's maps seeded for the cases: the ping-pong services A and B, and `web` at the VIP with
/// two groups 50/50 (one backend each) for new flows.
fn seed(maps: &mut Maps) -> Result<()> {
    let service = |maps: &mut Maps, id: u32, vip: SocketAddr, groups: &[(u32, u32)]| {
        maps.set_service(
            ServiceKey {
                addr: addr_words(vip.ip()),
                port: vip.port().to_be(),
                proto: PROTO_TCP,
                family: FAMILY_V4,
            },
            service_value(id, groups),
        )
        .map_err(|e| bed::Error::from(veer_tests::prog::error_chain(&e)))
    };
    let group = |maps: &mut Maps, id: u32, backend: u32, addr: SocketAddr| {
        maps.set_backend(
            backend,
            BackendValue {
                addr: addr_words(addr.ip()),
                port: addr.port().to_be(),
                family: FAMILY_V4,
                _pad: 0,
            },
        )
        .and_then(|()| {
            maps.set_maglev_table(id, &maglev::build(&[(backend, addr)], MAGLEV_TABLE_SIZE))
        })
        .map_err(|e| bed::Error::from(veer_tests::prog::error_chain(&e)))
    };
    service(maps, 1, sock(VIP, 80), &[(1, 5000), (2, 5000)])?;
    group(maps, 1, 1, sock(A, 8080))?;
    group(maps, 2, 2, sock([198, 51, 100, 21], 8080))?;
    service(maps, 2, sock(A, 80), &[(3, 10000)])?;
    group(maps, 3, 3, sock(B, 80))?;
    service(maps, 3, sock(B, 80), &[(4, 10000)])?;
    group(maps, 4, 4, sock(A, 80))?;
    // What the daemon's sync writes beside: the VIPs each backend serves.
    for (backend, vip, id) in [
        (sock([198, 51, 100, 11], 8080), sock(VIP, 80), 1),
        (sock([198, 51, 100, 21], 8080), sock(VIP, 80), 1),
        (sock(B, 80), sock(A, 80), 2),
        (sock(A, 80), sock(B, 80), 3),
    ] {
        maps.merge_backend_vips(
            BackendKey {
                addr: addr_words(backend.ip()),
                port: backend.port().to_be(),
                proto: PROTO_TCP,
                family: FAMILY_V4,
            },
            &[(
                RevNatValue {
                    vip: addr_words(vip.ip()),
                    port: vip.port().to_be(),
                    _pad: [0; 2],
                },
                id,
            )],
            |_| true,
        )
        .map_err(|e| bed::Error::from(veer_tests::prog::error_chain(&e)))?;
    }
    Ok(())
}

/// The client-side key of a flow from `src` to `dst`.
fn flow_key(src: SocketAddr, dst: SocketAddr) -> FlowKey {
    FlowKey {
        src_addr: addr_words(src.ip()),
        dst_addr: addr_words(dst.ip()),
        src_port: src.port().to_be(),
        dst_port: dst.port().to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

/// Moves the flow of `key` into `VEER_FLOWS`, established (what its handshake would do).
fn confirm(maps: &mut Maps, key: FlowKey, backend: SocketAddr, id: u32) -> Result<()> {
    let now = veer::dataplane::flows::now_tick();
    let entry = FlowEntry {
        backend_addr: addr_words(backend.ip()),
        backend_port: backend.port().to_be(),
        state: STATE_ESTABLISHED,
        backend_id: id,
        last_seen: now,
        created: now,
        ..FlowEntry::default()
    };
    maps.remove_flow(FlowTable::New, &key)
        .map_err(|e| veer_tests::prog::error_chain(&e))?;
    maps.insert_flow(FlowTable::Flows, key, entry, 0)
        .context("writing a confirmed flow")?;
    Ok(())
}

/// A `struct __sk_buff` (up to `tc_index`) whose `ingress_ifindex` is `ifindex`: what a test run
/// copies into the skb's `skb_iif` (`net/bpf/test_run.c`, `convert___skb_to_skb`). Leaked: it
/// lives as long as the measurement, and the test-run closures need it `'static`.
fn skb_ctx(ifindex: u32) -> &'static [u8] {
    let mut ctx = [0_u8; 48];
    ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes());
    Box::leak(Box::new(ctx))
}

/// Runs `prog` `CALLS` times with `REPEAT`; returns ns per run (mean over every run) and checks
/// the last verdict of every call.
fn sample(
    run: &mut dyn FnMut(TestRunOptions<'_>) -> Result<aya::TestRunResult>,
    frame: &[u8],
    expect: u32,
) -> Result<f64> {
    let mut out = vec![0_u8; frame.len() + 256];
    let mut total_ns = 0_f64;
    for _ in 0..CALLS {
        let r = run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: REPEAT,
            ..TestRunOptions::default()
        })?;
        if r.return_value != expect {
            bail!(
                "verdict {} where {expect} was expected: the runs left the measured path",
                r.return_value
            );
        }
        total_ns += r.duration.as_nanos() as f64;
    }
    Ok(total_ns / f64::from(CALLS))
}

#[expect(
    clippy::too_many_lines,
    reason = "one measurement after the other, each with its check"
)]
fn measure() -> Result<Results> {
    let ns = namespace()?;
    let entered = ns
        .enter_current_thread()
        .context("entering the namespace")?;
    let mut veer = loader::load(&LoadOptions::default())
        .map_err(|e| format!("loading veer: {}", veer_tests::prog::error_chain(&e)))?;
    let mut maps = Maps::take(&mut veer).map_err(|e| veer_tests::prog::error_chain(&e))?;
    maps.add_tx_port(dataplane::ifindex("vb0").map_err(|e| e.to_string())?)
        .map_err(|e| veer_tests::prog::error_chain(&e))?;
    seed(&mut maps)?;
    // veer_tc_reply's frames come in on vb0, where the backends are reached: its reverse-path
    // check compares the skb's input interface with the route toward the backend.
    let reply_ctx = skb_ctx(dataplane::ifindex("vb0").map_err(|e| e.to_string())?);
    // The next-hop cache on, as the daemon's keeper keeps it (a lease covering the run): every
    // run after the first takes its backend's next hop from the cache.
    let mut clock = aya::maps::Array::<_, u64>::try_from(
        veer.take_map(veer_common::maps::NH_CLOCK)
            .context("no next-hop clock in veer's object")?,
    )
    .context("the next-hop clock")?;
    let cache_on =
        veer_common::nexthop::clock(1, veer::dataplane::flows::now_tick().wrapping_add(1 << 22));
    clock
        .set(0, cache_on, 0)
        .context("turning the next-hop cache on")?;

    if veer::BENCH_OBJECT.is_empty() {
        bail!("veer was built without its kernel programs (AYA_BUILD_SKIP): rebuild it");
    }
    let mut base = EbpfLoader::new()
        .load(veer::BENCH_OBJECT)
        .context("loading the baseline programs")?;
    for name in [
        "bench_pass",
        "bench_floor",
        "bench_floor_ct",
        "bench_ct_fib",
    ] {
        let prog = xdp(&mut base, name)?;
        veer::dataplane::loader::load_retrying(name, || prog.load())
            .context(format!("loading {name}"))?;
    }
    let client = sock(CLIENT, 40000);
    {
        let mut ct: BpfHashMap<&mut MapData, FlowKey, FlowEntry> = BpfHashMap::try_from(
            base.map_mut("BENCH_CT")
                .context("no map BENCH_CT in the baseline object")?,
        )
        .context("BENCH_CT")?;
        for (to, backend) in [(A, B), (B, A)] {
            let key = FlowKey {
                src_addr: addr_words(client.ip()),
                dst_addr: addr_words(sock(to, 80).ip()),
                src_port: client.port().to_be(),
                dst_port: 80_u16.to_be(),
                proto: PROTO_TCP,
                family: FAMILY_V4,
                _pad: [0; 2],
            };
            let entry = FlowEntry {
                backend_addr: addr_words(sock(backend, 80).ip()),
                backend_port: 80_u16.to_be(),
                state: STATE_ESTABLISHED,
                ..FlowEntry::default()
            };
            ct.insert(key, entry, 0).context("seeding BENCH_CT")?;
        }
    }

    // The two established ping-pong flows: confirmed entries, as a completed handshake leaves.
    confirm(&mut maps, flow_key(client, sock(A, 80)), sock(B, 80), 3)?;
    confirm(&mut maps, flow_key(client, sock(B, 80)), sock(A, 80), 4)?;
    let ack_a = client_frame(client, sock(A, 80), tcp_flags::ACK);
    let reply_b = PacketBuilder::tcp(sock(B, 80), client)
        .tcp_flags(tcp_flags::ACK)
        .payload(b"HTTP/1.1 200 OK\r\n\r\n")
        .build();
    let no_service = client_frame(client, sock([192, 0, 2, 99], 80), tcp_flags::SYN);

    let runs = u64::from(CALLS) * u64::from(REPEAT);
    let mut steady = Vec::new();
    let mut push = |program: &'static str, case: &'static str, samples: Vec<f64>| {
        println!(
            "  {program:<15} {case:<28} {:>7.1} ns/packet",
            median(&samples)
        );
        steady.push(Row {
            program,
            case,
            ns: median(&samples),
            samples,
        });
    };

    // Baselines.
    for (name, case, frame, expect) in [
        ("bench_pass", "any frame", &ack_a, XDP_PASS),
        ("bench_floor", "TCP to A (fixed rewrite)", &ack_a, XDP_TX),
        ("bench_floor_ct", "established (hash hit)", &ack_a, XDP_TX),
        ("bench_ct_fib", "established (hash hit)", &ack_a, XDP_TX),
    ] {
        let mut samples = Vec::new();
        for _ in 0..SAMPLES {
            bed::check_interrupted()?;
            samples.push(attached(xdp(&mut base, name)?, |p| {
                sample(&mut |o| p.test_run(o).map_err(Into::into), frame, expect)
            })?);
        }
        push(name, case, samples);
    }

    // veer_xdp, established flow.
    let be = |maps: &Maps| -> Result<u64> {
        Ok(maps.backend_counters(3).map_err(|e| e.to_string())?.packets
            + maps.backend_counters(4).map_err(|e| e.to_string())?.packets)
    };
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        bed::check_interrupted()?;
        let before = be(&maps)?;
        samples.push(attached(
            loader::xdp_mut(&mut veer).map_err(|e| e.to_string())?,
            |p| {
                sample(
                    &mut |o| p.test_run(o).map_err(Into::into),
                    &ack_a,
                    XDP_REDIRECT,
                )
            },
        )?);
        let moved = be(&maps)? - before;
        if moved != runs {
            bail!("veer_xdp established: {moved} packets counted for {runs} runs");
        }
    }
    push("veer_xdp", "established (conntrack hit)", samples);

    // The same with the next-hop cache off (no daemon keeping its clock): a route lookup each.
    clock
        .set(0, 0, 0)
        .context("turning the next-hop cache off")?;
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        bed::check_interrupted()?;
        samples.push(attached(
            loader::xdp_mut(&mut veer).map_err(|e| e.to_string())?,
            |p| {
                sample(
                    &mut |o| p.test_run(o).map_err(Into::into),
                    &ack_a,
                    XDP_REDIRECT,
                )
            },
        )?);
    }
    push("veer_xdp", "established, next-hop cache off", samples);
    clock
        .set(0, cache_on, 0)
        .context("turning the next-hop cache on")?;

    // veer_tc_steer, the same established flow: what a client packet costs on TC (veth, bridge
    // ...), where veer rewrites through the kernel's checksum helpers and `bpf_redirect`s.
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        bed::check_interrupted()?;
        let before = be(&maps)?;
        let p: &mut SchedClassifier = loader::tc_steer_mut(&mut veer).map_err(|e| e.to_string())?;
        samples.push(sample(
            &mut |o| p.test_run(o).map_err(Into::into),
            &ack_a,
            TC_ACT_REDIRECT,
        )?);
        let moved = be(&maps)? - before;
        if moved != runs {
            bail!("veer_tc_steer established: {moved} packets counted for {runs} runs");
        }
    }
    push("veer_tc_steer", "established (conntrack hit)", samples);

    // veer_xdp, no service.
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        bed::check_interrupted()?;
        let before = maps
            .reason_count(Reason::NoService)
            .map_err(|e| e.to_string())?;
        samples.push(attached(
            loader::xdp_mut(&mut veer).map_err(|e| e.to_string())?,
            |p| {
                sample(
                    &mut |o| p.test_run(o).map_err(Into::into),
                    &no_service,
                    XDP_PASS,
                )
            },
        )?);
        let moved = maps
            .reason_count(Reason::NoService)
            .map_err(|e| e.to_string())?
            - before;
        if moved != runs {
            bail!("veer_xdp no service: {moved} counted for {runs} runs");
        }
    }
    push("veer_xdp", "no service (passed)", samples);

    // veer_tc_reply, a reply of an established flow.
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        bed::check_interrupted()?;
        let before = be(&maps)?;
        let p: &mut SchedClassifier = loader::tc_mut(&mut veer).map_err(|e| e.to_string())?;
        samples.push(sample(
            &mut |mut o| {
                o.ctx_in = Some(reply_ctx);
                p.test_run(o).map_err(Into::into)
            },
            &reply_b,
            TC_ACT_OK,
        )?);
        let moved = be(&maps)? - before;
        if moved != runs {
            bail!("veer_tc_reply: {moved} packets counted for {runs} runs");
        }
    }
    push("veer_tc_reply", "reply (reverse NAT)", samples);

    // Single runs: new flows (a new source port each), then the same flows established, and
    // bench_pass, so the kernel's per-call timing overhead shows.
    let single_port = |i: u32| 1024 + (i % 60_000) as u16;
    let single_src = |i: u32| sock([203, 0, 113, 10 + (i / 60_000) as u8], single_port(i));
    let mut single = Vec::new();
    let new_flows_before = maps
        .service_counters(1)
        .map_err(|e| e.to_string())?
        .new_flows;
    let miss = attached(
        loader::xdp_mut(&mut veer).map_err(|e| e.to_string())?,
        |p| {
            single_runs(
                "new flow",
                &mut |o| p.test_run(o).map_err(Into::into),
                &|i| client_frame(single_src(i), sock(VIP, 80), tcp_flags::SYN),
                XDP_REDIRECT,
            )
        },
    )?;
    let created = maps
        .service_counters(1)
        .map_err(|e| e.to_string())?
        .new_flows
        - new_flows_before;
    if created != u64::from(SINGLE_SHOTS) {
        bail!("new flows: {created} created for {SINGLE_SHOTS} SYNs");
    }
    // The backends' SYN-ACKs to those flows: each ends a connect-latency measurement.
    let signals = |maps: &Maps| -> Result<veer_common::signals::BackendSignals> {
        let mut sum = veer_common::signals::BackendSignals::default();
        for id in [1, 2] {
            sum += &maps
                .backend_signals(id)
                .map_err(|e| veer_tests::prog::error_chain(&e))?
                .context("backend without signals")?;
        }
        Ok(sum)
    };
    let backend_of = |maps: &Maps, i: u32| -> Result<SocketAddr> {
        let (_, e) = maps
            .flow(&flow_key(single_src(i), sock(VIP, 80)))
            .map_err(|e| veer_tests::prog::error_chain(&e))?
            .context("a new flow left no entry")?;
        Ok(SocketAddr::new(
            veer_common::addr::words_addr(e.backend_addr, FAMILY_V4),
            u16::from_be(e.backend_port),
        ))
    };
    let synacks = (0..SINGLE_SHOTS)
        .map(|i| {
            Ok(PacketBuilder::tcp(backend_of(&maps, i)?, single_src(i))
                .tcp_flags(tcp_flags::SYN | tcp_flags::ACK)
                .seq(5000)
                .ack(1)
                .build())
        })
        .collect::<Result<Vec<_>>>()?;
    let connects_before = signals(&maps)?.histograms.connect.count();
    let synack = {
        let tc = loader::tc_mut(&mut veer).map_err(|e| e.to_string())?;
        single_runs(
            "SYN-ACK",
            &mut |mut o| {
                o.ctx_in = Some(reply_ctx);
                tc.test_run(o).map_err(Into::into)
            },
            &|i| synacks[i as usize].clone(),
            TC_ACT_OK,
        )?
    };
    let connects = signals(&maps)?.histograms.connect.count() - connects_before;
    if connects != u64::from(SINGLE_SHOTS) {
        bail!("SYN-ACKs: {connects} connect latencies recorded for {SINGLE_SHOTS}");
    }
    // The same flows confirmed, as their handshakes would leave them.
    for i in 0..SINGLE_SHOTS {
        let k = flow_key(single_src(i), sock(VIP, 80));
        let (_, e) = maps
            .flow(&k)
            .map_err(|e| veer_tests::prog::error_chain(&e))?
            .context("a new flow left no entry")?;
        let backend = SocketAddr::new(
            veer_common::addr::words_addr(e.backend_addr, FAMILY_V4),
            u16::from_be(e.backend_port),
        );
        confirm(&mut maps, k, backend, e.backend_id)?;
    }
    // The first payload of each flow starts its time to first byte; the next ones (`hit`
    // below) only test the bit that says so.
    let first_payload = attached(
        loader::xdp_mut(&mut veer).map_err(|e| e.to_string())?,
        |p| {
            single_runs(
                "first payload",
                &mut |o| p.test_run(o).map_err(Into::into),
                &|i| client_frame(single_src(i), sock(VIP, 80), tcp_flags::ACK),
                XDP_REDIRECT,
            )
        },
    )?;
    let pending = maps
        .pending_measurements()
        .map_err(|e| veer_tests::prog::error_chain(&e))?;
    if pending != SINGLE_SHOTS as usize {
        bail!("first payloads: {pending} measurements pending for {SINGLE_SHOTS}");
    }
    let hit = attached(
        loader::xdp_mut(&mut veer).map_err(|e| e.to_string())?,
        |p| {
            single_runs(
                "established",
                &mut |o| p.test_run(o).map_err(Into::into),
                &|i| client_frame(single_src(i), sock(VIP, 80), tcp_flags::ACK),
                XDP_REDIRECT,
            )
        },
    )?;
    let after = maps
        .service_counters(1)
        .map_err(|e| e.to_string())?
        .new_flows
        - new_flows_before;
    if after != u64::from(SINGLE_SHOTS) {
        bail!("established single runs created {} flows", after - created);
    }
    // Replies of those flows, single runs: the same acknowledgment number as the entry holds
    // (compared), then a new one each time (compared and stored).
    let reply_of = |i: u32, ack: u32| {
        let e = maps
            .flow(&flow_key(single_src(i), sock(VIP, 80)))
            .ok()
            .flatten()
            .map(|(_, e)| e)
            .unwrap_or_default();
        let backend = SocketAddr::new(
            veer_common::addr::words_addr(e.backend_addr, FAMILY_V4),
            u16::from_be(e.backend_port),
        );
        PacketBuilder::tcp(backend, single_src(i))
            .tcp_flags(tcp_flags::ACK)
            .ack(ack)
            .payload(b"HTTP/1.1 200 OK\r\n\r\n")
            .build()
    };
    let frames_same: Vec<Vec<u8>> = (0..SINGLE_SHOTS).map(|i| reply_of(i, 0)).collect();
    let frames_new: Vec<Vec<u8>> = (0..SINGLE_SHOTS).map(|i| reply_of(i, i + 1)).collect();
    let first_bytes_before = signals(&maps)?.histograms.first_byte.count();
    let tc = loader::tc_mut(&mut veer).map_err(|e| e.to_string())?;
    // The first round stores 0 as each flow's acknowledgment number and records its time to
    // first byte; the measured ones compare.
    let first_response = single_runs(
        "reply",
        &mut |mut o| {
            o.ctx_in = Some(reply_ctx);
            tc.test_run(o).map_err(Into::into)
        },
        &|i| frames_same[i as usize].clone(),
        TC_ACT_OK,
    )?;
    let reply_same = single_runs(
        "reply, same ack",
        &mut |mut o| {
            o.ctx_in = Some(reply_ctx);
            tc.test_run(o).map_err(Into::into)
        },
        &|i| frames_same[i as usize].clone(),
        TC_ACT_OK,
    )?;
    let reply_new = single_runs(
        "reply, new ack",
        &mut |mut o| {
            o.ctx_in = Some(reply_ctx);
            tc.test_run(o).map_err(Into::into)
        },
        &|i| frames_new[i as usize].clone(),
        TC_ACT_OK,
    )?;
    let first_bytes = signals(&maps)?.histograms.first_byte.count() - first_bytes_before;
    if first_bytes != u64::from(SINGLE_SHOTS) {
        bail!("first responses: {first_bytes} times to first byte recorded for {SINGLE_SHOTS}");
    }
    let pass = attached(xdp(&mut base, "bench_pass")?, |p| {
        single_runs(
            "bench_pass",
            &mut |o| p.test_run(o).map_err(Into::into),
            &|i| client_frame(single_src(i), sock(VIP, 80), tcp_flags::SYN),
            XDP_PASS,
        )
    })?;
    for (program, case, v) in [
        ("bench_pass", "any frame", pass),
        ("veer_xdp", "new flow (SYN, conntrack miss)", miss),
        ("veer_xdp", "established (conntrack hit)", hit),
        (
            "veer_tc_reply",
            "SYN-ACK (connect latency recorded)",
            synack,
        ),
        (
            "veer_xdp",
            "first payload (first-byte timer starts)",
            first_payload,
        ),
        (
            "veer_tc_reply",
            "first response (first byte recorded)",
            first_response,
        ),
        ("veer_tc_reply", "reply, same ack (compare)", reply_same),
        (
            "veer_tc_reply",
            "reply, new ack (compare + store)",
            reply_new,
        ),
    ] {
        let m = median(&v);
        println!("  {program:<15} {case:<32} {m:>7.1} ns (single run, median of {SINGLE_SHOTS})");
        single.push(Row {
            program,
            case,
            ns: m,
            samples: vec![m],
        });
    }
    let expiry_ns = expiries(&mut maps)?;
    println!(
        "  upkeep: re-read + delete of an expired entry {:.1} µs (median of {EXPIRIES})",
        median(&expiry_ns) / 1e3
    );
    drop(base);
    drop(maps);
    drop(veer);
    drop(entered);
    drop(ns);
    Ok(Results {
        steady,
        single,
        expiry_ns,
    })
}

/// Times `Maps::expire_flow` on [`EXPIRIES`] expired entries of `VEER_FLOWS`; returns each
/// call's ns, sorted.
fn expiries(maps: &mut Maps) -> Result<Vec<f64>> {
    let seen = FlowEntry {
        state: STATE_ESTABLISHED,
        backend_id: 3,
        last_seen: veer::dataplane::flows::now_tick().wrapping_sub(1 << 22),
        ..FlowEntry::default()
    };
    let key = |i: u32| flow_key(sock([203, 0, 113, 200], 1024 + i as u16), sock(VIP, 80));
    for i in 0..EXPIRIES {
        maps.insert_flow(FlowTable::Flows, key(i), seen, 0)
            .context("writing an expired entry")?;
    }
    let mut v = Vec::with_capacity(EXPIRIES as usize);
    for i in 0..EXPIRIES {
        let t = std::time::Instant::now();
        let r = maps
            .expire_flow(FlowTable::Flows, &key(i), &seen)
            .map_err(|e| veer_tests::prog::error_chain(&e))?;
        v.push(t.elapsed().as_nanos() as f64);
        if r != veer::dataplane::maps::Expiry::Deleted {
            bail!("an expired entry was not deleted: {r:?}");
        }
    }
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// Runs `prog` once on each of [`SINGLE_SHOTS`] frames; returns each run's ns.
fn single_runs(
    what: &str,
    prog: &mut dyn FnMut(TestRunOptions<'_>) -> Result<aya::TestRunResult>,
    frame_of: &dyn Fn(u32) -> Vec<u8>,
    expect: u32,
) -> Result<Vec<f64>> {
    let mut v = Vec::with_capacity(SINGLE_SHOTS as usize);
    for i in 0..SINGLE_SHOTS {
        if i % 1000 == 0 {
            bed::check_interrupted()?;
        }
        let frame = frame_of(i);
        let mut out = vec![0_u8; frame.len() + 256];
        let r = prog(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })?;
        if r.return_value != expect {
            bail!(
                "{what}: verdict {} where {expect} was expected",
                r.return_value
            );
        }
        v.push(r.duration.as_nanos() as f64);
    }
    Ok(v)
}

/// Attaches `prog` to the idle interface (native XDP) for the duration of `f`.
fn attached<R>(prog: &mut Xdp, f: impl FnOnce(&mut Xdp) -> Result<R>) -> Result<R> {
    let link = prog
        .attach(IDLE_IF, aya::programs::XdpMode::Driver)
        .context(format!("attaching to {IDLE_IF}"))?;
    let r = f(prog);
    prog.detach(link)
        .context(format!("detaching from {IDLE_IF}"))?;
    r
}

//! Section 2: requests per second end to end with wrk from the client namespace, keep-alive and
//! new connections, through veer (a real daemon, 50/50 between `v1` and `v2`), beside the same
//! load routed straight to backend `v1` by the node's kernel (no veer), and beside the peers on
//! the node doing the same 50/50 split: nftables DNAT with conntrack (the in-kernel L4 choice)
//! and `HAProxy`. Backends are nginx (2 workers each) answering with their name. The setups take
//! turns within each repetition; the median is reported.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::mpsc,
};

use veer_tests::netns::Topology;

use crate::{
    bed::{self, Context as _, Result, V1, V2, Veer},
    procs::{CpuTimes, Haproxy, Nginx, Wrk, wrk},
};

/// Seconds per measured wrk run.
pub(crate) const RUN_SECS: u32 = 10;
/// Seconds of warm-up per setup and repetition (not counted).
pub(crate) const WARM_SECS: u32 = 2;
/// Runs of each measurement (the report keeps the median).
pub(crate) const REPS: usize = 3;

/// Repetitions and seconds per run of this run (`--quick`: 1 and 3).
pub(crate) fn reps_and_secs() -> (usize, u32) {
    if bed::quick() {
        (1, 3)
    } else {
        (REPS, RUN_SECS)
    }
}
/// wrk threads and connections.
pub(crate) const THREADS: u32 = 2;
/// wrk connections.
pub(crate) const CONNS: u32 = 50;

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

/// The three ways the node handles the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Setup {
    /// Client to `v1:8080`, routed by the node's kernel.
    Plain,
    /// As `Plain`, with an `XDP_PASS` program attached (native) to every node interface: what
    /// running any XDP program on these veths costs, without veer.
    PlainXdp,
    /// Client to the VIP, veer splitting 50/50.
    Veer,
    /// Client to the VIP, veer sending every flow to `v1` (weights `100/0`): the same backend as
    /// `Plain`, so the two differ only by veer.
    VeerOne,
    /// Client to the VIP, sent to `v1` or `v2` at random by an nftables `dnat` rule (conntrack).
    Nftables,
    /// Client to the VIP on `HAProxy`, splitting 50/50.
    Haproxy,
}

impl Setup {
    /// All, in the order they take turns.
    pub(crate) const ALL: [Setup; 6] = [
        Setup::Plain,
        Setup::PlainXdp,
        Setup::Veer,
        Setup::VeerOne,
        Setup::Nftables,
        Setup::Haproxy,
    ];

    /// Name in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Setup::Plain => "plain forwarding (no veer)",
            Setup::PlainXdp => "plain forwarding + XDP_PASS",
            Setup::Veer => "veer",
            Setup::VeerOne => "veer, all to v1 (100/0)",
            Setup::Nftables => "nftables DNAT (conntrack)",
            Setup::Haproxy => "HAProxy",
        }
    }
}

/// One wrk run and the machine's CPU time during it.
#[derive(Clone, Debug)]
pub(crate) struct Measure {
    /// How the node handles the load.
    pub(crate) setup: Setup,
    /// `Connection: close` (new connection per request).
    pub(crate) close: bool,
    /// wrk's figures.
    pub(crate) wrk: Wrk,
    /// Busy CPU seconds of the whole machine during the run.
    pub(crate) busy_secs: f64,
    /// Share of the machine busy during the run.
    pub(crate) busy_share: f64,
}

impl Measure {
    /// Machine CPU microseconds per request.
    pub(crate) fn cpu_us_per_request(&self) -> f64 {
        if self.wrk.requests == 0 {
            return f64::NAN;
        }
        self.busy_secs * 1e6 / self.wrk.requests as f64
    }
}

/// Section 2's figures.
#[derive(Clone, Debug, Default)]
pub(crate) struct Results {
    /// Every measured run.
    pub(crate) runs: Vec<Measure>,
    /// veer's split of new flows (`v1`, `v2`) per repetition (warm-up and both runs).
    pub(crate) veer_split: Vec<(u64, u64)>,
}

impl Results {
    /// Runs of one setup and mode.
    pub(crate) fn of(&self, setup: Setup, close: bool) -> Vec<&Measure> {
        self.runs
            .iter()
            .filter(|m| m.setup == setup && m.close == close)
            .collect()
    }
}

/// What is running on the node for one setup; dropped to switch setups.
enum Node {
    Plain,
    PlainXdp { _pass: XdpPass },
    Veer(Box<Veer>),
    Nftables { _rules: Nftables },
    Haproxy { _proc: Haproxy },
}

/// The nftables ruleset of the `Nftables` setup: DNAT of the VIP to `v1` or `v2` at random
/// (`numgen random mod 2`), in the prerouting hook, so conntrack keeps each connection on its
/// backend and un-NATs its replies.
const NFT_RULESET: &str = "table ip veer_bench {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 192.0.2.10 tcp dport 80 dnat ip to numgen random mod 2 map { 0 : 198.51.100.11 . 8080, 1 : 198.51.100.21 . 8080 }
  }
}
";

/// The nftables DNAT ruleset loaded in the node namespace; deleted on drop.
struct Nftables {
    /// The node namespace's path (`/run/netns/NAME`).
    node: std::path::PathBuf,
}

impl Nftables {
    fn load(topo: &Topology) -> Result<Self> {
        use std::io::Write as _;
        let mut child = topo
            .node()
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("starting nft (is the nftables package installed?)")?;
        child
            .stdin
            .take()
            .context("nft's stdin")?
            .write_all(NFT_RULESET.as_bytes())
            .context("writing the ruleset to nft")?;
        let status = child.wait().context("waiting for nft")?;
        if !status.success() {
            bed::bail!("nft -f refused the ruleset ({status})");
        }
        Ok(Self {
            node: topo.node().path().to_owned(),
        })
    }
}

impl Drop for Nftables {
    fn drop(&mut self) {
        let deleted = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.node.display()))
            .args(["--", "nft", "delete", "table", "ip", "veer_bench"])
            .status();
        if !matches!(deleted, Ok(s) if s.success()) {
            eprintln!("removing the nftables ruleset failed: {deleted:?}");
        }
    }
}

/// Runs section 2.
pub(crate) fn run() -> Result<Results> {
    let topo = bed::two_group_topology()?;
    bed::enable_kernel_forwarding(&topo)?;
    let wide_ports = [
        ("net.ipv4.ip_local_port_range", "1024 65000"),
        ("net.ipv4.tcp_tw_reuse", "1"),
    ];
    topo.client()
        .sysctl(&wide_ports)
        .context("client sysctls")?;
    topo.node().sysctl(&wide_ports).context("node sysctls")?;
    let _n1 = Nginx::backend(topo.backend("v1"), SocketAddr::new(V1, 8080), "v1", 2)?;
    let _n2 = Nginx::backend(topo.backend("v2"), SocketAddr::new(V2, 8080), "v2", 2)?;
    let mut results = Results::default();
    let (reps, secs) = reps_and_secs();
    for rep in 0..reps {
        for setup in Setup::ALL {
            bed::check_interrupted()?;
            let (node, url) = start(&topo, setup)?;
            wrk(topo.client(), url, THREADS, CONNS, WARM_SECS, false)?;
            for close in [false, true] {
                bed::check_interrupted()?;
                let before = CpuTimes::now()?;
                let w = wrk(topo.client(), url, THREADS, CONNS, secs, close)?;
                let after = CpuTimes::now()?;
                let m = Measure {
                    setup,
                    close,
                    wrk: w,
                    busy_secs: before.busy_secs_until(&after),
                    busy_share: before.busy_share_until(&after),
                };
                println!(
                    "  rep {}/{reps}  {:<27} {:<16} {:>9.0} req/s  errors {} non-2xx {}  {:.1} µs CPU/request",
                    rep + 1,
                    setup.name(),
                    if close {
                        "new connections"
                    } else {
                        "keep-alive"
                    },
                    m.wrk.rps,
                    m.wrk.socket_errors,
                    m.wrk.non_2xx,
                    m.cpu_us_per_request()
                );
                results.runs.push(m);
            }
            if let (Node::Veer(v), Setup::Veer) = (&node, setup) {
                let flows = v.group_sums("new_flows")?;
                let of = |g: &str| flows.iter().find(|(n, _)| n == g).map_or(0, |f| f.1);
                results.veer_split.push((of("v1"), of("v2")));
            }
            drop(node);
            if setup == Setup::Haproxy {
                topo.node()
                    .run(&["ip", "addr", "del", "192.0.2.10/32", "dev", "lo"])
                    .context("removing the VIP from the node")?;
            }
        }
    }
    Ok(results)
}

/// Starts what the node runs for `setup`; returns it (dropped to stop it) and the URL wrk asks.
fn start(topo: &Topology, setup: Setup) -> Result<(Node, &'static str)> {
    Ok(match setup {
        Setup::Plain => (Node::Plain, "http://198.51.100.11:8080/"),
        Setup::PlainXdp => (
            Node::PlainXdp {
                _pass: XdpPass::attach(topo)?,
            },
            "http://198.51.100.11:8080/",
        ),
        Setup::Veer | Setup::VeerOne => {
            let (w1, w2) = if setup == Setup::Veer {
                ("50", "50")
            } else {
                ("100", "0")
            };
            (
                Node::Veer(Box::new(Veer::start(
                    topo.node(),
                    &bed::config(&topo.node_ifnames(), w1, w2, 1 << 20),
                )?)),
                "http://192.0.2.10:80/",
            )
        }
        Setup::Nftables => (
            Node::Nftables {
                _rules: Nftables::load(topo)?,
            },
            "http://192.0.2.10:80/",
        ),
        Setup::Haproxy => {
            topo.node()
                .run(&["ip", "addr", "add", "192.0.2.10/32", "dev", "lo"])
                .context("adding the VIP to the node")?;
            (
                Node::Haproxy {
                    _proc: Haproxy::start(
                        topo.node(),
                        SocketAddr::new(VIP, 80),
                        &[
                            ("v1", SocketAddr::new(V1, 8080), 50),
                            ("v2", SocketAddr::new(V2, 8080), 50),
                        ],
                    )?,
                },
                "http://192.0.2.10:80/",
            )
        }
    })
}

/// `bench_pass` attached (native XDP) to every node interface, from a thread inside the node
/// namespace; detached on drop.
struct XdpPass {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl XdpPass {
    fn attach(topo: &Topology) -> Result<Self> {
        let node = topo.node().path().to_owned();
        let ifnames = topo.node_ifnames();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("xdp-pass".into())
            .spawn(move || {
                let attached = (|| -> Result<aya::Ebpf> {
                    let file = std::fs::File::open(&node).context("opening the node namespace")?;
                    // SAFETY: `file` is an open namespace file; CLONE_NEWNET moves only this
                    // thread, which ends after detaching.
                    if unsafe {
                        libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                    } != 0
                    {
                        bed::bail!("setns: {}", std::io::Error::last_os_error());
                    }
                    let mut ebpf = aya::EbpfLoader::new()
                        .load(veer::BENCH_OBJECT)
                        .context("loading bench_pass")?;
                    let prog: &mut aya::programs::Xdp = ebpf
                        .program_mut("bench_pass")
                        .context("no bench_pass")?
                        .try_into()
                        .context("bench_pass is not XDP")?;
                    veer::dataplane::loader::load_retrying("bench_pass", || prog.load())
                        .context("loading bench_pass")?;
                    for i in &ifnames {
                        prog.attach(i, aya::programs::XdpMode::Driver)
                            .context(format!("attaching bench_pass to {i}"))?;
                    }
                    Ok(ebpf)
                })();
                match attached {
                    Ok(ebpf) => {
                        drop(ready_tx.send(Ok(())));
                        // Until told to stop (or the sender is gone).
                        let _: Result<(), mpsc::RecvError> = stop_rx.recv();
                        drop(ebpf);
                    }
                    Err(e) => drop(ready_tx.send(Err(e.to_string()))),
                }
            })
            .context("starting the xdp-pass thread")?;
        let mut pass = Self {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(pass),
            Ok(Err(e)) => {
                pass.detach();
                Err(e.into())
            }
            Err(_) => {
                pass.detach();
                Err("the xdp-pass thread ended early".into())
            }
        }
    }

    fn detach(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            drop(t.join());
        }
    }
}

impl Drop for XdpPass {
    fn drop(&mut self) {
        self.detach();
    }
}

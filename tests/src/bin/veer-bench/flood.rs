//! Section 6: floods against held flows. The bed of `tests/tests/conntrack.rs`: a `veer daemon`
//! with conntrack sized at 4,096 confirmed flows, 20 keep-alive connections held on v1, `veer
//! shift web,dns v1=0 v2=100`, then 100,000 spoofed SYNs to the VIP and, separately, 100,000
//! spoofed UDP datagrams (a raw socket in the client namespace, sources 203.0.113.100-254). A held
//! flow that lost its entry would be steered to v2, which resets it; each is asked again after
//! each flood.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use veer_tests::{
    config::{ConfigBuilder, Family, dns, web},
    forge,
    servers::{UdpServer, ask_tcp},
};

use crate::bed::{self, Context as _, Result, V1, V2, VIP, Veer};

/// Confirmed-flow capacity of the bed.
pub(crate) const CONNTRACK_MAX: u32 = 4096;
/// Keep-alive connections held on v1.
pub(crate) const HELD: usize = 20;
/// Packets per flood.
pub(crate) const FLOOD: u32 = 100_000;

const DNS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 53);

/// One flood's figures.
#[derive(Clone, Debug)]
pub(crate) struct Flood {
    /// `SYN` or `UDP`.
    pub(crate) kind: &'static str,
    /// Packets sent.
    pub(crate) sent: u64,
    /// Seconds it took.
    pub(crate) secs: f64,
    /// Held flows still answering from v1 afterwards.
    pub(crate) intact: usize,
    /// Entries the service counted as created during the flood.
    pub(crate) new_flows: u64,
    /// Entries of the table of confirmed flows after the flood.
    pub(crate) confirmed: u64,
    /// Entries of the table of new flows after the flood.
    pub(crate) new_entries: u64,
    /// Its capacity.
    pub(crate) new_capacity: u64,
}

/// Section 6's figures.
#[derive(Clone, Debug, Default)]
pub(crate) struct Results {
    /// The floods, in order.
    pub(crate) floods: Vec<Flood>,
}

/// The bench config plus a UDP service (`dns` at `192.0.2.10:53`, v1 and v2 on port 5353).
fn config(interfaces: &[String]) -> String {
    ConfigBuilder::new(interfaces)
        .conntrack_max(CONNTRACK_MAX)
        .service(web(Family::V4, "100", "0"))
        .service(dns(Family::V4, "100", "0"))
        .to_toml()
}

fn service<'a>(s: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    s["services"].as_array()?.iter().find(|x| x["name"] == name)
}

/// Asks every held connection once; returns how many answered from v1.
fn intact(held: &mut [TcpStream]) -> usize {
    held.iter_mut()
        .map(|c| ask_tcp(c).is_ok_and(|a| a == "v1"))
        .filter(|ok| *ok)
        .count()
}

/// Runs section 6.
pub(crate) fn run() -> Result<Results> {
    let topo = bed::two_group_topology()?;
    let _servers = bed::name_servers(&topo)?;
    let _udp = [
        UdpServer::start(topo.backend("v1"), SocketAddr::new(V1, 5353), "v1")
            .context("starting the UDP server of v1")?,
        UdpServer::start(topo.backend("v2"), SocketAddr::new(V2, 5353), "v2")
            .context("starting the UDP server of v2")?,
    ];
    let veer = Veer::start(topo.node(), &config(&topo.node_ifnames()))?;
    let mut held = Vec::new();
    for i in 0..HELD {
        let mut c = topo
            .client()
            .tcp_connect(VIP, Duration::from_secs(5))
            .context(format!("held connection {i}"))?;
        let first = ask_tcp(&mut c).context(format!("held connection {i}"))?;
        if first != "v1" {
            bed::bail!("held connection {i} answered by {first}, not v1");
        }
        held.push(c);
    }
    veer.ok(&["shift", "web,dns", "v1=0", "v2=100"])?;
    let mut out = Results::default();
    for (kind, svc, dst) in [("SYN", "web", VIP), ("UDP", "dns", DNS)] {
        bed::check_interrupted()?;
        let before = veer.json(&["status"])?;
        let report = forge::flood(topo.client(), FLOOD, Duration::from_mins(1), |i| {
            if kind == "SYN" {
                forge::spoofed_syn(i, dst)
            } else {
                forge::spoofed_udp(i, dst)
            }
        })
        .context("sending the flood")?;
        bed::sleep(Duration::from_millis(500))?;
        let intact = intact(&mut held);
        let after = veer.json(&["status"])?;
        let count = |s: &serde_json::Value| {
            service(s, svc)
                .and_then(|x| x["new_flows"].as_u64())
                .unwrap_or(0)
        };
        let f = Flood {
            kind,
            sent: report.sent,
            secs: report.elapsed.as_secs_f64(),
            intact,
            new_flows: count(&after) - count(&before),
            confirmed: after["conntrack"]["entries"].as_u64().unwrap_or(0),
            new_entries: after["conntrack"]["new_entries"].as_u64().unwrap_or(0),
            new_capacity: after["conntrack"]["new_capacity"].as_u64().unwrap_or(0),
        };
        println!(
            "  {kind} flood: {} packets in {:.2} s ({:.0}/s); {intact} of {HELD} held flows \
             answer from v1; {} entries created; confirmed {}, new {} of {}",
            f.sent,
            f.secs,
            f.sent as f64 / f.secs,
            f.new_flows,
            f.confirmed,
            f.new_entries,
            f.new_capacity
        );
        out.floods.push(f);
    }
    drop(held);
    drop(veer);
    Ok(out)
}

/// Section 6 as markdown.
pub(crate) fn markdown(r: &Results) -> String {
    let mut s = format!(
        "The bed of `tests/tests/conntrack.rs`: a `veer daemon` with `conntrack_max = {CONNTRACK_MAX}` \
         (the table of confirmed flows; the table of new flows at its default size), {HELD} \
         keep-alive connections held on v1, then `veer shift web,dns v1=0 v2=100`: a held flow \
         that lost its entry would be steered to v2 and reset. Then {FLOOD} SYNs to `web`, and \
         separately {FLOOD} UDP datagrams to `dns`, from spoofed sources (a raw socket in the \
         client namespace, 203.0.113.100-254), as fast as one thread sends them; each held \
         connection is asked again after each flood. On layout 1 (one LRU for every flow) both \
         floods reset all {HELD} held flows.\n\n\
         | flood | packets | seconds | packets/s | held flows answering from v1 | entries created (counted) | confirmed flows after | new-flow table after |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for f in &r.floods {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.0} | **{} of {HELD}** | {} | {} | {} of {} |",
            f.kind,
            f.sent,
            f.secs,
            f.sent as f64 / f.secs,
            f.intact,
            f.new_flows,
            f.confirmed,
            f.new_entries,
            f.new_capacity
        );
    }
    s.push('\n');
    s
}

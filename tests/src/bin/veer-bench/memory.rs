//! Section 5: memory. The daemon's resident set (`VmRSS` of `/proc/PID/status`) idle and holding
//! about a million conntrack entries, and the kernel memory of its maps at the default sizes
//! (`bpftool map show` `bytes_memlock`, summed over the pinned maps and the Maglev tables inside
//! `VEER_MAGLEV`).
//!
//! The million entries are synthetic: one real connection through the VIP gives an entry, and
//! copies of it under new client tuples (same backend, established, last seen now) are written
//! into the daemon's pinned `VEER_FLOWS` (the table of confirmed flows) through the same
//! user-space API the daemon uses.
//!
//! With those entries it also measures what a `/metrics` scrape costs (the daemon serves it
//! from the census of its last upkeep pass) beside `veer status` (which scans the whole map,
//! under the control lock, to be exact, as every scrape did before).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use veer_common::{
    addr::addr_words,
    flow::{FlowEntry, FlowKey, STATE_ESTABLISHED},
};
use veer_tests::servers::ask_once;

use crate::bed::{self, Context as _, Result, VIP, Veer, bail};

/// Conntrack capacity (the default) and the entries written.
pub(crate) const CONNTRACK_MAX: u32 = 1 << 20;
/// Synthetic entries written.
pub(crate) const ENTRIES: u32 = 1_000_000;
/// Where the daemon serves metrics, in the node namespace.
const METRICS: &str = "127.0.0.1:9464";
/// Scrapes timed.
pub(crate) const SCRAPES: usize = 20;

/// Section 5's figures.
#[derive(Clone, Debug, Default)]
pub(crate) struct Results {
    /// Daemon `VmRSS` at idle (KiB).
    pub(crate) idle_rss_kib: u64,
    /// Daemon `VmRSS` holding the entries, after upkeep passes and a `veer status` (KiB).
    pub(crate) full_rss_kib: u64,
    /// Daemon `VmHWM` (peak) at the end (KiB).
    pub(crate) full_hwm_kib: u64,
    /// Entries the daemon counted as active flows.
    pub(crate) active_flows: u64,
    /// How long writing the entries took (s).
    pub(crate) insert_secs: f64,
    /// `veer status` round trip with the entries (ms).
    pub(crate) status_ms: f64,
    /// `GET /metrics` wall times with the entries (ms), once an upkeep pass counted them.
    pub(crate) scrape_ms: Vec<f64>,
    /// `veer_conntrack_entries` in the scrapes.
    pub(crate) scraped_entries: u64,
    /// Daemon CPU share of one core while idle with the entries (conntrack upkeep).
    pub(crate) upkeep_cpu_share: f64,
    /// Kernel memory per map: (name, bytes).
    pub(crate) maps: Vec<(String, u64)>,
}

impl Results {
    /// Sum of the maps' kernel memory (bytes).
    pub(crate) fn maps_total(&self) -> u64 {
        self.maps.iter().map(|m| m.1).sum()
    }
}

/// Kernel memory (`bytes_memlock`) of the pinned maps under `pin_dir`, and of the inner maps of
/// `VEER_MAGLEV`.
fn map_memory(pin_dir: &std::path::Path) -> Result<Vec<(String, u64)>> {
    let bpftool = |args: &[&str]| -> Result<serde_json::Value> {
        let out = Command::new("bpftool")
            .args(args)
            .output()
            .context("running bpftool")?;
        if !out.status.success() {
            bail!(
                "bpftool {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("bpftool printed no JSON")
    };
    let mut maps = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(pin_dir)
        .context(format!("listing {}", pin_dir.display()))?
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let p = path.to_string_lossy().into_owned();
        let info = bpftool(&["-j", "map", "show", "pinned", &p])?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        maps.push((name.clone(), info["bytes_memlock"].as_u64().unwrap_or(0)));
        if name == veer_common::maps::MAGLEV {
            let dump = bpftool(&["-j", "map", "dump", "pinned", &p])?;
            let mut inner_total = 0;
            let mut inner_count = 0;
            for e in dump.as_array().into_iter().flatten() {
                // `inner_map_id`, a number, or (without BTF for the value) little-endian hex bytes.
                let id = e["inner_map_id"]
                    .as_u64()
                    .or_else(|| e["value"].as_u64())
                    .or_else(|| {
                        let bytes: Vec<u8> = e["value"]
                            .as_array()?
                            .iter()
                            .filter_map(|b| {
                                u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok()
                            })
                            .collect();
                        Some(u64::from(u32::from_le_bytes(
                            bytes.get(..4)?.try_into().ok()?,
                        )))
                    });
                let Some(id) = id else {
                    continue;
                };
                let info = bpftool(&["-j", "map", "show", "id", &id.to_string()])?;
                inner_total += info["bytes_memlock"].as_u64().unwrap_or(0);
                inner_count += 1;
            }
            maps.push((format!("{name} tables ({inner_count} groups)"), inner_total));
        }
    }
    Ok(maps)
}

/// One `GET /metrics` from the calling thread (inside the node namespace): the body.
fn scrape() -> Result<String> {
    let addr: SocketAddr = METRICS.parse().context("metrics address")?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).context("connect")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .context("timeout")?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {METRICS}\r\nConnection: close\r\n\r\n"
    )
    .context("request")?;
    let mut out = String::new();
    s.read_to_string(&mut out).context("answer")?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => bail!("unexpected answer: {}", out.lines().next().unwrap_or("")),
    }
}

/// `veer_conntrack_entries` of a scrape.
fn entries(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix("veer_conntrack_entries ")?
            .trim()
            .parse()
            .ok()
    })
}

/// Times `SCRAPES` scrapes once an upkeep pass counted at least `want` entries.
fn time_scrapes(topo: &veer_tests::netns::Topology, want: u64, r: &mut Results) -> Result<()> {
    let _entered = topo
        .node()
        .enter_current_thread()
        .context("entering the node namespace")?;
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        if let Some(n) = entries(&scrape()?)
            && n >= want
        {
            r.scraped_entries = n;
            break;
        }
        if Instant::now() >= deadline {
            bail!("no upkeep pass counted the entries within a minute");
        }
        bed::sleep(Duration::from_millis(200))?;
    }
    for _ in 0..SCRAPES {
        let t = Instant::now();
        scrape()?;
        r.scrape_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

/// CPU ticks (user + system) of process `pid`.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading stat")?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = text.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).context("utime")?;
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).context("stime")?;
    Ok(utime + stime)
}

/// Runs section 5.
pub(crate) fn run() -> Result<Results> {
    let topo = bed::two_group_topology()?;
    let _servers = bed::name_servers(&topo)?;
    let veer = Veer::start_with_metrics(
        topo.node(),
        &bed::config(&topo.node_ifnames(), "100", "0", CONNTRACK_MAX),
        METRICS,
    )?;
    let mut r = Results::default();
    bed::sleep(Duration::from_secs(3))?;
    r.idle_rss_kib = veer.proc_status_kib("VmRSS")?;
    r.maps = map_memory(&veer.pin_dir)?;

    // One real flow, held open, gives a template entry.
    let held = topo
        .client()
        .tcp_connect(VIP, Duration::from_secs(2))
        .context("connecting to the VIP")?;
    let mut held = held;
    veer_tests::servers::ask_tcp(&mut held).context("asking through the VIP")?;
    ask_once(topo.client(), VIP, Duration::from_secs(2)).context("asking through the VIP")?;
    let data = MapData::from_pin(veer.pin_dir.join(veer_common::maps::FLOWS))
        .context("opening the pinned table of confirmed flows")?;
    let mut ct: BpfHashMap<MapData, FlowKey, FlowEntry> =
        BpfHashMap::try_from(Map::HashMap(data)).context("table of confirmed flows")?;
    let template = ct
        .iter()
        .filter_map(std::result::Result::ok)
        .map(|(_, v)| v)
        .next()
        .context("no confirmed flow after a connection through the VIP")?;
    let start = Instant::now();
    let now = veer::dataplane::flows::now_tick();
    for i in 0..ENTRIES {
        if i % 50_000 == 0 {
            bed::check_interrupted()?;
        }
        let src = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 100 + (i / 60_000) as u8)),
            1024 + (i % 60_000) as u16,
        );
        let key = FlowKey {
            src_addr: addr_words(src.ip()),
            dst_addr: addr_words(VIP.ip()),
            src_port: src.port().to_be(),
            dst_port: VIP.port().to_be(),
            proto: veer_common::PROTO_TCP,
            family: veer_common::FAMILY_V4,
            _pad: [0; 2],
        };
        let entry = FlowEntry {
            state: STATE_ESTABLISHED,
            last_seen: now,
            created: now,
            ..template
        };
        ct.insert(key, entry, 0)
            .context("writing a conntrack entry")?;
    }
    r.insert_secs = start.elapsed().as_secs_f64();
    // A few upkeep passes, then the CPU they take.
    bed::sleep(Duration::from_secs(3))?;
    let pid = veer.pid().context("the daemon is gone")?;
    let ticks = cpu_ticks(pid)?;
    let t = Instant::now();
    bed::sleep(Duration::from_secs(5))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    r.upkeep_cpu_share = (cpu_ticks(pid)? - ticks) as f64 / hz / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let flows = veer.active_flows()?;
    r.status_ms = t.elapsed().as_secs_f64() * 1e3;
    r.active_flows = flows.iter().map(|f| f.1).sum();
    time_scrapes(&topo, u64::from(ENTRIES), &mut r)?;
    r.full_rss_kib = veer.proc_status_kib("VmRSS")?;
    r.full_hwm_kib = veer.proc_status_kib("VmHWM")?;
    println!(
        "  daemon RSS idle {} KiB, with {} flows {} KiB (peak {} KiB); insert {:.1} s; status {:.0} ms; scrape {:.1} ms (median of {SCRAPES}); upkeep {:.0}% of a core",
        r.idle_rss_kib,
        r.active_flows,
        r.full_rss_kib,
        r.full_hwm_kib,
        r.insert_secs,
        r.status_ms,
        crate::prog::median(&r.scrape_ms),
        r.upkeep_cpu_share * 100.0
    );
    println!(
        "  kernel map memory {:.1} MiB: {:?}",
        r.maps_total() as f64 / 1_048_576.0,
        r.maps
    );
    drop(held);
    Ok(r)
}

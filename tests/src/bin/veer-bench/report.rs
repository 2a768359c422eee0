//! BENCHMARKS.md: the figures of one run, the machine they come from, the targets and whether
//! each was met. Nothing here rounds a figure toward a target.

use std::{fmt::Write as _, process::Command};

use veer_common::maps;

use crate::{
    downtime, fleet, flood, memory, net,
    prog::{self, median},
    shift,
};

/// Section 1b: veer beside Katran through the shared harness, which runs outside this program
/// (it builds Katran from its source); its last result, with the command that made it.
const KATRAN: &str = include_str!("katran.md");

/// Every section's outcome (an error message when a section failed).
pub(crate) struct Report {
    /// Section 1.
    pub(crate) prog: Result<prog::Results, String>,
    /// Section 2.
    pub(crate) net: Result<net::Results, String>,
    /// Section 3.
    pub(crate) shift: Result<shift::Results, String>,
    /// Section 4.
    pub(crate) downtime: Result<Vec<downtime::Scenario>, String>,
    /// Section 5.
    pub(crate) memory: Result<memory::Results, String>,
    /// Section 6.
    pub(crate) flood: Result<flood::Results, String>,
    pub(crate) fleet: Result<fleet::Results, String>,
    /// Wall time of the whole run (s).
    pub(crate) secs: f64,
    /// `/proc/loadavg`'s 1-minute load average when the run started: other work on a shared
    /// machine shows in it (and in the one at the end).
    pub(crate) load_at_start: String,
    /// Shorter runs (development only).
    pub(crate) quick: bool,
}

/// The 1-minute load average now.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn sh(cmd: &str) -> String {
    match Command::new("sh").args(["-c", cmd]).output() {
        Ok(o) => {
            let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if out.is_empty() {
                String::from_utf8_lossy(&o.stderr).trim().to_owned()
            } else {
                out
            }
        }
        Err(e) => format!("({cmd}: {e})"),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

/// A target row: (target, measured, verdict).
struct Target {
    what: String,
    measured: String,
    ok: Option<bool>,
}

/// The document being written, and the targets its sections measured.
#[derive(Default)]
struct Doc {
    text: String,
    targets: Vec<Target>,
}

impl Report {
    /// The whole file: the header, the targets table (filled from the sections' findings), then
    /// each section.
    pub(crate) fn markdown(&self) -> String {
        let mut doc = Doc::default();
        self.header(&mut doc.text);
        let targets_at = doc.text.len();
        prog_section(&self.prog, &mut doc);
        doc.text.push_str(KATRAN);
        net_section(&self.net, &mut doc);
        shift_section(&self.shift, &mut doc);
        downtime_section(&self.downtime, &mut doc);
        memory_section(&self.memory, &mut doc);
        flood_section(&self.flood, &mut doc);
        doc.text.push_str(&fleet::markdown(&self.fleet));
        let table = targets_table(&doc.targets);
        doc.text.insert_str(targets_at, &table);
        doc.text
    }

    /// Title, how the figures were made, the machine, the test bed.
    fn header(&self, w: &mut String) {
        let _ = writeln!(w, "# veer benchmarks\n");
        let _ = writeln!(
            w,
            "Every figure below comes from one run of `cargo xtask bench` (as root), which builds \
             everything in release mode, runs `tests/src/bin/veer-bench/` and rewrites this file. \
             Comparisons are measured side by side in the same run on the same machine. Rerun it \
             to check any figure; expect run-to-run noise of a few percent on shared machines.\n"
        );
        if self.quick {
            let _ = writeln!(
                w,
                "> **Quick run** (`--quick`: shorter runs, fewer repetitions): for development, not for citing.\n"
            );
        }
        let mem_gib = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo");
        let _ = writeln!(w, "| | |\n|---|---|");
        let _ = writeln!(w, "| command | `cargo xtask bench` |");
        let _ = writeln!(w, "| date | {} |", sh("date -u '+%Y-%m-%d %H:%M UTC'"));
        let _ = writeln!(
            w,
            "| machine | {} CPUs (`nproc`), {}, {mem_gib} RAM |",
            sh("nproc"),
            sh("awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo")
        );
        let _ = writeln!(w, "| kernel | {} |", sh("uname -r"));
        let _ = writeln!(
            w,
            "| tools | {}; {}; {}; {} |",
            first_line(&sh("haproxy -v")),
            first_line(&sh("nginx -v 2>&1")),
            first_line(&sh("wrk -v 2>&1")),
            first_line(&sh("bpftool version"))
        );
        let _ = writeln!(w, "| run time | {:.0} s |", self.secs);
        let _ = writeln!(
            w,
            "| load average (1 min), start → end | {} → {} (above 0, other work shared the CPUs: \
             compare setups within the run, not across runs) |\n",
            self.load_at_start,
            load_average()
        );
        let _ = writeln!(
            w,
            "The test bed is the one of `tests/` (`veer_tests::netns::Topology`): a client \
             namespace (`203.0.113.2`), the node namespace where veer (or the comparison) runs, \
             and one namespace per backend group (`v1` `198.51.100.11`, `v2` `198.51.100.21`), \
             joined by veth pairs, at the kernel's default offloads and sysctls (TX checksum \
             offload on, GRO off, as a container runtime leaves them; the node's forwarding is \
             turned on for the plain-forwarding baselines only, veer sets what it needs itself). \
             veer steers the veths from TC (`veer_tc_steer`, see the README's hook table). \
             Client, node, backends and load generator share the same CPUs, so the end-to-end \
             figures measure what each setup costs the whole machine.\n"
        );
    }
}

/// Section 1: what one packet costs each program.
fn prog_section(result: &Result<prog::Results, String>, doc: &mut Doc) {
    let Doc { text: w, targets } = doc;
    let _ = writeln!(w, "## 1. Per-packet cost (`BPF_PROG_TEST_RUN`)\n");
    match result {
        Err(e) => {
            let _ = writeln!(w, "This section failed: `{e}`\n");
            targets.push(Target {
                what: "established flow within 1.3× of floor + one conntrack lookup".into(),
                measured: "section failed".into(),
                ok: None,
            });
        }
        Ok(p) => {
            let _ = writeln!(
                w,
                "The kernel runs a program on a frame `repeat` times and reports the mean \
                 time per run. Steady state: {} runs per call, {} calls per sample, the median \
                 of {} samples (each sample's mean is in the last column). The baselines are \
                 `ebpf/src/bench.rs`, loaded from the same build. Frames are 72-byte \
                 IPv4/TCP. Each XDP program is attached (native) to an idle veth while it is \
                 measured, so the kernel's XDP dispatcher is not rebuilt around every call.\n",
                prog::REPEAT,
                prog::CALLS,
                prog::SAMPLES
            );
            let _ = writeln!(
                w,
                "The kernel does not restore the frame between runs, and veer rewrites it, \
                 so the established-flow and reply cases use two services that point at each \
                 other (A's backend is B, B's is A): every run is a hit in the table of \
                 confirmed flows (`VEER_FLOWS`) that rewrites A→B or B→A, next hop (from the \
                 next-hop cache, on as the daemon keeps it) and redirect included; a reply \
                 finds its flow through its backend's VIPs (`VEER_BE_VIPS`, then \
                 `VEER_FLOWS`). Every sample checks \
                 the last verdict and that veer's counters moved by exactly the number of \
                 runs.\n"
            );
            let _ = writeln!(
                w,
                "| program | frame | ns/packet | vs `bench_pass` | samples |\n|---|---|---:|---:|---|"
            );
            let pass = p.steady("bench_pass", "any frame");
            for r in &p.steady {
                let _ = writeln!(
                    w,
                    "| `{}` | {} | {:.1} | {:.2}× | {} |",
                    r.program,
                    r.case,
                    r.ns,
                    r.ns / pass,
                    r.samples
                        .iter()
                        .map(|s| format!("{s:.1}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let est = p.steady("veer_xdp", "established (conntrack hit)");
            let floor = p.steady("bench_floor", "TCP to A (fixed rewrite)");
            let floor_ct = p.steady("bench_floor_ct", "established (hash hit)");
            let ct_fib = p.steady("bench_ct_fib", "established (hash hit)");
            let ratio = est / floor_ct;
            let _ = writeln!(
                w,
                "\n- `bench_floor` = parse + DNAT with incremental checksums + `XDP_TX`; \
                 `bench_floor_ct` = that plus one lookup in a hash shaped like veer's table \
                 of confirmed flows (same key, value, type and capacity): the target's \
                 \"floor + one conntrack lookup\", measured, {floor_ct:.1} ns (the lookup alone: \
                 {:.1} ns).",
                floor_ct - floor
            );
            let _ = writeln!(
                w,
                "- veer, established flow: **{est:.1} ns = {ratio:.2}× floor + one conntrack \
                 lookup** (target ≤ 1.3×: {}).",
                met(ratio <= 1.3)
            );
            let cache_off = p.steady("veer_xdp", "established, next-hop cache off");
            let _ = writeln!(
                w,
                "- Where the difference goes: `bench_ct_fib` adds only `bpf_fib_lookup` and \
                 the MAC rewrite from its answer to `bench_floor_ct` and costs {ct_fib:.1} ns \
                 ({:.1} ns for the fib lookup). veer takes a backend's next hop from its \
                 next-hop cache (README, *Next-hop cache*) while the daemon watches the \
                 node's routes; with the cache off (no daemon keeping its clock) the same \
                 flow costs {cache_off:.1} ns, {:.1} ns more. veer's own work beyond a \
                 looked-up DNAT is {:.1} ns: the service lookup, the coarse clock, \
                 conntrack state, per-CPU counters, TTL, the cache and `bpf_redirect_map`.",
                ct_fib - floor_ct,
                cache_off - est,
                est - floor_ct
            );
            reply_path(p, w, targets);
            targets.push(Target {
                what: "established flow ≤ 1.3× floor + one conntrack lookup (section 1)".into(),
                measured: format!("{est:.1} ns vs {floor_ct:.1} ns: {ratio:.2}×"),
                ok: Some(ratio <= 1.3),
            });
            prog_single_runs(p, w);
        }
    }
}

/// Section 1, the canary judge's signals: what each flow event costs beside the same packet
/// without it.
fn prog_signals(p: &prog::Results, w: &mut String) {
    let hit = p.single("veer_xdp", "established (conntrack hit)");
    let first = p.single("veer_xdp", "first payload (first-byte timer starts)");
    let same = p.single("veer_tc_reply", "reply, same ack (compare)");
    let new = p.single("veer_tc_reply", "reply, new ack (compare + store)");
    let response = p.single("veer_tc_reply", "first response (first byte recorded)");
    let synack = p.single("veer_tc_reply", "SYN-ACK (connect latency recorded)");
    let _ = writeln!(
        w,
        "Signals for the canary judge (`ebpf/src/signals.rs`) are taken at a flow's events \
         only; every other packet of an established flow tests one bit of the entry it \
         already holds, so the steady-state rows above carry them. Single runs, median of \
         {} calls each, beside the same packet without the event:\n",
        prog::SINGLE_SHOTS
    );
    let _ = writeln!(
        w,
        "| event | ns | the same packet without it | ns | cost |\n|---|---:|---|---:|---:|"
    );
    for (event, v, without, base) in [
        (
            "client's first payload (`VEER_FLOW_TIMES` insert, `bpf_ktime_get_ns`)",
            first,
            "a later payload of the flow",
            hit,
        ),
        (
            "backend's first payload (lookup, histogram, delete)",
            response,
            "a reply storing a new acknowledgment number",
            new,
        ),
        (
            "backend's SYN-ACK (lookup, histogram, delete; state and ISN stored)",
            synack,
            "a reply of an established flow",
            same,
        ),
    ] {
        let _ = writeln!(
            w,
            "| {event} | {v:.0} | {without} | {base:.0} | {:+.0} |",
            v - base
        );
    }
    let _ = writeln!(
        w,
        "\nThe new-flow row above includes the SYN's `VEER_FLOW_TIMES` insert (the start of \
         connect latency). Backend resets and flow durations are recorded once per flow, at \
         its close.\n"
    );
}

/// Section 1, the reply path against an established client packet, and its target.
fn reply_path(p: &prog::Results, w: &mut String, targets: &mut Vec<Target>) {
    let est = p.steady("veer_xdp", "established (conntrack hit)");
    let steer = p.steady("veer_tc_steer", "established (conntrack hit)");
    let reply = p.steady("veer_tc_reply", "reply (reverse NAT)");
    let _ = writeln!(
        w,
        "- Reply path: `veer_tc_reply` reverse-NATs a backend's reply in {reply:.1} ns, \
         {:.2}× an established client packet through `veer_xdp` ({est:.1} ns; target \
         ≤ 1×: {}) and {:.2}× one through `veer_tc_steer` ({steer:.1} ns), the \
         client-side program of the same TC interfaces.",
        reply / est,
        met(reply <= est),
        reply / steer
    );
    targets.push(Target {
        what: "reply (reverse NAT) ≤ an established client packet through `veer_xdp` \
               (section 1)"
            .into(),
        measured: format!("{reply:.1} ns vs {est:.1} ns: {:.2}×", reply / est),
        ok: Some(reply <= est),
    });
}

/// Section 1, new flows: single runs beside an established flow measured the same way.
fn prog_single_runs(p: &prog::Results, w: &mut String) {
    let sp = p.single("bench_pass", "any frame");
    let miss = p.single("veer_xdp", "new flow (SYN, conntrack miss)");
    let hit = p.single("veer_xdp", "established (conntrack hit)");
    let _ = writeln!(
        w,
        "\nNew flows (conntrack miss): every run must meet a flow it has not seen, so \
         each call runs once, on a SYN from a new source port to the VIP of a 50/50 \
         service (Maglev tables, weights, a lookup in each flow table, one insert); \
         median of {} calls. \
         A single run carries the kernel's timing overhead, which `bench_pass` shows, \
         and runs on colder caches, so an established flow (an ACK on each of those \
         flows, confirmed meanwhile) and replies of those flows are measured the same \
         way beside it:\n",
        prog::SINGLE_SHOTS
    );
    let _ = writeln!(
        w,
        "| single run, median | ns | minus `bench_pass` |\n|---|---:|---:|"
    );
    let same = p.single("veer_tc_reply", "reply, same ack (compare)");
    let new = p.single("veer_tc_reply", "reply, new ack (compare + store)");
    for (what, v) in [
        ("`bench_pass`", sp),
        ("`veer_xdp` new flow (SYN, miss)", miss),
        ("`veer_xdp` established (hit)", hit),
        ("`veer_tc_reply` reply, same acknowledgment number", same),
        ("`veer_tc_reply` reply, new acknowledgment number", new),
    ] {
        let _ = writeln!(w, "| {what} | {v:.0} | {:.0} |", v - sp);
    }
    let _ = writeln!(
        w,
        "\nA new flow costs {:.1}× an established one measured the same way. \
         Tracking the backend's last acknowledgment number (what a client RST must \
         match) compares it on every reply with ACK and stores it when it changed: \
         {:.0} ns with a store against {:.0} ns without, a difference of {:.0} ns \
         (within the noise of single runs when it is near 0).\n",
        (miss - sp) / (hit - sp),
        new,
        same,
        new - same
    );
    prog_signals(p, w);
    let q = |f: f64| {
        p.expiry_ns
            .get(((p.expiry_ns.len() as f64 - 1.0) * f) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let _ = writeln!(
        w,
        "Conntrack upkeep deletes an expired entry only if it is unchanged when read \
         again right before the delete (`Maps::expire_flow`); a packet that refreshes \
         it between that read and the delete is lost with it. The whole read, compare \
         and delete of one entry, timed over {} expired entries: median {:.1} µs, \
         p99 {:.1} µs, the bound of that window.\n",
        prog::EXPIRIES,
        q(0.5) / 1e3,
        q(0.99) / 1e3
    );
}

/// Section 2: requests per second end to end, against plain forwarding, nftables and `HAProxy`.
fn net_section(result: &Result<net::Results, String>, doc: &mut Doc) {
    let Doc { text: w, targets } = doc;
    let _ = writeln!(w, "## 2. End to end: requests per second (wrk)\n");
    match result {
        Err(e) => {
            let _ = writeln!(w, "This section failed: `{e}`\n");
            for what in [
                "keep-alive ≥ 97% of plain forwarding",
                "new connections ≥ 95% of plain forwarding",
            ] {
                targets.push(Target {
                    what: what.into(),
                    measured: "section failed".into(),
                    ok: None,
                });
            }
        }
        Ok(n) => {
            let _ = writeln!(
                w,
                "`wrk -t{} -c{} -d{}s` from the client namespace, after a {} s warm-up per \
                 setup; {} repetitions in which the setups take turns; medians. \
                 Backends: nginx (Debian, 2 workers each) answering `200` with its name. \
                 *Plain forwarding*: the client asks `v1` directly (`198.51.100.11:8080`), \
                 routed by the node's kernel, no veer. *Plain forwarding + XDP_PASS*: the same, with \
                 `bench_pass` (returns `XDP_PASS`) attached in native mode to every node \
                 interface: what running any XDP program on these veths costs (veer's own \
                 XDP program ran there before it steered veths from TC). *veer*: a real \
                 `veer daemon` on the \
                 node, the client asks the VIP, 50/50 between `v1` and `v2`; *veer, all to \
                 v1*: the same with weights 100/0, so that the backend is plain \
                 forwarding's own and the two differ by veer only. *nftables \
                 DNAT*: an nftables `dnat` rule in the node's prerouting hook sending the \
                 VIP to `v1` or `v2` at random (`numgen random mod 2`), conntrack keeping \
                 each connection on its backend and un-NATing its replies: the in-kernel L4 \
                 peer. *HAProxy*: \
                 HAProxy (Debian, `nbthread 2`, HTTP mode, round robin, weights 50/50) \
                 listening on the VIP on the node. *New connections*: `-H \"Connection: \
                 close\"`, one request per connection. CPU per request: busy time of the \
                 whole machine from `/proc/stat` (client, node, backends and wrk together; \
                 softirq included) divided by the requests completed. (Before this bed, \
                 runs used veths tuned to GRO on and TX checksum offload off, where veer \
                 steered with native XDP: 95.7% of plain forwarding with keep-alive, 82.5% \
                 with new connections, in the last such run. veer's XDP path did not work \
                 on veths at their defaults at all.)\n",
                net::THREADS,
                net::CONNS,
                net::reps_and_secs().1,
                net::WARM_SECS,
                net::reps_and_secs().0
            );
            net_table(n, w, targets);
            net_analysis(n, w);
        }
    }
}

/// Section 2's table: every setup under both loads, and veer's targets.
fn net_table(n: &net::Results, w: &mut String, targets: &mut Vec<Target>) {
    let _ = writeln!(
        w,
        "| load | setup | req/s (median) | vs plain | vs plain + XDP_PASS | runs | errors | machine CPU µs/request |\n|---|---|---:|---:|---:|---|---:|---:|"
    );
    for close in [false, true] {
        let plain = median(
            &n.of(net::Setup::Plain, close)
                .iter()
                .map(|m| m.wrk.rps)
                .collect::<Vec<_>>(),
        );
        let plain_xdp = median(
            &n.of(net::Setup::PlainXdp, close)
                .iter()
                .map(|m| m.wrk.rps)
                .collect::<Vec<_>>(),
        );
        for setup in net::Setup::ALL {
            let runs = n.of(setup, close);
            let rps = median(&runs.iter().map(|m| m.wrk.rps).collect::<Vec<_>>());
            let cpu = median(
                &runs
                    .iter()
                    .map(|m| m.cpu_us_per_request())
                    .collect::<Vec<_>>(),
            );
            let errors: u64 = runs
                .iter()
                .map(|m| m.wrk.socket_errors + m.wrk.non_2xx)
                .sum();
            let _ = writeln!(
                w,
                "| {} | {} | {rps:.0} | {:.1}% | {:.1}% | {} | {errors} | {cpu:.1} |",
                if close {
                    "new connections"
                } else {
                    "keep-alive"
                },
                setup.name(),
                rps / plain * 100.0,
                rps / plain_xdp * 100.0,
                runs.iter()
                    .map(|m| format!("{:.0}", m.wrk.rps))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            if setup == net::Setup::Veer {
                if close {
                    let peers = [net::Setup::Nftables, net::Setup::Haproxy].map(|peer| {
                        median(
                            &n.of(peer, close)
                                .iter()
                                .map(|m| m.wrk.rps)
                                .collect::<Vec<_>>(),
                        )
                    });
                    let best = peers.iter().copied().fold(f64::NAN, f64::max);
                    targets.push(Target {
                        what: "new-connection req/s ahead of every peer (nftables, HAProxy; \
                               section 2)"
                            .into(),
                        measured: format!("{rps:.0} vs best peer {best:.0} req/s"),
                        ok: Some(rps > best),
                    });
                } else {
                    let pct = rps / plain_xdp * 100.0;
                    targets.push(Target {
                        what: "keep-alive req/s ≥ 99% of plain forwarding + XDP_PASS (section 2)"
                            .into(),
                        measured: format!("{rps:.0} vs {plain_xdp:.0} req/s: {pct:.1}%"),
                        ok: Some(pct >= 99.0),
                    });
                }
                let (target, label) = if close {
                    (
                        95.0,
                        "new-connection req/s ≥ 95% of plain forwarding (section 2)",
                    )
                } else {
                    (
                        97.0,
                        "keep-alive req/s ≥ 97% of plain forwarding (section 2)",
                    )
                };
                let pct = rps / plain * 100.0;
                targets.push(Target {
                    what: label.into(),
                    measured: format!("{rps:.0} vs {plain:.0} req/s: {pct:.1}%"),
                    ok: Some(pct >= target),
                });
            }
        }
    }
}

/// Section 2, where the points veer misses against plain forwarding go.
fn net_analysis(n: &net::Results, w: &mut String) {
    let med = |setup, close| {
        median(
            &n.of(setup, close)
                .iter()
                .map(|m| m.wrk.rps)
                .collect::<Vec<_>>(),
        )
    };
    for close in [false, true] {
        let plain = med(net::Setup::Plain, close);
        let xdp = med(net::Setup::PlainXdp, close);
        let veer = med(net::Setup::Veer, close);
        let one = med(net::Setup::VeerOne, close);
        let share = veer / plain * 100.0;
        let spread = |setup| {
            let v: Vec<f64> = n.of(setup, close).iter().map(|m| m.wrk.rps).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.0}–{hi:.0}")
        };
        let why = if share >= 100.0 {
            "It is ahead because its TC program redirects client packets straight \
             to the backend's interface (`bpf_redirect`), skipping the kernel's IP \
             input, routing and forwarding path that plain forwarding takes for them \
             (replies take the kernel's path in both)"
                .to_owned()
        } else if one >= plain {
            format!(
                "The {:.1} points missing at 50/50 are not veer's work on each packet, \
                 which the 100/0 runs do too and which there costs nothing plain \
                 forwarding does not: they come with the second backend's nginx sharing \
                 the two CPUs, and with the run-to-run noise of this shared machine \
                 (plain forwarding's own runs: {} req/s)",
                100.0 - share,
                spread(net::Setup::Plain)
            )
        } else {
            format!(
                "The {:.1} points missing are veer's own work on every packet, on TC \
                 (its steering program's service and conntrack lookups, the L4 checksum \
                 through the kernel's helper, the next hop from its cache and the \
                 redirect, and the reverse NAT on every reply), with the run-to-run \
                 noise of this shared machine (plain forwarding's own runs: {} req/s)",
                100.0 - share,
                spread(net::Setup::Plain)
            )
        };
        let _ = writeln!(
            w,
            "\n{}: veer reaches {share:.1}% of plain forwarding, and {:.1}% with every \
             flow on plain forwarding's own backend (weights 100/0, one nginx serving as \
             in plain forwarding). {why}. For scale, \
             plain forwarding with an `XDP_PASS` program on these veths reaches \
             {:.1}% of plain forwarding (native XDP on a veth turns every skb into \
             an XDP buffer and back): veer no longer pays that there.",
            if close {
                "New connections"
            } else {
                "Keep-alive"
            },
            one / plain * 100.0,
            xdp / plain * 100.0,
        );
    }
    let busy = median(
        &n.runs
            .iter()
            .map(|m| m.busy_share * 100.0)
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(
        w,
        "\nThe machine was {busy:.0}% busy during the median run: every setup is \
         CPU-bound on the same cores, so req/s compare what each costs the machine \
         as a whole. veer's split of new flows (v1/v2) per repetition: {}.\n",
        n.veer_split
            .iter()
            .map(|(a, b)| format!("{a}/{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Section 3: how soon a shift is in effect, and the CLI round trip.
fn shift_section(result: &Result<shift::Results, String>, doc: &mut Doc) {
    let Doc { text: w, targets } = doc;
    let _ = writeln!(w, "## 3. Shift latency and CLI round trip\n");
    match result {
        Err(e) => {
            let _ = writeln!(w, "This section failed: `{e}`\n");
            targets.push(Target {
                what: "shift in effect < 1 ms after the CLI returns".into(),
                measured: "section failed".into(),
                ok: None,
            });
        }
        Ok(s) => {
            let _ = writeln!(
                w,
                "{} shifts, alternately `v1=0 v2=100` and back, under no other load. From a \
                 thread inside the client namespace: run `veer shift`, note when it returns, \
                 then open fresh connections one after another until one is answered by the \
                 new group.\n",
                shift::TRIALS
            );
            let _ = writeln!(w, "| measure | median | max |\n|---|---:|---:|");
            let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
            for (what, v) in [
                (
                    "first connection answered by the new group: opened after the CLI returned (µs)",
                    &s.effect_us,
                ),
                ("`veer shift` CLI, start to exit (µs)", &s.shift_cli_us),
                (
                    "one connection (connect, ask, answer, close) for scale (µs)",
                    &s.connection_us,
                ),
                ("`veer status -o json` round trip (µs)", &s.status_us),
            ] {
                let _ = writeln!(w, "| {what} | {:.0} | {:.0} |", median(v), max(v));
            }
            let ok = s.stale == 0 && s.effect_max() < 1000.0;
            let _ = writeln!(
                w,
                "\nConnections opened after the CLI returned that still reached the old \
                 group: **{}** (of {} trials). The daemon answers a shift only after the \
                 maps are written, so the first connection after the return already follows \
                 the new weights; the figure above is the time to open that connection, an \
                 upper bound on the shift-to-effect time after the CLI returns.\n",
                s.stale,
                shift::TRIALS
            );
            targets.push(Target {
                what: "shift in effect < 1 ms after the CLI returns (section 3)".into(),
                measured: format!(
                    "{} stale connections; first new-group connection ≤ {:.0} µs after return (max)",
                    s.stale,
                    s.effect_max()
                ),
                ok: Some(ok),
            });
        }
    }
}

/// Section 4: failed requests and broken connections through every event.
fn downtime_section(result: &Result<Vec<downtime::Scenario>, String>, doc: &mut Doc) {
    let Doc { text: w, targets } = doc;
    let _ = writeln!(w, "## 4. Zero downtime under load\n");
    match result {
        Err(e) => {
            let _ = writeln!(w, "This section failed: `{e}`\n");
            targets.push(Target {
                what: "zero failed requests in every zero-downtime scenario".into(),
                measured: "section failed".into(),
                ok: None,
            });
        }
        Ok(list) => {
            let _ = writeln!(
                w,
                "The same load runs through every event: {} client threads opening new \
                 connections back to back (HTTP `GET`, `Connection: close`, read to the \
                 server's close), and {} keep-alive connections opened at the start and asked \
                 every 100 ms. The event happens 2 s into the load; the load goes on 4 s \
                 after it. Backends are the test bed's name-answering servers. A failed \
                 request is a refused, reset or timed-out connection or a bad answer; a \
                 broken connection is a keep-alive connection that failed (it is not \
                 reopened); *moved* counts keep-alive connections answered by another backend \
                 than at first (expected for the L7 proxies, which balance per request, and \
                 a broken promise for veer).\n",
                downtime::WORKERS,
                downtime::HELD
            );
            let _ = writeln!(
                w,
                "| scenario | requests | failed | refused / reset / timeout / bad | keep-alive broken | moved | answers | event took |\n|---|---:|---:|---|---:|---:|---|---:|"
            );
            let mut veer_clean = true;
            let mut veer_failed = 0;
            for s in list {
                let l = &s.load;
                let _ = writeln!(
                    w,
                    "| {} | {} | **{}** | {} / {} / {} / {} | **{}** | {} | {} | {:.0} ms |",
                    s.name,
                    l.sent(),
                    l.failed(),
                    l.refused,
                    l.reset,
                    l.timeout,
                    l.bad,
                    l.held_broken,
                    l.held_moved,
                    l.answers
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    s.event_ms
                );
                if s.name.starts_with("veer") {
                    veer_failed += l.failed() + l.held_broken + l.held_moved;
                    veer_clean &= l.failed() == 0 && l.held_broken == 0 && l.held_moved == 0;
                }
            }
            let errors: Vec<String> = list
                .iter()
                .filter(|s| !s.load.errors.is_empty())
                .map(|s| format!("- {}: {}", s.name, s.load.errors.join("; ")))
                .collect();
            if !errors.is_empty() {
                let _ = writeln!(w, "\nFirst failures seen:\n\n{}", errors.join("\n"));
            }
            let _ = writeln!(w);
            targets.push(Target {
                what: "zero failed requests in every veer zero-downtime scenario (section 4)"
                    .into(),
                measured: format!("{veer_failed} failed requests, broken or moved connections"),
                ok: Some(veer_clean),
            });
        }
    }
}

/// Section 5: the daemon's memory and CPU with a full conntrack, and the maps' kernel memory.
fn memory_section(result: &Result<memory::Results, String>, doc: &mut Doc) {
    let w = &mut doc.text;
    let _ = writeln!(w, "## 5. Memory\n");
    match result {
        Err(e) => {
            let _ = writeln!(w, "This section failed: `{e}`\n");
        }
        Ok(m) => {
            let _ = writeln!(
                w,
                "A `veer daemon` with `conntrack_max = {}` (the default) and the service of \
                 the other sections. Resident set from `/proc/PID/status`. The flows are \
                 synthetic: copies of a real confirmed flow under {} new client tuples \
                 (established, same backend), written into the daemon's pinned `VEER_FLOWS` \
                 (the table of confirmed flows) from user space ({:.1} s); the daemon counts \
                 them as active flows on its next `status`. `status` scans both flow tables \
                 under the control lock to be exact (so does `drain --wait`); a scrape reads the \
                 census the last upkeep pass took (every second, spaced out when a pass is \
                 long), so it never scans: before, every scrape scanned like `status`.\n",
                memory::CONNTRACK_MAX,
                memory::ENTRIES,
                m.insert_secs
            );
            let _ = writeln!(w, "| | |\n|---|---:|");
            let _ = writeln!(
                w,
                "| daemon VmRSS, idle | {:.1} MiB |",
                m.idle_rss_kib as f64 / 1024.0
            );
            let _ = writeln!(
                w,
                "| daemon VmRSS with {} active flows (after upkeep passes and a `status`) | {:.1} MiB |",
                m.active_flows,
                m.full_rss_kib as f64 / 1024.0
            );
            let _ = writeln!(
                w,
                "| daemon VmHWM (peak) | {:.1} MiB |",
                m.full_hwm_kib as f64 / 1024.0
            );
            let _ = writeln!(
                w,
                "| `veer status` with those flows (it counts active flows from the map) | {:.0} ms |",
                m.status_ms
            );
            let _ = writeln!(
                w,
                "| `GET /metrics` with those flows ({} entries counted by the last upkeep pass; median of {}, max {:.1} ms) | {:.1} ms |",
                m.scraped_entries,
                m.scrape_ms.len(),
                m.scrape_ms.iter().copied().fold(0.0, f64::max),
                median(&m.scrape_ms)
            );
            let _ = writeln!(
                w,
                "| daemon CPU with those flows, no traffic (conntrack upkeep: every second, spaced out when a pass is long) | {:.0}% of one core |",
                m.upkeep_cpu_share * 100.0
            );
            let _ = writeln!(
                w,
                "\nKernel memory of the maps at the default sizes (`bpftool map show` \
                 `bytes_memlock`; the flow tables are preallocated, so this does not grow with \
                 flows): **{:.1} MiB**.\n",
                m.maps_total() as f64 / 1_048_576.0
            );
            let _ = writeln!(w, "| map | KiB |\n|---|---:|");
            for (name, bytes) in &m.maps {
                let _ = writeln!(w, "| `{name}` | {:.0} |", *bytes as f64 / 1024.0);
            }
            let flow_tables: u64 = m
                .maps
                .iter()
                .filter(|(n, _)| [maps::FLOWS, maps::NEWFLOWS].contains(&n.as_str()))
                .map(|m| m.1)
                .sum();
            let _ = writeln!(
                w,
                "\nThe flow tables (`VEER_FLOWS` for {} confirmed flows and `VEER_NEWFLOWS` for \
                 {} new ones, at their default sizes) take {:.1} MiB: **{:.0} bytes per \
                 confirmed flow** ({:.0} bytes per slot of either table). Per-flow state is \
                 only there; `VEER_BE_VIPS` grows with backends, not flows.",
                maps::DEFAULT_CONNTRACK_MAX,
                maps::DEFAULT_NEWFLOWS_MAX,
                flow_tables as f64 / 1_048_576.0,
                flow_tables as f64 / f64::from(maps::DEFAULT_CONNTRACK_MAX),
                flow_tables as f64
                    / f64::from(maps::DEFAULT_CONNTRACK_MAX + maps::DEFAULT_NEWFLOWS_MAX)
            );
            let _ = writeln!(w);
        }
    }
}

/// Section 6: floods of spoofed packets against held flows.
fn flood_section(result: &Result<flood::Results, String>, doc: &mut Doc) {
    let w = &mut doc.text;
    let _ = writeln!(w, "## 6. Floods against held flows\n");
    match result {
        Err(e) => {
            let _ = writeln!(w, "This section failed: `{e}`\n");
        }
        Ok(f) => {
            let _ = write!(w, "{}", flood::markdown(f));
        }
    }
}

/// The targets table, placed right after the header.
fn targets_table(targets: &[Target]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "## Targets\n\n| target | measured | |\n|---|---|---|");
    for target in targets {
        let _ = writeln!(
            t,
            "| {} | {} | {} |",
            target.what,
            target.measured,
            target.ok.map_or("**not measured**", met)
        );
    }
    let _ = writeln!(
        t,
        "\nWhere a target is missed, the section says why; figures are reported as measured.\n"
    );
    t
}

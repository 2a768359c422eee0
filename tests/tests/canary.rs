//! The canary judge and paced drains through a real `veer daemon` and the real CLI, with real
//! traffic from the client namespace to backends that answer with their name: a healthy canary,
//! one whose application answers 100 ms late (no netem or fq on this kernel: the delay is the
//! backend program's), sparse and doubled resets, and 200 held flows ended at a pace.

// This binary links every dependency of `veer-tests`.
use {aya as _, libc as _, rand as _, rcgen as _, tokio as _, veer_common as _};

use std::{
    io::{ErrorKind, Read as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use veer::model::{
    Plan, Weight,
    drain::{DrainEnd, Pace},
    tolerance::Tolerances,
};
use veer_tests::{
    config::{ConfigBuilder, Family, dns, web},
    daemon::{Daemon, Held, Load, LoadReport},
    netns::Topology,
    servers::{Behaviour, TcpServer, UdpServer},
};

const V1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
const V2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 21));

fn vip() -> SocketAddr {
    Family::V4.vip()
}

/// Topology, v1 and v2 servers behaving as told, a daemon with `web` at `v1`/`v2`. Field order
/// drops the daemon first, then the servers, then the namespaces.
struct Bed {
    daemon: Daemon,
    s1: TcpServer,
    s2: TcpServer,
    topo: Topology,
}

fn bed(v1: &str, v2: &str, b1: Behaviour, b2: Behaviour) -> Bed {
    bed_with(v1, v2, b1, b2, None)
}

/// `bed`, with a rollout of `web` declared in the config file (started as the daemon applies
/// the file).
fn bed_with(v1: &str, v2: &str, b1: Behaviour, b2: Behaviour, rollout: Option<Plan>) -> Bed {
    let topo = Topology::builder()
        .client()
        .backend("v1", &[V1])
        .backend("v2", &[V2])
        .build()
        .unwrap();
    let s1 =
        TcpServer::start_with(topo.backend("v1"), SocketAddr::new(V1, 8080), "v1", b1).unwrap();
    let s2 =
        TcpServer::start_with(topo.backend("v2"), SocketAddr::new(V2, 8080), "v2", b2).unwrap();
    // Closing flows are kept an hour, so a drain ends on FIN or RST, not on expiry.
    let mut config = ConfigBuilder::new(topo.node_ifnames())
        .conntrack_max(65_536)
        .tcp_closing(Duration::from_hours(1))
        .service(web(Family::V4, v1, v2));
    if let Some(plan) = rollout {
        config = config.rollout("web", plan);
    }
    let config = config.to_toml();
    Bed {
        daemon: Daemon::start(&topo, &config),
        s1,
        s2,
        topo,
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `n` load generators of new connections (each: connect, ask once, close), bounded.
fn loads(b: &Bed, n: usize) -> Vec<Load> {
    (0..n)
        .map(|_| Load::new_connections(b.topo.client(), vip(), 20_000, Duration::from_mins(1)))
        .collect()
}

fn finish(loads: Vec<Load>) -> LoadReport {
    let mut all = LoadReport::default();
    for l in loads {
        let r = l.finish();
        all.ok += r.ok;
        all.failed += r.failed;
        for (k, v) in r.answers {
            *all.answers.entry(k).or_default() += v;
        }
    }
    all
}

mod judge {
    use super::*;

    /// A two-step rollout of web to v2 (50%, then 100%) judged with `judge` options, `--wait`.
    fn rollout(b: &Bed, judge: &[&str]) -> std::process::Output {
        let mut args = vec![
            "rollout",
            "start",
            "web",
            "--to",
            "v2",
            "--steps",
            "50,100",
            "--pause",
            "1s",
            "--min-flows",
            "5",
            "--max-failure-rate",
            "100",
        ];
        args.extend_from_slice(judge);
        args.push("--wait");
        b.daemon.cli(&args)
    }

    fn status(b: &Bed) -> serde_json::Value {
        b.daemon.json(&["rollout", "status", "web"])
    }

    /// The p50 and p99 estimates of both groups in a latency check of a verdict.
    fn quantiles(check: &serde_json::Value) -> [u64; 4] {
        let ns = |q: &str, side: &str| {
            check[q][side]["estimate_ns"]
                .as_u64()
                .unwrap_or_else(|| panic!("{q} {side} estimate in {check}"))
        };
        [
            ns("p50", "canary"),
            ns("p50", "baseline"),
            ns("p99", "canary"),
            ns("p99", "baseline"),
        ]
    }

    #[test]
    fn a_healthy_canary_passes_with_both_groups_quantiles_recorded() {
        let b = bed("100", "0", Behaviour::default(), Behaviour::default());
        let load = loads(&b, 4);
        // Both groups answer alike: only chance can fail this canary, at most `1 - confidence`
        // of the time (the judge's alpha spending), and far less with the 20% margin (the
        // order statistics alone give about 1e-5 at 95%). 99.9% cuts both 50-fold; its p99
        // checks need about 1,250 flows per group instead of 850. The default latency slack
        // (1 ms) is what keeps a loaded machine's scheduling from failing it: before it, one
        // run in ten failed on first byte p50, 106 µs against 47 µs.
        let out = rollout(
            &b,
            &["--max-latency-increase", "20%", "--confidence", "99.9%"],
        );
        let report = finish(load);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            text(&out),
            b.daemon.log()
        );
        assert_eq!(report.failed, 0, "{report:?}");
        let r = status(&b);
        assert_eq!(r["phase"], "completed", "{r}");
        let v = &r["judge"];
        assert_eq!(v["outcome"], "pass", "{r}");
        assert_eq!(v["step"], 1, "the 50% step gated the move to 100%: {v}");
        assert!(v["at_end"].as_bool().unwrap(), "{v}");
        for check in ["connect", "first_byte"] {
            let lat = &v[check];
            assert_eq!(lat["outcome"], "pass", "{check}: {lat}");
            assert!(lat["canary_sample"].as_u64().unwrap() >= 100, "{lat}");
            assert!(lat["baseline_sample"].as_u64().unwrap() >= 100, "{lat}");
            let q = quantiles(lat);
            assert!(q.iter().all(|ns| *ns > 0), "{check}: {q:?}");
        }
        let failed = &v["failed_attempts"];
        assert!(
            failed["canary"]["trials"].as_u64().unwrap() >= 100,
            "{failed}"
        );
        assert_eq!(failed["canary"]["events"], 0, "{failed}");
        // The human status shows the numbers too.
        let human = b.daemon.ok(&["rollout", "status", "web"]);
        assert!(
            human.contains("judge: pass") && human.contains("first byte p50"),
            "{human}"
        );
    }

    #[test]
    fn a_canary_100ms_slower_fails_and_rolls_back_with_both_groups_quantiles() {
        let slow = Behaviour {
            delay: Duration::from_millis(100),
            ..Behaviour::default()
        };
        let b = bed("100", "0", Behaviour::default(), slow);
        let load = loads(&b, 8);
        let out = rollout(&b, &["--min-sample", "50"]);
        let report = finish(load);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}\n{}",
            text(&out),
            b.daemon.log()
        );
        assert_eq!(report.failed, 0, "slow is not failed: {report:?}");
        let r = status(&b);
        assert_eq!(r["phase"], "rolled_back", "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.starts_with("judge: time to first byte"), "{reason}");
        let v = &r["judge"];
        assert_eq!(v["outcome"], "fail", "{r}");
        let fb = &v["first_byte"];
        assert_eq!(fb["outcome"], "fail", "{fb}");
        let [c50, b50, c99, b99] = quantiles(fb);
        assert!(
            c50 >= 90_000_000 && c99 >= 90_000_000,
            "canary p50 {c50} p99 {c99}"
        );
        // The medians tell the groups apart (swapped quantiles fail here). The baseline's p99
        // is its slowest answer or so: a scheduling delay on a loaded machine put it past
        // 100 ms, above even the canary's, so it is only checked for being recorded.
        assert!(
            b50 < 50_000_000 && b99 >= b50,
            "baseline p50 {b50} p99 {b99}, canary p99 {c99}"
        );
        assert!(fb["p50"]["ratio_lower"].as_f64().unwrap() > 1.2, "{fb}");
        // The backend's kernel answers the handshake: connect latency is not what failed.
        assert_eq!(v["connect"]["p50"]["outcome"], "pass", "{v}");
        assert_ne!(v["connect"]["outcome"], "fail", "{v}");
        // Rolled back: every new flow to v1 again.
        let human = b.daemon.ok(&["rollout", "status", "web"]);
        assert!(human.contains("judge: fail"), "{human}");
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["services"][0]["groups"][1]["weight"], 0, "{s}");
    }

    #[test]
    fn one_canary_failure_in_a_small_sample_does_not_fail_the_rollout() {
        let first_resets = Behaviour {
            reset_first: 1,
            ..Behaviour::default()
        };
        let b = bed("100", "0", Behaviour::default(), first_resets);
        let load = loads(&b, 4);
        // The failure check at its defaults (95%); latency, which this test is not about and
        // which only chance could fail here, allowed twice the baseline's.
        let out = rollout(
            &b,
            &[
                "--max-failure-increase",
                "25%",
                "--max-latency-increase",
                "100%",
            ],
        );
        let report = finish(load);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            text(&out),
            b.daemon.log()
        );
        assert_eq!(report.failed, 1, "exactly the one reset: {report:?}");
        let v = &status(&b)["judge"];
        assert_eq!(v["outcome"], "pass", "{v}");
    }

    #[test]
    fn a_doubled_reset_rate_fails_once_the_sample_suffices() {
        let every = |n| Behaviour {
            reset_every: n,
            ..Behaviour::default()
        };
        let b = bed("100", "0", every(10), every(5));
        let load = loads(&b, 8);
        let out = rollout(&b, &["--max-failure-increase", "25%"]);
        finish(load);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}\n{}",
            text(&out),
            b.daemon.log()
        );
        let r = status(&b);
        assert_eq!(r["phase"], "rolled_back", "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.starts_with("judge: backend resets"), "{reason}");
        let resets = &r["judge"]["backend_resets"];
        assert_eq!(resets["outcome"], "fail", "{resets}");
        let (trials, events) = (
            resets["canary"]["trials"].as_u64().unwrap(),
            resets["canary"]["events"].as_u64().unwrap(),
        );
        // 20% against 10% in 100 attempts each is not evidence of a 25% increase at this
        // confidence (`rollout::canary`'s unit tests); a few hundred are.
        assert!(trials >= 200, "judged on a sufficient sample: {resets}");
        let rate = events as f64 / trials as f64;
        assert!(
            (0.12..=0.28).contains(&rate),
            "canary resets {events}/{trials}"
        );
        assert!(
            resets["odds_ratio_lower"].as_f64().unwrap() > resets["threshold"].as_f64().unwrap(),
            "{resets}"
        );
    }
}

/// A canary judged by a rollout declared in the config file (`[service.rollout]` with `judge`
/// and its options): the same judge as `rollout start --judge`.
mod judge_from_the_file {
    use super::*;

    /// `web`'s rollout as `rollout status -o json` shows it once it is over (at most 60 s, the
    /// loads' bound).
    fn finished_rollout(b: &Bed) -> serde_json::Value {
        let r = b.daemon.ended_rollout("web", Duration::from_mins(1));
        let phase = r["phase"].as_str().unwrap_or_default();
        assert!(
            ["completed", "rolled_back", "aborted"].contains(&phase),
            "the declared rollout is still {phase} after a minute: {r}\n{}",
            b.daemon.log()
        );
        r
    }

    #[test]
    fn a_declared_judged_rollout_fails_a_canary_100ms_slower() {
        let slow = Behaviour {
            delay: Duration::from_millis(100),
            ..Behaviour::default()
        };
        let mut plan = Plan::to("v2");
        plan.steps = vec![Weight::percent(50), Weight::FULL];
        plan.pause = Duration::from_secs(1);
        plan.min_flows = 5;
        plan.max_failure_rate = Weight::FULL;
        plan.judge = Some(Tolerances {
            min_sample: 50,
            ..Tolerances::DEFAULT
        });
        let b = bed_with("100", "0", Behaviour::default(), slow, Some(plan));
        let file = std::fs::read_to_string(&b.daemon.config).unwrap();
        assert!(
            file.contains("judge = true") && file.contains("min_sample = 50"),
            "{file}"
        );
        let load = loads(&b, 8);
        let r = finished_rollout(&b);
        let report = finish(load);
        assert_eq!(report.failed, 0, "slow is not failed: {report:?}");
        assert_eq!(r["phase"], "rolled_back", "{r}\n{}", b.daemon.log());
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.starts_with("judge: time to first byte"), "{reason}");
        assert_eq!(r["judge"]["outcome"], "fail", "{r}");
        assert_eq!(r["plan"]["judge"]["min_sample"], 50, "{r}");
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["services"][0]["groups"][1]["weight"], 0, "{s}");
    }
}

mod paced_drain {
    use super::*;

    /// When each connection was reset (or how else it ended), watched on non-blocking sockets.
    fn watch_resets(conns: &mut [TcpStream], limit: Duration) -> Vec<Result<Instant, String>> {
        for c in conns.iter() {
            c.set_nonblocking(true).unwrap();
        }
        let mut out: Vec<Option<Result<Instant, String>>> = vec![None; conns.len()];
        let deadline = Instant::now() + limit;
        while out.iter().any(Option::is_none) && Instant::now() < deadline {
            for (i, c) in conns.iter_mut().enumerate() {
                if out[i].is_some() {
                    continue;
                }
                let mut buf = [0u8; 64];
                match c.read(&mut buf) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                        out[i] = Some(Ok(Instant::now()));
                    }
                    Err(e) => out[i] = Some(Err(format!("error {e}"))),
                    Ok(0) => out[i] = Some(Err("EOF, not a reset".into())),
                    Ok(n) => out[i] = Some(Err(format!("{n} bytes of data"))),
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err("still open".into())))
            .collect()
    }

    #[test]
    fn two_hundred_held_flows_end_over_two_seconds_at_100_per_second_each_with_a_reset() {
        let b = bed("100", "0", Behaviour::default(), Behaviour::default());
        let mut on_v1 = Held::open(b.topo.client(), vip(), 200);
        assert!(on_v1.first.iter().all(|n| n == "v1"));
        b.daemon.ok(&["shift", "web", "v1=0", "v2=100"]);
        let mut on_v2 = Held::open(b.topo.client(), vip(), 20);
        assert!(on_v2.first.iter().all(|n| n == "v2"));
        assert_eq!(b.s1.live_connections(), 200);

        let start = Instant::now();
        let drain = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                b.daemon.cli(&[
                    "drain",
                    "web",
                    "v1",
                    "--deadline",
                    "2s",
                    "--pace",
                    "100/s",
                    "--wait",
                    "--timeout",
                    "30s",
                ])
            });
            let ends = watch_resets(on_v1.streams_mut(), Duration::from_secs(20));
            (ends, waiter.join().unwrap())
        });
        let (ends, out) = drain;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            text(&out),
            b.daemon.log()
        );
        let mut times = Vec::new();
        for (i, e) in ends.iter().enumerate() {
            match e {
                Ok(t) => times.push(t.duration_since(start)),
                Err(why) => panic!("held connection {i} on v1: {why}"),
            }
        }
        times.sort();
        let (first, last) = (times[0], times[times.len() - 1]);
        let spread = last.saturating_sub(first);
        assert!(
            first >= Duration::from_millis(1_800),
            "a reset before the deadline: {first:?}"
        );
        // The schedule ends at most 50 at once (its credit is capped at half a second's), so
        // 200 take at least 1.5 s; a late first tick or a late look at the sockets (both
        // happen on a loaded machine) shortens what is seen by a fraction of a second, while
        // an unpaced drain ends them all within a few milliseconds. Stalls past the cap only
        // lengthen the drain; one at a quarter of the pace takes 8 s.
        assert!(
            spread >= Duration::from_millis(1_200) && spread <= Duration::from_secs(6),
            "200 flows at 100/s end over about 2 s, not all at once: {first:?} .. {last:?}"
        );
        // No half second saw much more than its share (50 at 100/s): the schedule allows 100
        // at most (a capped burst of 50, then the pace), a late look at the sockets adds what
        // it missed; an unpaced drain puts all 200 in one.
        for (i, t) in times.iter().enumerate() {
            let within = times[i..]
                .iter()
                .take_while(|u| u.saturating_sub(*t) < Duration::from_millis(500))
                .count();
            assert!(within <= 130, "{within} resets within 500 ms from {t:?}");
        }
        on_v2.check("after v1's flows were ended");
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.s1.live_connections() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            b.s1.live_connections(),
            0,
            "the backend's ends were reset too"
        );
        assert_eq!(b.s2.live_connections(), 20, "no v2 flow touched");
        let progress = text(&out);
        assert!(
            progress.contains("200 flows ended") && progress.contains("drained"),
            "{progress}"
        );
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["services"][0]["groups"][0]["ended_flows"], 200, "{s}");
    }

    /// The resets the held flows saw, as times since `start`, each checked to be a reset.
    fn reset_times(ends: &[Result<Instant, String>], start: Instant) -> Vec<Duration> {
        let mut times: Vec<Duration> = ends
            .iter()
            .enumerate()
            .map(|(i, e)| match e {
                Ok(t) => t.saturating_duration_since(start),
                Err(why) => panic!("held connection {i} on v1: {why}"),
            })
            .collect();
        times.sort();
        times
    }

    /// The most resets within any 500 ms.
    fn busiest_half_second(times: &[Duration]) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|u| u.saturating_sub(times[i]) < Duration::from_millis(500))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_rollout_declared_in_the_file_drains_the_old_group_at_its_deadline_and_pace() {
        let mut b = bed("100", "0", Behaviour::default(), Behaviour::default());
        let mut on_v1 = Held::open(b.topo.client(), vip(), 100);
        assert!(on_v1.first.iter().all(|n| n == "v1"));
        let mut plan = Plan::to("v2");
        plan.steps = vec![Weight::FULL];
        plan.pause = Duration::from_secs(1);
        plan.min_flows = 0;
        plan.drain = Some(DrainEnd {
            deadline: Duration::from_secs(2),
            pace: Pace::per_second(100),
        });
        let config = ConfigBuilder::new(b.topo.node_ifnames())
            .conntrack_max(65_536)
            .tcp_closing(Duration::from_hours(1))
            .service(web(Family::V4, "100", "0"))
            .rollout("web", plan)
            .to_toml();
        assert!(
            config.contains("drain_deadline = \"2s\"") && config.contains("drain_pace = \"100/s\""),
            "{config}"
        );
        let written = Instant::now();
        b.daemon.write_config(&config);
        let ends = watch_resets(on_v1.streams_mut(), Duration::from_secs(40));
        let times = reset_times(&ends, written);
        let (first, last) = (times[0], times[times.len() - 1]);
        // The file settles (2 s), the rollout's one step is watched 1 s, then the deadline.
        assert!(
            first >= Duration::from_secs(2),
            "a reset before the deadline could have passed: {first:?}"
        );
        assert!(
            last.saturating_sub(first) >= Duration::from_millis(600),
            "100 flows at 100/s end over about a second, not at once: {first:?} .. {last:?}"
        );
        assert!(busiest_half_second(&times) <= 80, "{times:?}");
        let r = b.daemon.json(&["rollout", "status", "web"]);
        assert_eq!(r["phase"], "completed", "{r}");
        let s = b.daemon.json(&["status"]);
        let v1 = &s["services"][0]["groups"][0];
        assert_eq!(v1["ended_flows"], 100, "{s}");
        assert_eq!(v1["drain"]["pace"], "100/s", "{s}");
        // A comment-only edit of the file changes nothing.
        let revision = b.daemon.revision();
        b.daemon.write_config(&format!(
            "# reviewed\n{}",
            config.replace("\n[", "\n# section\n[")
        ));
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(b.daemon.revision(), revision, "{}", b.daemon.log());
        b.daemon.stop();
    }

    #[test]
    fn a_paced_drain_survives_a_daemon_restart_and_ends_at_its_pace_after_its_deadline() {
        let mut b = bed("100", "0", Behaviour::default(), Behaviour::default());
        let mut on_v1 = Held::open(b.topo.client(), vip(), 100);
        assert!(on_v1.first.iter().all(|n| n == "v1"));
        b.daemon.ok(&["shift", "web", "v1=0", "v2=100"]);
        let mut on_v2 = Held::open(b.topo.client(), vip(), 10);
        assert!(on_v2.first.iter().all(|n| n == "v2"));
        let drained = Instant::now();
        b.daemon
            .ok(&["drain", "web", "v1", "--deadline", "3s", "--pace", "50/s"]);
        let s = b.daemon.json(&["status"]);
        let drain = s["services"][0]["groups"][0]["drain"].clone();
        assert_eq!(drain["phase"], "waiting", "{s}");
        assert_eq!(drain["pace"], "50/s", "{s}");
        let ends_at = drain["ends_at"].as_str().unwrap().to_owned();
        let human = b.daemon.ok(&["status"]);
        assert!(human.contains("drain v1: deadline in "), "{human}");

        // The daemon stops before the deadline and is back after it.
        b.daemon.stop();
        while drained.elapsed() < Duration::from_secs(4) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(b.s1.live_connections(), 100, "nothing ended while stopped");
        let restarted = Instant::now();
        b.daemon.spawn();
        let ends = watch_resets(on_v1.streams_mut(), Duration::from_secs(30));
        let times = reset_times(&ends, drained);
        let (first, last) = (times[0], times[times.len() - 1]);
        assert!(
            first >= restarted.duration_since(drained),
            "a reset before the restart: {first:?}"
        );
        // 100 flows at 50/s: about two seconds, never a burst (at most half a second of pace,
        // 25, at once, then 25 per half second).
        assert!(
            last.saturating_sub(first) >= Duration::from_millis(1_200),
            "ended at once, not at 50/s: {first:?} .. {last:?}"
        );
        assert!(busiest_half_second(&times) <= 60, "{times:?}");
        on_v2.check("after v1's flows were ended");
        assert_eq!(b.s2.live_connections(), 10, "no v2 flow touched");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut s = b.daemon.json(&["status"]);
        while s["services"][0]["groups"][0]["drain"]["phase"] != "done" && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
            s = b.daemon.json(&["status"]);
        }
        let v1 = &s["services"][0]["groups"][0];
        assert_eq!(v1["ended_flows"], 100, "{s}");
        // The restarted daemon kept the drain's moment: it did not start the deadline again.
        assert_eq!(v1["drain"]["ends_at"], ends_at.as_str(), "{s}");
        assert_eq!(v1["drain"]["phase"], "done", "{s}\n{}", b.daemon.log());
    }

    /// Sends `ping` on `socket` to the VIP and returns who answered (from the VIP, or an error).
    fn ask(socket: &std::net::UdpSocket, dst: SocketAddr) -> String {
        socket.send_to(b"ping\n", dst).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(from, dst, "the answer's source is the VIP");
        String::from_utf8_lossy(&buf[..n]).trim().to_owned()
    }

    #[test]
    fn a_paced_drain_forgets_udp_flows_at_its_pace_and_their_next_datagram_goes_to_a_live_group() {
        let topo = Topology::builder()
            .client()
            .backend("v1", &[V1])
            .backend("v2", &[V2])
            .build()
            .unwrap();
        let _u1 = UdpServer::start(topo.backend("v1"), SocketAddr::new(V1, 5353), "v1").unwrap();
        let _u2 = UdpServer::start(topo.backend("v2"), SocketAddr::new(V2, 5353), "v2").unwrap();
        let config = ConfigBuilder::new(topo.node_ifnames())
            .service(dns(Family::V4, "100", "0"))
            .to_toml();
        let daemon = Daemon::start(&topo, &config);
        let dst = SocketAddr::new(vip().ip(), 53);
        let sockets: Vec<std::net::UdpSocket> = (0..20)
            .map(|_| {
                let s = topo
                    .client()
                    .udp_socket(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
                    .unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            })
            .collect();
        assert!(sockets.iter().all(|s| ask(s, dst) == "v1"));
        daemon.ok(&["shift", "dns", "v1=0", "v2=100"]);
        assert!(
            sockets.iter().all(|s| ask(s, dst) == "v1"),
            "a UDP flow stays on its backend after a shift"
        );
        let start = Instant::now();
        let out = daemon.cli(&[
            "drain",
            "dns",
            "v1",
            "--deadline",
            "1s",
            "--pace",
            "10/s",
            "--wait",
            "--timeout",
            "30s",
        ]);
        let took = start.elapsed();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            text(&out),
            daemon.log()
        );
        // 20 flows at 10/s after a 1 s deadline: at most half a second of pace at once, so
        // never before about 2.4 s.
        assert!(
            took >= Duration::from_secs(2),
            "20 UDP flows forgotten at 10/s in {took:?}"
        );
        assert!(
            sockets.iter().all(|s| ask(s, dst) == "v2"),
            "a forgotten flow's next datagram follows today's weights"
        );
        // The drain is done at its first tick that finds no flow left (`--wait` may see none
        // left before that tick).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut s = daemon.json(&["status"]);
        while s["services"][0]["groups"][0]["drain"]["phase"] != "done" && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
            s = daemon.json(&["status"]);
        }
        let v1 = &s["services"][0]["groups"][0];
        assert_eq!(v1["active_flows"], 0, "{s}");
        // The kernel counts the clients it reset; a UDP flow has none (README, Paced drains).
        assert_eq!(v1["ended_flows"], 0, "{s}");
        assert_eq!(v1["drain"]["phase"], "done", "{s}");
    }
}

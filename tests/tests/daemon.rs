//! A real `veer daemon` in the node namespace, driven with the real CLI, with real traffic from
//! the client namespace to backends that answer with their name.

// This binary links every dependency of `veer-tests`.
use {aya as _, rand as _, rcgen as _, tokio as _, veer as _, veer_common as _};

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use veer::model::{CheckKind, HealthCheck, Plan, Weight};
use veer_tests::{
    config::{ConfigBuilder, Family, group, service, web},
    daemon::{Bed, Daemon, Held, Load, weights},
    metrics::value as metric,
    netns::Topology,
    servers::{TcpServer, ask_once, http_get},
};

const V1: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
const V2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 21));
const TIMEOUT: Duration = Duration::from_secs(5);

fn vip() -> SocketAddr {
    Family::V4.vip()
}

/// The bed's node settings: attached to every node interface of `topo`, a conntrack of 65,536
/// entries, closing flows kept an hour (so a drain that ends sooner ends on FIN or RST).
fn node(topo: &Topology) -> ConfigBuilder {
    ConfigBuilder::new(topo.node_ifnames())
        .conntrack_max(65_536)
        .tcp_closing(Duration::from_hours(1))
}

/// `web` over v1 and v2 at `v1`/`v2` percent, attached to every node interface of `topo`.
fn config(topo: &Topology, v1: &str, v2: &str) -> String {
    node(topo).service(web(Family::V4, v1, v2)).to_toml()
}

fn bed(v1: &str, v2: &str) -> Bed {
    bed_with_v2_port(v1, v2, 8080)
}

/// Like `bed`, with v2's server on `v2_port`: another port than 8080 leaves v2's backend
/// refusing connections (RST), as a stopped service does.
fn bed_with_v2_port(v1: &str, v2: &str, v2_port: u16) -> Bed {
    build_bed(Family::V4, v1, v2, v2_port, &[])
}

/// The bed in `family`: backends answering "v1" and "v2" (v2 on `v2_port`), and a daemon at
/// `v1`/`v2` started with `args` (`--metrics off` unless they say).
fn build_bed(family: Family, v1: &str, v2: &str, v2_port: u16, args: &[&str]) -> Bed {
    Bed::start(
        family,
        v2_port,
        |topo| node(topo).service(web(family, v1, v2)).to_toml(),
        |topo, config| Daemon::start_with(topo, config, args),
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// `GET path` on `addr` from inside the node namespace (metrics, Prometheus live there).
fn node_get(topo: &Topology, addr: &str, path: &str) -> Option<String> {
    http_get(topo.node(), addr, path, TIMEOUT)
}

mod apply {
    use super::*;

    #[test]
    fn apply_shows_in_status_and_reapplying_is_a_no_op() {
        let b = bed("100", "0");
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["revision"]["number"], 1);
        assert_eq!(s["revision"]["origin"], "config");
        assert_eq!(s["services"][0]["name"], "web");
        assert_eq!(s["services"][0]["vip"], "192.0.2.10");
        assert_eq!(s["services"][0]["port"], 80);
        assert_eq!(s["services"][0]["protocol"], "tcp");
        assert_eq!(weights(&s), [("v1".into(), 100.0), ("v2".into(), 0.0)]);
        assert_eq!(
            s["services"][0]["groups"][0]["backends"][0]["address"],
            "198.51.100.11:8080"
        );
        let human = b.daemon.ok(&["status"]);
        assert!(human.starts_with("revision 1 (config, "), "{human}");
        assert!(human.contains("conntrack: 0 of 65536 entries"), "{human}");
        assert!(human.contains("service web 192.0.2.10:80/tcp"), "{human}");
        let v1_row = human
            .lines()
            .find(|l| l.starts_with("v1 "))
            .unwrap_or_default();
        assert_eq!(
            v1_row.split_whitespace().take(5).collect::<Vec<_>>(),
            ["v1", "100%", "198.51.100.11:8080", "up", "0"],
            "{human}"
        );
        for field in ["active_flows", "new_flows", "packets", "bytes"] {
            assert!(
                s["services"][0]["groups"][0]["backends"][0][field].is_u64(),
                "{field}"
            );
        }

        let file = b.daemon.state_dir().join("../shifted.toml");
        std::fs::write(&file, config(&b.topo, "90", "10")).unwrap();
        let f = file.to_str().unwrap();
        let r = b.daemon.json(&["apply", "-f", f]);
        assert_eq!(
            (r["revision"].as_u64(), r["changed"].as_bool()),
            (Some(2), Some(true))
        );
        let again = b.daemon.json(&["apply", "-f", f]);
        assert_eq!(
            (again["revision"].as_u64(), again["changed"].as_bool()),
            (Some(2), Some(false))
        );
        assert_eq!(
            b.daemon.ok(&["apply", "-f", f]).trim(),
            format!("applied {f}: no change, revision 2 stays in force")
        );
        assert_eq!(
            weights(&b.daemon.json(&["status", "web"])),
            [("v1".into(), 90.0), ("v2".into(), 10.0)]
        );
        // Traffic is counted where it went.
        for _ in 0..20 {
            ask_once(b.topo.client(), vip(), TIMEOUT).unwrap();
        }
        let s = b.daemon.json(&["status"]);
        let new: u64 = (0..2)
            .map(|g| {
                s["services"][0]["groups"][g]["backends"][0]["new_flows"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        assert_eq!(new, 20);
    }

    /// `text` as a person might re-save it: a comment, blank lines and trailing spaces added,
    /// keys of a table in another order. It means exactly what `text` means.
    fn cosmetic_edit(text: &str) -> String {
        let mut out = String::from("# edited by hand: nothing but comments and layout\n\n");
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if line.starts_with("vip = ")
                && let Some(port) = lines.next_if(|l| l.starts_with("port = "))
            {
                out.push_str(port);
                out.push_str("   # the service port\n");
                out.push_str(line);
                out.push('\n');
                continue;
            }
            out.push_str(line);
            out.push_str(if line.is_empty() { "\n\n" } else { "  \n" });
        }
        out
    }

    /// How many reloads the daemon has logged (applied, unchanged or rejected).
    fn reloads(d: &Daemon) -> usize {
        d.log().matches("config reload").count()
    }

    #[test]
    fn an_edit_that_changes_only_comments_layout_or_key_order_keeps_a_live_shift() {
        let b = bed("100", "0");
        b.daemon.ok(&["shift", "web", "v1=50", "v2=50"]);
        let text = config(&b.topo, "100", "0");
        let edited = cosmetic_edit(&text);
        assert_ne!(edited, text);
        assert!(edited.find("port = 80").unwrap() < edited.find("vip = ").unwrap());
        let before = reloads(&b.daemon);
        b.daemon.write_config(&edited);
        b.daemon.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(30);
        while reloads(&b.daemon) == before {
            assert!(
                Instant::now() < deadline,
                "the edit was not reloaded:\n{}",
                b.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Let a second trigger (the file change and SIGHUP) be handled too.
        std::thread::sleep(Duration::from_millis(500));
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["revision"]["number"], 2, "{}", b.daemon.log());
        assert_eq!(weights(&s), [("v1".into(), 50.0), ("v2".into(), 50.0)]);
        let mut answers = std::collections::HashSet::new();
        for _ in 0..40 {
            answers.insert(ask_once(b.topo.client(), vip(), TIMEOUT).unwrap());
        }
        assert_eq!(answers.len(), 2, "new flows still split 50/50: {answers:?}");
        // A restart reads the edited file too, and keeps the shift.
        let mut b = b;
        b.daemon.stop();
        b.daemon.spawn();
        assert_eq!(b.daemon.revision(), 2);
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 50.0), ("v2".into(), 50.0)]
        );
    }

    #[test]
    fn a_config_file_change_is_applied_and_a_broken_one_ignored() {
        let b = bed("100", "0");
        b.daemon.write_config(&config(&b.topo, "70", "30"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.daemon.revision() != 2 {
            assert!(
                Instant::now() < deadline,
                "file change not applied:\n{}",
                b.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 70.0), ("v2".into(), 30.0)]
        );
        // A broken file (on SIGHUP too) is reported and changes nothing.
        let broken = config(&b.topo, "70", "30").replace("weight = 30\n", "weight = 300\n");
        assert!(broken.contains("weight = 300"));
        b.daemon.write_config(&broken);
        b.daemon.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !b.daemon.log().contains("config reload rejected") {
            assert!(
                Instant::now() < deadline,
                "broken file not reported:\n{}",
                b.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            b.daemon
                .log()
                .contains("`weight`: 300 is out of range 0..=100"),
            "{}",
            b.daemon.log()
        );
        assert_eq!(b.daemon.revision(), 2);
        assert_eq!(
            ask_once(b.topo.client(), vip(), TIMEOUT).unwrap().len(),
            2,
            "still serving"
        );
    }
}

mod refusals {
    use super::*;

    #[test]
    fn bad_input_is_refused_with_the_exact_message_and_changes_nothing() {
        let b = bed("100", "0");
        let bad = b.daemon.state_dir().join("../bad.toml");
        let text = config(&b.topo, "100", "0").replace("port = 80", "port = 80\ncolour = \"red\"");
        std::fs::write(&bad, &text).unwrap();
        let line = 1 + text.lines().position(|l| l.starts_with("colour")).unwrap();
        let out = b.daemon.cli(&["apply", "-f", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out).lines().next().unwrap_or_default(),
            format!(
                "error: {}:{line}:1: unknown key `colour` in [[service]]",
                bad.display()
            )
        );
        let out = b.daemon.cli(&["validate", "-f", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        for (args, code, message) in [
            (
                vec!["shift", "web", "v9=10"],
                1,
                "veer: service `web` has no group `v9`",
            ),
            (vec!["shift", "shop", "v1=10"], 1, "veer: no service `shop`"),
            (
                vec!["shift", "web", "v1=101"],
                2,
                "veer: `v1=101`: 101 is out of range 0..=100",
            ),
            (
                vec!["shift", "web", "v1"],
                2,
                "veer: `v1`: want GROUP=WEIGHT, e.g. v1=90",
            ),
            (
                vec!["drain", "web", "v1"],
                1,
                "veer: draining `v1` would leave service `web` with no group taking new connections; shift weight to another group first, or pass --force to drop new connections",
            ),
            (
                vec!["pin", "web", "203.0.113.1/24", "v2"],
                1,
                "veer: prefix `203.0.113.1/24`: not a network prefix with its host bits zero (e.g. 203.0.113.0/24)",
            ),
            (
                vec!["rollback", "--to", "7"],
                1,
                "veer: no revision 7 (see `veer history`)",
            ),
            (
                vec![
                    "rollout",
                    "start",
                    "web",
                    "--to",
                    "v2",
                    "--latency-slack",
                    "2m",
                ],
                1,
                "veer: rollout judge: latency_slack 2m is out of range 0s..=1m",
            ),
        ] {
            let out = b.daemon.cli(&args);
            assert_eq!(
                (out.status.code(), stderr(&out).as_str()),
                (Some(code), message),
                "veer {args:?}"
            );
        }
        assert_eq!(b.daemon.revision(), 1, "nothing changed");
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 100.0), ("v2".into(), 0.0)]
        );
    }

    /// What is pinned: every map's content (`bpftool map dump`) and identity (`map show`),
    /// every link's program (`link show`), and the state directory's files. `VEER_REASONS` is
    /// left out: it counts the kernel's own chatter on the bed's links (IPv6 neighbour
    /// discovery), which no daemon writes; so is `VEER_NH_CLOCK`, whose lease the running
    /// daemon renews every 100 ms (and whose generation the bed's neighbour chatter bumps).
    fn node_state(d: &Daemon) -> std::collections::BTreeMap<String, String> {
        let bpftool = |args: &[&str], path: &std::path::Path| {
            let out = std::process::Command::new("bpftool")
                .args(args)
                .arg(path)
                .output()
                .unwrap();
            assert!(out.status.success(), "bpftool {args:?} {}", path.display());
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let mut snapshot = std::collections::BTreeMap::new();
        let files = |dir: &std::path::Path| {
            let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        };
        for map in files(&d.pin_dir) {
            if map.ends_with("VEER_REASONS") || map.ends_with(veer_common::maps::NH_CLOCK) {
                continue;
            }
            let shown = bpftool(&["-j", "map", "show", "pinned"], &map);
            let dumped = bpftool(&["-j", "map", "dump", "pinned"], &map);
            snapshot.insert(map.display().to_string(), format!("{shown}{dumped}"));
        }
        for link in files(&d.pin_dir.join("links")) {
            snapshot.insert(
                link.display().to_string(),
                bpftool(&["-j", "link", "show", "pinned"], &link),
            );
        }
        for file in files(&d.state_dir().join("revisions")) {
            snapshot.insert(
                file.display().to_string(),
                std::fs::read_to_string(&file).unwrap(),
            );
        }
        assert!(snapshot.len() > 10, "{snapshot:?}");
        snapshot
    }

    #[test]
    fn a_second_daemon_on_the_same_pins_and_state_exits_having_changed_nothing() {
        // 50/50: the last check asks for both groups, which 40 flows at 90/10 miss 1.5% of runs.
        let b = bed("50", "50");
        let before = node_state(&b.daemon);
        // On another socket: only the locks stop it.
        let other = b.daemon.state_dir().join("../second.sock");
        let (code, log) = b.daemon.second(&other, Duration::from_secs(20));
        assert_eq!(code, Some(1), "{log}");
        assert!(
            log.contains(&format!(
                "is locked by another veer daemon (pid {})",
                b.daemon.pid()
            )),
            "{log}"
        );
        assert_eq!(node_state(&b.daemon), before, "{log}");
        // On the same socket.
        let (code, log) = b.daemon.second(&b.daemon.socket, Duration::from_secs(20));
        assert_eq!(code, Some(1), "{log}");
        assert!(log.contains("another veer daemon answers on it"), "{log}");
        assert_eq!(node_state(&b.daemon), before, "{log}");
        // No other user can take these locks (flock(2) needs only a descriptor) to keep a daemon
        // from starting.
        for locked in [b.daemon.pin_dir.clone(), b.daemon.state_dir().join("lock")] {
            let out = std::process::Command::new("setpriv")
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .args(["flock", "--nonblock", "--shared"])
                .arg(&locked)
                .arg("true")
                .output()
                .unwrap();
            assert!(
                !out.status.success() && stderr(&out).contains("Permission denied"),
                "{}: {}",
                locked.display(),
                stderr(&out)
            );
        }
        // The first one goes on as before.
        assert_eq!(b.daemon.revision(), 1);
        let mut answers = std::collections::HashSet::new();
        for _ in 0..40 {
            answers.insert(ask_once(b.topo.client(), vip(), TIMEOUT).unwrap());
        }
        assert_eq!(answers.len(), 2, "{answers:?}");
    }

    /// Directories removed when dropped, pass or fail (those that exist).
    struct TempDirs(Vec<std::path::PathBuf>);

    impl Drop for TempDirs {
        fn drop(&mut self) {
            for dir in self.0.iter().filter(|d| d.exists()) {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    eprintln!("veer-tests: cannot remove {}: {e}", dir.display());
                }
            }
        }
    }

    #[test]
    fn a_daemon_without_root_says_which_capabilities_it_lacks_and_touches_nothing() {
        veer_tests::require_root();
        let dir = std::env::temp_dir().join(format!("veer-noroot-{}", std::process::id()));
        // /sys/fs/bpf may be world-writable: a daemon that fails late could leave its pin dir.
        let pin_dir =
            std::path::PathBuf::from(format!("/sys/fs/bpf/veer-noroot-{}", std::process::id()));
        let _cleanup = TempDirs(vec![dir.clone(), pin_dir.clone()]);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("veer.toml");
        let text = ConfigBuilder::new(Vec::<String>::new())
            .service(web(Family::V4, "100", "0"))
            .to_toml();
        std::fs::write(&config, text).unwrap();
        for path in [&dir, &config] {
            std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
        }
        let (state, socket) = (dir.join("state"), dir.join("veer.sock"));
        let run = |caps: &[&str]| {
            std::process::Command::new("setpriv")
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .args(caps)
                .arg(veer_tests::daemon::veer_bin())
                .arg("--socket")
                .arg(&socket)
                .args(["daemon", "--metrics", "off", "--config"])
                .arg(&config)
                .arg("--state-dir")
                .arg(&state)
                .arg("--pin-dir")
                .arg(&pin_dir)
                .output()
                .unwrap()
        };
        for (caps, lacks) in [
            (&[][..], "CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN"),
            (
                &["--inh-caps", "+net_admin", "--ambient-caps", "+net_admin"][..],
                "CAP_BPF, CAP_SYS_ADMIN",
            ),
        ] {
            let out = run(caps);
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            assert_eq!(
                stderr(&out),
                format!(
                    "veer: veer daemon needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN; this process (uid 65534) lacks {lacks}: run it as root (sudo veer daemon, or dist/veer.service)"
                ),
                "{caps:?}"
            );
            for created in [&state, &socket, &pin_dir] {
                assert!(!created.exists(), "{} was created", created.display());
            }
        }
    }

    #[test]
    fn a_socket_group_member_may_operate_but_not_make_the_daemon_run_commands() {
        // gid 65534 (nogroup): the member is uid 65534 with that primary group.
        let b = build_bed(Family::V4, "100", "0", 8080, &["--socket-group", "65534"]);
        let daemon = &b.daemon;
        std::fs::set_permissions(
            daemon.socket.parent().unwrap(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let member = |args: &[&str]| {
            std::process::Command::new("setpriv")
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg(veer_tests::daemon::veer_bin())
                .arg("--socket")
                .arg(&daemon.socket)
                .args(args)
                .output()
                .unwrap()
        };
        let out = member(&["shift", "web", "v1=90", "v2=10"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        // In the daemon's own directory: a file of another run or test cannot fail this one.
        let pwned = daemon.dir().join("pwned");
        let gate = format!("exec:touch {}", pwned.display());
        let out = member(&["rollout", "start", "web", "--to", "v2", "--gate", &gate]);
        assert_eq!(
            stderr(&out),
            "veer: only root may start a rollout with exec: gates (they run commands as the daemon's user)"
        );
        assert!(!pwned.exists());
        assert_eq!(daemon.revision(), 2);
    }

    #[test]
    fn a_peer_that_is_not_root_is_refused() {
        let b = bed("100", "0");
        let as_nobody = |args: &[&str]| {
            std::process::Command::new("setpriv")
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg(veer_tests::daemon::veer_bin())
                .arg("--socket")
                .arg(&b.daemon.socket)
                .args(args)
                .output()
                .unwrap()
        };
        let out = as_nobody(&["shift", "web", "v2=100"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("permission denied"),
            "{}",
            stderr(&out)
        );
        // Even if the socket's mode is widened by mistake, SO_PEERCRED still refuses.
        std::fs::set_permissions(
            &b.daemon.socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        std::fs::set_permissions(
            b.daemon.socket.parent().unwrap(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let out = as_nobody(&["shift", "web", "v2=100"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            "veer: only root (or the group given with --socket-group) may use veer's control socket"
        );
        assert_eq!(b.daemon.revision(), 1);
    }
}

mod live {
    use super::*;

    #[test]
    fn shifts_under_load_fail_no_request_and_keep_old_flows() {
        let b = bed("100", "0");
        let mut held = Held::open(b.topo.client(), vip(), 20);
        assert!(held.first.iter().all(|n| n == "v1"));
        let load = Load::new_connections(b.topo.client(), vip(), 20_000, Duration::from_mins(1));
        for (v1, v2) in [("90", "10"), ("50", "50"), ("10", "90"), ("0", "100")] {
            std::thread::sleep(Duration::from_millis(300));
            b.daemon
                .ok(&["shift", "web", &format!("v1={v1}"), &format!("v2={v2}")]);
            held.check(&format!("after shift to {v1}/{v2}"));
        }
        std::thread::sleep(Duration::from_millis(300));
        let report = load.finish();
        report.assert_clean("shifts");
        assert!(
            report.answers.get("v2").copied().unwrap_or(0) > 0,
            "{report:?}"
        );
        for i in 0..20 {
            assert_eq!(
                ask_once(b.topo.client(), vip(), TIMEOUT).unwrap(),
                "v2",
                "new connection {i} at 0/100"
            );
        }
        held.check("at the end");
        assert_eq!(b.daemon.revision(), 5);
    }

    /// A live shift, then `kill -9` under load: traffic keeps flowing with no daemon, the next
    /// daemon adopts the links, keeps the shift (the file still says 100/0) and conntrack, and
    /// steers new flows by a shift made after the restart, failing no request.
    fn a_crashed_daemon_is_succeeded_without_a_failed_request(family: Family) {
        let mut b = build_bed(family, "100", "0", 8080, &[]);
        let (service, vip) = (family.service(), family.vip());
        b.daemon.ok(&["shift", service, "v1=50", "v2=50"]);
        let mut held = Held::open(b.topo.client(), vip, 30);
        let load = Load::new_connections(b.topo.client(), vip, 20_000, Duration::from_mins(1));
        std::thread::sleep(Duration::from_millis(300));
        b.daemon.kill9();
        std::thread::sleep(Duration::from_millis(500));
        held.check("with no daemon");
        b.daemon.spawn();
        held.check("after the restart");
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["revision"]["number"], 2);
        assert_eq!(weights(&s), [("v1".into(), 50.0), ("v2".into(), 50.0)]);
        let active: u64 = (0..2)
            .map(|g| {
                s["services"][0]["groups"][g]["active_flows"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        assert!(active >= 30, "active flows after restart: {active}");
        assert!(
            b.daemon.log().contains("adopted=true"),
            "{}",
            b.daemon.log()
        );
        b.daemon.ok(&["shift", service, "v1=0", "v2=100"]);
        std::thread::sleep(Duration::from_millis(300));
        let report = load.finish();
        report.assert_clean(&format!("{family:?}: kill -9, restart and shift"));
        held.check("after the restart and a shift");
        for i in 0..10 {
            assert_eq!(
                ask_once(b.topo.client(), vip, TIMEOUT).unwrap(),
                "v2",
                "new {family:?} connection {i}"
            );
        }
    }

    #[test]
    fn a_crashed_daemon_is_succeeded_without_a_failed_request_ipv4() {
        a_crashed_daemon_is_succeeded_without_a_failed_request(Family::V4);
    }

    #[test]
    fn a_crashed_daemon_is_succeeded_without_a_failed_request_ipv6() {
        a_crashed_daemon_is_succeeded_without_a_failed_request(Family::V6);
    }

    #[test]
    fn a_new_build_of_the_programs_replaces_the_old_one_on_the_pinned_links_under_load() {
        let mut b = bed("50", "50");
        // The client-facing veth is steered by TC (see `dataplane::ifaces`).
        let steer_prog = |b: &Bed| -> String {
            let out = std::process::Command::new("bpftool")
                .args(["link", "show", "pinned"])
                .arg(
                    b.daemon
                        .pin_dir
                        .join("links")
                        .join(format!("veer_tc_steer_{}", b.topo.node_client_ifname())),
                )
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace()
                .skip_while(|w| *w != "prog")
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        };
        let before = steer_prog(&b);
        assert!(!before.is_empty(), "no pinned steering link");
        let mut held = Held::open(b.topo.client(), vip(), 30);
        let load = Load::new_connections(b.topo.client(), vip(), 20_000, Duration::from_mins(1));
        std::thread::sleep(Duration::from_millis(300));
        // A clean stop leaves everything attached; the next start loads its (new) build and
        // swaps it onto the same links.
        b.daemon.stop();
        held.check("daemon stopped");
        b.daemon.spawn();
        std::thread::sleep(Duration::from_millis(300));
        let report = load.finish();
        report.assert_clean("program upgrade");
        held.check("after the upgrade");
        let after = steer_prog(&b);
        assert_ne!(
            before, after,
            "the link should run the newly loaded program"
        );
    }

    #[test]
    fn drain_wait_ends_with_the_last_flow_and_times_out_with_code_3() {
        let b = bed("100", "0");
        let held = Held::open(b.topo.client(), vip(), 5);
        b.daemon.ok(&["shift", "web", "v2=100"]);
        let out = b
            .daemon
            .cli(&["drain", "web", "v1", "--wait", "--timeout", "1s"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            stderr(&out).ends_with("veer: drain web/v1: 5 flows still active after 1s"),
            "{}",
            stderr(&out)
        );
        let socket = b.daemon.socket.clone();
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let out = std::process::Command::new(veer_tests::daemon::veer_bin())
                .arg("--socket")
                .arg(&socket)
                .args(["drain", "web", "v1", "--wait", "--timeout", "60s"])
                .output()
                .unwrap();
            (out, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        let closed = Instant::now();
        held.close();
        let (out, _) = waiter.join().unwrap();
        // The bed keeps closing entries for an hour: only a drain that stops counting a flow
        // when it closes (FIN/RST), not when its entry expires, can end within the timeout.
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        eprintln!(
            "drain --wait returned {:?} after the last flow closed",
            closed.elapsed()
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("drained"));
    }

    #[test]
    fn history_and_rollback_round_trip_and_survive_a_restart() {
        let mut b = bed("100", "0");
        b.daemon.ok(&["shift", "web", "v1=80", "v2=20"]);
        b.daemon.ok(&["pin", "web", "203.0.113.0/24", "v2"]);
        let h = b.daemon.json(&["history"]);
        let origins: Vec<&str> = h["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["origin"].as_str().unwrap())
            .collect();
        assert_eq!(origins, ["pin", "shift", "config"]);
        // Back one step: the pin goes, the weights stay.
        assert_eq!(b.daemon.json(&["rollback"])["revision"], 4);
        let s = b.daemon.json(&["status"]);
        assert!(s["services"][0]["pins"].as_array().unwrap().is_empty());
        assert_eq!(weights(&s), [("v1".into(), 80.0), ("v2".into(), 20.0)]);
        // Back to the start, for one service.
        assert_eq!(
            b.daemon.json(&["rollback", "web", "--to", "1"])["revision"],
            5
        );
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 100.0), ("v2".into(), 0.0)]
        );
        for _ in 0..10 {
            assert_eq!(ask_once(b.topo.client(), vip(), TIMEOUT).unwrap(), "v1");
        }
        b.daemon.stop();
        b.daemon.spawn();
        let h = b.daemon.json(&["history", "web"]);
        assert_eq!(h["revisions"].as_array().unwrap().len(), 5);
        assert_eq!(h["revisions"][0]["origin"], "rollback");
        assert_eq!(b.daemon.revision(), 5);
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 100.0), ("v2".into(), 0.0)]
        );
    }

    #[test]
    fn flows_lists_conntrack_entries_bounded() {
        let b = bed("100", "0");
        let _held = Held::open(b.topo.client(), vip(), 5);
        let f = b.daemon.json(&["flows", "web", "--limit", "3"]);
        assert_eq!(f["matched"], 5);
        assert_eq!(f["flows"].as_array().unwrap().len(), 3);
        assert_eq!(f["flows"][0]["backend"], "198.51.100.11:8080");
        assert_eq!(f["flows"][0]["state"], "established");
        let none = b.daemon.json(&["flows", "--backend", "198.51.100.21:8080"]);
        assert_eq!(none["matched"], 0);
    }
}

mod dual_stack {
    use super::*;

    /// web (IPv4) and web6 (IPv6), both over v1 and v2.
    fn config(topo: &Topology, v1: &str, v2: &str) -> String {
        node(topo)
            .service(web(Family::V4, v1, v2))
            .service(web(Family::V6, v1, v2))
            .to_toml()
    }

    struct Bed6 {
        daemon: Daemon,
        _servers: Vec<TcpServer>,
        topo: Topology,
    }

    fn bed6(v1: &str, v2: &str) -> Bed6 {
        let (a1, a2) = (Family::V6.backend("v1"), Family::V6.backend("v2"));
        let topo = Topology::builder()
            .client()
            .backend("v1", &[V1, a1])
            .backend("v2", &[V2, a2])
            .build()
            .unwrap();
        let servers = vec![
            TcpServer::start(topo.backend("v1"), SocketAddr::new(V1, 8080), "v1").unwrap(),
            TcpServer::start(topo.backend("v2"), SocketAddr::new(V2, 8080), "v2").unwrap(),
            TcpServer::start(topo.backend("v1"), SocketAddr::new(a1, 8080), "v1").unwrap(),
            TcpServer::start(topo.backend("v2"), SocketAddr::new(a2, 8080), "v2").unwrap(),
        ];
        let daemon = Daemon::start(&topo, &config(&topo, v1, v2));
        Bed6 {
            daemon,
            _servers: servers,
            topo,
        }
    }

    #[test]
    fn a_dual_stack_pair_is_shifted_together_and_shown_with_ipv6_addresses() {
        let b = bed6("100", "0");
        let out = b.daemon.ok(&["shift", "web,web6", "v1=0", "v2=100"]);
        assert_eq!(out.trim(), "shift web,web6: revision 2");
        let s = b.daemon.json(&["status"]);
        for svc in s["services"].as_array().unwrap() {
            let w: Vec<f64> = svc["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["weight"].as_f64().unwrap())
                .collect();
            assert_eq!(w, [0.0, 100.0], "{}", svc["name"]);
        }
        assert_eq!(s["services"][1]["vip"], "2001:db8::10");
        assert_eq!(
            s["services"][1]["groups"][1]["backends"][0]["address"],
            "[2001:db8:b::21]:8080"
        );
        for i in 0..10 {
            assert_eq!(
                ask_once(b.topo.client(), vip(), TIMEOUT).unwrap(),
                "v2",
                "IPv4 connection {i}"
            );
            assert_eq!(
                ask_once(b.topo.client(), Family::V6.vip(), TIMEOUT).unwrap(),
                "v2",
                "IPv6 connection {i}"
            );
        }
        let h = b.daemon.json(&["history", "web6"]);
        assert_eq!(
            h["revisions"][0]["summary"],
            "shift web: v1=0 v2=100; web6: v1=0 v2=100"
        );
        // A pair where one side lacks the group is refused whole.
        let out = b.daemon.cli(&["shift", "web,web6", "v3=10"]);
        assert_eq!(stderr(&out), "veer: service `web` has no group `v3`");
        assert_eq!(b.daemon.revision(), 2);
    }
}

mod rollouts {
    use super::*;

    fn rollout_json(b: &Bed) -> serde_json::Value {
        b.daemon.json(&["rollout", "status", "web"])
    }

    fn wait_for(
        b: &Bed,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let r = rollout_json(b);
            if done(&r) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not reached in {limit:?}: {r}\n{}",
                b.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn a_rollout_under_load_completes_with_zero_failed_requests() {
        let b = bed("100", "0");
        let mut held = Held::open(b.topo.client(), vip(), 10);
        let load = Load::new_connections(b.topo.client(), vip(), 50_000, Duration::from_mins(2));
        let out = b.daemon.cli(&[
            "rollout",
            "start",
            "web",
            "--to",
            "v2",
            "--steps",
            "10,50,100",
            "--pause",
            "1s",
            "--min-flows",
            "5",
            "--wait",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("step 1/3 (10%)") && text.contains("completed"),
            "{text}"
        );
        held.check("after the rollout");
        let report = load.finish();
        report.assert_clean("rollout");
        assert!(report.answers.get("v2").copied().unwrap_or(0) > 0);
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 0.0), ("v2".into(), 100.0)]
        );
        let r = rollout_json(&b);
        assert_eq!(
            (r["phase"].as_str(), r["step"].as_u64()),
            (Some("completed"), Some(3))
        );
        let summaries: Vec<String> = b.daemon.json(&["history"])["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["summary"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            summaries[0].contains("completed") && summaries.iter().any(|s| s.contains("step 2/3")),
            "{summaries:?}"
        );
    }

    #[test]
    fn a_new_group_that_refuses_connections_is_rolled_back_and_old_flows_stay() {
        // v2's service is not listening: its backend answers SYNs with RST.
        let b = bed_with_v2_port("100", "0", 9999);
        let mut held = Held::open(b.topo.client(), vip(), 10);
        let load = Load::new_connections(b.topo.client(), vip(), 50_000, Duration::from_mins(1));
        let started = Instant::now();
        let out = b.daemon.cli(&[
            "rollout",
            "start",
            "web",
            "--to",
            "v2",
            "--steps",
            "20,100",
            "--pause",
            "20s",
            "--min-flows",
            "3",
            "--max-failure-rate",
            "1%",
            "--wait",
        ]);
        let took = started.elapsed();
        let report = load.finish();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("veer: rollout web -> v2 rolled back: failure-rate: ")
                && err.contains("new flows to `v2` failed"),
            "{err}"
        );
        eprintln!(
            "rolled back {took:?} after the start; load: {} ok, {} failed",
            report.ok, report.failed
        );
        assert!(
            took < Duration::from_secs(20),
            "the breach must not wait for the pause to end"
        );
        held.check("after the rollback");
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 100.0), ("v2".into(), 0.0)]
        );
        for i in 0..20 {
            assert_eq!(
                ask_once(b.topo.client(), vip(), TIMEOUT).unwrap(),
                "v1",
                "connection {i} after the rollback"
            );
        }
        assert_eq!(rollout_json(&b)["phase"], "rolled_back");
    }

    #[test]
    fn pause_resume_and_abort() {
        let b = bed("100", "0");
        b.daemon.ok(&[
            "rollout",
            "start",
            "web",
            "--to",
            "v2",
            "--steps",
            "10,50,100",
            "--pause",
            "1m",
            "--min-flows",
            "0",
        ]);
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 90.0), ("v2".into(), 10.0)]
        );
        // Every hint is one that works from where the rollout stands.
        let out = b.daemon.cli(&["shift", "web", "v2=50"]);
        assert_eq!(
            stderr(&out),
            "veer: service `web` has a rollout to `v2` in progress (step 1/3); wait for it to finish, or abort it first (veer rollout abort web)"
        );
        let out = b.daemon.cli(&["rollout", "start", "web", "--to", "v2"]);
        assert_eq!(out.status.code(), Some(1), "a second rollout is refused");
        b.daemon.ok(&["rollout", "pause", "web"]);
        assert_eq!(rollout_json(&b)["phase"], "paused");
        let out = b.daemon.cli(&["shift", "web", "v2=50"]);
        assert_eq!(
            (out.status.code(), stderr(&out).as_str()),
            (
                Some(1),
                "veer: service `web` has a paused rollout to `v2` (step 1/3); abort it (veer rollout abort web), or resume it and let it finish (veer rollout resume web)"
            )
        );
        let out = b.daemon.cli(&["drain", "web", "v1", "--force"]);
        assert!(
            stderr(&out).contains("has a paused rollout"),
            "{}",
            stderr(&out)
        );
        b.daemon.ok(&["rollout", "pause", "web"]);
        b.daemon.ok(&["rollout", "resume", "web"]);
        assert_eq!(rollout_json(&b)["phase"], "running");
        b.daemon.ok(&["rollout", "abort", "web"]);
        let r = rollout_json(&b);
        assert_eq!(
            (r["phase"].as_str(), r["reason"].as_str()),
            (Some("aborted"), Some("aborted by an operator"))
        );
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 100.0), ("v2".into(), 0.0)]
        );
        // Aborting what is not running is what a script re-running it wants: done already.
        let revision = b.daemon.revision();
        let out = b.daemon.cli(&["rollout", "abort", "web"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!(
                "rollout web: nothing to abort (the latest rollout was aborted); revision {revision} stays in force"
            )
        );
        let r = b.daemon.json(&["rollout", "abort", "web"]);
        assert_eq!(
            (&r["changed"], &r["revision"], &r["note"]),
            (
                &false.into(),
                &revision.into(),
                &"rollout web: nothing to abort (the latest rollout was aborted)".into()
            ),
            "{r}"
        );
        assert_eq!(b.daemon.revision(), revision);
        let out = b.daemon.cli(&["rollout", "abort", "shop"]);
        assert_eq!(
            (out.status.code(), stderr(&out).as_str()),
            (Some(1), "veer: no service `shop`")
        );
        // Pausing or resuming what is not running cannot be done: an error.
        let out = b.daemon.cli(&["rollout", "pause", "web"]);
        assert_eq!(
            stderr(&out),
            "veer: service `web` has no rollout in progress"
        );
    }

    #[test]
    fn a_daemon_restart_mid_rollout_resumes_at_the_step_it_was_at() {
        let mut b = bed("100", "0");
        b.daemon.ok(&[
            "rollout",
            "start",
            "web",
            "--to",
            "v2",
            "--steps",
            "10,50,100",
            "--pause",
            // A step's pause counts from the step's start, across a restart: a short one could
            // end while a loaded machine starts the daemon (a 3 s pause did, with both cores
            // busy), showing step 3. Steps are moved on with `promote` instead.
            "1h",
            "--min-flows",
            "0",
        ]);
        b.daemon.ok(&["rollout", "promote", "web"]);
        wait_for(&b, "step 2", Duration::from_secs(30), |r| r["step"] == 2);
        b.daemon.kill9();
        b.daemon.spawn();
        let r = rollout_json(&b);
        assert_eq!(
            (r["phase"].as_str(), r["step"].as_u64()),
            (Some("running"), Some(2)),
            "{r}"
        );
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 50.0), ("v2".into(), 50.0)]
        );
        b.daemon.ok(&["rollout", "promote", "web", "--full"]);
        wait_for(&b, "completion", Duration::from_secs(30), |r| {
            r["phase"] == "completed"
        });
        // A plan that asks to hold after a restart holds.
        b.daemon.ok(&["shift", "web", "v1=100", "v2=0"]);
        b.daemon.ok(&[
            "rollout",
            "start",
            "web",
            "--to",
            "v2",
            "--steps",
            "10,100",
            "--pause",
            "1m",
            "--hold-on-restart",
        ]);
        b.daemon.stop();
        b.daemon.spawn();
        let r = rollout_json(&b);
        assert_eq!(
            (r["phase"].as_str(), r["step"].as_u64()),
            (Some("paused"), Some(1)),
            "{r}"
        );
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 90.0), ("v2".into(), 10.0)]
        );
    }
}

mod health {
    use super::*;

    const V1B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 12));

    #[test]
    fn an_active_http_check_takes_a_backend_out_and_brings_it_back() {
        let topo = Topology::builder()
            .client()
            .backend("v1", &[V1, V1B])
            .build()
            .unwrap();
        let _a = TcpServer::start(topo.backend("v1"), SocketAddr::new(V1, 8080), "v1a").unwrap();
        let b_server =
            TcpServer::start(topo.backend("v1"), SocketAddr::new(V1B, 8080), "v1b").unwrap();
        let backends = [SocketAddr::new(V1, 8080), SocketAddr::new(V1B, 8080)];
        let config = ConfigBuilder::new(topo.node_ifnames())
            .service(service("web", vip(), vec![group("v1", "100", &backends)]))
            .health(
                "web",
                HealthCheck {
                    kind: CheckKind::Http {
                        path: "/healthz".into(),
                        expect_status: 200,
                    },
                    // A stopped server refuses at once; a timeout is what a loaded machine
                    // could miss twice in a row with a shorter one, taking v1a down too.
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    rise: 2,
                    fall: 2,
                },
            )
            .to_toml();
        let daemon = Daemon::start(&topo, &config);
        let answers = |n: usize| -> std::collections::HashMap<String, usize> {
            let mut m = std::collections::HashMap::new();
            for _ in 0..n {
                *m.entry(ask_once(topo.client(), vip(), TIMEOUT).unwrap())
                    .or_default() += 1;
            }
            m
        };
        let healthy = |d: &Daemon| -> Vec<bool> {
            d.json(&["status"])["services"][0]["groups"][0]["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["healthy"].as_bool().unwrap())
                .collect()
        };
        assert!(answers(40).len() == 2, "both backends take flows");
        let held = Held::open(topo.client(), vip(), 10);
        drop(b_server);
        let deadline = Instant::now() + Duration::from_secs(30);
        while healthy(&daemon) != [true, false] {
            assert!(
                Instant::now() < deadline,
                "v1b never went down:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            answers(40).keys().collect::<Vec<_>>(),
            ["v1a"],
            "a down backend gets no new flow"
        );
        let _b_again =
            TcpServer::start(topo.backend("v1"), SocketAddr::new(V1B, 8080), "v1b").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while healthy(&daemon) != [true, true] {
            assert!(
                Instant::now() < deadline,
                "v1b never came back:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(answers(40).len(), 2, "the backend is back in the table");
        assert!(daemon.log().contains("backend down") && daemon.log().contains("backend up"));
        drop(held);
    }
}

const METRICS: &str = "127.0.0.1:9464";

fn bed_with_metrics(v1: &str, v2: &str) -> Bed {
    build_bed(Family::V4, v1, v2, 8080, &["--metrics", METRICS])
}

mod metrics {
    use super::*;

    /// Waits (at most 30 s) until the daemon's status says `done`.
    fn until(b: &Bed, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = b.daemon.json(&["status"]);
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {}\n{}",
                s["config"],
                b.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn refused_reloads_and_settings_waiting_for_a_restart_show_in_apply_status_and_metrics() {
        let b = bed_with_metrics("100", "0");
        let path = b.daemon.config.display().to_string();
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["config"]["path"], path.as_str());
        assert!(s["config"]["last_error"].is_null(), "{}", s["config"]);
        assert_eq!(s["config"]["pending_restart"], serde_json::json!([]));
        let first = s["config"]["last_reload"].as_str().unwrap().to_owned();
        let text = scrape(&b);
        let started = metric(&text, "veer_config_last_reload_success_timestamp_seconds").unwrap();
        assert!(started > 1.0e9, "{text}");
        assert_eq!(
            metric(&text, "veer_config_last_reload_successful"),
            Some(1.0)
        );

        a_node_change_waits_for_a_restart(&b);
        a_refused_reload_is_located(&b, &first, started);
        // Mended: the refusal is gone, the reload time moves, nothing waits for a restart.
        b.daemon.write_config(&config(&b.topo, "100", "0"));
        b.daemon.signal(libc::SIGHUP);
        let s = until(&b, "the mended file", |s| {
            s["config"]["last_error"].is_null()
        });
        assert_eq!(s["config"]["pending_restart"], serde_json::json!([]));
        let text = scrape(&b);
        assert_eq!(
            metric(&text, "veer_config_last_reload_successful"),
            Some(1.0)
        );
        assert!(
            metric(&text, "veer_config_last_reload_success_timestamp_seconds").unwrap() > started
        );
        assert!(
            !text.contains("veer_config_last_reload_error_info{"),
            "{text}"
        );
    }

    fn scrape(b: &Bed) -> String {
        node_get(&b.topo, METRICS, "/metrics").expect("scrape /metrics")
    }

    /// Scrapes until the text satisfies `done` (at most 30 s); returns that text.
    fn until_scraped(b: &Bed, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = scrape(b);
            if done(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{text}\n{}", b.daemon.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `veer apply` of a file whose only change is `[node]`: nothing applied, and apply, status
    /// and the metrics say what waits for a restart.
    fn a_node_change_waits_for_a_restart(b: &Bed) {
        // A [node] change waits for a restart, and the answer says so.
        let bigger = b.daemon.state_dir().join("../bigger.toml");
        let bigger_text = node(&b.topo)
            .conntrack_max(131_072)
            .service(web(Family::V4, "100", "0"))
            .to_toml();
        std::fs::write(&bigger, bigger_text).unwrap();
        let waiting = serde_json::json!([
            {"setting": "conntrack_max", "running": "65536", "wanted": "131072"}
        ]);
        let r = b.daemon.json(&["apply", "-f", bigger.to_str().unwrap()]);
        assert_eq!(
            (&r["changed"], &r["pending_restart"]),
            (&false.into(), &waiting),
            "{r}"
        );
        let out = b.daemon.ok(&["apply", "-f", bigger.to_str().unwrap()]);
        assert!(
            out.contains(
                "[node] settings wait for a daemon restart: conntrack_max 65536 -> 131072"
            ),
            "{out}"
        );
        assert_eq!(
            b.daemon.json(&["status"])["config"]["pending_restart"],
            waiting
        );
        let human = b.daemon.ok(&["status"]);
        assert!(
            human.contains(
                "[node] settings wait for a daemon restart: conntrack_max 65536 -> 131072"
            ),
            "{human}"
        );
        assert_eq!(
            metric(
                &scrape(b),
                r#"veer_config_pending_restart{setting="conntrack_max"}"#
            ),
            Some(1.0)
        );
    }

    /// A refused reload: where and why in apply, status and the metrics, and the good reload
    /// that stays in force.
    fn a_refused_reload_is_located(b: &Bed, first: &str, started: f64) {
        let path = b.daemon.config.display().to_string();
        // A refused reload: where and why, and the good reload that stays in force.
        let broken = config(&b.topo, "100", "0").replace("weight = 0\n", "weight = 300\n");
        let line = 1 + broken.lines().position(|l| l == "weight = 300").unwrap();
        b.daemon.write_config(&broken);
        b.daemon.signal(libc::SIGHUP);
        let s = until(b, "the refusal", |s| !s["config"]["last_error"].is_null());
        let e = &s["config"]["last_error"];
        let message = "service `web`, group `v2`, `weight`: 300 is out of range 0..=100";
        assert_eq!(
            (&e["file"], &e["line"], &e["column"], &e["message"]),
            (
                &path.as_str().into(),
                &line.into(),
                &10.into(),
                &message.into()
            ),
            "{e}"
        );
        assert_eq!(s["config"]["last_reload"], first);
        assert_eq!(s["revision"]["number"], 1, "nothing applied");
        let human = b.daemon.ok(&["status"]);
        assert!(
            human.contains(&format!(
                ": {path}:{line}:10: {message}; the last good reload ({first}) stays in force"
            )) && human.contains(&format!("config {path}: REJECTED at ")),
            "{human}"
        );
        let text = scrape(b);
        assert_eq!(
            metric(&text, "veer_config_last_reload_successful"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            metric(&text, "veer_config_last_reload_success_timestamp_seconds"),
            Some(started)
        );
        assert_eq!(
            metric(
                &text,
                &format!(
                    r#"veer_config_last_reload_error_info{{file="{path}",line="{line}",column="10",message="{message}"}}"#
                )
            ),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn metrics_match_the_traffic_sent() {
        let b = bed_with_metrics("100", "0");
        for _ in 0..30 {
            assert_eq!(ask_once(b.topo.client(), vip(), TIMEOUT).unwrap(), "v1");
        }
        let held = Held::open(b.topo.client(), vip(), 4);
        let v1 = r#"{service="web",group="v1",backend="198.51.100.11:8080"}"#;
        let v2 = r#"{service="web",group="v2",backend="198.51.100.21:8080"}"#;
        // Active flows and conntrack entries are what the last upkeep pass counted (every
        // second: `Controller::metrics_status`), which may have run before the held flows were
        // opened: wait for a pass after them (the counters below are read live).
        let text = until_scraped(&b, |text| {
            metric(text, &format!("veer_backend_active_flows{v1}")) == Some(4.0)
        });
        assert_eq!(
            metric(&text, &format!("veer_backend_new_flows_total{v1}")),
            Some(34.0),
            "{text}"
        );
        assert_eq!(
            metric(&text, &format!("veer_backend_new_flows_total{v2}")),
            Some(0.0)
        );
        assert_eq!(
            metric(&text, &format!("veer_backend_active_flows{v1}")),
            Some(4.0)
        );
        assert_eq!(
            metric(&text, &format!("veer_backend_healthy{v1}")),
            Some(1.0)
        );
        // Each connection: SYN, ACK, request, FIN-ACK at least, in and out.
        assert!(metric(&text, &format!("veer_backend_packets_total{v1}")).unwrap() >= 34.0 * 6.0);
        assert!(metric(&text, &format!("veer_backend_bytes_total{v1}")).unwrap() > 0.0);
        assert_eq!(
            metric(
                &text,
                r#"veer_group_weight_ratio{service="web",group="v1"}"#
            ),
            Some(1.0)
        );
        assert_eq!(metric(&text, "veer_conntrack_capacity"), Some(65536.0));
        assert!(metric(&text, "veer_conntrack_entries").unwrap() >= 4.0);
        assert_eq!(metric(&text, "veer_revision"), Some(1.0));
        assert!(text.contains(r#"veer_build_info{version=""#));
        assert!(
            text.contains(
                r#"veer_packets_not_steered_total{reason="no_backend",verdict="drop"} 0"#
            ),
            "{text}"
        );
        drop(held);
        // Every series the shipped Grafana dashboard queries exists (rollout series once there
        // is a rollout).
        b.daemon.ok(&[
            "rollout",
            "start",
            "web",
            "--to",
            "v2",
            "--steps",
            "100",
            "--pause",
            "1s",
            "--min-flows",
            "0",
        ]);
        let text = node_get(&b.topo, METRICS, "/metrics").expect("scrape /metrics");
        assert_eq!(
            metric(&text, r#"veer_rollout_step{service="web"}"#),
            Some(1.0),
            "{text}"
        );
        let dashboard = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../dist/grafana-dashboard.json"
        ))
        .unwrap();
        let names: std::collections::BTreeSet<&str> = dashboard
            .match_indices("veer_")
            .map(|(i, _)| {
                let rest = &dashboard[i..];
                &rest[..rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len())]
            })
            .filter(|n| n.len() > "veer_".len())
            .collect();
        for name in names {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "dashboard queries {name}, which /metrics does not export"
            );
        }
    }
}

mod gates {
    use super::*;

    /// A Prometheus server in the node namespace scraping the daemon every 500 ms; killed, and
    /// its files removed, on drop.
    struct Prometheus {
        child: std::process::Child,
        dir: std::path::PathBuf,
    }

    impl Prometheus {
        fn start(topo: &Topology) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "veer-prometheus-{}-{}",
                std::process::id(),
                topo.node().name()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("prometheus.yml"),
                format!("global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\nscrape_configs:\n  - job_name: veer\n    static_configs:\n      - targets: ['{METRICS}']\n"),
            )
            .unwrap();
            let child = topo
                .node()
                .command("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg("--web.listen-address=127.0.0.1:9090")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.join("log")).unwrap())
                .spawn()
                .expect("starting prometheus (cargo xtask setup installs it)");
            let p = Self { child, dir };
            // Wait until it has scraped veer at least once.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let answer = node_get(topo, "127.0.0.1:9090", "/api/v1/query?query=veer_revision")
                    .unwrap_or_default();
                if answer.contains("\"value\"") {
                    return p;
                }
                assert!(
                    Instant::now() < deadline,
                    "prometheus never scraped veer: {answer}\n{}",
                    std::fs::read_to_string(p.dir.join("log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    impl Drop for Prometheus {
        fn drop(&mut self) {
            drop(self.child.kill());
            drop(self.child.wait());
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("veer-tests: cannot remove {}: {e}", self.dir.display());
            }
        }
    }

    fn rollout_with_gate(b: &Bed, gate: &str) -> std::process::Output {
        b.daemon.cli(&[
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
            "0",
            "--gate",
            gate,
            "--gate-timeout",
            "5s",
            "--wait",
        ])
    }

    #[test]
    fn a_prometheus_gate_against_a_real_server_passes_or_rolls_back_as_its_query_says() {
        let b = bed_with_metrics("100", "0");
        let _prometheus = Prometheus::start(&b.topo);
        let ok = rollout_with_gate(
            &b,
            r#"prometheus:http://127.0.0.1:9090 sum(veer_backend_failed_flows_total{service="web"}) < 1"#,
        );
        assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 0.0), ("v2".into(), 100.0)]
        );
        b.daemon.ok(&["shift", "web", "v1=100", "v2=0"]);
        let bad = rollout_with_gate(
            &b,
            "prometheus:http://127.0.0.1:9090 max(veer_backend_healthy) > 1",
        );
        assert_eq!(bad.status.code(), Some(1));
        assert_eq!(
            stderr(&bad),
            "veer: rollout web -> v2 rolled back: prometheus:http://127.0.0.1:9090 max(veer_backend_healthy) > 1: max(veer_backend_healthy) = 1, not > 1"
        );
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 100.0), ("v2".into(), 0.0)]
        );
    }

    #[test]
    fn exec_and_http_gates_decide_too() {
        let b = bed("100", "0");
        // The backends' servers speak HTTP: v2's answers 200.
        let ok = b.daemon.cli(&[
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
            "0",
            "--gate",
            "http://198.51.100.21:8080/ready",
            "--gate",
            "exec:test -d /",
            "--wait",
        ]);
        assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
        b.daemon.ok(&["shift", "web", "v1=100", "v2=0"]);
        let bad = b.daemon.cli(&[
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
            "0",
            "--gate",
            "exec:exit 7",
            "--wait",
        ]);
        assert_eq!(bad.status.code(), Some(1));
        assert_eq!(
            stderr(&bad),
            "veer: rollout web -> v2 rolled back: exec:exit 7: exit status: 7"
        );
    }

    #[test]
    fn a_rollout_declared_in_the_config_starts_when_it_is_applied_and_only_once() {
        let b = bed("100", "0");
        let file = b.daemon.state_dir().join("../rollout.toml");
        let mut plan = Plan::to("v2");
        plan.steps = vec![Weight::percent(50), Weight::percent(100)];
        plan.pause = Duration::from_secs(1);
        plan.min_flows = 0;
        let text = node(&b.topo)
            .service(web(Family::V4, "100", "0"))
            .rollout("web", plan)
            .to_toml();
        std::fs::write(&file, &text).unwrap();
        b.daemon.ok(&["apply", "-f", file.to_str().unwrap()]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.daemon.json(&["rollout", "status", "web"])["phase"] != "completed" {
            assert!(
                Instant::now() < deadline,
                "declared rollout did not complete:\n{}",
                b.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 0.0), ("v2".into(), 100.0)]
        );
        // Applying the same file again neither restarts the rollout nor undoes it.
        let r = b.daemon.json(&["apply", "-f", file.to_str().unwrap()]);
        assert_eq!(r["changed"], false, "{r}");
        assert_eq!(
            b.daemon.json(&["rollout", "status", "web"])["phase"],
            "completed"
        );
    }
}

//! What an operator relies on, with a real `veer daemon` and the real CLI on a namespace bed:
//! the status table read against the JSON, the rollout live view on an 80-column pseudo-
//! terminal (and re-attached), NDJSON streams, dry runs that change nothing, `veer diff`,
//! promote and retry, who made each revision, every subcommand's failure in JSON, man pages and
//! examples, systemd readiness and hardening, metrics that `promtool` accepts, `status
//! --offline` with the daemon killed, and the shipped examples run as shipped.

// This binary links every dependency of `veer-tests`.
use {aya as _, rand as _, rcgen as _, tokio as _, veer as _, veer_common as _};

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use veer_tests::{
    config::{ConfigBuilder, Family, web},
    daemon::{Bed, Daemon, Held, Load, veer_bin, weights},
    netns::Topology,
    pty::{self, Screen},
    servers::{TcpServer, ask_once},
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn vip() -> SocketAddr {
    Family::V4.vip()
}

/// The bed's node settings: every node interface of `topo`, a small conntrack.
fn node(topo: &Topology) -> ConfigBuilder {
    ConfigBuilder::new(topo.node_ifnames())
        .conntrack_max(65_536)
        .tcp_closing(Duration::from_secs(10))
}

/// The bed with `web` at `v1`/`v2` (v2's server on `v2_port`; another port than 8080 leaves it
/// refusing connections), and a daemon started with `args`.
fn bed_with(v1: &str, v2: &str, v2_port: u16, args: &[&str]) -> Bed {
    Bed::start(
        Family::V4,
        v2_port,
        |topo| node(topo).service(web(Family::V4, v1, v2)).to_toml(),
        |topo, config| Daemon::start_with(topo, config, args),
    )
}

fn bed(v1: &str, v2: &str) -> Bed {
    bed_with(v1, v2, 8080, &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// New connections from the client to the VIP for at most `secs` seconds.
fn load(b: &Bed, secs: u64) -> Load {
    Load::new_connections(b.topo.client(), vip(), 200_000, Duration::from_secs(secs))
}

/// A directory of the test's own, removed when the test ends, pass or fail.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("veer-{what}-{}", std::process::id()));
        drop(std::fs::remove_dir_all(&dir));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Runs `veer --socket S args` on a pseudo-terminal `cols` wide.
fn on_terminal(d: &Daemon, args: &[&str], cols: u16) -> pty::PtyChild {
    pty::spawn(
        Command::new(veer_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .env("TERM", "xterm"),
        cols,
        24,
    )
    .unwrap()
}

/// Waits (bounded) until the rollout of `web` is in `phase`.
fn wait_phase(d: &Daemon, phase: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = d.json(&["rollout", "status", "web"]);
        if r["phase"] == phase {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "rollout not {phase} within {within:?}: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

mod status_table {
    use super::*;

    /// The cells of a table printed by `veer status`: each row cut at the columns of its
    /// heading, so a cell under the wrong heading reads as the wrong number.
    fn rows(text: &str) -> Vec<Vec<String>> {
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("GROUP "))
            .unwrap_or_else(|| panic!("no table in {text}"));
        let header = lines[at];
        let starts: Vec<usize> = header
            .match_indices(|c: char| c.is_ascii_uppercase())
            .map(|(i, _)| i)
            .filter(|&i| i == 0 || header.as_bytes()[i - 1] == b' ')
            .collect();
        let mut out = vec![header.split_whitespace().map(str::to_owned).collect()];
        for line in &lines[at + 1..] {
            if line.trim().is_empty() || line.starts_with("pin ") {
                break;
            }
            let cells = starts
                .iter()
                .enumerate()
                .map(|(k, &s)| {
                    let end = starts.get(k + 1).copied().unwrap_or(line.len());
                    line.get(s.min(line.len())..end.min(line.len()))
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                })
                .collect();
            out.push(cells);
        }
        out
    }

    #[test]
    fn every_number_of_the_table_sits_under_its_heading_after_a_failed_rollout() {
        // v2's backend refuses connections: the rollout fails and is rolled back.
        let b = bed_with("100", "0", 8081, &[]);
        let l = load(&b, 30);
        let out = b.daemon.cli(&[
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
            "--wait",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(l.finish().ok > 0);
        // Flows have ended: nothing changes between the two reads below.
        std::thread::sleep(Duration::from_secs(2));
        let human = b.daemon.ok(&["status"]);
        let json = b.daemon.json(&["status"]);
        let rows = rows(&human);
        assert_eq!(
            rows[0],
            [
                "GROUP", "WEIGHT", "BACKEND", "HEALTH", "ACTIVE", "NEW", "FAILED", "PACKETS",
                "BYTES"
            ]
        );
        let mut group = String::new();
        let mut seen = 0;
        for row in &rows[1..] {
            assert_eq!(row.len(), rows[0].len(), "{row:?}");
            if !row[0].is_empty() {
                group.clone_from(&row[0]);
            }
            let g = json["services"][0]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["name"] == group.as_str())
                .unwrap_or_else(|| panic!("group {group} is not in the JSON"));
            if !row[1].is_empty() {
                assert_eq!(row[1], format!("{}%", g["weight"]), "{group} weight");
            }
            let backend = g["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["address"] == row[2].as_str())
                .unwrap_or_else(|| panic!("{row:?}: no such backend in the JSON"));
            let health = if backend["healthy"] == true {
                "up"
            } else {
                "DOWN"
            };
            assert_eq!(row[3], health, "{row:?}");
            for (col, field) in [
                (4, "active_flows"),
                (5, "new_flows"),
                (6, "failed_flows"),
                (7, "packets"),
                (8, "bytes"),
            ] {
                assert_eq!(
                    row[col],
                    backend[field].to_string(),
                    "{group} {field} in the table vs the JSON:\n{human}"
                );
            }
            seen += 1;
        }
        assert_eq!(seen, 2, "one row per backend:\n{human}");
        let v2 = &json["services"][0]["groups"][1]["backends"][0];
        assert!(v2["failed_flows"].as_u64().unwrap() > 0, "{v2}");
    }
}

mod live_view {
    use super::*;

    fn start(b: &Bed, extra: &[&str]) {
        let mut args = vec![
            "rollout",
            "start",
            "web",
            "--to",
            "v2",
            "--steps",
            "20,60,100",
            "--pause",
            "2s",
            "--min-flows",
            "3",
        ];
        args.extend(extra);
        b.daemon.ok(&args);
    }

    #[test]
    fn the_live_view_fits_80_columns_redraws_in_place_and_re_attaches() {
        let b = bed("100", "0");
        let l = load(&b, 60);
        start(&b, &[]);
        // Attach, watch a few redraws, detach (as Ctrl-C would).
        let mut first = on_terminal(&b.daemon, &["rollout", "status", "web", "--watch"], 80);
        assert!(
            first
                .read_for(Duration::from_millis(2500))
                .unwrap()
                .is_none()
        );
        first.kill();
        let seen = String::from_utf8_lossy(&first.output).into_owned();
        // Killed mid-write, the last frame may be cut: replay up to the last whole one.
        let whole = &seen[..seen.rfind("\x1b[J").map_or(0, |i| i + 3)];
        let mut screen = Screen::new(80);
        screen.feed(whole);
        assert!(screen.too_wide.is_empty(), "{:?}", screen.too_wide);
        assert!(screen.redraws >= 2, "redrawn in place: {seen:?}");
        let shown = screen.text();
        assert_eq!(shown.matches("rollout web -> v2").count(), 1, "{shown}");
        assert!(shown.contains("running"), "{shown}");
        // Attach again from another terminal and follow to the end.
        let mut second = on_terminal(&b.daemon, &["rollout", "status", "web", "--watch"], 80);
        let status = second
            .read_for(Duration::from_mins(1))
            .unwrap()
            .expect("the watch ends with the rollout");
        assert!(status.success(), "{status}");
        l.finish();
        let raw = String::from_utf8_lossy(&second.output).into_owned();
        let mut screen = Screen::new(80);
        screen.feed(&raw);
        assert!(
            screen.too_wide.is_empty(),
            "lines wider than 80: {:?}",
            screen.too_wide
        );
        let text = screen.text();
        assert_eq!(
            text.matches("rollout web -> v2").count(),
            1,
            "no stale copy:\n{text}"
        );
        let steps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        assert_eq!(steps.len(), 3, "one row per step:\n{text}");
        for row in &steps {
            assert!(row.contains(" done "), "{row}\n{text}");
        }
        assert!(text.contains("verdict: completed"), "{text}");
        for heading in [
            "STEP",
            "SHARE",
            "WEIGHTS",
            "GROUP",
            "NEW/S",
            "ACTIVE",
            "FAILED IN STEP",
        ] {
            assert!(text.contains(heading), "{heading}:\n{text}");
        }
        // On the way: what each step waited for, and the last one completing, not stepping.
        assert!(raw.contains("waits for: the pause:"), "{raw}");
        assert!(raw.contains("then it completes"), "{raw}");
        assert!(!raw.contains("then step 4/3"), "{raw}");
    }

    #[test]
    fn wait_and_watch_stream_one_json_object_per_change() {
        let b = bed("100", "0");
        let l = load(&b, 60);
        let mut child = Command::new(veer_bin())
            .arg("--socket")
            .arg(&b.daemon.socket)
            .args([
                "rollout",
                "start",
                "web",
                "--to",
                "v2",
                "--steps",
                "20,60,100",
                "--pause",
                "2s",
                "--min-flows",
                "3",
                "--wait",
                "--output",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "the first object arrives while the rollout runs, not at its end"
        );
        // Meanwhile a watcher attached elsewhere streams the same rollout.
        let socket = b.daemon.socket.clone();
        let watcher = std::thread::spawn(move || {
            Command::new(veer_bin())
                .arg("--socket")
                .arg(&socket)
                .args(["rollout", "status", "web", "--watch", "-o", "json"])
                .output()
                .unwrap()
        });
        let mut objects: Vec<Value> = vec![serde_json::from_str(&first).unwrap()];
        for line in lines {
            objects
                .push(serde_json::from_str(&line.unwrap()).expect("every line is one JSON object"));
        }
        assert!(child.wait().unwrap().success());
        let watch = watcher.join().unwrap();
        l.finish();
        assert!(objects.len() >= 3, "{objects:#?}");
        assert_eq!(objects.last().unwrap()["phase"], "completed");
        let steps: Vec<u64> = objects
            .iter()
            .map(|o| o["step"].as_u64().unwrap())
            .collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
        assert!(steps.contains(&1) && steps.contains(&3), "{steps:?}");
        assert!(
            objects.windows(2).all(|w| w[0] != w[1]),
            "one object per change"
        );
        assert!(watch.status.success(), "{}", stderr(&watch));
        let followed: Vec<Value> = stdout(&watch)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(followed.last().unwrap()["phase"], "completed");
        for o in &objects {
            assert!(o["progress"].as_array().unwrap().len() == 3 && o["groups"].is_array());
        }
    }

    #[test]
    fn without_a_terminal_a_watch_prints_a_plain_line_per_change_and_a_rollback_ends_it() {
        // v2 refuses: the rollout is rolled back.
        let b = bed_with("100", "0", 8081, &[]);
        let l = load(&b, 30);
        start(&b, &[]);
        let plain = b.daemon.cli(&["rollout", "status", "web", "--watch"]);
        assert_eq!(plain.status.code(), Some(1));
        let text = stdout(&plain);
        assert!(!text.contains('\x1b'), "no escape sequences: {text:?}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines.is_empty());
        for line in &lines {
            assert!(line.starts_with("rollout web -> v2: step "), "{line}");
        }
        assert!(lines.windows(2).all(|w| w[0] != w[1]), "{text}");
        assert!(
            lines.last().unwrap().contains("rolled back: failure-rate"),
            "{text}"
        );
        assert!(stderr(&plain).starts_with("veer: rollout web -> v2 rolled back"));
        // The same as JSON: the error object ends the stream.
        let json = b
            .daemon
            .cli(&["rollout", "status", "web", "--watch", "-o", "json"]);
        assert_eq!(json.status.code(), Some(1));
        let last: Value = serde_json::from_str(stdout(&json).lines().last().unwrap()).unwrap();
        assert_eq!(last["error"]["kind"], "rolled_back");
        assert_eq!(last["error"]["exit_code"], 1);
        l.finish();
    }
}

mod changes {
    use super::*;

    fn history_len(d: &Daemon) -> usize {
        d.json(&["history"])["revisions"].as_array().unwrap().len()
    }

    #[test]
    fn a_dry_run_shows_the_diff_and_makes_no_revision() {
        let b = bed("90", "10");
        let d = &b.daemon;
        d.ok(&["pin", "web", "203.0.113.0/24", "v2"]);
        d.ok(&["shift", "web", "v1=80", "v2=20"]);
        let before = (d.revision(), history_len(d), d.json(&["status"]));
        let changed_file = d.dir().join("changed.toml");
        std::fs::write(
            &changed_file,
            node(&b.topo).service(web(Family::V4, "50", "50")).to_toml(),
        )
        .unwrap();
        let file = changed_file.to_str().unwrap();
        for (args, expect) in [
            (
                vec!["shift", "web", "v1=0", "v2=100"],
                r#""change":"weight_changed""#,
            ),
            (vec!["drain", "web", "v2"], r#""to":0"#),
            (
                vec!["pin", "web", "203.0.113.7", "v1"],
                r#""prefix":"203.0.113.7/32""#,
            ),
            (
                vec!["unpin", "web", "203.0.113.0/24"],
                r#""change":"pin_removed""#,
            ),
            (vec!["rollback"], r#""change":"weight_changed""#),
            (vec!["apply", "-f", file], r#""change":"pin_removed""#),
        ] {
            let mut a = args.clone();
            a.extend(["--dry-run", "--reason", "looking", "-o", "json"]);
            let out = d.cli(&a);
            assert!(out.status.success(), "{a:?}: {}", stderr(&out));
            let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert_eq!(v["dry_run"], true, "{a:?}");
            assert_eq!(v["changed"], true, "{a:?}: {v:#}");
            assert_eq!(v["revision"], before.0, "{a:?}");
            let diff = serde_json::to_string(&v["diff"]).unwrap();
            assert!(diff.contains(expect), "{a:?}: {diff}");
        }
        let human = d.ok(&["shift", "web", "v1=0", "v2=100", "--dry-run"]);
        assert!(
            human.contains(
                "  service web\n~   group v1 weight 80% -> 0%\n~   group v2 weight 20% -> 100%\n"
            ),
            "{human}"
        );
        assert!(
            human.contains("dry run, nothing applied; revision 3 stays in force"),
            "{human}"
        );
        let diff = d.ok(&["diff", "-f", file]);
        assert!(diff.contains("~   group v1 weight 80% -> 50%"), "{diff}");
        assert!(diff.contains("-   pin 203.0.113.0/24 -> v2"), "{diff}");
        // Nothing was made: the same revision, history and state.
        assert_eq!(d.revision(), before.0);
        assert_eq!(history_len(d), before.1);
        assert_eq!(d.json(&["status"])["services"], before.2["services"]);
        // What is in force is no change.
        d.ok(&["apply", "-f", file]);
        let same = d.json(&["diff", "-f", file]);
        assert_eq!(
            (same["changed"].clone(), same["diff"].clone()),
            (Value::Bool(false), serde_json::json!([]))
        );
    }

    #[test]
    fn history_says_who_made_each_revision_and_why() {
        let b = bed_with("90", "10", 8080, &["--socket-group", "65534"]);
        let d = &b.daemon;
        d.ok(&["shift", "web", "v1=80", "v2=20", "--reason", "ticket 42"]);
        std::fs::set_permissions(
            d.socket.parent().unwrap(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let out = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(veer_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(["pin", "web", "203.0.113.9", "v2"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let bad = d.cli(&["shift", "web", "v2=30", "--reason", "two\nlines"]);
        assert_eq!(bad.status.code(), Some(1));
        assert!(
            stderr(&bad).contains("reason: one line"),
            "{}",
            stderr(&bad)
        );
        let h = d.json(&["history"]);
        let r = h["revisions"].as_array().unwrap();
        assert_eq!(r.len(), 3, "{h:#}");
        assert_eq!(r[0]["author"]["kind"], "user");
        assert_eq!(r[0]["author"]["uid"], 65534);
        assert_eq!(r[0]["author"]["name"], "nobody");
        assert_eq!(r[0]["reason"], Value::Null);
        assert_eq!(
            r[1]["author"],
            serde_json::json!({"kind": "user", "uid": 0, "name": "root"})
        );
        assert_eq!(r[1]["reason"], "ticket 42");
        assert_eq!(r[2]["author"]["kind"], "config-file");
        let human = d.ok(&["history"]);
        let header = human.lines().next().unwrap();
        assert!(
            header.contains("AUTHOR") && header.contains("REASON"),
            "{human}"
        );
        assert!(
            human.lines().nth(2).unwrap().contains("root (uid 0)"),
            "{human}"
        );
        assert!(
            human.lines().nth(2).unwrap().ends_with("ticket 42"),
            "{human}"
        );
        assert!(
            human.lines().nth(3).unwrap().contains("config-file"),
            "{human}"
        );
    }

    #[test]
    fn promote_and_retry_drive_a_rollout_and_the_gates_still_decide() {
        // v2 refuses at first: the rollout is rolled back.
        let mut b = bed_with("100", "0", 8081, &[]);
        let traffic = load(&b, 60);
        let d = &b.daemon;
        d.ok(&[
            "rollout",
            "start",
            "web",
            "--to",
            "v2",
            "--steps",
            "50,100",
            "--pause",
            "1h",
            "--min-flows",
            "3",
            "--reason",
            "first try",
        ]);
        wait_phase(d, "rolled_back", Duration::from_secs(20));
        let none = d.cli(&["rollout", "promote", "web", "-o", "json"]);
        assert_eq!(none.status.code(), Some(1));
        // v2 fixed: it answers on its port now.
        drop(b.s2.take());
        let s2 = TcpServer::start(
            b.topo.backend("v2"),
            SocketAddr::new(Family::V4.backend("v2"), 8080),
            "v2",
        )
        .unwrap();
        let d = &b.daemon;
        let retried = d.json(&["rollout", "retry", "web", "--reason", "v2 fixed"]);
        assert_eq!(retried["changed"], true);
        let running = wait_phase(d, "running", TIMEOUT);
        assert_eq!(running["step"], 1);
        assert_eq!(
            weights(&d.json(&["status"])),
            [("v1".into(), 50.0), ("v2".into(), 50.0)]
        );
        // Straight to 100%: the last step still needs its new flows before it completes.
        d.ok(&["rollout", "promote", "web", "--full"]);
        let done = wait_phase(d, "completed", Duration::from_secs(20));
        assert!(done["progress"][0]["state"] == "skipped", "{done:#}");
        assert_eq!(
            weights(&d.json(&["status"])),
            [("v1".into(), 0.0), ("v2".into(), 100.0)]
        );
        let again = d.cli(&["rollout", "retry", "web", "-o", "json"]);
        assert_eq!(again.status.code(), Some(1));
        let refused: Value = serde_json::from_str(&stdout(&again)).unwrap();
        assert_eq!(refused["error"]["kind"], "conflict");
        let h = d.json(&["history", "web"]);
        let summaries: Vec<&str> = h["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rev| rev["summary"].as_str().unwrap())
            .collect();
        assert!(
            summaries.iter().any(|s| s.contains("retried")),
            "{summaries:#?}"
        );
        assert!(
            summaries.iter().any(|s| s.contains("promoted to step 2/2")),
            "{summaries:#?}"
        );
        assert_load(&traffic.finish());
        drop(s2);
    }

    fn assert_load(r: &veer_tests::daemon::LoadReport) {
        assert!(r.ok > 0, "no request went through: {:?}", r.errors);
    }
}

mod errors {
    use super::*;

    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "one case per subcommand, listed where they are checked"
    )]
    fn every_subcommand_fails_in_json_with_the_documented_exit_code() {
        let b = bed("100", "0");
        let d = &b.daemon;
        let bad = d.dir().join("bad.toml");
        std::fs::write(
            &bad,
            "[[service]]\nname = \"web\"\nvip = \"192.0.2.10\"\nport = 80\nprotocol = \"tcp\"\n\
             [[service.group]]\nname = \"v1\"\nwieght = 1\n",
        )
        .unwrap();
        let bad = bad.to_str().unwrap().to_owned();
        let nowhere = d.dir().join("nowhere.sock");
        let nowhere = nowhere.to_str().unwrap().to_owned();
        let cases: Vec<(Vec<&str>, i32, &str)> = vec![
            (vec!["daemon", "--metrics", "nonsense"], 2, "usage"),
            (vec!["validate", "-f", &bad], 1, "invalid_config"),
            (vec!["apply", "-f", &bad], 1, "invalid_config"),
            (vec!["apply", "-f", "/nonexistent/veer.toml"], 1, "io"),
            (vec!["diff", "-f", &bad], 1, "invalid_config"),
            (vec!["status", "shop"], 1, "not_found"),
            (
                vec!["status", "--offline", "--pin-dir", "/nonexistent"],
                1,
                "offline",
            ),
            (vec!["shift", "web", "v9=10"], 1, "not_found"),
            (vec!["shift", "web", "v1=101"], 2, "usage"),
            (vec!["drain", "web", "v1"], 1, "conflict"),
            (
                vec![
                    "drain",
                    "web",
                    "v1",
                    "--force",
                    "--wait",
                    "--timeout",
                    "1s",
                    "--dry-run",
                ],
                0,
                "",
            ),
            (vec!["pin", "web", "203.0.113.1/24", "v2"], 1, "bad_request"),
            (vec!["unpin", "web", "203.0.113.0/24"], 1, "not_found"),
            (vec!["history", "--socket", &nowhere], 1, "unreachable"),
            (vec!["rollback", "--to", "7"], 1, "not_found"),
            (vec!["flows", "--backend", "nonsense"], 2, "usage"),
            (
                vec!["rollout", "start", "web", "--to", "v9"],
                1,
                "bad_request",
            ),
            (vec!["rollout", "status", "web"], 1, "not_found"),
            (vec!["rollout", "pause", "web"], 1, "not_found"),
            (vec!["rollout", "resume", "web"], 1, "not_found"),
            (vec!["rollout", "promote", "web"], 1, "not_found"),
            (vec!["rollout", "retry", "web"], 1, "not_found"),
            (vec!["rollout", "abort", "shop"], 1, "not_found"),
            (vec!["teardown"], 1, "conflict"),
            (vec!["completions", "tcsh"], 2, "usage"),
            (vec!["man", "--dir", "/proc/veer-man"], 1, "io"),
            (vec!["version", "--verbose"], 2, "usage"),
            (vec!["no-such-command"], 2, "usage"),
        ];
        for (args, code, kind) in cases {
            let mut argv = args.clone();
            argv.extend(["--output", "json"]);
            let out = d.cli(&argv);
            assert_eq!(
                out.status.code(),
                Some(code),
                "veer {argv:?}: {}",
                stderr(&out)
            );
            let answer: Value = serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| {
                panic!("veer {argv:?} printed no JSON ({e}): {}", stdout(&out))
            });
            if code == 0 {
                continue;
            }
            let error = &answer["error"];
            assert_eq!(error["kind"], kind, "veer {argv:?}: {answer:#}");
            assert_eq!(error["exit_code"], code, "veer {argv:?}");
            assert!(
                !error["message"].as_str().unwrap().is_empty(),
                "veer {argv:?}"
            );
            assert!(
                !stderr(&out).is_empty(),
                "people still read stderr: veer {argv:?}"
            );
        }
        // The diagnostics of an invalid file, as data.
        let out = d.cli(&["validate", "-f", &bad, "-o", "json"]);
        let invalid: Value = serde_json::from_str(&stdout(&out)).unwrap();
        let diags = invalid["error"]["diagnostics"].as_array().unwrap();
        assert!(
            diags.iter().any(|x| x["key"] == "wieght"
                && x["message"]
                    .as_str()
                    .unwrap()
                    .contains("did you mean `weight`?")
                && x["line"] == 8),
            "{invalid:#}"
        );
        // A drain that times out: exit 3, the flows still there in the error object.
        let held = Held::open(b.topo.client(), vip(), 1);
        d.ok(&["shift", "web", "v2=100"]);
        let out = d.cli(&[
            "drain",
            "web",
            "v1",
            "--wait",
            "--timeout",
            "1s",
            "-o",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(3));
        let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(
            (
                v["error"]["kind"].clone(),
                v["error"]["active_flows"].clone()
            ),
            ("timeout".into(), 1.into())
        );
        held.close();
    }
}

mod docs {
    use super::*;

    #[test]
    fn man_pages_generate_and_every_help_has_examples() {
        let tmp = TempDir::new("man");
        let dir = tmp.0.join("man1");
        let out = Command::new(veer_bin())
            .args(["man", "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let mut commands = vec![vec![]];
        for sub in [
            "daemon",
            "validate",
            "apply",
            "diff",
            "status",
            "shift",
            "drain",
            "pin",
            "unpin",
            "history",
            "rollback",
            "flows",
            "rollout",
            "teardown",
            "completions",
            "version",
        ] {
            commands.push(vec![sub]);
        }
        for sub in [
            "start", "status", "pause", "resume", "abort", "promote", "retry",
        ] {
            commands.push(vec!["rollout", sub]);
        }
        for c in &commands {
            let page = if c.is_empty() {
                "veer.1".to_owned()
            } else {
                format!("veer-{}.1", c.join("-"))
            };
            let roff =
                std::fs::read_to_string(dir.join(&page)).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(roff.contains(".SH EXAMPLES"), "{page}");
            assert!(roff.contains(".SH EXIT STATUS"), "{page}");
            let mut args = c.clone();
            args.push("--help");
            let help = Command::new(veer_bin()).args(&args).output().unwrap();
            assert!(help.status.success());
            let text = stdout(&help);
            assert!(
                text.contains("\nExamples:\n"),
                "veer {args:?} has no Examples section:\n{text}"
            );
        }
        let root = std::fs::read_to_string(dir.join("veer.1")).unwrap();
        assert!(root.contains("VEER_SOCKET") && root.contains("/var/lib/veer/revisions"));
    }
}

mod systemd {
    use super::*;

    /// The control socket of process `pid` (a daemon started as `veer --socket PATH daemon`).
    fn socket_of(pid: i32) -> PathBuf {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let i = args
            .iter()
            .position(|a| *a == b"--socket")
            .unwrap_or_else(|| panic!("pid {pid} has no --socket: {args:?}"));
        PathBuf::from(String::from_utf8_lossy(args[i + 1]).into_owned())
    }

    /// One datagram from `sock` (which has `SO_PASSCRED` set) and the pid of its sender, as the
    /// kernel says (`SCM_CREDENTIALS`); `None` after the socket's timeout.
    fn recv_with_pid(sock: &std::os::unix::net::UnixDatagram) -> Option<(String, i32)> {
        use std::os::fd::AsRawFd as _;
        let mut buf = [0_u8; 4096];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for one `ucred` control message (aligned as the kernel writes it).
        let mut control = [0_u64; 8];
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg writes into the buffers `msg` points at, which we own.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) };
        let n = usize::try_from(n).ok()?;
        // SAFETY: CMSG_FIRSTHDR reads the msghdr recvmsg just filled.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
        assert!(!cmsg.is_null(), "no credentials with the datagram");
        // SAFETY: the kernel put an SCM_CREDENTIALS message there (SO_PASSCRED is set): a
        // `ucred`, read unaligned from the control buffer.
        let cred: libc::ucred =
            unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::ucred>()) };
        Some((String::from_utf8_lossy(&buf[..n]).into_owned(), cred.pid))
    }

    #[test]
    fn the_daemon_says_ready_once_it_serves_and_stopping_when_it_stops() {
        let topo = Topology::builder().client().build().unwrap();
        let tmp = TempDir::new("notify");
        let path = tmp.0.join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads one int we own; the socket is open.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&listener),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&raw const on).cast(),
                std::mem::size_of_val(&on) as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_PASSCRED");
        let config = node(&topo).to_toml();
        let notify = path.to_str().unwrap().to_owned();
        // READY=1 may only come once `veer status` answers: check at the moment it arrives.
        let (checked_tx, checked) = std::sync::mpsc::channel::<()>();
        let listener_thread = {
            std::thread::spawn(move || {
                let mut messages = Vec::new();
                let mut served_at_ready = None;
                while let Some((m, pid)) = recv_with_pid(&listener) {
                    if m.lines().any(|l| l == "READY=1") && served_at_ready.is_none() {
                        // At once: the socket accepts connections (a request then waits for
                        // nothing but the daemon's answer).
                        let sock = socket_of(pid);
                        let accepts = std::os::unix::net::UnixStream::connect(&sock).is_ok();
                        let out = Command::new(veer_bin())
                            .arg("--socket")
                            .arg(&sock)
                            .arg("status")
                            .output()
                            .unwrap();
                        served_at_ready = Some(accepts && out.status.success());
                        // The daemon may be stopped now.
                        let _ = checked_tx.send(());
                    }
                    let stopping = m.lines().any(|l| l == "STOPPING=1");
                    messages.push(m);
                    if stopping {
                        break;
                    }
                }
                (messages, served_at_ready)
            })
        };
        let mut d = Daemon::start_with_env(&topo, &config, &[], &[("NOTIFY_SOCKET", &notify)]);
        // Stop it only once READY=1 was checked against a live daemon.
        checked
            .recv_timeout(Duration::from_secs(30))
            .expect("READY=1 within 30 s of the start");
        d.stop();
        let (messages, served) = listener_thread.join().unwrap();
        assert_eq!(
            served,
            Some(true),
            "READY=1 before the socket served: {messages:?}"
        );
        assert!(messages[0].contains("READY=1"), "{messages:?}");
        assert_eq!(
            messages.iter().filter(|m| m.contains("READY=1")).count(),
            1,
            "{messages:?}"
        );
        assert!(
            messages.last().unwrap().contains("STOPPING=1"),
            "{messages:?}"
        );
    }

    #[test]
    fn the_unit_is_hardened_below_exposure_4_and_documented_by_its_man_page() {
        let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/veer.service");
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", unit])
            .output()
            .expect("systemd-analyze (Debian's systemd; `cargo xtask setup` installs it)");
        let text = stdout(&out);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for veer.service: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no score in:\n{text}{}", stderr(&out)));
        assert!(score < 4.0, "exposure {score}:\n{text}");
        let unit = std::fs::read_to_string(unit).unwrap();
        for line in [
            "Type=notify",
            "Documentation=man:veer-daemon(1)",
            "CapabilityBoundingSet=",
            "SystemCallFilter=",
            "RestrictAddressFamilies=",
            "ProtectSystem=strict",
        ] {
            assert!(unit.lines().any(|l| l.starts_with(line)), "{line}");
        }
    }
}

mod metrics {
    use super::*;

    const METRICS: &str = "127.0.0.1:9464";

    /// `GET path` from the node namespace with `accept`: (content type, body).
    fn get(topo: &Topology, accept: Option<&str>) -> (String, String) {
        use std::io::{Read as _, Write as _};
        let accept = accept.map(str::to_owned);
        topo.node()
            .enter(move || {
                let mut s =
                    std::net::TcpStream::connect_timeout(&METRICS.parse().unwrap(), TIMEOUT)
                        .unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                let accept = accept
                    .map(|a| format!("Accept: {a}\r\n"))
                    .unwrap_or_default();
                write!(
                    s,
                    "GET /metrics HTTP/1.1\r\nHost: {METRICS}\r\n{accept}Connection: close\r\n\r\n"
                )
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                let (head, body) = out.split_once("\r\n\r\n").unwrap();
                let ct = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-type: ")
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                (ct, body.to_owned())
            })
            .unwrap()
    }

    #[test]
    fn promtool_accepts_what_metrics_answers_and_openmetrics_only_when_asked() {
        let b = bed_with("100", "0", 8080, &["--metrics", METRICS]);
        for _ in 0..20 {
            assert_eq!(ask_once(b.topo.client(), vip(), TIMEOUT).unwrap(), "v1");
        }
        let held = Held::open(b.topo.client(), vip(), 2);
        let l = load(&b, 30);
        b.daemon.ok(&[
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
            "3",
            "--gate",
            "exec:true",
            "--wait",
        ]);
        l.finish();
        b.daemon.signal(libc::SIGHUP);
        // A reload applies the file once it settled (no change for 1 s, two reads 1 s apart
        // that agree): wait for it, at most 30 s.
        let reloaded = |text: &str| {
            text.lines().any(|l| {
                l.strip_prefix(r#"veer_config_reloads_total{result="ok"} "#)
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= 2.0)
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let (ct, text) = loop {
            let (ct, text) = get(&b.topo, None);
            if reloaded(&text) || std::time::Instant::now() > deadline {
                break (ct, text);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!text.contains("# EOF"));
        veer_tests::metrics::promtool_accepts(&text);
        let value = |series: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(series)?
                        .strip_prefix(' ')?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        };
        assert!((value(r#"veer_group_weight_ratio{service="web",group="v2"}"#) - 1.0).abs() < 1e-9);
        assert!((value(r#"veer_rollout_target_share_ratio{service="web"}"#) - 1.0).abs() < 1e-9);
        assert!(
            value(r#"veer_config_reloads_total{result="ok"}"#) >= 2.0,
            "start and SIGHUP"
        );
        assert!(value("veer_config_last_reload_timestamp_seconds") > 0.0);
        assert!(value(r#"veer_rollout_gate_checks_total{service="web",result="pass"}"#) >= 2.0);
        assert!(
            value(r#"veer_rollout_step_duration_seconds{service="web",step="1",outcome="passed"}"#)
                >= 1.0
        );
        assert!(text.contains("# TYPE veer_backend_new_flows_total counter"));
        let (ct, om) = get(
            &b.topo,
            Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
            ),
        );
        assert_eq!(
            ct,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(om.trim_end().ends_with("# EOF"), "{om}");
        assert!(om.contains("# TYPE veer_backend_new_flows counter"));
        held.close();
    }
}

mod offline {
    use super::*;

    #[test]
    fn status_offline_reads_the_pinned_maps_of_a_killed_daemon() {
        let mut b = bed("100", "0");
        for _ in 0..5 {
            ask_once(b.topo.client(), vip(), TIMEOUT).unwrap();
        }
        let held = Held::open(b.topo.client(), vip(), 3);
        b.daemon.ok(&["pin", "web", "203.0.113.0/24", "v2"]);
        let live = b.daemon.json(&["status"]);
        b.daemon.kill9();
        assert!(
            !b.daemon.cli(&["status"]).status.success(),
            "the daemon is gone"
        );
        let pins = b.daemon.pin_dir.to_str().unwrap().to_owned();
        let state = b.daemon.state_dir();
        let off = b.daemon.json(&[
            "status",
            "--offline",
            "--pin-dir",
            &pins,
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        assert_eq!(off["offline"]["names_from_revision"], 2, "{off:#}");
        let (a, o) = (&live["services"][0], &off["services"][0]);
        for field in ["name", "vip", "port", "protocol", "pins", "new_flows"] {
            assert_eq!(a[field], o[field], "{field}: {off:#}");
        }
        for (ga, go) in a["groups"]
            .as_array()
            .unwrap()
            .iter()
            .zip(o["groups"].as_array().unwrap())
        {
            for field in ["name", "weight", "active_flows"] {
                assert_eq!(ga[field], go[field], "{field}: {off:#}");
            }
            for (ba, bo) in ga["backends"]
                .as_array()
                .unwrap()
                .iter()
                .zip(go["backends"].as_array().unwrap())
            {
                for field in ["address", "active_flows", "new_flows", "failed_flows"] {
                    assert_eq!(ba[field], bo[field], "{field}: {off:#}");
                }
            }
        }
        assert_eq!(o["groups"][0]["active_flows"], 3);
        assert_eq!(off["conntrack"]["capacity"], 65536);
        // Without a readable state directory, things are shown by id.
        let ids = b.daemon.json(&[
            "status",
            "--offline",
            "--pin-dir",
            &pins,
            "--state-dir",
            "/nonexistent",
        ]);
        assert_eq!(ids["offline"]["names_from_revision"], Value::Null);
        assert!(
            ids["services"][0]["name"]
                .as_str()
                .unwrap()
                .starts_with('#'),
            "{ids:#}"
        );
        assert_eq!(ids["services"][0]["groups"][0]["active_flows"], 3);
        let human = b.daemon.ok(&[
            "status",
            "--offline",
            "--pin-dir",
            &pins,
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        assert!(
            human.starts_with("offline: read from the pinned maps in"),
            "{human}"
        );
        assert!(human.contains("GROUP  WEIGHT  BACKEND"), "{human}");
        held.close();
    }
}

mod examples {
    use super::*;

    const SHIM: &str = r#"#!/bin/bash
# Stands in for systemd in veer's example test: `enable --now veer` / `start veer` start the
# daemon in the bed's node namespace and return once it serves (as Type=notify does).
set -eu
case "$1" in
    daemon-reload) exit 0 ;;
    enable) [ "${2:-}" = "--now" ] || exit 0 ;;
    start) ;;
    *) echo "systemctl shim: $*: not supported" >&2; exit 1 ;;
esac
nsenter --net="$VEER_TEST_NODE" -- veer daemon --metrics off \
    --config "$ROOT/etc/veer/veer.toml" --state-dir "$VEER_TEST_STATE" \
    --pin-dir "$VEER_TEST_PINS" >"$VEER_TEST_LOG" 2>&1 &
echo $! >>"$VEER_TEST_PID"
for _ in $(seq 1 200); do
    veer status >/dev/null 2>&1 && exit 0
    sleep 0.1
done
echo "systemctl shim: veer did not start" >&2
exit 1
"#;

    /// The daemon the shim started, killed and its pins removed when the test ends.
    struct Started {
        dir: PathBuf,
        pins: PathBuf,
        socket: PathBuf,
    }

    impl Drop for Started {
        fn drop(&mut self) {
            let pids = std::fs::read_to_string(self.dir.join("pid")).unwrap_or_default();
            for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: plain kill(2) of a daemon this test started (or of nothing: it exited).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::thread::panicking() {
                eprintln!(
                    "---- daemon log ----\n{}",
                    std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
            drop(
                Command::new(veer_bin())
                    .arg("--socket")
                    .arg(&self.socket)
                    .args(["teardown", "--force", "--pin-dir"])
                    .arg(&self.pins)
                    .output(),
            );
            drop(std::fs::remove_dir_all(&self.dir));
        }
    }

    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "the bed, the stand-in for systemd and the script's run read best in one place"
    )]
    fn the_provisioning_example_runs_as_shipped_with_the_example_config() {
        let v1: Vec<IpAddr> = vec![
            Ipv4Addr::new(198, 51, 100, 11).into(),
            Ipv4Addr::new(198, 51, 100, 12).into(),
        ];
        let v2: IpAddr = Ipv4Addr::new(198, 51, 100, 21).into();
        let topo = Topology::builder()
            .client()
            .backend("v1", &v1)
            .backend("v2", &[v2])
            .build()
            .unwrap();
        let _servers: Vec<TcpServer> = v1
            .iter()
            .map(|a| TcpServer::start(topo.backend("v1"), SocketAddr::new(*a, 8080), "v1").unwrap())
            .chain([TcpServer::start(topo.backend("v2"), SocketAddr::new(v2, 8080), "v2").unwrap()])
            .collect();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let shipped = std::fs::read_to_string(root.join("examples/veer.toml")).unwrap();
        // The one line every node changes (the README says so): where the programs attach.
        let ifaces: Vec<String> = topo
            .node_ifnames()
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect();
        let config_text = shipped.replacen(
            "interfaces = [\"eth0\"]",
            &format!("interfaces = [{}]", ifaces.join(", ")),
            1,
        );
        assert_ne!(config_text, shipped, "the example names its interfaces");
        let dir = std::env::temp_dir().join(format!("veer-example-{}", std::process::id()));
        drop(std::fs::remove_dir_all(&dir));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let started = Started {
            pins: PathBuf::from(format!("/sys/fs/bpf/veer-example-{}", std::process::id())),
            socket: dir.join("veer.sock"),
            dir: dir.clone(),
        };
        std::os::unix::fs::symlink(veer_bin(), bin.join("veer")).unwrap();
        std::fs::write(bin.join("systemctl"), SHIM).unwrap();
        std::fs::set_permissions(
            bin.join("systemctl"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let config = dir.join("veer.toml");
        std::fs::write(&config, &config_text).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let provision = || {
            let mut c = Command::new(root.join("examples/provision.sh"));
            c.args([config.to_str().unwrap(), "web", "v1"])
                .env("PATH", &path)
                .env("ROOT", dir.join("root"))
                .env("VEER_SOCKET", &started.socket)
                .env("VEER_TEST_NODE", topo.node().path())
                .env("VEER_TEST_STATE", dir.join("state"))
                .env("VEER_TEST_PINS", &started.pins)
                .env("VEER_TEST_LOG", dir.join("daemon.log"))
                .env("VEER_TEST_PID", dir.join("pid"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c
        };
        let mut child = provision().spawn().unwrap();
        // Traffic from the client (203.0.113.2: inside the example's pinned /28, so v2 gets
        // its new flows from the first step), once the daemon the script started steers it.
        let up = Instant::now() + Duration::from_secs(30);
        while ask_once(topo.client(), vip(), Duration::from_secs(1)).is_err() {
            assert!(Instant::now() < up, "the VIP did not answer in 30 s");
            assert!(
                child.try_wait().unwrap().is_none(),
                "provision.sh ended early"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let l = Load::new_connections(topo.client(), vip(), 1_000_000, Duration::from_mins(4));
        // The declared rollout: 5 steps of 30 s.
        let deadline = Instant::now() + Duration::from_mins(5);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                drop(child.kill());
                panic!("provision.sh did not finish in 300 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let out = child.wait_with_output().unwrap();
        let report = l.finish();
        assert!(
            status.success(),
            "provision.sh: {status}\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        let text = stdout(&out);
        assert!(text.contains("veer.toml: valid (1 services)"), "{text}");
        assert!(text.contains("web/v1 drained"), "{text}");
        assert!(
            text.contains("rollout web -> v2: step 5/5 (100%) completed"),
            "{text}"
        );
        assert!(
            std::fs::read_to_string(dir.join("root/etc/veer/veer.toml")).unwrap() == config_text
        );
        assert!(dir.join("root/etc/systemd/system/veer.service").exists());
        assert_eq!(report.failed, 0, "{:?}", report.errors);
        // Re-running is safe: the running daemon stays (a second one exits on its locks), the
        // file is in force, the rollout is over, v1 is drained.
        let again = provision().output().unwrap();
        assert!(
            again.status.success(),
            "{}\n{}",
            stdout(&again),
            stderr(&again)
        );
        assert!(
            stdout(&again).contains("web/v1 drained"),
            "{}",
            stdout(&again)
        );
        drop(started);
    }
}

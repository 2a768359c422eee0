//! Issue 11, against a real `veer daemon` and the real CLI: damaged and foreign state files, a
//! config file that cannot be read at restart or that is read mid-write, paths that are not what
//! they should be (`--socket`, `teardown --pin-dir`), and local users trying to take the control
//! plane down through its listeners.

// This binary links every dependency of `veer-tests`.
use {aya as _, rand as _, rcgen as _, tokio as _, veer as _, veer_common as _};

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use veer_tests::{
    config::{ConfigBuilder, Family, web},
    daemon::{Bed, Daemon, Held, veer_bin, weights},
    metrics::value as metric,
    netns::Topology,
    servers::{ask_once, http_get},
};

const TIMEOUT: Duration = Duration::from_secs(5);
const METRICS: &str = "127.0.0.1:9464";

fn vip() -> SocketAddr {
    Family::V4.vip()
}

/// The bed's node settings: every node interface of `topo`, a conntrack of 65,536 entries.
fn node(topo: &Topology) -> ConfigBuilder {
    ConfigBuilder::new(topo.node_ifnames()).conntrack_max(65_536)
}

/// `web` over v1 and v2 at `v1`/`v2` percent.
fn config(topo: &Topology, v1: &str, v2: &str) -> String {
    node(topo).service(web(Family::V4, v1, v2)).to_toml()
}

/// The bed with `node`'s settings, `web` at `v1`/`v2`, and a daemon with metrics on `METRICS`.
fn bed_with(node: impl FnOnce(&Topology) -> ConfigBuilder, v1: &str, v2: &str) -> Bed {
    Bed::start(
        Family::V4,
        8080,
        |topo| node(topo).service(web(Family::V4, v1, v2)).to_toml(),
        |topo, config| Daemon::start_with(topo, config, &["--metrics", METRICS]),
    )
}

fn bed(v1: &str, v2: &str) -> Bed {
    bed_with(node, v1, v2)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// New connections all answered by `group`.
fn new_connections_go_to(b: &Bed, group: &str, when: &str) {
    for i in 0..10 {
        assert_eq!(
            ask_once(b.topo.client(), vip(), TIMEOUT).unwrap(),
            group,
            "{when}: new connection {i}"
        );
    }
}

fn scrape(b: &Bed) -> String {
    node_get(&b.topo, METRICS, "/metrics").unwrap_or_else(|| {
        panic!("no answer from /metrics:\n{}", b.daemon.log());
    })
}

/// What the daemon logged since its last start.
fn last_start(d: &Daemon) -> String {
    d.log()
        .rsplit("--- restart ---\n")
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn revision_file(d: &Daemon, n: u64) -> PathBuf {
    d.state_dir().join("revisions").join(format!("{n:06}.json"))
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// `GET path` on `addr` from inside the node namespace (metrics, Prometheus live there).
fn node_get(topo: &Topology, addr: &str, path: &str) -> Option<String> {
    http_get(topo.node(), addr, path, TIMEOUT)
}

mod state {
    use super::*;

    /// Traffic is on v2 (revision 2) when the daemon stops; `damage` then spoils the state
    /// directory and the daemon starts again. It must keep the data path as pinned (v2), report
    /// the revision file that holds it back (status, log, metrics) and refuse changes, saying
    /// what to do. Returns the bed, the held connections and the spoiled file's bytes.
    fn held_after(damage: impl FnOnce(&Daemon) -> PathBuf) -> (Bed, Held, PathBuf, Vec<u8>) {
        let mut b = bed("100", "0");
        b.daemon.ok(&["shift", "web", "v1=0", "v2=100"]);
        assert_eq!(b.daemon.revision(), 2);
        let held = Held::open(b.topo.client(), vip(), 5);
        assert!(held.first.iter().all(|n| n == "v2"), "{:?}", held.first);
        b.daemon.stop();
        let spoiled = damage(&b.daemon);
        // Read back only a regular file: opening a FIFO blocks.
        let bytes = if std::fs::symlink_metadata(&spoiled).is_ok_and(|m| m.is_file()) {
            std::fs::read(&spoiled).unwrap()
        } else {
            Vec::new()
        };
        b.daemon.spawn();
        (b, held, spoiled, bytes)
    }

    fn assert_held(b: &Bed, number: u64, problem: &str) {
        let s = b.daemon.json(&["status"]);
        let h = &s["state_files"]["held"];
        assert_eq!(h["revision"], number, "{s:#}");
        assert!(
            h["problem"].as_str().unwrap().contains(problem),
            "{}",
            h["problem"]
        );
        assert_eq!(h["newest_usable"], 1);
        assert!(
            h["advice"]
                .as_str()
                .unwrap()
                .contains("`veer rollback --to 1`"),
            "{}",
            h["advice"]
        );
        assert!(s["revision"].is_null(), "no revision is in force: {s:#}");
        let human = b.daemon.ok(&["status"]);
        assert!(
            human.starts_with(&format!("HELD: revision {number} (")),
            "{human}"
        );
        let text = scrape(b);
        assert_eq!(metric(&text, "veer_state_held"), Some(1.0), "{text}");
        assert!(
            b.daemon
                .log()
                .contains("the newest revision file cannot be used"),
            "{}",
            b.daemon.log()
        );
        // Every change but an operator's choice is refused, saying which choices there are.
        for args in [
            &["shift", "web", "v1=100", "v2=0"][..],
            &["drain", "web", "v2", "--force"],
            &["rollback"],
            &["rollback", "web", "--to", "1"],
        ] {
            let out = b.daemon.cli(args);
            assert_eq!(out.status.code(), Some(1), "veer {args:?}");
            let e = stderr(&out);
            assert!(
                e.contains(&format!("revision {number} (")) && e.contains("cannot be used"),
                "veer {args:?}: {e}"
            );
            assert!(
                e.contains("`veer rollback --to 1`") && e.contains("`veer apply -f FILE`"),
                "veer {args:?}: {e}"
            );
        }
    }

    #[test]
    fn a_damaged_newest_revision_keeps_the_pinned_data_path_until_an_operator_rolls_back() {
        let (b, mut held, damaged, bytes) = held_after(|d| {
            // Cut revision 2 (v1=0 v2=100, live) in half.
            let path = revision_file(d, 2);
            let full = std::fs::read(&path).unwrap();
            std::fs::write(&path, &full[..full.len() / 2]).unwrap();
            path
        });
        assert_held(&b, 2, "it is damaged");
        // The maps were not reconciled with revision 1 (v1=100): traffic stays where it was.
        new_connections_go_to(&b, "v2", "held");
        held.check("held");
        // The operator decides: revision 1 whole, as a new revision (2 is never reused).
        let out = b.daemon.ok(&["rollback", "--to", "1"]);
        assert_eq!(out.trim(), "rollback: revision 3", "{out}");
        let s = b.daemon.json(&["status"]);
        assert!(s["state_files"]["held"].is_null(), "{s:#}");
        assert_eq!(
            s["state_files"]["unusable"][0]["revision"], 2,
            "still reported"
        );
        assert_eq!(weights(&s), [("v1".into(), 100.0), ("v2".into(), 0.0)]);
        new_connections_go_to(&b, "v1", "after the rollback");
        held.check("after the rollback");
        assert_eq!(
            std::fs::read(&damaged).unwrap(),
            bytes,
            "the damaged file is kept"
        );
        b.daemon.ok(&["shift", "web", "v1=90", "v2=10"]);
        assert_eq!(b.daemon.revision(), 4);
        assert_eq!(metric(&scrape(&b), "veer_state_held"), Some(0.0));
        // A restart now starts from revision 4, with revision 2 still reported, not holding.
        let mut b = b;
        b.daemon.stop();
        b.daemon.spawn();
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["revision"]["number"], 4);
        assert!(s["state_files"]["held"].is_null());
    }

    #[test]
    fn a_foreign_file_named_like_the_newest_revision_is_reported_and_an_apply_decides() {
        let (b, mut held, foreign, bytes) = held_after(|d| {
            // Another program's JSON under the next revision's name.
            let path = revision_file(d, 3);
            std::fs::write(&path, br#"{"hello": "world"}"#).unwrap();
            path
        });
        assert_held_foreign(&b);
        new_connections_go_to(&b, "v2", "held");
        // `veer apply` is the other choice; the config file (70/30) becomes revision 4.
        let file = b.daemon.state_dir().join("../chosen.toml");
        std::fs::write(&file, config(&b.topo, "70", "30")).unwrap();
        let out = b
            .daemon
            .ok(&["apply", "-f", file.to_str().unwrap(), "--output", "json"]);
        let a: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (a["revision"].as_u64(), a["changed"].as_bool()),
            (Some(4), Some(true))
        );
        assert_eq!(
            weights(&b.daemon.json(&["status"])),
            [("v1".into(), 70.0), ("v2".into(), 30.0)]
        );
        held.check("after the apply");
        assert_eq!(std::fs::read(&foreign).unwrap(), bytes, "never overwritten");
    }

    fn assert_held_foreign(b: &Bed) {
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["state_files"]["held"]["revision"], 3, "{s:#}");
        assert!(
            s["state_files"]["held"]["problem"]
                .as_str()
                .unwrap()
                .contains("it is not a revision this veer can use"),
            "{s:#}"
        );
        // Revision 2 is fine, but it is older than the file that holds changes back.
        assert_eq!(s["state_files"]["held"]["newest_usable"], 2);
        let out = b.daemon.cli(&["shift", "web", "v1=100", "v2=0"]);
        assert!(
            stderr(&out).contains("`veer rollback --to 2`"),
            "{}",
            stderr(&out)
        );
    }

    #[test]
    fn a_fifo_named_like_a_revision_never_hangs_the_start() {
        // `spawn` fails the test if the daemon does not answer within 60 s.
        let (b, mut held, fifo, _) = held_after(|d| {
            let path = revision_file(d, 99);
            mkfifo(&path);
            path
        });
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["state_files"]["held"]["revision"], 99, "{s:#}");
        assert_eq!(
            s["state_files"]["held"]["problem"],
            "it is a FIFO, not a file veer wrote"
        );
        new_connections_go_to(&b, "v2", "held");
        assert_eq!(
            b.daemon.ok(&["rollback", "--to", "2"]).trim(),
            "rollback: revision 100"
        );
        held.check("after the rollback");
        assert!(std::fs::symlink_metadata(&fifo).is_ok(), "the FIFO stays");
    }

    /// A config syntax error at a restart, with a conntrack of 4,096 entries pinned: the daemon
    /// runs on the pinned maps and the last revision, reports the file, and never advises a
    /// teardown. A FIFO in place of the file does the same, without hanging.
    #[test]
    fn a_config_file_that_cannot_be_read_at_restart_leaves_the_pinned_state_running() {
        let mut b = bed_with(|t| node(t).conntrack_max(4096), "100", "0");
        b.daemon.ok(&["shift", "web", "v1=0", "v2=100"]);
        let mut held = Held::open(b.topo.client(), vip(), 5);
        b.daemon.stop();
        let broken = config(&b.topo, "100", "0").replace("[node]", "[node");
        assert_ne!(broken, config(&b.topo, "100", "0"));
        b.daemon.write_config(&broken);
        b.daemon.spawn();
        let check = |b: &Bed, what: &str| {
            let s = b.daemon.json(&["status"]);
            assert_eq!(s["revision"]["number"], 2, "{what}: {s:#}");
            assert_eq!(weights(&s), [("v1".into(), 0.0), ("v2".into(), 100.0)]);
            assert_eq!(
                s["conntrack"]["capacity"], 4096,
                "{what}: the pinned size wins"
            );
            let e = &s["config"]["last_error"];
            assert!(!e.is_null(), "{what}: the file's error is reported: {s:#}");
            let text = scrape(b);
            assert_eq!(
                metric(&text, "veer_config_last_reload_successful"),
                Some(0.0),
                "{what}"
            );
            let this_start = last_start(&b.daemon);
            assert!(
                !this_start.contains("teardown") && !s.to_string().contains("teardown"),
                "{what}: no message suggests a teardown:\n{this_start}"
            );
            e.clone()
        };
        let e = check(&b, "syntax error");
        assert!(e["line"].as_u64().is_some(), "located: {e}");
        new_connections_go_to(&b, "v2", "after a restart with a broken file");
        held.check("after a restart with a broken file");
        b.daemon.stop();
        std::fs::remove_file(&b.daemon.config).unwrap();
        mkfifo(&b.daemon.config);
        b.daemon.spawn();
        let e = check(&b, "a FIFO for a config file");
        assert!(e["message"].as_str().unwrap().contains("FIFO"), "{e}");
        held.check("after a restart with a FIFO for a config file");
        // Fixed: the next reload applies it, and the node settings wait for nothing.
        std::fs::remove_file(&b.daemon.config).unwrap();
        b.daemon.write_config(
            &node(&b.topo)
                .conntrack_max(4096)
                .service(web(Family::V4, "0", "100"))
                .to_toml(),
        );
        b.daemon.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = b.daemon.json(&["status"]);
            if s["config"]["last_error"].is_null() {
                assert!(
                    s["config"]["pending_restart"]
                        .as_array()
                        .unwrap()
                        .is_empty()
                );
                break;
            }
            assert!(Instant::now() < deadline, "{s:#}\n{}", b.daemon.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        held.check("at the end");
    }
}

mod paths {
    use super::*;

    /// A temporary directory of the test, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!(
                "veer-hardening-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            drop(std::fs::remove_dir_all(&d));
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            drop(std::fs::remove_dir_all(&self.0));
        }
    }

    /// `veer daemon --socket PATH` on a path holding what must not be deleted: it exits 1 before
    /// it touches anything, naming what is there.
    #[test]
    fn a_socket_path_that_is_not_a_stale_socket_is_never_deleted() {
        veer_tests::require_root();
        let d = TempDir::new("socket");
        let passwd = d.0.join("passwd");
        std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let dir = d.0.join("a-directory");
        std::fs::create_dir(&dir).unwrap();
        let fifo = d.0.join("fifo");
        mkfifo(&fifo);
        let link = d.0.join("link");
        std::os::unix::fs::symlink(&passwd, &link).unwrap();
        for (path, kind) in [
            (&passwd, "regular file"),
            (&dir, "directory"),
            (&fifo, "FIFO"),
            (&link, "symbolic link"),
        ] {
            let out = Command::new(veer_bin())
                .arg("--socket")
                .arg(path)
                .args(["daemon", "--metrics", "off", "--config"])
                .arg(d.0.join("veer.toml"))
                .arg("--state-dir")
                .arg(d.0.join("state"))
                .arg("--pin-dir")
                .arg(d.0.join("pins"))
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{kind}: {}", stderr(&out));
            assert_eq!(
                stderr(&out),
                format!(
                    "veer: control socket {}: a {kind} is there, not a socket; veer replaces only a socket nobody answers on: move it away, or pass another --socket",
                    path.display()
                )
            );
            assert!(std::fs::symlink_metadata(path).is_ok(), "{kind} deleted");
        }
        assert_eq!(
            std::fs::read_to_string(&passwd).unwrap(),
            "root:x:0:0:root:/root:/bin/bash\n"
        );
        assert!(!d.0.join("state").exists() && !d.0.join("pins").exists());
    }

    /// A `--pin-dir` whose parent is not on bpffs: the daemon refuses it rather than mounting
    /// bpffs over that directory (which hid everything in it).
    #[test]
    fn a_pin_dir_off_bpffs_is_refused_not_mounted_over() {
        veer_tests::require_root();
        let d = TempDir::new("pindir");
        let marker = d.0.join("keep-me");
        std::fs::write(&marker, "still here\n").unwrap();
        let out = Command::new(veer_bin())
            .arg("--socket")
            .arg(d.0.join("veer.sock"))
            .args(["daemon", "--metrics", "off", "--config"])
            .arg(d.0.join("veer.toml"))
            .arg("--state-dir")
            .arg(d.0.join("state"))
            .arg("--pin-dir")
            .arg(d.0.join("pins"))
            .output()
            .unwrap();
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(d.0.to_str().unwrap()));
        if mounted {
            drop(Command::new("umount").arg(&d.0).output());
        }
        assert!(!mounted, "bpffs was mounted over {}", d.0.display());
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "{} is not on a BPF file system: choose a --pin-dir under /sys/fs/bpf",
                d.0.display()
            )),
            "{}",
            stderr(&out)
        );
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "still here\n");
    }

    /// A socket nobody answers on (a crashed daemon's) is replaced; one a daemon answers on is
    /// left to it.
    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_kept() {
        let mut b = bed("100", "0");
        b.daemon.kill9();
        assert!(b.daemon.socket.exists(), "a crash leaves its socket");
        b.daemon.spawn();
        let (code, log) = b.daemon.second(&b.daemon.socket, Duration::from_secs(30));
        assert_eq!(code, Some(1), "{log}");
        assert!(log.contains("another veer daemon answers on it"), "{log}");
        assert_eq!(b.daemon.revision(), 1);
    }

    /// `veer teardown --pin-dir DIR` where DIR is not on bpffs deletes nothing, not even files
    /// named like veer's pins.
    #[test]
    fn teardown_refuses_a_directory_that_is_not_on_bpffs() {
        veer_tests::require_root();
        let d = TempDir::new("teardown");
        let links = d.0.join("links");
        std::fs::create_dir(&links).unwrap();
        let files = [
            d.0.join("veer.toml"),
            d.0.join("passwd"),
            d.0.join(veer_common::maps::FLOWS),
            links.join("veer_xdp_eth0"),
        ];
        for f in &files {
            std::fs::write(f, "keep me\n").unwrap();
        }
        let out = Command::new(veer_bin())
            .arg("--socket")
            .arg(d.0.join("no.sock"))
            .args(["teardown", "--pin-dir"])
            .arg(&d.0)
            .arg("--purge-state")
            .arg(d.0.join("state"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "veer: {}: is not on a BPF file system (bpffs), so it holds no pin of veer's: check --pin-dir; nothing was removed",
                d.0.display()
            )
        );
        for f in &files {
            assert_eq!(
                std::fs::read_to_string(f).unwrap(),
                "keep me\n",
                "{}",
                f.display()
            );
        }
    }

    /// On bpffs, teardown removes veer's pins by name and leaves another program's pin (and so
    /// the directory holding it).
    #[test]
    fn teardown_removes_only_veers_pins() {
        let mut b = bed("100", "0");
        b.daemon.stop();
        let pin_dir = b.daemon.pin_dir.clone();
        let other = pin_dir.join("OTHER_PROGRAMS_MAP");
        let out = Command::new("bpftool")
            .args(["map", "create"])
            .arg(&other)
            .args([
                "type",
                "array",
                "key",
                "4",
                "value",
                "4",
                "entries",
                "1",
                "name",
                "other_map",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "bpftool: {}", stderr(&out));
        let out = b.daemon.cli(&[
            "teardown",
            "--pin-dir",
            pin_dir.to_str().unwrap(),
            "--output",
            "json",
        ]);
        let cleanup = || {
            drop(std::fs::remove_file(&other));
            drop(std::fs::remove_dir(&pin_dir));
        };
        if !out.status.success() {
            cleanup();
            panic!("teardown: {}", stderr(&out));
        }
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let left: Vec<String> = std::fs::read_dir(&pin_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        cleanup();
        assert_eq!(left, ["OTHER_PROGRAMS_MAP"], "{r:#}");
        assert_eq!(r["left"], serde_json::json!([other.display().to_string()]));
        assert_eq!(
            r["detached"].as_array().unwrap().len(),
            b.topo.node_ifnames().len()
        );
        assert!(
            r["unpinned"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(veer_common::maps::FLOWS)),
            "{r:#}"
        );
    }
}

mod verbs {
    use super::*;

    /// `veer shift web v1=0 v2=0` would drop every new connection: refused like draining the
    /// last group, accepted with `--force`, which says what it did.
    #[test]
    fn a_shift_of_every_group_to_zero_needs_force_and_says_what_it_does() {
        let b = bed("100", "0");
        let out = b.daemon.cli(&["shift", "web", "v1=0", "v2=0"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            "veer: these weights would leave service `web` with no group taking new connections (every group at weight 0 or without backends); give a group weight, or pass --force to drop new connections"
        );
        assert_eq!(b.daemon.revision(), 1);
        new_connections_go_to(&b, "v1", "after the refusal");
        let out = b.daemon.ok(&["shift", "web", "v1=0", "v2=0", "--force"]);
        assert_eq!(
            out.trim(),
            "shift web: revision 2; no group of `web` takes new connections now: they are dropped until a group gets weight"
        );
        assert!(
            ask_once(b.topo.client(), vip(), Duration::from_secs(1)).is_err(),
            "a new connection is dropped"
        );
        b.daemon.ok(&["shift", "web", "v2=100"]);
        new_connections_go_to(&b, "v2", "after a group got weight");
    }
}

mod reload {
    use std::io::Write as _;

    use veer_tests::config::{group, service};

    use super::*;

    /// `web` (at `v1`/`v2`) and `web2` on port 81.
    fn two(topo: &Topology, v1: &str, v2: &str) -> String {
        let backend = |g| [SocketAddr::new(Family::V4.backend(g), 8080)];
        let mut web2_vip = vip();
        web2_vip.set_port(81);
        node(topo)
            .service(web(Family::V4, v1, v2))
            .service(service(
                "web2",
                web2_vip,
                vec![
                    group("v1", "100", &backend("v1")),
                    group("v2", "0", &backend("v2")),
                ],
            ))
            .to_toml()
    }

    /// A provisioning tool rewrites the file in place and pauses 0.6 s mid-write, right after
    /// `web`: the prefix alone is a valid file without `web2`. It must never be applied: no
    /// revision removes `web2`, and the whole file is applied once it settles.
    #[test]
    fn a_file_rewritten_in_place_with_a_pause_is_never_applied_torn() {
        let b = bed("100", "0");
        b.daemon.write_config(&two(&b.topo, "100", "0"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.daemon.revision() != 2 {
            assert!(Instant::now() < deadline, "{}", b.daemon.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        for (v1, v2) in [("70", "30"), ("30", "70")] {
            let text = two(&b.topo, v1, v2);
            let cut = text
                .find("[[service]]\nname = \"web2\"")
                .unwrap_or_else(|| panic!("no web2 in\n{text}"));
            let (prefix, rest) = text.split_at(cut);
            veer::config::parse(Path::new("veer.toml"), prefix)
                .unwrap_or_else(|e| panic!("the torn prefix must be a valid file: {e}"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&b.daemon.config)
                .unwrap();
            f.write_all(prefix.as_bytes()).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(600));
            f.write_all(rest.as_bytes()).unwrap();
            drop(f);
            let want: f64 = v1.parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let s = b.daemon.json(&["status"]);
                if (weights(&s)[0].1 - want).abs() < 0.01 {
                    assert_eq!(s["services"].as_array().unwrap().len(), 2, "{s:#}");
                    break;
                }
                assert!(Instant::now() < deadline, "{s:#}\n{}", b.daemon.log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let history = b.daemon.json(&["history"]);
        let summaries: Vec<&str> = history["revisions"]
            .as_array()
            .unwrap_or_else(|| panic!("{history:#}"))
            .iter()
            .map(|r| r["summary"].as_str().unwrap())
            .collect();
        assert!(
            summaries.iter().all(|s| !s.contains("-web2")),
            "a torn file was applied: {summaries:?}"
        );
        let s = b.daemon.json(&["status"]);
        assert_eq!(s["services"].as_array().unwrap().len(), 2, "{s:#}");
    }
}

mod listeners {
    use std::{
        io::{BufRead as _, Read as _, Write as _},
        os::unix::net::UnixStream,
        process::{Child, Stdio},
    };

    use super::*;

    /// `veer-idle-clients` run as `uid`:`gid` (no supplementary groups), in the node namespace
    /// when `netns` is given; returns it and its report (`opened N closed M`).
    fn attacker(netns: Option<&Path>, uid: u32, gid: u32, args: &[&str]) -> (Child, String) {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg("setpriv");
                c
            }
            None => Command::new("setpriv"),
        };
        let mut child = cmd
            .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
            .arg("--clear-groups")
            .arg(env!("CARGO_BIN_EXE_veer-idle-clients"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line.trim().to_owned())
    }

    /// Ends an attacker (closing its stdin ends it; it is killed if it lingers).
    fn stop(mut child: Child) {
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                drop(child.kill());
                drop(child.wait());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Root's verbs, each answered: `status`, and a shift back and forth.
    fn root_is_served(b: &Bed, round: usize) {
        for i in 0..3 {
            let out = b.daemon.cli(&["status"]);
            assert!(
                out.status.success(),
                "round {round}, status {i}: {}",
                stderr(&out)
            );
            let w = if (round + i).is_multiple_of(2) {
                "v1=90"
            } else {
                "v1=100"
            };
            let out = b.daemon.cli(&["shift", "web", w]);
            assert!(
                out.status.success(),
                "round {round}, shift {i}: {}",
                stderr(&out)
            );
        }
    }

    fn limits(pid: u32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/limits"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .split_whitespace()
            .skip(3)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn descriptors(pid: u32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    }

    /// A non-root user tries to open more idle connections to the metrics port (400) than the
    /// daemon may hold descriptors (started with a soft limit of 100, hard 256): the daemon
    /// raises its soft limit, holds only its metrics share, never runs out of descriptors, logs
    /// no flood, and root's `status` and `shift` succeed every time.
    #[test]
    fn idle_metrics_connections_never_take_the_control_socket_down() {
        let b = Bed::start(
            Family::V4,
            8080,
            |topo| config(topo, "100", "0"),
            |topo, config| {
                Daemon::start_under(
                    topo,
                    config,
                    &["--metrics", METRICS],
                    &["prlimit", "--nofile=100:256", "--"],
                )
            },
        );
        let pid = b.daemon.pid();
        assert_eq!(
            limits(pid),
            "256 256",
            "the soft limit is raised to the hard one"
        );
        let lines_before = b.daemon.log().lines().count();
        let (child, report) = attacker(
            Some(b.topo.node().path()),
            65534,
            65534,
            &[&format!("tcp:{METRICS}"), "400", "120"],
        );
        let opened: usize = report
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{report}"));
        // It asked for more than the daemon's limit; the daemon holds its metrics share (32)
        // and the kernel's backlog the rest, until it is full and connects time out.
        assert!(
            opened > 32,
            "the attacker holds connections waiting: {report}"
        );
        // Over two header timeouts, while the attacker's connections are accepted, time out
        // and wait in the backlog again.
        for round in 0..4 {
            root_is_served(&b, round);
            let fds = descriptors(pid);
            assert!(fds < 256, "round {round}: {fds} descriptors open");
            std::thread::sleep(Duration::from_secs(3));
        }
        stop(child);
        let log = b.daemon.log();
        let during: Vec<&str> = log.lines().skip(lines_before).collect();
        assert!(
            during.len() < 100,
            "{} log lines during the attack:\n{}",
            during.len(),
            during.join("\n")
        );
        let accept_failed = during
            .iter()
            .filter(|l| l.contains("accept failed"))
            .count();
        assert!(accept_failed <= 2, "{accept_failed} accept failures logged");
        // Once the attacker is gone, scrapes are answered.
        let text = scrape(&b);
        assert!(metric(&text, "veer_revision").is_some(), "{text}");
    }

    /// 50 stalled requests (25 with unfinished headers, 25 with an unfinished body) from root,
    /// and 40 from a member of `--socket-group`: the member gets its share (32) and no more,
    /// root's `status` and `shift` keep working, and the daemon closes every stalled request
    /// within its timeouts (5 s for headers, 10 s for a body).
    #[test]
    fn stalled_control_requests_are_closed_and_root_keeps_its_share() {
        let b = Bed::start(
            Family::V4,
            8080,
            |topo| config(topo, "100", "0"),
            |topo, config| Daemon::start_with(topo, config, &["--socket-group", "65534"]),
        );
        std::fs::set_permissions(
            b.daemon.socket.parent().unwrap(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let t0 = Instant::now();
        let mut stalled: Vec<UnixStream> = (0..50)
            .map(|i| {
                let mut s = UnixStream::connect(&b.daemon.socket).unwrap();
                let head = if i % 2 == 0 {
                    "POST /v1/shift HTTP/1.1\r\nhost: veer\r\n".to_owned()
                } else {
                    "POST /v1/shift HTTP/1.1\r\nhost: veer\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"services\":".to_owned()
                };
                s.write_all(head.as_bytes()).unwrap();
                s
            })
            .collect();
        root_is_served(&b, 0);
        let socket = format!("unix:{}", b.daemon.socket.display());
        let (member, report) = attacker(None, 65534, 65534, &[&socket, "40", "120", "--stall"]);
        assert_eq!(report, "opened 40 closed 8", "the member's share is 32");
        root_is_served(&b, 1);
        for (i, s) in stalled.iter_mut().enumerate() {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut answer = Vec::new();
            let r = s.read_to_end(&mut answer);
            assert!(
                r.is_ok(),
                "stalled request {i} still open after {:?}: {r:?}",
                t0.elapsed()
            );
        }
        stop(member);
        root_is_served(&b, 2);
    }
}

mod socket_group {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A group and users made for one test, removed when dropped (pass or fail).
    struct Accounts {
        group: String,
        users: Vec<String>,
    }

    impl Accounts {
        /// Group `veer-gN` and, for each `(role, member)`, a system user `veer-<role>N` whose
        /// primary group is `nogroup`, in the group as a supplementary one when `member`.
        fn create(roles: &[(&str, bool)]) -> Self {
            let tag = format!(
                "{}x{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let mut a = Self {
                group: format!("veer-g{tag}"),
                users: Vec::new(),
            };
            run("groupadd", &["--system", &a.group]);
            for (role, member) in roles {
                let user = format!("veer-{role}{tag}");
                let mut args = vec![
                    "--system",
                    "--no-create-home",
                    "--no-user-group",
                    "--gid",
                    "nogroup",
                    "--shell",
                    "/usr/sbin/nologin",
                ];
                if *member {
                    args.extend(["--groups", a.group.as_str()]);
                }
                args.push(&user);
                run("useradd", &args);
                a.users.push(user);
            }
            a
        }
    }

    impl Drop for Accounts {
        fn drop(&mut self) {
            for u in &self.users {
                drop(Command::new("userdel").arg(u).output());
            }
            drop(Command::new("groupdel").arg(&self.group).output());
        }
    }

    fn run(program: &str, args: &[&str]) {
        let out = Command::new(program).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
    }

    /// `veer` as `user` (primary group `nogroup`), with its supplementary groups from the group
    /// database (`init`) or none.
    fn as_user(d: &Daemon, user: &str, init: bool, args: &[&str]) -> std::process::Output {
        Command::new("setpriv")
            .args(["--reuid", user, "--regid", "nogroup"])
            .arg(if init {
                "--init-groups"
            } else {
                "--clear-groups"
            })
            .arg(veer_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// `--socket-group` lets in a process that holds the group when it connects, as a
    /// supplementary group too (before, only the primary group counted); one that does not
    /// hold it is refused, even a listed member that dropped it, even with the socket's mode
    /// widened by mistake.
    #[test]
    fn members_are_let_in_by_the_groups_they_hold_when_they_connect() {
        let accounts = Accounts::create(&[("m", true), ("o", false)]);
        let (member, other) = (&accounts.users[0], &accounts.users[1]);
        let b = Bed::start(
            Family::V4,
            8080,
            |topo| config(topo, "100", "0"),
            |topo, config| Daemon::start_with(topo, config, &["--socket-group", &accounts.group]),
        );
        std::fs::set_permissions(
            b.daemon.socket.parent().unwrap(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let out = as_user(&b.daemon, member, true, &["shift", "web", "v1=90", "v2=10"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "a supplementary member: {}",
            stderr(&out)
        );
        assert_eq!(b.daemon.revision(), 2);
        // Not holding the group: the socket's mode refuses, and the daemon too once the mode
        // is widened by mistake.
        for (user, init) in [(member, false), (other, true)] {
            let out = as_user(&b.daemon, user, init, &["shift", "web", "v1=100"]);
            assert_eq!(out.status.code(), Some(1), "{user}");
            assert!(
                stderr(&out).contains("permission denied"),
                "{}",
                stderr(&out)
            );
        }
        std::fs::set_permissions(
            &b.daemon.socket,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        for (user, init) in [(member, false), (other, true)] {
            let out = as_user(&b.daemon, user, init, &["shift", "web", "v1=100"]);
            assert_eq!(
                stderr(&out),
                "veer: only root (or the group given with --socket-group) may use veer's control socket",
                "{user}"
            );
        }
        assert_eq!(b.daemon.revision(), 2);
    }
}

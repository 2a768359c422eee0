//! veer's etcd source against a real etcd (Debian's 3.4, started per test on loopback): list and
//! watch, a node's own config over the fleet's, compaction, an outage, statuses under leases,
//! compare-and-swap writers, the driver election, TLS-only etcd with client certificates, and
//! password auth with the README's roles.
//!
//! Every test is bounded in time ([`TEST_TIMEOUT`]) and removes its etcd (process and data
//! directory) when it ends, pass or fail. No root needed.

// This binary links every dependency of `veer-tests`; it needs the etcd fixture and veer.
use {aya as _, libc as _, rand as _, rcgen as _, serde_json as _, veer_common as _};

use std::{
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::watch;
use veer::{
    fleet::{NodeName, NodeStatus, STATUS_SCHEMA},
    sources::etcd::{
        Candidate, CasWrite, EtcdError, EtcdOptions, Expect, Fleet, HistoryEnd, SourceState,
        StatusWriter, Watcher, WatcherOptions,
    },
};
use veer_tests::etcd::{AuthSpec, Etcd, Proxy};

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest a test waits for one expected state.
const WAIT: Duration = Duration::from_secs(20);
const PREFIX: &str = "/veer";

/// Runs `test` on a fresh runtime, bounded by [`TEST_TIMEOUT`].
fn run<F: Future<Output = ()>>(test: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, test)
            .await
            .unwrap_or_else(|_| panic!("test did not finish within {TEST_TIMEOUT:?}"));
    });
}

/// Runs a blocking fixture call (etcd stop/start, etcdctl) off the async workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn node(name: &str) -> NodeName {
    NodeName::new(name).unwrap_or_else(|e| panic!("{e}"))
}

fn fleet(options: &EtcdOptions) -> Fleet {
    Fleet::new(options.resolve().unwrap_or_else(|e| panic!("{e}")))
}

fn quick() -> WatcherOptions {
    WatcherOptions {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    }
}

/// Waits until the watcher's state satisfies `what`; panics with the last state otherwise.
async fn until(
    rx: &mut watch::Receiver<SourceState>,
    what: &str,
    f: impl FnMut(&SourceState) -> bool,
) -> SourceState {
    let reached = tokio::time::timeout(WAIT, rx.wait_for(f))
        .await
        .map(|r| r.map(|s| s.clone()));
    match reached {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("watcher stopped while waiting for: {what}"),
        Err(elapsed) => panic!("{elapsed} ({WAIT:?}): {what}; state: {:#?}", *rx.borrow()),
    }
}

/// Waits until `writer` wrote a status; panics with its state otherwise.
async fn until_written(writer: &StatusWriter, what: &str) {
    let written = tokio::time::timeout(WAIT, writer.subscribe().wait_for(|s| s.mod_revision > 0))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(written, "{what}: {:?}", *writer.subscribe().borrow());
}

fn config_text(s: &SourceState) -> Option<String> {
    s.config
        .as_ref()
        .map(|d| d.text().unwrap_or_else(|e| panic!("{e}")).to_owned())
}

fn status(name: &str, revision: i64) -> NodeStatus {
    NodeStatus {
        schema: STATUS_SCHEMA,
        node: node(name),
        veer_version: env!("CARGO_PKG_VERSION").to_owned(),
        ready: true,
        etcd_revision: revision,
        config: None,
        local_revision: 1,
        state_hash: String::new(),
        errors: vec![],
        services: vec![],
        last_sync: SystemTime::now(),
        local_changes: vec![],
    }
}

/// Puts a value, whatever is there.
async fn put(f: &Fleet, key: &str, value: &str) -> i64 {
    let read = f.get(key).await.unwrap_or_else(|e| panic!("{e}"));
    f.put_if(key, Expect::from_read(read.doc.as_ref()), value.into())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn wait_absent(f: &Fleet, key: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let read = f.get(key).await.unwrap_or_else(|e| panic!("{e}"));
        if read.doc.is_none() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{key} still there after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

mod watch_tests {
    use super::*;

    #[test]
    fn list_then_watch_sees_every_change() {
        let etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            let first = put(&f, "/veer/config", "v = 1").await;
            let w = Watcher::spawn(f.clone(), node("edge-1"), quick());
            let mut rx = w.subscribe();
            let s = until(&mut rx, "first sync", |s| s.synced).await;
            assert_eq!(config_text(&s).as_deref(), Some("v = 1"));
            assert_eq!(s.config.as_ref().map(|d| d.mod_revision), Some(first));
            assert!(s.revision >= first);
            assert_eq!(s.lists, 1);

            let second = put(&f, "/veer/config", "v = 2").await;
            let s = until(&mut rx, "the put", |s| {
                s.config.as_ref().is_some_and(|d| d.mod_revision == second)
            })
            .await;
            assert_eq!(config_text(&s).as_deref(), Some("v = 2"));
            assert_eq!(s.lists, 1, "a watched change needs no new list");
            assert!(s.stale_since.is_none());

            // Keys the node does not follow change nothing.
            put(&f, "/veer/status/edge-2", "{}").await;
            put(&f, "/veer/nodes/edge-2/config", "other").await;
            put(&f, "/other/config", "x").await;
            let third = put(&f, "/veer/config", "v = 3").await;
            let s = until(&mut rx, "the last put", |s| {
                s.config.as_ref().is_some_and(|d| d.mod_revision == third)
            })
            .await;
            assert_eq!(config_text(&s).as_deref(), Some("v = 3"));

            // Rollout keys are followed by service.
            let r = put(&f, "/veer/rollouts/web/plan", "{}").await;
            let s = until(&mut rx, "the rollout plan", |s| {
                s.rollouts.contains_key("web")
            })
            .await;
            assert_eq!(
                s.rollouts["web"].plan.as_ref().map(|d| d.mod_revision),
                Some(r)
            );
        });
    }

    #[test]
    fn a_missing_config_is_reported_as_none_after_sync() {
        let etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            let w = Watcher::spawn(f.clone(), node("edge-1"), quick());
            let mut rx = w.subscribe();
            let s = until(&mut rx, "first sync", |s| s.synced).await;
            assert!(s.config.is_none());
            put(&f, "/veer/config", "v = 1").await;
            until(&mut rx, "the config", |s| s.config.is_some()).await;
        });
    }

    #[test]
    fn a_node_config_overrides_and_its_deletion_falls_back() {
        let etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            put(&f, "/veer/config", "fleet").await;
            let w = Watcher::spawn(f.clone(), node("edge-1"), quick());
            let mut rx = w.subscribe();
            until(&mut rx, "fleet config", |s| {
                config_text(s).as_deref() == Some("fleet")
            })
            .await;

            put(&f, "/veer/nodes/edge-1/config", "own").await;
            let s = until(&mut rx, "own config", |s| {
                config_text(s).as_deref() == Some("own")
            })
            .await;
            assert_eq!(
                s.config.as_ref().map(|d| d.key.as_str()),
                Some("/veer/nodes/edge-1/config")
            );
            // A fleet change does not override the node's own.
            let fleet_rev = put(&f, "/veer/config", "fleet 2").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(config_text(&rx.borrow()).as_deref(), Some("own"));

            let read = f
                .get("/veer/nodes/edge-1/config")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            f.cas(&[CasWrite {
                key: "/veer/nodes/edge-1/config".into(),
                expect: Expect::from_read(read.doc.as_ref()),
                value: None,
            }])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let s = until(&mut rx, "fall back to the fleet config", |s| {
                config_text(s).as_deref() == Some("fleet 2")
            })
            .await;
            assert_eq!(s.config.as_ref().map(|d| d.mod_revision), Some(fleet_rev));
        });
    }

    #[test]
    fn compaction_during_an_outage_relists_without_losing_the_latest_value() {
        let etcd = Etcd::start();
        let proxy = Proxy::new(etcd.port());
        run(async {
            let direct = fleet(&etcd.options(PREFIX));
            put(&direct, "/veer/config", "v = 1").await;
            let through_proxy = EtcdOptions {
                endpoints: vec![proxy.endpoint(false)],
                ..etcd.options(PREFIX)
            };
            let w = Watcher::spawn(fleet(&through_proxy), node("edge-1"), quick());
            let mut rx = w.subscribe();
            until(&mut rx, "first sync", |s| s.synced && s.lists == 1).await;

            proxy.cut();
            let s = until(&mut rx, "stale", |s| s.stale_since.is_some()).await;
            assert!(s.error.is_some());
            // Meanwhile the fleet moves on and etcd compacts its history away.
            put(&direct, "/veer/config", "v = 2").await;
            let last = put(&direct, "/veer/config", "v = 3").await;
            blocking(|| etcd.compact());
            proxy.restore();

            let s = until(&mut rx, "relisted after the compaction", |s| {
                s.lists == 2 && s.stale_since.is_none()
            })
            .await;
            assert_eq!(config_text(&s).as_deref(), Some("v = 3"));
            assert_eq!(s.config.as_ref().map(|d| d.mod_revision), Some(last));
            // And it keeps watching.
            let next = put(&direct, "/veer/config", "v = 4").await;
            until(&mut rx, "a put after the relist", |s| {
                s.config.as_ref().is_some_and(|d| d.mod_revision == next)
            })
            .await;
        });
    }

    #[test]
    fn an_outage_without_compaction_resumes_without_a_new_list() {
        let etcd = Etcd::start();
        let proxy = Proxy::new(etcd.port());
        run(async {
            let direct = fleet(&etcd.options(PREFIX));
            put(&direct, "/veer/config", "v = 1").await;
            let through_proxy = EtcdOptions {
                endpoints: vec![proxy.endpoint(false)],
                ..etcd.options(PREFIX)
            };
            let w = Watcher::spawn(fleet(&through_proxy), node("edge-1"), quick());
            let mut rx = w.subscribe();
            until(&mut rx, "first sync", |s| s.synced).await;
            proxy.cut();
            until(&mut rx, "stale", |s| s.stale_since.is_some()).await;
            put(&direct, "/veer/config", "v = 2").await;
            let last = put(&direct, "/veer/nodes/edge-1/config", "own").await;
            proxy.restore();
            let s = until(&mut rx, "caught up", |s| {
                s.stale_since.is_none() && s.config.as_ref().is_some_and(|d| d.mod_revision == last)
            })
            .await;
            assert_eq!(s.lists, 1, "resumed from its revision, no new list");
        });
    }

    #[test]
    fn etcd_killed_makes_the_source_stale_and_a_restart_resyncs() {
        let mut etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            put(&f, "/veer/config", "v = 1").await;
            let w = Watcher::spawn(f.clone(), node("edge-1"), quick());
            let mut rx = w.subscribe();
            until(&mut rx, "first sync", |s| s.synced).await;

            let killed = SystemTime::now();
            blocking(|| etcd.kill());
            let s = until(&mut rx, "stale", |s| s.stale_since.is_some()).await;
            assert!(
                s.stale_since
                    .is_some_and(|t| t >= killed - Duration::from_secs(1))
            );
            assert!(
                s.error.as_ref().is_some_and(|e| e.is_unreachable()),
                "{:?}",
                s.error
            );
            assert_eq!(
                config_text(&s).as_deref(),
                Some("v = 1"),
                "the last state stays while etcd is gone"
            );

            blocking(|| etcd.restart());
            let s = until(&mut rx, "resynced", |s| s.stale_since.is_none()).await;
            assert_eq!(config_text(&s).as_deref(), Some("v = 1"));
            let next = put(&f, "/veer/config", "v = 2").await;
            until(&mut rx, "a put after the restart", |s| {
                s.config.as_ref().is_some_and(|d| d.mod_revision == next)
            })
            .await;
        });
    }

    #[test]
    fn a_watcher_started_while_etcd_is_down_syncs_when_it_comes_up() {
        let mut etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            put(&f, "/veer/config", "v = 1").await;
            blocking(|| etcd.stop());
            let w = Watcher::spawn(fleet(&etcd.options(PREFIX)), node("edge-1"), quick());
            let mut rx = w.subscribe();
            let s = until(&mut rx, "stale before any sync", |s| {
                s.stale_since.is_some()
            })
            .await;
            assert!(!s.synced);
            blocking(|| etcd.restart());
            let s = until(&mut rx, "first sync", |s| s.synced).await;
            assert_eq!(config_text(&s).as_deref(), Some("v = 1"));
            assert!(s.stale_since.is_none());
        });
    }
}

mod status_tests {
    use super::*;

    #[test]
    fn a_status_disappears_when_its_lease_expires() {
        let etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            // The writer renews every TTL/3 rounded down to whole seconds: at 2 s, once a
            // second, so a 1 s stall on a loaded machine lost the lease; at 5 s one takes 4 s.
            let ttl = Duration::from_secs(5);
            let writer =
                StatusWriter::spawn(f.clone(), node("edge-1"), ttl, Duration::from_secs(1));
            writer
                .publish(&status("edge-1", 7))
                .unwrap_or_else(|e| panic!("{e}"));
            until_written(&writer, "status not written").await;
            let statuses = f.statuses().await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(statuses.nodes[&node("edge-1")].etcd_revision, 7);
            assert!(statuses.unreadable.is_empty());

            // The lease is kept alive well past its TTL.
            tokio::time::sleep(ttl * 2).await;
            let read = f
                .get("/veer/status/edge-1")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                read.doc.is_some(),
                "status expired while its node was alive"
            );
            // A newer status replaces it under the same lease.
            writer
                .publish(&status("edge-1", 8))
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::time::timeout(WAIT, async {
                loop {
                    let s = f.statuses().await.unwrap_or_else(|e| panic!("{e}"));
                    if s.nodes
                        .get(&node("edge-1"))
                        .is_some_and(|s| s.etcd_revision == 8)
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("newer status not written"));
            // Another node's status is refused by the writer itself.
            assert!(matches!(
                writer.publish(&status("edge-2", 1)),
                Err(EtcdError::WrongNode { .. })
            ));

            // The node dies: no revoke, no keep-alive; etcd deletes the key after the TTL.
            drop(writer);
            let gone = wait_absent(&f, "/veer/status/edge-1", ttl + WAIT).await;
            eprintln!("status of a dead node gone after {gone:?} (TTL {ttl:?})");

            // A clean shutdown revokes at once.
            let writer = StatusWriter::spawn(
                f.clone(),
                node("edge-2"),
                Duration::from_mins(1),
                Duration::from_secs(1),
            );
            writer
                .publish(&status("edge-2", 1))
                .unwrap_or_else(|e| panic!("{e}"));
            until_written(&writer, "status not written").await;
            writer.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
            let read = f
                .get("/veer/status/edge-2")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(read.doc.is_none(), "a revoked lease leaves no status");
        });
    }

    #[test]
    fn a_status_comes_back_after_etcd_restarts() {
        let mut etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            // 5 s: renewed every second, a lease of 2 s was lost to a 1 s stall (see above).
            let ttl = Duration::from_secs(5);
            let writer =
                StatusWriter::spawn(f.clone(), node("edge-1"), ttl, Duration::from_millis(500));
            writer
                .publish(&status("edge-1", 1))
                .unwrap_or_else(|e| panic!("{e}"));
            until_written(&writer, "status not written").await;
            // Down for longer than the TTL: etcd may expire the lease on its return.
            blocking(|| etcd.kill());
            tokio::time::sleep(ttl + Duration::from_secs(1)).await;
            blocking(|| etcd.restart());
            writer
                .publish(&status("edge-1", 2))
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::time::timeout(WAIT, async {
                loop {
                    if let Ok(s) = f.statuses().await
                        && s.nodes
                            .get(&node("edge-1"))
                            .is_some_and(|s| s.etcd_revision == 2)
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "status not back after the restart: {:?}",
                    *writer.subscribe().borrow()
                )
            });
            // And it is kept alive again past the TTL.
            tokio::time::sleep(ttl + Duration::from_secs(1)).await;
            let s = f.statuses().await.unwrap_or_else(|e| panic!("{e}"));
            assert!(s.nodes.contains_key(&node("edge-1")));
        });
    }
}

mod write_tests {
    use super::*;

    #[test]
    fn a_stale_compare_and_swap_is_a_conflict_with_the_current_revision() {
        let etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            let created = f
                .put_if("/veer/config", Expect::Absent, b"a".to_vec())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // Creating twice is a conflict.
            let e = f
                .put_if("/veer/config", Expect::Absent, b"b".to_vec())
                .await
                .unwrap_err();
            assert!(
                matches!(e, EtcdError::Conflict { current, .. } if current == created),
                "{e:?}"
            );
            // Another operator writes between our read and our write.
            let other = f
                .put_if(
                    "/veer/config",
                    Expect::ModRevision(created),
                    b"other".to_vec(),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let e = f
                .put_if(
                    "/veer/config",
                    Expect::ModRevision(created),
                    b"mine".to_vec(),
                )
                .await
                .unwrap_err();
            match &e {
                EtcdError::Conflict { key, current, .. } => {
                    assert_eq!((key.as_str(), *current), ("/veer/config", other));
                }
                _ => panic!("{e:?}"),
            }
            assert!(e.to_string().contains("read it again"), "{e}");
            let read = f.config().await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(read.doc.map(|d| d.value), Some(b"other".to_vec()));
        });
    }

    #[test]
    fn two_concurrent_writers_lose_nothing() {
        let etcd = Etcd::start();
        run(async {
            const EDITS: usize = 15;
            let a = fleet(&etcd.options(PREFIX));
            let b = fleet(&etcd.options(PREFIX));
            put(&a, "/veer/config", "# fleet\n").await;
            let writer = |f: Fleet, tag: &'static str| async move {
                let mut retried = 0;
                for i in 0..EDITS {
                    let line = format!("{tag}-{i}\n");
                    let done = f
                        .update("/veer/config", 50, |doc| {
                            let mut text = doc.map(|d| d.value.clone()).unwrap_or_default();
                            text.extend_from_slice(line.as_bytes());
                            Ok::<_, std::convert::Infallible>(Some(text))
                        })
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    retried += done.attempts - 1;
                }
                retried
            };
            let (ra, rb) = tokio::join!(
                tokio::spawn(writer(a.clone(), "a")),
                tokio::spawn(writer(b, "b"))
            );
            let retries =
                ra.unwrap_or_else(|e| panic!("{e}")) + rb.unwrap_or_else(|e| panic!("{e}"));
            let text = a
                .config()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .doc
                .map(|d| String::from_utf8_lossy(&d.value).into_owned())
                .unwrap_or_default();
            for tag in ["a", "b"] {
                for i in 0..EDITS {
                    assert!(
                        text.lines().any(|l| l == format!("{tag}-{i}")),
                        "{tag}-{i} lost; config:\n{text}"
                    );
                }
            }
            assert_eq!(text.lines().count(), 1 + 2 * EDITS, "{text}");
            eprintln!("{} edits, {retries} retried after a conflict", 2 * EDITS);
        });
    }

    #[test]
    fn history_lists_the_versions_etcd_still_has() {
        let etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            let h = f
                .history("/veer/config", 10)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((h.versions.len(), h.end), (0, HistoryEnd::Absent));
            let mut revs = Vec::new();
            for i in 1..=5 {
                revs.push(put(&f, "/veer/config", &format!("v = {i}")).await);
                put(&f, "/veer/status/x", "noise").await;
            }
            let h = f
                .history("/veer/config", 10)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(h.end, HistoryEnd::Created);
            let listed: Vec<(i64, i64, String)> = h
                .versions
                .iter()
                .map(|v| {
                    (
                        v.mod_revision,
                        v.version,
                        String::from_utf8_lossy(&v.value).into_owned(),
                    )
                })
                .collect();
            let expected: Vec<(i64, i64, String)> = (1..=5)
                .rev()
                .map(|i| (revs[i - 1], i as i64, format!("v = {i}")))
                .collect();
            assert_eq!(listed, expected);

            let h = f
                .history("/veer/config", 2)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((h.versions.len(), h.end), (2, HistoryEnd::Limit));

            // After a compaction only the versions at or after it remain.
            blocking(|| etcd.compact());
            let h = f
                .history("/veer/config", 10)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(h.versions.len(), 1, "{h:?}");
            assert_eq!(h.end, HistoryEnd::Compacted { before: revs[4] });
        });
    }
}

mod election_tests {
    use super::*;

    #[test]
    fn another_candidate_takes_over_and_continues_from_the_stored_progress() {
        let etcd = Etcd::start();
        run(async {
            // Renewed every TTL/3: at 2 s a stall of 1.3 s on a loaded machine let the next
            // candidate in early ("B elected while A leads").
            let ttl = Duration::from_secs(5);
            let key = "/veer/rollouts/web/progress";
            let cand_a = Candidate::new(fleet(&etcd.options(PREFIX)), node("edge-a"), ttl);
            let cand_b = Candidate::new(fleet(&etcd.options(PREFIX)), node("edge-b"), ttl);
            let cand_c = Candidate::new(fleet(&etcd.options(PREFIX)), node("edge-c"), ttl);
            let lead_a = cand_a.campaign().await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                cand_a
                    .leader()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .as_deref(),
                Some("edge-a")
            );

            // A records progress (fenced by its election key).
            let f = fleet(&etcd.options(PREFIX));
            let progress = |wave| {
                serde_json::json!({"id": "web-1", "wave": wave})
                    .to_string()
                    .into_bytes()
            };
            let rev_a = lead_a
                .cas(&[CasWrite {
                    key: key.into(),
                    expect: Expect::Absent,
                    value: Some(progress(1)),
                }])
                .await
                .unwrap_or_else(|e| panic!("{e}"));

            // B and C wait behind A.
            let b_task = tokio::spawn(async move { (cand_b.campaign().await, cand_b) });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!b_task.is_finished(), "B elected while A leads");

            // A's lease is revoked from outside (an operator, or etcd expiring it): B leads at once.
            let lease = format!("{:x}", lead_a.lease());
            blocking(|| etcd.etcdctl_ok(&["lease", "revoke", &lease]));
            let (won, cand_b) = tokio::time::timeout(WAIT, b_task)
                .await
                .unwrap_or_else(|_| panic!("B not elected after A's lease was revoked"))
                .unwrap_or_else(|e| panic!("{e}"));
            let lead_b = won.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                cand_b
                    .leader()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .as_deref(),
                Some("edge-b")
            );

            // A, deposed without noticing, cannot overwrite anything.
            let e = lead_a
                .cas(&[CasWrite {
                    key: key.into(),
                    expect: Expect::ModRevision(rev_a),
                    value: Some(progress(99)),
                }])
                .await
                .unwrap_err();
            assert!(matches!(e, EtcdError::LeadershipLost { .. }), "{e:?}");

            // B reads the stored progress and goes on from it.
            let read = f.get(key).await.unwrap_or_else(|e| panic!("{e}"));
            let doc = read.doc.unwrap_or_else(|| panic!("no progress"));
            assert_eq!(doc.value, progress(1));
            let rev_b = lead_b
                .cas(&[CasWrite {
                    key: key.into(),
                    expect: Expect::ModRevision(doc.mod_revision),
                    value: Some(progress(2)),
                }])
                .await
                .unwrap_or_else(|e| panic!("{e}"));

            // B's process dies (no resign, no keep-alive): C leads within the TTL.
            let c_task = tokio::spawn(async move { cand_c.campaign().await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!c_task.is_finished(), "C elected while B leads");
            let died = Instant::now();
            drop(lead_b);
            let lead_c = tokio::time::timeout(WAIT, c_task)
                .await
                .unwrap_or_else(|_| panic!("C not elected after B died"))
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"));
            eprintln!(
                "takeover after the leader died: {:?} (TTL {ttl:?})",
                died.elapsed()
            );
            let read = f.get(key).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(read.doc.as_ref().map(|d| d.mod_revision), Some(rev_b));
            assert_eq!(read.doc.map(|d| d.value), Some(progress(2)));
            lead_c.resign().await.unwrap_or_else(|e| panic!("{e}"));
            let observer = Candidate::new(f.clone(), node("edge-x"), ttl);
            assert_eq!(
                observer.leader().await.unwrap_or_else(|e| panic!("{e}")),
                None,
                "resigned: nobody leads"
            );
        });
    }

    #[test]
    fn leadership_is_lost_when_etcd_is_gone_for_a_ttl() {
        let mut etcd = Etcd::start();
        run(async {
            let ttl = Duration::from_secs(2);
            let a = Candidate::new(fleet(&etcd.options(PREFIX)), node("edge-a"), ttl);
            let mut lead = a.campaign().await.unwrap_or_else(|e| panic!("{e}"));
            assert!(!lead.is_lost());
            blocking(|| etcd.kill());
            tokio::time::timeout(ttl + WAIT, lead.lost())
                .await
                .unwrap_or_else(|_| panic!("leadership not given up while etcd was down"));
            assert!(lead.is_lost());
        });
    }

    #[test]
    fn a_plan_and_progress_round_trip_through_etcd() {
        let etcd = Etcd::start();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            let mut with_web = [status("edge-a", 1), status("edge-b", 1)];
            for s in &mut with_web {
                s.services.push(veer::fleet::ServiceStatus {
                    name: "web".into(),
                    groups: vec![veer::fleet::GroupStatus {
                        name: "v2".into(),
                        weight: veer::model::Weight::ZERO,
                        backends: 1,
                        up: 1,
                        down: vec![],
                    }],
                    rollout: None,
                });
            }
            let (plan, progress) = veer::fleet::start(
                veer::fleet::StartRequest {
                    service: "web",
                    to: "v2",
                    spec: veer::fleet::WaveSpec::default(),
                    canary: None,
                    node_plan: veer::model::Plan {
                        to: "v2".into(),
                        steps: vec![veer::model::Weight::FULL],
                        pause: Duration::from_secs(1),
                        max_failure_rate: veer::model::Weight::ZERO,
                        min_flows: 0,
                        gates: vec![],
                        gate_timeout: Duration::from_secs(1),
                        on_failure: veer::model::OnFailure::Rollback,
                        hold_on_restart: false,
                        judge: None,
                        drain: None,
                    },
                    missing: veer::fleet::MissingNode::RollBack,
                    node_timeout: Duration::from_mins(1),
                },
                &with_web,
                SystemTime::now(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let layout = f.layout().clone();
            f.cas(&[
                CasWrite {
                    key: layout.rollout_plan("web"),
                    expect: Expect::Absent,
                    value: Some(plan.to_json()),
                },
                CasWrite {
                    key: layout.rollout_progress("web"),
                    expect: Expect::Absent,
                    value: Some(progress.to_json()),
                },
            ])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let stored = f.rollout("web").await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(stored.plan.map(|(p, _)| p), Some(plan));
            let (read, _) = stored.progress.unwrap_or_else(|| panic!("no progress"));
            assert_eq!(read, progress);
            // Starting it again is a conflict: one rollout per service at a time.
            let e = f
                .cas(&[CasWrite {
                    key: layout.rollout_plan("web"),
                    expect: Expect::Absent,
                    value: Some(b"{}".to_vec()),
                }])
                .await
                .unwrap_err();
            assert!(matches!(e, EtcdError::Conflict { .. }), "{e:?}");
        });
    }
}

mod tls_tests {
    use super::*;

    #[test]
    fn a_tls_only_etcd_with_client_certificates_works_and_a_wrong_ca_is_a_clear_error() {
        let etcd = Etcd::builder().tls().start();
        let tls = etcd
            .tls()
            .unwrap_or_else(|| panic!("TLS fixture without files"))
            .clone();
        run(async {
            let f = fleet(&etcd.options(PREFIX));
            put(&f, "/veer/config", "over tls").await;
            let w = Watcher::spawn(f.clone(), node("edge-1"), quick());
            let mut rx = w.subscribe();
            let s = until(&mut rx, "sync over TLS", |s| s.synced).await;
            assert_eq!(config_text(&s).as_deref(), Some("over tls"));
            let writer = StatusWriter::spawn(
                f.clone(),
                node("edge-1"),
                Duration::from_secs(5),
                Duration::from_secs(1),
            );
            writer
                .publish(&status("edge-1", 1))
                .unwrap_or_else(|e| panic!("{e}"));
            until_written(&writer, "status over TLS").await;

            // A CA that did not sign etcd's certificate.
            let wrong_ca = EtcdOptions {
                cacert: Some(tls.foreign_ca.clone()),
                ..etcd.options(PREFIX)
            };
            let e = fleet(&wrong_ca).config().await.unwrap_err();
            let chain = veer::error::chain(&e);
            assert!(e.is_unreachable(), "{chain}");
            assert!(chain.contains("--etcd-cacert"), "{chain}");
            assert!(chain.contains(&etcd.endpoint()), "{chain}");
            eprintln!("wrong CA: {chain}");

            // No client certificate: etcd (--client-cert-auth) refuses the handshake.
            let no_cert = EtcdOptions {
                cert: None,
                key: None,
                ..etcd.options(PREFIX)
            };
            let e = fleet(&no_cert).config().await.unwrap_err();
            assert!(e.is_unreachable(), "{e:?}");

            // Plain HTTP to a TLS-only etcd.
            let plain = EtcdOptions {
                endpoints: vec![format!("http://127.0.0.1:{}", etcd.port())],
                cacert: None,
                cert: None,
                key: None,
                ..etcd.options(PREFIX)
            };
            assert!(fleet(&plain).config().await.is_err());
        });
    }
}

mod auth_tests {
    use super::*;

    fn spec() -> AuthSpec {
        AuthSpec::new(PREFIX)
            .driver_node("edge-1")
            .node("edge-2")
            .operator("ops")
    }

    #[test]
    fn nodes_write_only_their_own_status_and_operators_write_the_config() {
        let etcd = Etcd::builder().auth(spec()).start();
        run(async {
            let ops = fleet(&etcd.options_as(PREFIX, etcd.user("ops")));
            let edge1 = fleet(&etcd.options_as(PREFIX, etcd.user("edge-1")));
            let edge2 = fleet(&etcd.options_as(PREFIX, etcd.user("edge-2")));

            // The operator writes the fleet config and a node's own.
            ops.put_if("/veer/config", Expect::Absent, b"fleet".to_vec())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            ops.put_if("/veer/nodes/edge-2/config", Expect::Absent, b"own".to_vec())
                .await
                .unwrap_or_else(|e| panic!("{e}"));

            // Nodes read and watch.
            let w = Watcher::spawn(edge2.clone(), node("edge-2"), quick());
            let mut rx = w.subscribe();
            let s = until(&mut rx, "sync as edge-2", |s| s.synced).await;
            assert_eq!(config_text(&s).as_deref(), Some("own"));

            // A node writes its own status...
            let writer = StatusWriter::spawn(
                edge2.clone(),
                node("edge-2"),
                Duration::from_secs(5),
                Duration::from_secs(1),
            );
            writer
                .publish(&status("edge-2", s.revision))
                .unwrap_or_else(|e| panic!("{e}"));
            until_written(&writer, "own status refused").await;

            // ...and nothing else.
            for (key, what) in [
                ("/veer/status/edge-1", "another node's status"),
                ("/veer/config", "the fleet config"),
                ("/veer/nodes/edge-2/config", "its own config"),
                ("/veer/rollouts/web/progress", "rollout progress"),
            ] {
                let e = edge2
                    .put_if(key, Expect::Absent, b"{}".to_vec())
                    .await
                    .unwrap_err();
                assert!(
                    matches!(&e, EtcdError::PermissionDenied { user, .. } if user == "user edge-2"),
                    "edge-2 writing {what}: {e:?}"
                );
            }
            // Its status writer refuses to speak for another node before etcd would.
            assert!(matches!(
                writer.publish(&status("edge-1", 1)),
                Err(EtcdError::WrongNode { .. })
            ));

            // A node with the driver role campaigns and writes progress, fenced.
            let lead = Candidate::new(edge1.clone(), node("edge-1"), Duration::from_secs(5))
                .campaign()
                .await
                .unwrap_or_else(|e| panic!("driver campaign: {e}"));
            lead.cas(&[CasWrite {
                key: "/veer/rollouts/web/progress".into(),
                expect: Expect::Absent,
                value: Some(b"{}".to_vec()),
            }])
            .await
            .unwrap_or_else(|e| panic!("driver progress: {e}"));
            // A node without it cannot campaign.
            let e = Candidate::new(edge2.clone(), node("edge-2"), Duration::from_secs(5))
                .campaign()
                .await
                .unwrap_err();
            eprintln!("edge-2 campaigning: {e:?}");
            lead.resign().await.unwrap_or_else(|e| panic!("{e}"));

            // Operators do not write statuses either.
            let e = ops
                .put_if("/veer/status/edge-1", Expect::Absent, b"{}".to_vec())
                .await
                .unwrap_err();
            assert!(matches!(e, EtcdError::PermissionDenied { .. }), "{e:?}");
        });
    }

    #[test]
    fn a_wrong_password_and_a_missing_user_are_clear_errors() {
        let etcd = Etcd::builder().auth(spec()).start();
        let wrong = etcd.root().password_file.with_file_name("password-wrong");
        std::fs::write(&wrong, "not-the-password\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        run(async {
            let mut o = etcd.options_as(PREFIX, etcd.user("edge-1"));
            o.password_file = Some(wrong.clone());
            let e = fleet(&o).config().await.unwrap_err();
            assert!(
                matches!(&e, EtcdError::AuthFailed { user, .. } if user == "edge-1"),
                "{e:?}"
            );
            assert!(e.to_string().contains("--etcd-password-file"), "{e}");

            let e = fleet(&etcd.options(PREFIX)).config().await.unwrap_err();
            eprintln!("no user against an etcd with auth: {e:?}");
            assert!(!e.is_unreachable(), "{e:?}");
        });
    }
}

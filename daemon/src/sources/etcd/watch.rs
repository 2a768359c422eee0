//! The node's etcd source: list what the node follows, then watch it from the next revision;
//! publish the result as a [`SourceState`] (the config document in force, the fleet rollouts,
//! whether the first sync is done, since when etcd is unreachable).
//!
//! - **Start.** One transaction lists `config`, `nodes/<node>/config` and `rollouts/` at a
//!   single revision R; three watches on one stream follow them from R+1. The state says
//!   `synced` only after that first list.
//! - **etcd unreachable.** The stream fails (connection reset, or no HTTP/2 keep-alive answer);
//!   the state says `stale since T` with the error, and the watcher retries with backoff. On
//!   reconnection each watch resumes after the last revision it delivered, so nothing is
//!   listed again and nothing is missed: the changes made meanwhile arrive as events, in order.
//! - **Compaction.** A watch resuming at a compacted revision is canceled by etcd; the watcher
//!   lists again (the state counts `lists`) and watches from there, so the latest value is
//!   never lost, only the intermediate ones.
//!
//! The state is a `tokio::sync::watch` value, not a queue: a consumer that is busy applying one
//! config sees only the latest one next, never a backlog. A consumer decides by comparing
//! mod revisions with what it applied.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime},
};

use etcd_client::{EventType, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponseStream};
use tokio::{sync::watch, task::JoinHandle};

use super::{
    Backoff,
    client::{Fleet, document},
    error::EtcdError,
};
use crate::fleet::{Document, NodeName, NodeView, RolloutDocuments, view::Range};

/// What the etcd source knows, published after every change.
#[derive(Clone, Debug, Default)]
pub struct SourceState {
    /// Whether a full list completed since the watcher started.
    pub synced: bool,
    /// The highest etcd revision the watcher has heard of.
    pub revision: i64,
    /// The config document in force for the node (its own, else the fleet's); `None` when
    /// neither key exists.
    pub config: Option<Document>,
    /// Fleet rollouts by service.
    pub rollouts: BTreeMap<String, RolloutDocuments>,
    /// Since when etcd has been unreachable (or refusing the watch); `None` while connected.
    pub stale_since: Option<SystemTime>,
    /// The last error, kept after a reconnection until the next one.
    pub error: Option<Arc<EtcdError>>,
    /// Full lists done: 1 after the first sync, one more after each compaction that caught a
    /// resuming watch.
    pub lists: u64,
    /// When the watcher last listed or reconnected.
    pub last_sync: Option<SystemTime>,
}

/// Watcher tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatcherOptions {
    /// First retry delay after a failure.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for WatcherOptions {
    fn default() -> Self {
        WatcherOptions {
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// A running watcher; stops when dropped.
#[derive(Debug)]
pub struct Watcher {
    state: watch::Receiver<SourceState>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Starts watching what `node` follows. Must be called inside a tokio runtime.
    pub fn spawn(fleet: Fleet, node: NodeName, options: WatcherOptions) -> Watcher {
        let (tx, state) = watch::channel(SourceState::default());
        let view = NodeView::new(fleet.layout().clone(), node);
        let backoff = Backoff::new(
            options.min_backoff,
            options.max_backoff,
            view.node().as_str(),
        );
        let run = Run {
            fleet,
            view,
            next: None,
            tx,
            backoff,
        };
        Watcher {
            state,
            task: tokio::spawn(run.forever()),
        }
    }

    /// A receiver of the state (`changed()` wakes on every publication).
    pub fn subscribe(&self) -> watch::Receiver<SourceState> {
        self.state.clone()
    }

    /// The state now.
    pub fn state(&self) -> SourceState {
        self.state.borrow().clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Run {
    fleet: Fleet,
    view: NodeView,
    /// Per range: the revision its watch resumes from; `None` until listed.
    next: Option<[i64; 3]>,
    tx: watch::Sender<SourceState>,
    backoff: Backoff,
}

/// How a session ended.
enum Ended {
    /// A watch resumed at a compacted revision: list again now.
    Compacted,
    /// Anything else: stale, back off, resume.
    Failed(EtcdError),
}

impl From<EtcdError> for Ended {
    fn from(e: EtcdError) -> Self {
        Ended::Failed(e)
    }
}

impl Run {
    async fn forever(mut self) {
        loop {
            match self.session().await {
                Ended::Compacted => {
                    tracing::info!(
                        "etcd compacted past what the watch had seen; listing {} again",
                        self.fleet.layout().prefix()
                    );
                    self.next = None;
                }
                Ended::Failed(e) => {
                    let delay = self.backoff.next_delay();
                    let delay_text = humantime::format_duration(Duration::from_millis(
                        u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    ));
                    // Once per outage at `warn`; the retries after it at `debug`.
                    if self.tx.borrow().stale_since.is_none() {
                        tracing::warn!(
                            "etcd source stale: {}; retrying in {delay_text}",
                            crate::error::chain(&e)
                        );
                    } else {
                        tracing::debug!(
                            "etcd source still stale: {}; retrying in {delay_text}",
                            crate::error::chain(&e)
                        );
                    }
                    let e = Arc::new(e);
                    self.tx.send_modify(|s| {
                        s.stale_since.get_or_insert_with(SystemTime::now);
                        s.error = Some(e);
                    });
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn session(&mut self) -> Ended {
        let client = match self.fleet.client().await {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let ranges = self.view.ranges();
        let next = match self.next {
            Some(next) => next,
            None => match self.list(&ranges).await {
                Ok(next) => next,
                Err(e) => return e.into(),
            },
        };

        // Three watches on one stream, each from its own resume revision.
        let options = |i: usize| {
            let r = &ranges[i];
            let o = WatchOptions::new()
                .with_watch_id(i as i64 + 1)
                .with_start_revision(next[i])
                .with_progress_notify();
            if r.prefix { o.with_prefix() } else { o }
        };
        let mut watch = client.watch_client();
        let opening = watch.watch(ranges[0].key.as_str(), Some(options(0)));
        let stream = match self.fleet.call("watch", &ranges[0].key, opening).await {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        let (mut requests, mut responses) = stream.split();
        for (i, range) in ranges.iter().enumerate().skip(1) {
            if let Err(e) = requests.watch(range.key.as_str(), Some(options(i))).await {
                return self.fleet.error("watch", &range.key, e).into();
            }
        }
        // etcd answers the creations in order; a refused one carries watch id -1.
        let mut creating: VecDeque<usize> = (0..ranges.len()).collect();
        let result = self.follow(&ranges, &mut responses, &mut creating).await;
        drop(requests);
        result
    }

    /// Lists the three ranges in one transaction (one revision); resets the view.
    async fn list(&mut self, ranges: &[Range; 3]) -> Result<[i64; 3], EtcdError> {
        let ops: Vec<TxnOp> = ranges
            .iter()
            .map(|r| {
                let o = r
                    .prefix
                    .then(|| etcd_client::GetOptions::new().with_prefix());
                TxnOp::get(r.key.as_str(), o)
            })
            .collect();
        let mut kv = self.fleet.client().await?.kv_client();
        let resp = self
            .fleet
            .call(
                "list",
                self.fleet.layout().prefix(),
                kv.txn(Txn::new().and_then(ops)),
            )
            .await?;
        let revision = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        let docs: Vec<Document> = resp
            .op_responses()
            .iter()
            .flat_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().iter().map(document).collect(),
                _ => Vec::new(),
            })
            .collect();
        self.view.reset(docs, revision);
        let now = SystemTime::now();
        self.publish(|s| {
            s.synced = true;
            s.lists += 1;
            s.stale_since = None;
            s.last_sync = Some(now);
        });
        let next = [revision + 1; 3];
        self.next = Some(next);
        Ok(next)
    }

    async fn follow(
        &mut self,
        ranges: &[Range; 3],
        responses: &mut WatchResponseStream,
        creating: &mut VecDeque<usize>,
    ) -> Ended {
        loop {
            let resp = match responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return EtcdError::StreamEnded {
                        what: "watch",
                        endpoints: self.fleet.endpoints(),
                    }
                    .into();
                }
                Err(e) => {
                    return self
                        .fleet
                        .error("watch", self.fleet.layout().prefix(), e)
                        .into();
                }
            };
            let index = if resp.created() {
                creating.pop_front()
            } else {
                usize::try_from(resp.watch_id() - 1)
                    .ok()
                    .filter(|i| *i < ranges.len())
            };
            let Some(i) = index else {
                continue;
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return Ended::Compacted;
                }
                return EtcdError::WatchCanceled {
                    key: ranges[i].key.clone(),
                    reason: resp.cancel_reason().to_owned(),
                }
                .into();
            }
            let header = resp
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision);
            if resp.created() {
                if creating.is_empty() {
                    // Every watch is live again.
                    if self.tx.borrow().stale_since.is_some() {
                        tracing::info!("etcd source in sync again at revision {header}");
                    }
                    self.backoff.reset();
                    let now = SystemTime::now();
                    self.publish(|s| {
                        s.stale_since = None;
                        s.last_sync = Some(now);
                        s.revision = s.revision.max(header);
                    });
                }
                continue;
            }
            let mut changed = false;
            let mut next = self.next.unwrap_or([header + 1; 3]);
            if resp.events().is_empty() {
                // A progress notification: etcd sends them only to watchers that have
                // delivered everything up to the header's revision.
                next[i] = next[i].max(header + 1);
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                changed |= match event.event_type() {
                    EventType::Put => self.view.put(document(kv)),
                    EventType::Delete => self.view.delete(&String::from_utf8_lossy(kv.key())),
                };
                next[i] = next[i].max(kv.mod_revision() + 1);
            }
            self.next = Some(next);
            self.view.advance(header);
            if changed {
                self.publish(|_| {});
            } else {
                self.tx.send_if_modified(|s| {
                    let moved = s.revision < header;
                    s.revision = s.revision.max(header);
                    moved
                });
            }
        }
    }

    /// Publishes the view, after `also` adjusts the rest of the state.
    fn publish(&self, also: impl FnOnce(&mut SourceState)) {
        let view = &self.view;
        self.tx.send_modify(|s| {
            s.revision = s.revision.max(view.revision());
            s.config = view.in_force().cloned();
            s.rollouts.clone_from(view.rollouts());
            also(s);
        });
    }
}

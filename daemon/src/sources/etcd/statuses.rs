//! Every node's status, followed rather than listed again and again: [`StatusWatch`] is a watch
//! of `status/` from a revision (it ends on the first failure); [`StatusMirror`] keeps a copy of
//! every status up to date in the background (list, then watch; list again after a failure),
//! which is what the rollout driver decides from. A fleet of N nodes costs the mirror one event
//! per status write, not N documents per look.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use etcd_client::{EventType, WatchOptions, WatchStream};
use tokio::{sync::watch, task::JoinHandle};

use super::{
    Backoff,
    client::{Fleet, document},
    error::EtcdError,
};
use crate::fleet::{FleetKey, NodeName, NodeStatus};

/// A change of one node's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusEvent {
    /// Written (its lease holds it).
    Put {
        /// The status.
        status: Box<NodeStatus>,
        /// The revision that wrote it.
        mod_revision: i64,
    },
    /// Gone: the node stopped cleanly, or its lease expired.
    Gone {
        /// The node.
        node: NodeName,
    },
    /// A status that does not parse, or is not under its own node's key.
    Unreadable(String),
}

/// Every node's status changes, in order, from a revision.
#[derive(Debug)]
pub struct StatusWatch {
    fleet: Fleet,
    stream: WatchStream,
}

impl Fleet {
    /// Watches every node's status from etcd revision `from` (0: from now).
    pub async fn watch_statuses(&self, from: i64) -> Result<StatusWatch, EtcdError> {
        let prefix = self.layout().status_prefix();
        let mut options = WatchOptions::new().with_prefix();
        if from > 0 {
            options = options.with_start_revision(from);
        }
        let mut watch = self.client().await?.watch_client();
        let stream = self
            .call(
                "watch",
                &prefix,
                watch.watch(prefix.as_str(), Some(options)),
            )
            .await?;
        Ok(StatusWatch {
            fleet: self.clone(),
            stream,
        })
    }
}

impl StatusWatch {
    /// The next changes, with the etcd revision they bring the watch to; `None` when etcd
    /// closed the stream.
    pub async fn next(&mut self) -> Result<Option<(Vec<StatusEvent>, i64)>, EtcdError> {
        let prefix = self.fleet.layout().status_prefix();
        loop {
            let Some(resp) = self
                .stream
                .message()
                .await
                .map_err(|e| self.fleet.error("watch", &prefix, e))?
            else {
                return Ok(None);
            };
            if resp.canceled() {
                return Err(EtcdError::WatchCanceled {
                    key: prefix,
                    reason: resp.cancel_reason().to_owned(),
                });
            }
            if resp.events().is_empty() {
                continue;
            }
            let revision = resp
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision);
            let layout = self.fleet.layout();
            let events = resp
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    let doc = document(kv);
                    let Some(FleetKey::Status(node)) = layout.parse(&doc.key) else {
                        return Some(StatusEvent::Unreadable(format!(
                            "{} is not a node's status key",
                            doc.key
                        )));
                    };
                    Some(match e.event_type() {
                        EventType::Delete => StatusEvent::Gone { node },
                        EventType::Put => match NodeStatus::from_json(&doc.value) {
                            Ok(s) if s.node == node => StatusEvent::Put {
                                status: Box::new(s),
                                mod_revision: doc.mod_revision,
                            },
                            Ok(s) => StatusEvent::Unreadable(format!(
                                "{} holds the status of node {}",
                                doc.key, s.node
                            )),
                            Err(e) => {
                                StatusEvent::Unreadable(format!("{} does not parse: {e}", doc.key))
                            }
                        },
                    })
                })
                .collect();
            return Ok(Some((events, revision)));
        }
    }
}

/// Every node's status as last read; `None` while not in sync with etcd.
pub type Mirrored = Option<Arc<BTreeMap<NodeName, NodeStatus>>>;

/// A copy of every node's status, kept up to date in the background; stops when dropped.
#[derive(Debug)]
pub struct StatusMirror {
    state: watch::Receiver<Mirrored>,
    task: JoinHandle<()>,
}

impl StatusMirror {
    /// Starts following the statuses of `fleet`. Must be called inside a tokio runtime.
    pub fn spawn(fleet: Fleet) -> Self {
        let (tx, state) = watch::channel(None);
        Self {
            state,
            task: tokio::spawn(mirror(fleet, tx)),
        }
    }

    /// Every status now, or `None` while the copy is not in sync (before the first list, and
    /// from a failure until the next list).
    pub fn current(&self) -> Mirrored {
        self.state.borrow().clone()
    }
}

impl Drop for StatusMirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn mirror(fleet: Fleet, tx: watch::Sender<Mirrored>) {
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(10),
        fleet.layout().prefix(),
    );
    loop {
        let e = follow(&fleet, &tx, &mut backoff).await;
        tracing::debug!("status mirror: {}; listing again", crate::error::chain(&e));
        tx.send_replace(None);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Lists every status, then applies the watch's changes, until something fails.
async fn follow(fleet: &Fleet, tx: &watch::Sender<Mirrored>, backoff: &mut Backoff) -> EtcdError {
    let listed = match fleet.statuses().await {
        Ok(l) => l,
        Err(e) => return e,
    };
    let mut nodes = listed.nodes;
    let mut watch = match fleet.watch_statuses(listed.revision + 1).await {
        Ok(w) => w,
        Err(e) => return e,
    };
    tx.send_replace(Some(Arc::new(nodes.clone())));
    backoff.reset();
    loop {
        match watch.next().await {
            Ok(Some((events, _))) => {
                for e in events {
                    match e {
                        StatusEvent::Put { status, .. } => {
                            nodes.insert(status.node.clone(), *status);
                        }
                        StatusEvent::Gone { node } => {
                            nodes.remove(&node);
                        }
                        StatusEvent::Unreadable(_) => {}
                    }
                }
                tx.send_replace(Some(Arc::new(nodes.clone())));
            }
            Ok(None) => {
                return EtcdError::StreamEnded {
                    what: "status watch",
                    endpoints: fleet.endpoints(),
                };
            }
            Err(e) => return e,
        }
    }
}

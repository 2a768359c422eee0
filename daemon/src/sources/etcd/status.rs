//! The status writer: keeps `status/<node>` equal to the node's latest [`NodeStatus`], under a
//! lease of the node's own that it keeps alive. When the node dies (or loses etcd for longer
//! than the lease's TTL) etcd deletes the key by itself: a fleet never shows a dead node as up.
//!
//! Publishing never blocks the caller: the writer holds the latest document and writes it as
//! soon as it can (the newest wins; intermediate ones may never be written). After a lost lease
//! or a reconnection it takes a new lease if needed and writes the document again.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::{sync::watch, task::JoinHandle};

use super::{Backoff, client::Fleet, error::EtcdError};
use crate::fleet::{NodeName, NodeStatus};

/// The writer's own health, for `veer status` and metrics.
#[derive(Clone, Debug, Default)]
pub struct WriterState {
    /// The lease the status is written under, when one is held.
    pub lease: Option<i64>,
    /// The mod revision of the last status written.
    pub mod_revision: i64,
    /// When the last status was written.
    pub written: Option<SystemTime>,
    /// Why the last attempt failed, until one succeeds.
    pub error: Option<Arc<EtcdError>>,
}

/// A running status writer; stops when dropped (the key then expires with the lease).
#[derive(Debug)]
pub struct StatusWriter {
    node: NodeName,
    doc: watch::Sender<Option<Arc<Vec<u8>>>>,
    state: watch::Receiver<WriterState>,
    lease: watch::Receiver<Option<i64>>,
    fleet: Fleet,
    task: JoinHandle<()>,
}

impl StatusWriter {
    /// Starts writing `node`'s status under a lease of `ttl` (at least 2 s; etcd rounds shorter
    /// ones up). Must be called inside a tokio runtime.
    pub fn spawn(fleet: Fleet, node: NodeName, ttl: Duration, max_backoff: Duration) -> Self {
        let (doc, doc_rx) = watch::channel(None);
        let (state_tx, state) = watch::channel(WriterState::default());
        let (lease_tx, lease) = watch::channel(None);
        let run = Run {
            key: fleet.layout().status(&node),
            fleet: fleet.clone(),
            ttl_secs: i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX),
            doc: doc_rx,
            state: state_tx,
            lease: lease_tx,
            backoff: Backoff::new(Duration::from_millis(200), max_backoff, node.as_str()),
        };
        StatusWriter {
            node,
            doc,
            state,
            lease,
            fleet,
            task: tokio::spawn(run.forever()),
        }
    }

    /// Makes `status` the one to write. It must be this node's.
    pub fn publish(&self, status: &NodeStatus) -> Result<(), EtcdError> {
        if status.node != self.node {
            return Err(EtcdError::WrongNode {
                writer: self.node.to_string(),
                given: status.node.to_string(),
            });
        }
        self.doc.send_replace(Some(Arc::new(status.to_json())));
        Ok(())
    }

    /// The writer's state.
    pub fn subscribe(&self) -> watch::Receiver<WriterState> {
        self.state.clone()
    }

    /// Stops writing and revokes the lease, so the status disappears now rather than at the
    /// end of the TTL (a clean shutdown). Dropping the writer instead leaves it to expire.
    pub async fn shutdown(self) -> Result<(), EtcdError> {
        self.task.abort();
        let lease = *self.lease.borrow();
        if let Some(lease) = lease {
            let key = self.fleet.layout().status(&self.node);
            let mut leases = self.fleet.client().await?.lease_client();
            self.fleet
                .call("revoke the lease of", &key, leases.revoke(lease))
                .await?;
        }
        Ok(())
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Run {
    fleet: Fleet,
    key: String,
    ttl_secs: i64,
    doc: watch::Receiver<Option<Arc<Vec<u8>>>>,
    state: watch::Sender<WriterState>,
    lease: watch::Sender<Option<i64>>,
    backoff: Backoff,
}

impl Run {
    async fn forever(mut self) {
        let mut lease: Option<i64> = None;
        loop {
            match self.session(&mut lease).await {
                Ok(never) => match never {},
                Err(e) => {
                    if matches!(e, EtcdError::LeaseLost { .. }) {
                        lease = None;
                    }
                    // Once per failure streak at `warn`; the retries after it at `debug`.
                    if self.state.borrow().error.is_none() {
                        tracing::warn!("status writer: {}", crate::error::chain(&e));
                    } else {
                        tracing::debug!("status writer: {}", crate::error::chain(&e));
                    }
                    let e = Arc::new(e);
                    self.state.send_modify(|s| s.error = Some(e));
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    /// Holds a lease and writes every new document under it, until something fails.
    async fn session(
        &mut self,
        lease: &mut Option<i64>,
    ) -> Result<std::convert::Infallible, EtcdError> {
        let client = self.fleet.client().await?;
        let mut leases = client.lease_client();
        // Keep the lease of the last session if etcd still has it (an outage shorter than the
        // TTL), else take a new one.
        let kept = match *lease {
            Some(id) => match self
                .fleet
                .call("keep alive", &self.key, leases.keep_alive(id))
                .await
            {
                Ok(k) => Some(k),
                Err(EtcdError::Request { .. }) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let (mut keeper, mut stream): (LeaseKeeper, LeaseKeepAliveStream) = if let Some(k) = kept {
            k
        } else {
            let granted = self
                .fleet
                .call(
                    "grant a lease for",
                    &self.key,
                    leases.grant(self.ttl_secs, None),
                )
                .await?;
            *lease = Some(granted.id());
            self.fleet
                .call("keep alive", &self.key, leases.keep_alive(granted.id()))
                .await?
        };
        let id = keeper.id();
        self.lease.send_replace(Some(id));
        self.state.send_modify(|s| s.lease = Some(id));
        // Write the current document under this lease, then every new one.
        self.doc.mark_changed();
        let mut kv = client.kv_client();
        let mut tick = tokio::time::interval(Duration::from_secs(
            u64::try_from(self.ttl_secs / 3).unwrap_or(1).max(1),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    keeper
                        .keep_alive()
                        .await
                        .map_err(|e| self.fleet.error("keep alive", &self.key, e))?;
                }
                answer = stream.message() => {
                    match answer.map_err(|e| self.fleet.error("keep alive", &self.key, e))? {
                        Some(r) if r.ttl() > 0 => {}
                        Some(_) => return Err(EtcdError::LeaseLost { lease: id, key: self.key.clone() }),
                        None => {
                            return Err(EtcdError::StreamEnded {
                                what: "lease keep-alive",
                                endpoints: self.fleet.endpoints(),
                            });
                        }
                    }
                }
                changed = self.doc.changed() => {
                    if changed.is_err() {
                        // The writer handle is gone; the task is being aborted.
                        std::future::pending::<()>().await;
                    }
                    let doc = self.doc.borrow_and_update().clone();
                    if let Some(doc) = doc {
                        let put = kv.put(self.key.as_str(), doc.as_slice(), Some(PutOptions::new().with_lease(id)));
                        let resp = self.fleet.call("put", &self.key, put).await?;
                        let rev = resp.header().map_or(0, etcd_client::ResponseHeader::revision);
                        self.backoff.reset();
                        self.state.send_modify(|s| {
                            s.mod_revision = rev;
                            s.written = Some(SystemTime::now());
                            s.error = None;
                        });
                    }
                }
            }
        }
    }
}

//! The election of the daemon that drives fleet rollouts, over etcd's election API (the
//! `v3election` service: `Campaign` blocks until the candidate's key is the oldest under the
//! election name). Each candidate campaigns with a lease of its own that it keeps alive; when
//! the leader dies, its lease expires after the TTL, etcd deletes its key, and the next
//! candidate's `Campaign` returns.
//!
//! Every write of the leader is fenced: a transaction that also checks that the leader's
//! election key still exists with its creation revision. A leader that lost its lease without
//! noticing (a long pause, a partition) can therefore never overwrite the progress written by
//! its successor: its write fails with [`EtcdError::LeadershipLost`].

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, LeaseKeepAliveStream, LeaseKeeper, SortOrder, SortTarget,
    TxnOpResponse,
};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use super::{
    client::{CasWrite, Fleet},
    error::EtcdError,
};
use crate::fleet::NodeName;

/// A daemon that may drive fleet rollouts.
#[derive(Clone, Debug)]
pub struct Candidate {
    fleet: Fleet,
    node: NodeName,
    ttl: Duration,
}

/// Leadership won by [`Candidate::campaign`]. Dropping it stops the keep-alives (the lease then
/// expires and the next candidate is elected within the TTL); [`Leadership::resign`] hands over
/// at once.
#[derive(Debug)]
pub struct Leadership {
    fleet: Fleet,
    key: String,
    revision: i64,
    lease: i64,
    lost: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Candidate {
    /// `node` campaigning with a lease of `ttl` (at least 2 s).
    pub fn new(fleet: Fleet, node: NodeName, ttl: Duration) -> Candidate {
        Candidate {
            fleet,
            node,
            ttl: ttl.max(Duration::from_secs(2)),
        }
    }

    /// Campaigns until this candidate leads (waits as long as another one does).
    pub async fn campaign(&self) -> Result<Leadership, EtcdError> {
        let name = self.fleet.layout().driver_election();
        let client = self.fleet.client().await?;
        let mut leases = client.lease_client();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let lease = self
            .fleet
            .call("grant a lease for", &name, leases.grant(ttl, None))
            .await?
            .id();
        let (kept, stream) = self
            .fleet
            .call("keep alive", &name, leases.keep_alive(lease))
            .await?;
        let (lost_tx, lost) = watch::channel(false);
        let task = tokio::spawn(keep_alive(
            self.fleet.clone(),
            name.clone(),
            lease,
            self.ttl,
            (kept, stream),
            lost_tx,
        ));
        // No request timeout: a campaign lasts as long as another candidate leads.
        let mut election = client.election_client();
        let won = election
            .campaign(name.as_str(), self.node.as_str(), lease)
            .await
            .map_err(|e| self.fleet.error("campaign in", &name, e));
        let leader = match won {
            Ok(mut r) => r.take_leader(),
            Err(e) => {
                task.abort();
                // Best effort: without it the lease expires after the TTL anyway.
                let _revoked = self
                    .fleet
                    .call("revoke the lease of", &name, leases.revoke(lease))
                    .await;
                return Err(e);
            }
        };
        let Some(leader) = leader else {
            task.abort();
            return Err(EtcdError::StreamEnded {
                what: "election campaign",
                endpoints: self.fleet.endpoints(),
            });
        };
        Ok(Leadership {
            fleet: self.fleet.clone(),
            key: String::from_utf8_lossy(leader.key()).into_owned(),
            revision: leader.rev(),
            lease,
            lost,
            task,
        })
    }

    /// The current leader's node name, if any: the value of the oldest key under the election
    /// name (etcd's election orders candidates by creation revision).
    pub async fn leader(&self) -> Result<Option<String>, EtcdError> {
        self.fleet.driver().await
    }
}

impl Fleet {
    /// The node name of the daemon that drives fleet rollouts now, if one does.
    pub async fn driver(&self) -> Result<Option<String>, EtcdError> {
        let prefix = format!("{}/", self.layout().driver_election());
        let mut kv = self.client().await?.kv_client();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let resp = self
            .call(
                "get the leader of",
                &prefix,
                kv.get(prefix.as_str(), Some(options)),
            )
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}

impl Leadership {
    /// The leader's key under the election name.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease holding it.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Whether leadership is known to be lost (the lease expired, or could not be kept alive
    /// for a whole TTL).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when leadership is lost.
    pub async fn lost(&mut self) {
        // An error means the keep-alive task ended, which it only does once lost.
        let _ended = self.lost.wait_for(|lost| *lost).await;
    }

    /// Writes all of `writes` if every key is as expected **and** this daemon still leads.
    pub async fn cas(&self, writes: &[CasWrite]) -> Result<i64, EtcdError> {
        let fence = Compare::create_revision(self.key.as_str(), CompareOp::Equal, self.revision);
        let key = writes.first().map_or_else(String::new, |w| w.key.clone());
        self.fleet
            .cas_when(writes, vec![(fence, self.key.clone())], |extra| {
                let still_here = extra.first().is_some_and(|r| match r {
                    TxnOpResponse::Get(g) => g
                        .kvs()
                        .first()
                        .is_some_and(|kv| kv.create_revision() == self.revision),
                    _ => false,
                });
                (!still_here).then(|| EtcdError::LeadershipLost {
                    key,
                    leader_key: self.key.clone(),
                })
            })
            .await
    }

    /// Gives leadership up now: revokes the lease (its key goes, the next candidate leads).
    pub async fn resign(self) -> Result<(), EtcdError> {
        self.task.abort();
        let mut leases = self.fleet.client().await?.lease_client();
        self.fleet
            .call("revoke the lease of", &self.key, leases.revoke(self.lease))
            .await?;
        Ok(())
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps `lease` alive every third of the TTL. Sets `lost` when etcd says the lease is gone, or
/// when no keep-alive was answered for a whole TTL (etcd has expired it by then).
async fn keep_alive(
    fleet: Fleet,
    name: String,
    lease: i64,
    ttl: Duration,
    first: (LeaseKeeper, LeaseKeepAliveStream),
    lost: watch::Sender<bool>,
) {
    let mut current = Some(first);
    let mut answered = Instant::now();
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = tokio::time::sleep_until(answered + ttl);
        tokio::select! {
            () = deadline => break,
            _ = tick.tick() => {
                if let Some((keeper, _)) = current.as_mut() {
                    if keeper.keep_alive().await.is_err() {
                        current = None;
                    }
                } else {
                    // Reopen the keep-alive stream (the connection came back, or not yet).
                    let reopened = match fleet.client().await {
                        Ok(c) => fleet.call("keep alive", &name, c.lease_client().keep_alive(lease)).await,
                        Err(e) => Err(e),
                    };
                    match reopened {
                        Ok(k) => current = Some(k),
                        // etcd no longer has the lease.
                        Err(EtcdError::Request { .. }) => break,
                        Err(_) => {}
                    }
                }
            }
            answer = async {
                match current.as_mut() {
                    Some((_, stream)) => stream.message().await,
                    None => std::future::pending().await,
                }
            } => {
                match answer {
                    Ok(Some(r)) if r.ttl() > 0 => answered = Instant::now(),
                    Ok(Some(_)) => break,
                    Ok(None) | Err(_) => current = None,
                }
            }
        }
    }
    tracing::warn!("fleet rollout driver: lease {lease:x} of {name} is gone; leadership lost");
    lost.send_replace(true);
}

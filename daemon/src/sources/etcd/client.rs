//! [`Fleet`]: one shared, lazily connected etcd client for a prefix, and the one-shot
//! operations on it: reads, compare-and-swap writes, the statuses of every node, a key's
//! history. The watcher, the status writer and the election share it (one connection per node).

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use etcd_client::{Client, Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse};
use tokio::sync::OnceCell;

use super::{error::EtcdError, options::Connector};
use crate::fleet::{Document, FleetKey, FleetRollout, KeyLayout, NodeName, NodeStatus, Progress};

/// What a compare-and-swap write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist.
    Absent,
    /// The key's mod revision is this one (as read).
    ModRevision(i64),
}

impl Expect {
    /// What a read found: absent, or the document's mod revision.
    pub fn from_read(doc: Option<&Document>) -> Expect {
        doc.map_or(Expect::Absent, |d| Expect::ModRevision(d.mod_revision))
    }

    fn compare(self, key: &str) -> Compare {
        match self {
            // A key that does not exist has mod revision 0.
            Expect::Absent => Compare::mod_revision(key, CompareOp::Equal, 0),
            Expect::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, r),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Absent => f.write_str("absent"),
            Expect::ModRevision(r) => write!(f, "mod revision {r}"),
        }
    }
}

/// One write of a compare-and-swap transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasWrite {
    /// The key.
    pub key: String,
    /// What it must be now.
    pub expect: Expect,
    /// The new value, or `None` to delete it.
    pub value: Option<Vec<u8>>,
}

/// A key read at a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The document, if the key exists.
    pub doc: Option<Document>,
    /// The etcd revision of the read.
    pub revision: i64,
}

/// Every node's status.
#[derive(Debug, Default)]
pub struct Statuses {
    /// The etcd revision of the read.
    pub revision: i64,
    /// By node.
    pub nodes: BTreeMap<NodeName, NodeStatus>,
    /// Statuses that do not parse (a foreign writer, or a key that is not a node name).
    pub unreadable: Vec<EtcdError>,
}

/// A fleet rollout as stored.
#[derive(Debug, Default)]
pub struct StoredRollout {
    /// The plan and its mod revision.
    pub plan: Option<(FleetRollout, i64)>,
    /// The progress and its mod revision.
    pub progress: Option<(Progress, i64)>,
}

/// The versions of one key that etcd still has, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The key.
    pub key: String,
    /// Newest first.
    pub versions: Vec<Version>,
    /// Why the list ends.
    pub end: HistoryEnd,
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The revision that wrote it.
    pub mod_revision: i64,
    /// Its number since the key was (last) created: 1, 2, 3 ...
    pub version: i64,
    /// The value.
    pub value: Vec<u8>,
}

/// Why a history ends where it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryEnd {
    /// At the key's creation (or its re-creation after a delete): there is nothing older.
    Created,
    /// etcd compacted the revisions before this one away.
    Compacted {
        /// The oldest version listed was written at this revision; older ones are gone.
        before: i64,
    },
    /// The limit was reached; older versions may exist.
    Limit,
    /// The key does not exist now.
    Absent,
}

/// A handle on a fleet's keys in etcd. Cheap to clone; connects on first use and reconnects
/// by itself (the underlying gRPC channel does).
#[derive(Clone, Debug)]
pub struct Fleet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connector: Connector,
    client: OnceCell<ClientCell>,
}

/// `etcd_client::Client` is not `Debug`.
struct ClientCell(Client);

impl std::fmt::Debug for ClientCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

impl Fleet {
    /// A handle; nothing is contacted yet.
    pub fn new(connector: Connector) -> Fleet {
        Fleet {
            inner: Arc::new(Inner {
                connector,
                client: OnceCell::new(),
            }),
        }
    }

    /// The key layout.
    pub fn layout(&self) -> &KeyLayout {
        &self.inner.connector.layout
    }

    /// The endpoints, comma-separated.
    pub fn endpoints(&self) -> String {
        self.inner.connector.endpoints()
    }

    /// The etcd user, if any.
    pub fn user(&self) -> Option<&str> {
        self.inner.connector.user.as_deref()
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.inner.connector.request_timeout
    }

    /// The client, connecting on first use. Without a user nothing is sent yet (the channel
    /// connects with the first request); with one, this authenticates.
    pub(super) async fn client(&self) -> Result<Client, EtcdError> {
        let c = &self.inner.connector;
        let cell = self
            .inner
            .client
            .get_or_try_init(|| async {
                let connect = Client::connect(c.endpoints.clone(), Some(c.connect.clone()));
                match tokio::time::timeout(c.request_timeout, connect).await {
                    Err(_) => Err(EtcdError::Timeout {
                        op: "authenticate",
                        key: String::new(),
                        endpoints: c.endpoints(),
                        after: c.request_timeout,
                    }),
                    Ok(Ok(client)) => Ok(ClientCell(client)),
                    Ok(Err(source)) => Err(match (&c.user, &source) {
                        (Some(user), etcd_client::Error::GRpcStatus(s))
                            if s.code() == tonic::Code::InvalidArgument =>
                        {
                            EtcdError::AuthFailed {
                                endpoints: c.endpoints(),
                                user: user.clone(),
                                source,
                            }
                        }
                        (Some(_), _) => EtcdError::from_client(
                            "authenticate",
                            "",
                            &c.endpoints(),
                            c.user.as_deref(),
                            source,
                        ),
                        (None, _) => EtcdError::Client {
                            endpoints: c.endpoints(),
                            source,
                        },
                    }),
                }
            })
            .await?;
        Ok(cell.0.clone())
    }

    /// Runs one request under the request timeout, classifying its failure.
    pub(super) async fn call<T, F>(
        &self,
        op: &'static str,
        key: &str,
        request: F,
    ) -> Result<T, EtcdError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let after = self.request_timeout();
        match tokio::time::timeout(after, request).await {
            Err(_) => Err(EtcdError::Timeout {
                op,
                key: key.to_owned(),
                endpoints: self.endpoints(),
                after,
            }),
            Ok(r) => r.map_err(|e| self.error(op, key, e)),
        }
    }

    /// Classifies an etcd-client error of `op` on `key`.
    pub(super) fn error(&self, op: &'static str, key: &str, e: etcd_client::Error) -> EtcdError {
        EtcdError::from_client(op, key, &self.endpoints(), self.user(), e)
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Read, EtcdError> {
        let mut kv = self.client().await?.kv_client();
        let resp = self.call("get", key, kv.get(key, None)).await?;
        Ok(Read {
            revision: resp
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision),
            doc: resp.kvs().first().map(document),
        })
    }

    /// Reads every key under a prefix.
    pub async fn get_prefix(&self, prefix: &str) -> Result<(Vec<Document>, i64), EtcdError> {
        let mut kv = self.client().await?.kv_client();
        let resp = self
            .call(
                "get",
                prefix,
                kv.get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        Ok((
            resp.kvs().iter().map(document).collect(),
            resp.header()
                .map_or(0, etcd_client::ResponseHeader::revision),
        ))
    }

    /// The fleet's config.
    pub async fn config(&self) -> Result<Read, EtcdError> {
        self.get(&self.layout().config()).await
    }

    /// Writes `value` at `key` if the key is as expected. Returns the new mod revision; a
    /// changed key is [`EtcdError::Conflict`] with its current mod revision.
    pub async fn put_if(
        &self,
        key: &str,
        expect: Expect,
        value: Vec<u8>,
    ) -> Result<i64, EtcdError> {
        self.cas(&[CasWrite {
            key: key.to_owned(),
            expect,
            value: Some(value),
        }])
        .await
    }

    /// Writes all of `writes` if every key is as expected, else none. Returns the revision of
    /// the transaction; the first key found changed is [`EtcdError::Conflict`].
    pub async fn cas(&self, writes: &[CasWrite]) -> Result<i64, EtcdError> {
        self.cas_when(writes, Vec::new(), |_| None).await
    }

    /// [`cas`](Self::cas) with extra conditions; when the transaction fails and none of the
    /// writes' keys changed, `other` says which extra condition failed.
    pub(super) async fn cas_when(
        &self,
        writes: &[CasWrite],
        mut extra: Vec<(Compare, String)>,
        other: impl FnOnce(&[TxnOpResponse]) -> Option<EtcdError>,
    ) -> Result<i64, EtcdError> {
        let first_key = writes.first().map_or("", |w| w.key.as_str()).to_owned();
        let mut compares: Vec<Compare> = writes.iter().map(|w| w.expect.compare(&w.key)).collect();
        let mut reads: Vec<TxnOp> = writes
            .iter()
            .map(|w| TxnOp::get(w.key.as_str(), None))
            .collect();
        for (c, key) in extra.drain(..) {
            compares.push(c);
            reads.push(TxnOp::get(key, None));
        }
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match &w.value {
                Some(v) => TxnOp::put(w.key.as_str(), v.clone(), None),
                None => TxnOp::delete(w.key.as_str(), None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
        let mut kv = self.client().await?.kv_client();
        let resp = self.call("put", &first_key, kv.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(resp
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision));
        }
        let found = resp.op_responses();
        for (w, r) in writes.iter().zip(&found) {
            let current = match r {
                TxnOpResponse::Get(g) => g.kvs().first().map_or(0, KeyValue::mod_revision),
                _ => continue,
            };
            let now = if current == 0 {
                Expect::Absent
            } else {
                Expect::ModRevision(current)
            };
            if now != w.expect {
                return Err(EtcdError::Conflict {
                    key: w.key.clone(),
                    expected: w.expect,
                    current,
                });
            }
        }
        Err(
            other(&found[writes.len().min(found.len())..]).unwrap_or(EtcdError::Conflict {
                key: first_key,
                expected: writes.first().map_or(Expect::Absent, |w| w.expect),
                current: 0,
            }),
        )
    }

    /// Read-modify-write of `key` with compare-and-swap, retried on conflicts up to `attempts`
    /// times: `edit` gets the current document and returns the new value, or `None` when there
    /// is nothing to change. Two concurrent updates never lose each other's change: the loser
    /// re-reads and re-applies its edit on top of the winner's.
    pub async fn update<E>(
        &self,
        key: &str,
        attempts: u32,
        mut edit: impl FnMut(Option<&Document>) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Updated, UpdateError<E>>
    where
        E: std::error::Error + 'static,
    {
        let mut backoff = super::Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(200),
            &format!("{key}{}", std::process::id()),
        );
        for attempt in 1..=attempts.max(1) {
            let read = self.get(key).await.map_err(UpdateError::Etcd)?;
            let Some(value) = edit(read.doc.as_ref()).map_err(UpdateError::Edit)? else {
                return Ok(Updated {
                    mod_revision: read.doc.map_or(0, |d| d.mod_revision),
                    attempts: attempt,
                    changed: false,
                });
            };
            match self
                .put_if(key, Expect::from_read(read.doc.as_ref()), value)
                .await
            {
                Ok(mod_revision) => {
                    return Ok(Updated {
                        mod_revision,
                        attempts: attempt,
                        changed: true,
                    });
                }
                Err(EtcdError::Conflict { .. }) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(UpdateError::Etcd(e)),
            }
        }
        Err(UpdateError::Contended {
            key: key.to_owned(),
            attempts,
        })
    }

    /// Every node's status.
    pub async fn statuses(&self) -> Result<Statuses, EtcdError> {
        let (docs, revision) = self.get_prefix(&self.layout().status_prefix()).await?;
        let mut out = Statuses {
            revision,
            ..Statuses::default()
        };
        for doc in docs {
            let parsed =
                NodeStatus::from_json(&doc.value).map_err(|source| EtcdError::BadDocument {
                    key: doc.key.clone(),
                    mod_revision: doc.mod_revision,
                    what: "node status",
                    source,
                });
            match (self.layout().parse(&doc.key), parsed) {
                (Some(FleetKey::Status(node)), Ok(status)) if status.node == node => {
                    out.nodes.insert(node, status);
                }
                (_, Err(e)) => out.unreadable.push(e),
                // A status under another node's key: a node may only speak for itself.
                (_, Ok(status)) => out.unreadable.push(EtcdError::ForeignStatus {
                    key: doc.key.clone(),
                    node: status.node.to_string(),
                }),
            }
        }
        Ok(out)
    }

    /// A fleet rollout's plan and progress.
    pub async fn rollout(&self, service: &str) -> Result<StoredRollout, EtcdError> {
        let layout = self.layout();
        let (plan_key, progress_key) = (
            layout.rollout_plan(service),
            layout.rollout_progress(service),
        );
        let mut kv = self.client().await?.kv_client();
        let txn = Txn::new().and_then(vec![
            TxnOp::get(plan_key.as_str(), None),
            TxnOp::get(progress_key.as_str(), None),
        ]);
        let resp = self.call("get", &plan_key, kv.txn(txn)).await?;
        let docs: Vec<Option<Document>> = resp
            .op_responses()
            .iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(document),
                _ => None,
            })
            .collect();
        let parse_err = |d: &Document, what, source| EtcdError::BadDocument {
            key: d.key.clone(),
            mod_revision: d.mod_revision,
            what,
            source,
        };
        let mut out = StoredRollout::default();
        if let Some(Some(d)) = docs.first() {
            let plan = FleetRollout::from_json(&d.value)
                .map_err(|e| parse_err(d, "fleet rollout plan", e))?;
            out.plan = Some((plan, d.mod_revision));
        }
        if let Some(Some(d)) = docs.get(1) {
            let progress = Progress::from_json(&d.value)
                .map_err(|e| parse_err(d, "fleet rollout progress", e))?;
            out.progress = Some((progress, d.mod_revision));
        }
        Ok(out)
    }

    /// The versions of `key` that etcd still has, newest first, at most `limit`. etcd keeps
    /// every revision until it is compacted (`--auto-compaction-retention`, or `etcdctl
    /// compact`); the list also ends at the key's last creation.
    pub async fn history(&self, key: &str, limit: usize) -> Result<History, EtcdError> {
        let done = |versions, end| {
            Ok(History {
                key: key.to_owned(),
                versions,
                end,
            })
        };
        let mut versions = Vec::new();
        let Some(mut kv) = self.get_kv(key, None).await? else {
            return done(versions, HistoryEnd::Absent);
        };
        loop {
            versions.push(Version {
                mod_revision: kv.mod_revision(),
                version: kv.version(),
                value: kv.value().to_vec(),
            });
            if kv.version() <= 1 {
                return done(versions, HistoryEnd::Created);
            }
            if versions.len() >= limit {
                return done(versions, HistoryEnd::Limit);
            }
            match self.get_kv(key, Some(kv.mod_revision() - 1)).await {
                Ok(Some(older)) => kv = older,
                // Deleted before, then created again: nothing older belongs to this key's life.
                Ok(None) => return done(versions, HistoryEnd::Created),
                Err(EtcdError::Compacted { .. }) => {
                    return done(
                        versions,
                        HistoryEnd::Compacted {
                            before: kv.mod_revision(),
                        },
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One key as etcd-client returns it, now or at `revision`.
    async fn get_kv(
        &self,
        key: &str,
        revision: Option<i64>,
    ) -> Result<Option<KeyValue>, EtcdError> {
        let mut kv = self.client().await?.kv_client();
        let options = revision.map(|r| GetOptions::new().with_revision(r));
        let after = self.request_timeout();
        match tokio::time::timeout(after, kv.get(key, options)).await {
            Err(_) => Err(EtcdError::Timeout {
                op: "get",
                key: key.to_owned(),
                endpoints: self.endpoints(),
                after,
            }),
            Ok(Err(source)) if super::error::is_compacted(&source) => Err(EtcdError::Compacted {
                op: "get",
                key: key.to_owned(),
                revision: revision.unwrap_or(0),
                source,
            }),
            Ok(Err(e)) => Err(self.error("get", key, e)),
            Ok(Ok(mut resp)) => Ok(resp.take_kvs().into_iter().next()),
        }
    }
}

/// A successful [`Fleet::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Updated {
    /// The key's mod revision now.
    pub mod_revision: i64,
    /// Reads it took (1 without a conflict).
    pub attempts: u32,
    /// Whether anything was written (`edit` may find nothing to change).
    pub changed: bool,
}

/// Why a [`Fleet::update`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E: std::error::Error + 'static> {
    /// The edit refused the current document.
    #[error("the change does not apply to the current document")]
    Edit(#[source] E),
    /// etcd failed.
    #[error(transparent)]
    Etcd(EtcdError),
    /// Others kept changing the key.
    #[error(
        "{key} changed under every one of {attempts} attempts: others write it constantly; retry later"
    )]
    Contended {
        /// The key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// A key-value as a document.
pub(super) fn document(kv: &KeyValue) -> Document {
    Document {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    }
}

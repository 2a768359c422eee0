//! etcd as the config center of a fleet, over the `etcd-client` crate.
//!
//! - [`EtcdOptions`] → [`Connector`]: the flags, checked and with their files read.
//! - [`Fleet`]: a shared, lazily connected client for one prefix; reads, compare-and-swap
//!   writes ([`Fleet::put_if`], [`Fleet::cas`], [`Fleet::update`]), every node's status
//!   ([`Fleet::statuses`]), a key's history ([`Fleet::history`]), a fleet rollout
//!   ([`Fleet::rollout`]).
//! - [`Watcher`]: what a node follows (its config document in force, the fleet rollouts),
//!   listed then watched, published as a [`SourceState`].
//! - [`StatusWriter`]: the node's `status/<node>` under a lease it keeps alive; [`StatusWatch`]:
//!   every node's status changes, for whoever follows the whole fleet.
//! - [`Candidate`] / [`Leadership`]: the election of the daemon that drives fleet rollouts,
//!   and writes fenced by it.
//!
//! The documents and the decisions are `crate::fleet`'s; this module only moves them.

mod backoff;
mod client;
mod election;
mod error;
mod options;
mod status;
mod statuses;
mod watch;

pub use backoff::Backoff;
pub use client::{
    CasWrite, Expect, Fleet, History, HistoryEnd, Read, Statuses, StoredRollout, UpdateError,
    Updated, Version,
};
pub use election::{Candidate, Leadership};
pub use error::EtcdError;
pub use options::{Connector, DEFAULT_PREFIX, EtcdOptions};
pub use status::{StatusWriter, WriterState};
pub use statuses::{Mirrored, StatusEvent, StatusMirror, StatusWatch};
pub use watch::{SourceState, Watcher, WatcherOptions};

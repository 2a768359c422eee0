//! The control layer: every operation an operator, a script or a source of desired state can
//! ask for, on the dataplane and the revision store together. The socket API, the metrics and
//! the CLI are thin adapters over it.
//!
//! - `core` is pure: a `Request` and the live revision (`Head`) give the `Change`s to commit,
//!   each passed through `change::finish` (the model's rules, the weights rollouts own);
//!   `rollouts` and `health` hold its rollout and health decisions, `observed` what it reads
//!   besides the head.
//! - `controller` carries changes out through `Effects` (apply to the kernel, commit to the
//!   store, undo) and reads counters through `Readings`; `node` is the real node behind both,
//!   `memory` a node whose maps are in memory (the fleet benchmark runs many of them).
//! - `follow` turns what the etcd source holds into requests (`Apply` for a config document,
//!   `FleetRollout` for the node's part of a fleet rollout) and builds the node's status for
//!   the fleet, keeping what it knows of the source in `source`; `edit` runs the core on a
//!   fleet's config document for `veer ... --fleet`.
//! - `views` are what it shows: domain values that `api` and `metrics` convert; `diff` says how
//!   two desired states differ (a dry run), `offline` reads the pinned maps with no daemon.

mod change;
mod controller;
pub mod core;
pub mod diff;
mod drains;
pub mod edit;
mod effects;
mod error;
mod follow;
mod health;
mod judging;
mod memory;
mod node;
mod observed;
pub mod offline;
mod request;
mod rollouts;
mod source;
pub mod views;

pub use change::{Change, Head, Outcome};
pub use controller::{Answer, Controller, Preview};
pub use effects::{Census, DataplaneReport, Effects, FlowTable, InterfaceReport, Readings};
pub use error::{ControlError, held_advice};
pub use health::CheckJob;
pub use memory::MemoryNode;
pub use node::{Node, Options};
pub use observed::{GateKey, GateState, Observations};
pub use request::Request;
pub use rollouts::GateJob;
pub use source::{EtcdSource, SourceView};

#[cfg(test)]
mod tests;

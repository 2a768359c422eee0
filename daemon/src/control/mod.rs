//! The control layer: every operation an operator, a script or a source of desired state can
//! ask for, on the dataplane and the revision store together. The socket API, the metrics and
//! the CLI are thin adapters over it.
//!
//! - `core` is pure: a `Request` and the live revision (`Head`) give the `Change`s to commit,
//!   each passed through `change::finish` (the model's rules, the weights rollouts own);
//!   `rollouts` and `health` hold its rollout and health decisions, `observed` what it reads
//!   besides the head.
//! - `controller` carries changes out through `Effects` (apply to the kernel, commit to the
//!   store, undo) and reads counters through `Readings`; `node` is the real node behind both.
//! - `views` are what it shows: domain values that `api` and `metrics` convert.

mod change;
mod controller;
pub mod core;
mod drains;
mod effects;
mod error;
mod health;
mod judging;
mod node;
mod observed;
mod request;
mod rollouts;
pub mod views;

pub use change::{Change, Head, Outcome};
pub use controller::{Answer, Controller};
pub use effects::{Census, DataplaneReport, Effects, FlowTable, InterfaceReport, Readings};
pub use error::ControlError;
pub use health::CheckJob;
pub use node::{Node, Options};
pub use observed::{GateKey, GateState, Observations};
pub use request::Request;
pub use rollouts::GateJob;

#[cfg(test)]
mod tests;

//! Progressive rollouts: move a service's new flows to one group in steps, watch the group's
//! failure rate, health and extra gates at every step, and roll back by itself on a breach.
//!
//! `plan` is the plan and the weights of each step, `engine` the pure decision (`decide`) made
//! every tick, `gate` the extra checks (`exec:`, `http:`, `prometheus:`). The daemon's control
//! layer applies the decisions as revisions, so progress survives restarts.

pub mod engine;
pub mod gate;
pub mod judge;
pub mod plan;

pub use engine::{Decision, Observation, Phase, Rollout};
pub use plan::{Plan, PlanError};

//! Progressive rollouts: move a service's new flows to one group in steps, watch the group's
//! failure rate, health and extra gates at every step, and roll back by itself on a breach.
//!
//! The plan and the weights of each step are `model::plan`; here are `engine`, the pure decision
//! (`decide`) made every tick, and `gate`, which checks the extra gates (`exec:`, `http:`,
//! `prometheus:`). The daemon's control layer applies the decisions as revisions, so progress
//! survives restarts.

pub mod canary;
pub mod engine;
pub mod gate;
pub mod judge;

pub use engine::{Decision, GateFailure, Observation, Phase, Rollout, StepOutcome, StepRecord};

//! Why an operation was refused or failed.

use crate::{
    config,
    dataplane::{DataplaneError, sync::SyncError},
    model::{PlanError, Violation},
    rollout::{Phase, Rollout},
    state::{Problem, Revision, StoreError, Unusable},
};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request names a service that does not exist.
    #[error("no service `{service}`")]
    UnknownService {
        /// Name of the service.
        service: String,
    },
    /// The request names a group the service does not have.
    #[error("service `{service}` has no group `{group}`")]
    UnknownGroup {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
    },
    /// No such revision.
    #[error("no revision {number} (see `veer history`)")]
    UnknownRevision {
        /// Revision number.
        number: u64,
    },
    /// Nothing to roll back to.
    #[error("there is no revision before {current} to roll back to")]
    NothingToRollBack {
        /// The live revision.
        current: u64,
    },
    /// The service did not exist at the revision rolled back to.
    #[error("service `{service}` did not exist at revision {number}")]
    ServiceNotAtRevision {
        /// Name of the service.
        service: String,
        /// Revision number.
        number: u64,
    },
    /// A bad weight, prefix or similar in a request.
    #[error("{what}: {reason}")]
    BadRequest {
        /// What was wrong (`prefix 203.0.113.1/24`).
        what: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// No pin with that prefix.
    #[error("service `{service}` has no pin for {prefix}")]
    UnknownPin {
        /// Name of the service.
        service: String,
        /// The prefix as given (`203.0.113.0/24`).
        prefix: String,
    },
    /// A drain that would leave the service with no group taking new flows.
    #[error(
        "draining `{group}` would leave service `{service}` with no group taking new connections; shift weight to another group first, or pass --force to drop new connections"
    )]
    DrainLastGroup {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
    },
    /// A shift that would leave the service with no group taking new connections.
    #[error(
        "these weights would leave service `{service}` with no group taking new connections (every group at weight 0 or without backends); give a group weight, or pass --force to drop new connections"
    )]
    ShiftToNothing {
        /// Name of the service.
        service: String,
    },
    /// The desired state a request leads to breaks a rule of the model.
    #[error(transparent)]
    Invalid(#[from] Violation),
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigErrors),
    /// The config file could not be read or is invalid (at start, or on reload).
    #[error(transparent)]
    ConfigFile(Box<config::LoadError>),
    /// Applying to the maps failed (the previous state is in force).
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The dataplane failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// Another daemon holds the state or pin directory.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// The store failed.
    #[error("recording the revision failed; the previous state was put back")]
    Store(#[from] StoreError),
    /// A manual change (or another rollout) for a service whose rollout is running: its next
    /// step would overwrite the weights.
    #[error(
        "service `{service}` has a rollout to `{to}` in progress (step {step}/{steps}); wait for it to finish, or abort it first (veer rollout abort {service})"
    )]
    RolloutInProgress {
        /// Name of the service.
        service: String,
        /// The rollout's target group.
        to: String,
        /// Its current step, 1-based.
        step: usize,
        /// Its number of steps.
        steps: usize,
    },
    /// The same, for a paused rollout: it holds the weights until it is resumed or aborted.
    #[error(
        "service `{service}` has a paused rollout to `{to}` (step {step}/{steps}); abort it (veer rollout abort {service}), or resume it and let it finish (veer rollout resume {service})"
    )]
    RolloutPaused {
        /// Name of the service.
        service: String,
        /// The rollout's target group.
        to: String,
        /// Its current step, 1-based.
        step: usize,
        /// Its number of steps.
        steps: usize,
    },
    /// A rollout that cannot start.
    #[error(transparent)]
    RolloutPlan(#[from] PlanError),
    /// `veer apply` on a node whose services come from etcd.
    #[error(
        "this node's services come from etcd (veer daemon --source etcd): `veer apply --fleet -f FILE` changes the fleet's config; shift, drain, pin, unpin and rollback on the node stay possible, as local changes until the next change of its config in etcd"
    )]
    FromEtcd,
    /// Services in the local config file of a node whose services come from etcd.
    #[error(
        "{} has services, but this node's services come from etcd (--source etcd): keep [node] (and [source]) in the file and put the services in etcd (veer apply --fleet -f FILE)",
        path.display()
    )]
    ServicesInLocalFile {
        /// The config file.
        path: std::path::PathBuf,
    },
    /// A rollout request for a service without one.
    #[error("service `{service}` has no rollout in progress")]
    NoRollout {
        /// Name of the service.
        service: String,
    },
    /// The newest revision file cannot be used: the state the maps hold is not known, and no
    /// change is made until an operator chooses one.
    #[error(
        "revision {number} ({}) cannot be used: {problem}; the maps are kept as they are and nothing changes until you choose the state to put in force: {}",
        path.display(),
        held_advice(*usable, *etcd)
    )]
    Held {
        /// The number of the revision file that cannot be used.
        number: u64,
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: Problem,
        /// The newest revision that can be used, if any.
        usable: Option<u64>,
        /// Whether the node's services come from etcd (what happens after the hold differs).
        etcd: bool,
    },
    /// A retry of a rollout that completed.
    #[error(
        "rollout {service} -> {to} completed: there is nothing to retry (start a new one: veer rollout start {service} --to GROUP)"
    )]
    NothingToRetry {
        /// Name of the service.
        service: String,
        /// The completed rollout's target group.
        to: String,
    },
}

/// What an operator can do while the newest revision file cannot be used; `etcd`: the node's
/// services come from etcd, whose config document was not applied while held and applies at
/// its next pass after.
pub fn held_advice(usable: Option<u64>, etcd: bool) -> String {
    let choose = match usable {
        Some(n) => format!(
            "`veer rollback --to {n}` (the newest revision that can be used; `veer history` lists them) or `veer apply -f FILE`"
        ),
        None => "`veer apply -f FILE`".to_owned(),
    };
    if etcd {
        format!(
            "{choose}; the config in etcd is not applied while held, and the node follows it again once you chose"
        )
    } else {
        choose
    }
}

impl ControlError {
    /// The refusal of a change while `held` is the newest revision file and `usable` the newest
    /// usable revision.
    pub(crate) fn held(held: &Unusable, usable: Option<&Revision>) -> Self {
        Self::Held {
            number: held.number,
            path: held.path.clone(),
            problem: held.problem.clone(),
            usable: usable.map(|r| r.number),
            etcd: false,
        }
    }

    /// Why `rollout`, which is not over, stands in the way of a change.
    pub(super) fn in_the_way(rollout: &Rollout) -> Self {
        let (service, to) = (rollout.service.clone(), rollout.plan.to.clone());
        let (step, steps) = (rollout.step + 1, rollout.plan.steps.len());
        if rollout.phase == Phase::Paused {
            Self::RolloutPaused {
                service,
                to,
                step,
                steps,
            }
        } else {
            Self::RolloutInProgress {
                service,
                to,
                step,
                steps,
            }
        }
    }
}

impl From<config::LoadError> for ControlError {
    fn from(e: config::LoadError) -> Self {
        Self::ConfigFile(Box::new(e))
    }
}

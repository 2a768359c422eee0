//! What a producer of desired state asks for: an operator (the CLI through the API), the config
//! file (at start and on reload), or the rollout engine. A new source (a fleet's config center)
//! is one more producer of `Request::Apply`: it goes through the same core and the same commit
//! path as the file, never a second path to the maps. A fleet rollout's progress comes as
//! `Request::FleetRollout`, which starts, holds or ends the node's own rollout through the same
//! rollout rules as `veer rollout`.

use crate::{
    fleet::Directive,
    model::{DesiredState, NodeConfig, Plan, Weight},
    state::{Author, Origin},
};

/// One request to change the desired state.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Make `state` the desired state (a config file at start or on reload, `veer apply`).
    Apply {
        /// Node settings the source asks for (they take effect at the next daemon start).
        node: NodeConfig,
        /// Services, as the source gives them.
        state: DesiredState,
        /// Where it comes from.
        origin: Origin,
        /// The source's mark of this content (the config file's digest): when it equals the
        /// mark of the last apply from the source, the request is already in force.
        mark: Option<String>,
    },
    /// Set the weights of some groups of one or more services (a dual-stack pair) at once.
    Shift {
        /// Services changed together (a dual-stack pair) in one revision.
        services: Vec<String>,
        /// New weights; groups not named keep theirs.
        weights: Vec<(String, Weight)>,
        /// Accept weights that leave a service with no group taking new connections.
        force: bool,
    },
    /// Weight 0 for a group.
    Drain {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
        /// Drain even the last group taking new flows.
        force: bool,
        /// End what is left after a deadline, at a pace (`drains`); none: flows end by
        /// themselves.
        end: Option<crate::model::drain::DrainEnd>,
    },
    /// Send a client prefix to a group whatever the weights.
    Pin {
        /// Name of the service.
        service: String,
        /// Prefix (`203.0.113.0/24`).
        prefix: String,
        /// Name of the group, in its service.
        group: String,
    },
    /// Remove a pin.
    Unpin {
        /// Name of the service.
        service: String,
        /// The prefix as given (`203.0.113.0/24`).
        prefix: String,
    },
    /// Re-apply an earlier revision (whole, or one service of it).
    Rollback {
        /// Only this service.
        service: Option<String>,
        /// The revision (default: the one before the live one).
        to: Option<u64>,
    },
    /// Start a rollout.
    RolloutStart {
        /// Name of the service.
        service: String,
        /// The plan.
        plan: Plan,
    },
    /// Hold a running rollout.
    RolloutPause {
        /// Name of the service.
        service: String,
    },
    /// Continue a paused rollout.
    RolloutResume {
        /// Name of the service.
        service: String,
    },
    /// Stop a rollout and restore the weights from before it.
    RolloutAbort {
        /// Name of the service.
        service: String,
    },
    /// End the current step's pause now (its new flows and gates still count), or with `full`
    /// go straight to the last step (100%), whose gates are still checked before it completes.
    /// A paused rollout is resumed.
    RolloutPromote {
        /// Name of the service.
        service: String,
        /// Straight to the last step.
        full: bool,
    },
    /// Start the service's rolled-back (or aborted) rollout again, with its plan.
    RolloutRetry {
        /// Name of the service.
        service: String,
    },
    /// Do this node's part of a fleet rollout, as the fleet's progress says (the etcd source):
    /// start, hold, resume or restore the node's own rollout of the service, which runs the
    /// per-node plan (steps, pauses, gates) like `RolloutStart`.
    FleetRollout {
        /// Name of the service.
        service: String,
        /// The fleet rollout (`FleetRollout::id`).
        id: String,
        /// What each node of a wave runs.
        plan: Plan,
        /// What the node does now (`fleet::directive`).
        directive: Directive,
    },
}

impl Request {
    /// Who a request stands for when no one asked for it through the control socket: the config
    /// file for its own applies, the fleet for what the etcd source asks, else unknown (the API
    /// records the socket's peer instead).
    pub fn implied_author(&self) -> Author {
        match self {
            Request::Apply {
                origin: Origin::Config { .. },
                ..
            } => Author::ConfigFile,
            // The fleet's config document, and this node's part of a fleet rollout.
            Request::Apply {
                origin: Origin::Etcd { .. },
                ..
            }
            | Request::FleetRollout { .. } => Author::Fleet,
            _ => Author::Unknown,
        }
    }
}

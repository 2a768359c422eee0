//! What a producer of desired state asks for: an operator (the CLI through the API), the config
//! file (at start and on reload), or the rollout engine. A new source (a fleet's config center)
//! is one more producer of `Request::Apply`: it goes through the same core and the same commit
//! path as the file, never a second path to the maps.

use crate::{
    model::{DesiredState, NodeConfig, Plan, Weight},
    state::Origin,
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
}

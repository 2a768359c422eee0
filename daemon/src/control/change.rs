//! A change and what it is made on: the live revision (`Head`), a proposed revision (`Change`)
//! and `finish`, the one gate every change passes: it is dropped when it changes nothing, and
//! refused when it breaks a rule of the model or, from anyone but the rollout engine, moves
//! weights a rollout in progress owns.

use super::error::ControlError;
use crate::{
    model::{DesiredState, Service, drain::PacedDrain},
    rollout::Rollout,
    state::{Audit, Origin, Revision, Unusable},
};

/// The live revision, as the core reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// Its number (0 before the first revision).
    pub number: u64,
    /// The desired state in force.
    pub state: DesiredState,
    /// Rollouts and their progress (finished ones stay for `rollout status`).
    pub rollouts: Vec<Rollout>,
    /// The mark of what the config file held when it was last applied.
    pub config: Option<String>,
    /// Paced drains in force.
    pub drains: Vec<PacedDrain>,
    /// The newest revision file, when it cannot be used: the state the maps hold is not known,
    /// so this head (the newest usable revision) is not in force. Only an operator's whole
    /// rollback to a named revision or `veer apply` may change anything then.
    pub held: Option<Unusable>,
}

impl Head {
    /// The head of a store whose newest revision is `latest`.
    pub fn of(latest: Option<&Revision>) -> Self {
        latest.map_or_else(Self::default, |r| Self {
            number: r.number,
            state: r.state.clone(),
            rollouts: r.rollouts.clone(),
            config: r.config_digest.clone(),
            drains: r.drains.clone(),
            held: None,
        })
    }

    /// The head once `change` is committed on top of this one.
    #[must_use]
    pub fn after(&self, change: &Change) -> Self {
        Self {
            number: self.number + 1,
            state: change.state.clone(),
            rollouts: change.rollouts.clone(),
            config: change.config.clone(),
            drains: change.drains.clone(),
            held: None,
        }
    }

    /// The rollout of `service` that is not over (running or paused).
    pub fn active_rollout(&self, service: &str) -> Option<&Rollout> {
        self.rollouts
            .iter()
            .find(|r| r.service == service && !r.phase.is_final())
    }

    /// The latest rollout of `service`, over or not.
    pub fn latest_rollout(&self, service: &str) -> Option<&Rollout> {
        self.rollouts.iter().rev().find(|r| r.service == service)
    }

    /// The service named `name`, or `UnknownService`.
    pub fn service(&self, name: &str) -> Result<&Service, ControlError> {
        self.state
            .service(name)
            .ok_or_else(|| ControlError::UnknownService {
                service: name.to_owned(),
            })
    }

    /// A change of the state by an operator or a source: rollouts and the file mark carried.
    pub(super) fn change(&self, state: DesiredState, origin: Origin, summary: String) -> Change {
        Change {
            state,
            rollouts: self.rollouts.clone(),
            origin,
            summary,
            config: self.config.clone(),
            drains: self.drains.clone(),
            audit: Audit::default(),
        }
    }
}

/// One revision to commit: the whole desired state and rollouts it puts in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The new desired state.
    pub state: DesiredState,
    /// The rollouts and their progress.
    pub rollouts: Vec<Rollout>,
    /// Where the change comes from.
    pub origin: Origin,
    /// One line saying what changed.
    pub summary: String,
    /// The config file's mark, carried from the head unless this change applies the file.
    pub config: Option<String>,
    /// Paced drains in force, carried from the head; `finish` drops those whose group takes
    /// new flows again (or is gone).
    pub drains: Vec<PacedDrain>,
    /// Who made it and why: the producer of the request it answers (the controller sets it;
    /// the core leaves it empty).
    pub audit: Audit,
}

impl Change {
    /// Records paced drain `d`, replacing one its group had (draining again sets a new deadline
    /// and pace).
    pub fn record_drain(&mut self, d: PacedDrain) {
        self.drains
            .retain(|o| !(o.service == d.service && o.group == d.group));
        self.drains.push(d);
    }

    /// The revision `number` this change makes, committed at `time` with the numeric ids
    /// `ids` (what a node that keeps its revisions in memory records).
    pub fn revision(
        &self,
        number: u64,
        time: std::time::SystemTime,
        ids: crate::model::Ids,
    ) -> Revision {
        Revision {
            number,
            time,
            origin: self.origin.clone(),
            summary: self.summary.clone(),
            services: self.state.services.iter().map(|s| s.name.clone()).collect(),
            state: self.state.clone(),
            ids,
            config_digest: self.config.clone(),
            rollouts: self.rollouts.clone(),
            drains: self.drains.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// What a request comes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Revisions to commit, in order, each on top of the one before (none: already in force).
    pub changes: Vec<Change>,
    /// Why nothing changed, when it deserves a word (an abort with no rollout running).
    pub note: Option<String>,
}

impl From<Option<Change>> for Outcome {
    fn from(change: Option<Change>) -> Self {
        Self {
            changes: change.into_iter().collect(),
            note: None,
        }
    }
}

/// Turns a proposed change into the one to commit: `None` when it changes nothing; refused when
/// an operator (not the rollout engine) would change weights a rollout in progress owns, or when
/// the state breaks a rule of the model. A held head is not in force: the operator's change is
/// always committed, whatever the head's rollouts say.
pub(super) fn finish(head: &Head, mut change: Change) -> Result<Option<Change>, ControlError> {
    // A drain ends with its group's weight 0: shifted back, or the group gone, it is called off.
    change.drains.retain(|d| {
        change
            .state
            .service(&d.service)
            .and_then(|s| s.group(&d.group))
            .is_some_and(|g| g.weight.is_zero())
    });
    if head.held.is_none()
        && change.state == head.state
        && change.rollouts == head.rollouts
        && change.config == head.config
        && change.drains == head.drains
    {
        return Ok(None);
    }
    if change.origin != Origin::Rollout && head.held.is_none() {
        refuse_weight_changes(&head.rollouts, &head.state, &change.state)?;
    }
    change.state.validate()?;
    Ok(Some(change))
}

/// Refuses operator changes to the group weights of services with a rollout in progress: its
/// next step would overwrite them.
fn refuse_weight_changes(
    rollouts: &[Rollout],
    current: &DesiredState,
    desired: &DesiredState,
) -> Result<(), ControlError> {
    for r in rollouts.iter().filter(|r| !r.phase.is_final()) {
        let weights = |s: &DesiredState| {
            s.service(&r.service).map(|s| {
                s.groups
                    .iter()
                    .map(|g| (g.name.clone(), g.weight))
                    .collect::<Vec<_>>()
            })
        };
        if weights(current) != weights(desired) {
            return Err(ControlError::in_the_way(r));
        }
    }
    Ok(())
}

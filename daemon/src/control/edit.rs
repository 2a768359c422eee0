//! `veer apply|shift|drain|pin|unpin|rollback --fleet`: the request a node would get, decided by
//! the same core on a fleet's config document instead of a node's live revision, so the rules
//! (unknown services and groups, the last serving group, pins, the model's rules) live in one
//! place. Pure: the CLI reads the document, calls [`edit`] inside a compare-and-swap loop, and
//! writes the result back.
//!
//! One rule is the fleet's own: while a fleet rollout of a service runs or is paused, it owns
//! the service's weights (its driver writes the final ones into the config when it completes),
//! so an edit that moves them is refused, as a node refuses one during its own rollout.

use std::time::SystemTime;

use super::{
    change::Head,
    core::{self, Live},
    error::ControlError,
    observed::Observations,
    request::Request,
};
use crate::{
    model::{DesiredState, Ids, Weight},
    state::{Origin, Revision},
};

/// One version of a fleet's config document, for `rollback --fleet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocVersion {
    /// Its etcd mod revision (what `veer fleet history` lists and `--to` names).
    pub mod_revision: i64,
    /// The services it held.
    pub state: DesiredState,
}

/// A fleet rollout that is not over, owning its service's weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The service.
    pub service: String,
    /// The rollout's target group.
    pub to: String,
    /// The fleet rollout's id.
    pub id: String,
}

/// What an edit comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edited {
    /// The document's new services.
    pub state: DesiredState,
    /// One line saying what changed (as the node's history would say it).
    pub summary: String,
}

/// Why an edit of a fleet's config is refused.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The core refused the request (the same refusal a node would give).
    #[error(transparent)]
    Refused(#[from] ControlError),
    /// A fleet rollout owns the weights the edit would move.
    #[error(
        "service `{service}` has a fleet rollout to `{to}` in progress ({id}); wait for it to finish, or abort it first (veer fleet rollout abort {service})"
    )]
    FleetRollout {
        /// The service.
        service: String,
        /// The rollout's target group.
        to: String,
        /// The fleet rollout.
        id: String,
    },
}

/// What `request` does to a fleet's config document holding `current` (`history`: its versions,
/// oldest first, the current one last; `rollback` needs them, and its `to` must be given).
/// `None`: the document already says so.
pub fn edit(
    request: &Request,
    current: &DesiredState,
    history: &[DocVersion],
    owners: &[Owner],
    now: SystemTime,
) -> Result<Option<Edited>, EditError> {
    let revisions: Vec<Revision> = history
        .iter()
        .map(|v| Revision {
            number: u64::try_from(v.mod_revision).unwrap_or(0),
            time: SystemTime::UNIX_EPOCH,
            origin: Origin::Etcd {
                key: String::new(),
                mod_revision: v.mod_revision,
            },
            summary: String::new(),
            services: v.state.services.iter().map(|s| s.name.clone()).collect(),
            state: v.state.clone(),
            ids: Ids::default(),
            config_digest: None,
            rollouts: Vec::new(),
            drains: Vec::new(),
            audit: crate::state::Audit::by(crate::state::Author::Fleet),
        })
        .collect();
    let head = Head {
        number: revisions.last().map_or(0, |r| r.number),
        state: current.clone(),
        rollouts: Vec::new(),
        config: None,
        drains: Vec::new(),
        // A fleet's config document has no revision files to find damaged.
        held: None,
    };
    let outcome = core::decide(
        request,
        &Live {
            head: &head,
            history: &revisions,
            observed: &Observations::default(),
            now,
        },
    )?;
    // A declared `[service.rollout]` starts on each node that applies the document; its first
    // step is not the document's.
    let Some(change) = outcome
        .changes
        .into_iter()
        .rfind(|c| c.origin != Origin::Rollout)
    else {
        return Ok(None);
    };
    for o in owners {
        if weights(current, &o.service) != weights(&change.state, &o.service) {
            return Err(EditError::FleetRollout {
                service: o.service.clone(),
                to: o.to.clone(),
                id: o.id.clone(),
            });
        }
    }
    Ok(Some(Edited {
        state: change.state,
        summary: change.summary,
    }))
}

/// A config document rewritten when a fleet rollout completes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// Its key.
    pub key: String,
    /// The mod revision it was read at (the write is a compare-and-swap on it).
    pub mod_revision: i64,
    /// The new text.
    pub text: String,
}

/// Why a fleet rollout cannot complete yet.
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    /// The fleet's config does not parse (it was changed to a broken one meanwhile).
    #[error("the fleet's config does not parse; the rollout completes once it does")]
    Config(#[from] crate::config::ConfigErrors),
    /// The fleet's config is not UTF-8.
    #[error(transparent)]
    Text(#[from] crate::fleet::DocumentError),
    /// The fleet's config has no such service or group any more.
    #[error("the fleet's config has no service `{service}` with a group `{to}` any more")]
    Gone {
        /// The service.
        service: String,
        /// The target group.
        to: String,
    },
}

/// The documents a fleet rollout of `service` to `to` rewrites when it completes: the fleet's
/// config and every node's own config that has the service, with `to` at 100% and the other
/// groups at 0, which is where the rollout left every node that took part; nodes that did not
/// follow the documents there. A document already so is left out, and so is a node's own one
/// that does not parse (that node refuses it anyway).
pub fn completed(
    service: &str,
    to: &str,
    fleet_config: &crate::fleet::Document,
    node_configs: &[crate::fleet::Document],
) -> Result<Vec<Rewrite>, CompleteError> {
    let rewrite = |doc: &crate::fleet::Document| -> Result<Option<Rewrite>, CompleteError> {
        let mut state = crate::config::parse_fleet(&doc.key, doc.text()?)?;
        let Some(s) = state.services.iter_mut().find(|s| s.name == service) else {
            return Ok(None);
        };
        if s.group(to).is_none() {
            return Ok(None);
        }
        let before = s.clone();
        for g in &mut s.groups {
            g.weight = if g.name == to {
                Weight::FULL
            } else {
                Weight::ZERO
            };
        }
        if *s == before {
            return Ok(None);
        }
        Ok(Some(Rewrite {
            key: doc.key.clone(),
            mod_revision: doc.mod_revision,
            text: crate::config::services_to_toml(&state),
        }))
    };
    let fleet = crate::config::parse_fleet(&fleet_config.key, fleet_config.text()?)?;
    if fleet.service(service).and_then(|s| s.group(to)).is_none() {
        return Err(CompleteError::Gone {
            service: service.to_owned(),
            to: to.to_owned(),
        });
    }
    let mut out: Vec<Rewrite> = rewrite(fleet_config)?.into_iter().collect();
    for doc in node_configs {
        if let Ok(Some(r)) = rewrite(doc) {
            out.push(r);
        }
    }
    Ok(out)
}

fn weights(state: &DesiredState, service: &str) -> Option<Vec<(String, Weight)>> {
    state.service(service).map(|s| {
        s.groups
            .iter()
            .map(|g| (g.name.clone(), g.weight))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeConfig, fixtures};

    fn w(s: &str) -> Weight {
        Weight::from_percent_str(s).unwrap()
    }

    fn shift(v2: &str) -> Request {
        Request::Shift {
            services: vec!["web".into()],
            weights: vec![("v2".into(), w(v2))],
            force: false,
        }
    }

    #[test]
    fn a_fleet_edit_is_the_core_decision_on_the_document() {
        let doc = fixtures::web();
        let e = edit(&shift("30"), &doc, &[], &[], SystemTime::UNIX_EPOCH)
            .unwrap()
            .unwrap();
        let v2 = e.state.service("web").unwrap().group("v2").unwrap().weight;
        assert_eq!(v2, w("30"));
        assert!(e.summary.starts_with("shift web:"), "{}", e.summary);
        // Already so: nothing to write.
        assert_eq!(
            edit(&shift("30"), &e.state, &[], &[], SystemTime::UNIX_EPOCH).unwrap(),
            None
        );
    }

    #[test]
    fn the_core_refusals_apply_to_the_fleet() {
        let doc = fixtures::web();
        let unknown = Request::Shift {
            services: vec!["nope".into()],
            weights: vec![("v2".into(), w("1"))],
            force: false,
        };
        assert!(matches!(
            edit(&unknown, &doc, &[], &[], SystemTime::UNIX_EPOCH),
            Err(EditError::Refused(ControlError::UnknownService { .. }))
        ));
    }

    #[test]
    fn a_fleet_rollout_owns_its_weights_but_not_the_rest() {
        let doc = fixtures::web();
        let owners = [Owner {
            service: "web".into(),
            to: "v2".into(),
            id: "web-1".into(),
        }];
        assert!(matches!(
            edit(&shift("30"), &doc, &[], &owners, SystemTime::UNIX_EPOCH),
            Err(EditError::FleetRollout { .. })
        ));
        let pin = Request::Pin {
            service: "web".into(),
            prefix: "203.0.113.0/24".into(),
            group: "v1".into(),
        };
        assert!(
            edit(&pin, &doc, &[], &owners, SystemTime::UNIX_EPOCH)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn rollback_takes_a_version_by_its_mod_revision() {
        let old = fixtures::web();
        let mut new = old.clone();
        new.services[0].groups[1].weight = w("50");
        let history = [
            DocVersion {
                mod_revision: 7,
                state: old.clone(),
            },
            DocVersion {
                mod_revision: 9,
                state: new.clone(),
            },
        ];
        let back = Request::Rollback {
            service: Some("web".into()),
            to: Some(7),
        };
        let e = edit(&back, &new, &history, &[], SystemTime::UNIX_EPOCH)
            .unwrap()
            .unwrap();
        assert_eq!(e.state, old);
        let gone = Request::Rollback {
            service: None,
            to: Some(8),
        };
        assert!(matches!(
            edit(&gone, &new, &history, &[], SystemTime::UNIX_EPOCH),
            Err(EditError::Refused(ControlError::UnknownRevision {
                number: 8
            }))
        ));
    }

    #[test]
    fn a_completion_moves_every_document_with_the_service_to_the_target() {
        let doc = |key: &str, state: &DesiredState, rev| crate::fleet::Document {
            key: key.into(),
            value: crate::config::services_to_toml(state).into_bytes(),
            mod_revision: rev,
        };
        let fleet = doc("/veer/config", &fixtures::web(), 10);
        let mut own = fixtures::dual_stack();
        own.services[0].groups[0].weight = w("70");
        own.services[0].groups[1].weight = w("30");
        let nodes = [
            doc("/veer/nodes/a/config", &own, 11),
            doc("/veer/nodes/b/config", &DesiredState::default(), 12),
            crate::fleet::Document {
                key: "/veer/nodes/c/config".into(),
                value: b"[broken".to_vec(),
                mod_revision: 13,
            },
        ];
        let out = completed("web", "v2", &fleet, &nodes).unwrap();
        let keys: Vec<(&str, i64)> = out
            .iter()
            .map(|r| (r.key.as_str(), r.mod_revision))
            .collect();
        assert_eq!(keys, [("/veer/config", 10), ("/veer/nodes/a/config", 11)]);
        for r in &out {
            let s = crate::config::parse_fleet(&r.key, &r.text).unwrap();
            let web = s.service("web").unwrap();
            assert_eq!(web.group("v1").unwrap().weight, Weight::ZERO);
            assert_eq!(web.group("v2").unwrap().weight, Weight::FULL);
        }
        // web6 in a's own config is left as it was.
        let a = crate::config::parse_fleet(&out[1].key, &out[1].text).unwrap();
        assert_eq!(a.service("web6"), own.service("web6"));
        // Done once, nothing more to write.
        let fleet = doc(
            "/veer/config",
            &crate::config::parse_fleet("/veer/config", &out[0].text).unwrap(),
            14,
        );
        assert!(completed("web", "v2", &fleet, &[]).unwrap().is_empty());
        assert!(matches!(
            completed("web", "v3", &fleet, &[]),
            Err(CompleteError::Gone { .. })
        ));
    }

    #[test]
    fn apply_replaces_the_document_and_says_what_changed() {
        let doc = fixtures::web();
        let mut next = doc.clone();
        next.services[0].groups[0].weight = w("40");
        next.services[0].groups[1].weight = w("60");
        let apply = Request::Apply {
            node: NodeConfig::default(),
            state: next.clone(),
            origin: Origin::Apply {
                path: "fleet.toml".into(),
            },
            mark: None,
        };
        let e = edit(&apply, &doc, &[], &[], SystemTime::UNIX_EPOCH)
            .unwrap()
            .unwrap();
        assert_eq!(e.state, next);
        assert!(e.summary.contains("~web"), "{}", e.summary);
    }
}

//! The pure core of the control layer: a request and the live revision give the revisions to
//! commit, with no I/O. Every producer of desired state (the config file, `veer apply`, an
//! operator's shift, drain, pin or rollback, the rollout engine) goes through `decide`, so every
//! change is checked by the same rules (`DesiredState::validate`, the weights rollouts own) and
//! reaches the maps by the same path (`Controller`, which only carries changes out).

use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use super::{
    change::{Change, Head, Outcome, finish},
    error::ControlError,
    observed::Observations,
    request::Request,
    rollouts,
};
use crate::{
    model::{
        DesiredState, Pin, PlanError, Service, Weight,
        drain::{DrainEnd, PacedDrain},
        parse_prefix,
    },
    state::{Origin, Revision},
};

/// Everything `decide` reads.
#[derive(Clone, Copy, Debug)]
pub struct Live<'a> {
    /// The live revision.
    pub head: &'a Head,
    /// Every revision kept, oldest first (rollbacks read them).
    pub history: &'a [Revision],
    /// Counters and health of the groups rollouts watch.
    pub observed: &'a Observations,
    /// The time of the request.
    pub now: SystemTime,
}

/// Decides what `request` does to the live revision.
pub fn decide(request: &Request, live: &Live<'_>) -> Result<Outcome, ControlError> {
    let head = live.head;
    if let Some(held) = &head.held {
        // The maps hold a state no usable revision records: only an operator's choice of a whole
        // state may replace it, never a source, a verb on part of it, or an older revision by
        // default.
        let chosen = match request {
            Request::Rollback {
                service: None,
                to: Some(_),
            } => true,
            Request::Apply { origin, .. } => matches!(origin, Origin::Apply { .. }),
            _ => false,
        };
        if !chosen {
            return Err(ControlError::held(held, live.history.last()));
        }
    }
    Ok(match request {
        Request::Apply {
            state,
            origin,
            mark,
            ..
        } => apply(live, state, origin, mark.as_ref())?,
        Request::Shift {
            services,
            weights,
            force,
        } => dropping(&head.state, shift(head, services, weights, *force)?),
        Request::Drain {
            service,
            group,
            force,
            end,
        } => dropping(
            &head.state,
            drain(head, service, group, *force, end.as_ref(), live.now)?,
        ),
        Request::Pin {
            service,
            prefix,
            group,
        } => pin(head, service, prefix, group)?.into(),
        Request::Unpin { service, prefix } => unpin(head, service, prefix)?.into(),
        Request::Rollback { service, to } => {
            rollback(head, live.history, service.as_deref(), *to)?.into()
        }
        Request::RolloutStart { service, plan } => {
            rollouts::start(head, service, plan, live.observed, live.now)?.into()
        }
        Request::RolloutPause { service } => rollouts::pause(head, service)?.into(),
        Request::RolloutResume { service } => {
            rollouts::resume(head, service, live.observed, live.now)?.into()
        }
        Request::RolloutAbort { service } => {
            rollouts::abort(head, service, live.observed, live.now)?
        }
        Request::RolloutPromote { service, full } => {
            rollouts::promote(head, service, *full, live.observed, live.now)?
        }
        Request::RolloutRetry { service } => {
            rollouts::retry(head, service, live.observed, live.now)?
        }
        Request::FleetRollout {
            service,
            id,
            plan,
            directive,
        } => rollouts::fleet(
            head,
            &rollouts::FleetPart {
                service,
                id,
                plan,
                directive,
            },
            live.observed,
            live.now,
        )?
        .into(),
    })
}

/// A source's desired state (the config file, `veer apply`, a fleet's config in etcd). A service
/// whose latest rollout is the one the source declares keeps the weights that rollout set (in
/// progress, completed or rolled back), and so does a service in the middle of its part of a
/// fleet rollout (the fleet's driver writes the final weights into the fleet's config): the
/// rollout owns them. Declared rollouts not seen yet start right after.
fn apply(
    live: &Live<'_>,
    desired: &DesiredState,
    origin: &Origin,
    mark: Option<&String>,
) -> Result<Outcome, ControlError> {
    let head = live.head;
    if head.held.is_none() && mark.is_some() && mark == head.config.as_ref() {
        return Ok(Outcome::default());
    }
    let mut state = desired.clone();
    for r in &head.rollouts {
        let Some(s) = state.services.iter_mut().find(|s| s.name == r.service) else {
            continue;
        };
        let owns =
            s.rollout.as_ref() == Some(&r.plan) || (r.fleet.is_some() && !r.phase.is_final());
        if owns && let Some(live_service) = head.state.service(&r.service) {
            for g in &mut s.groups {
                if let Some(l) = live_service.group(&g.name) {
                    g.weight = l.weight;
                }
            }
        }
    }
    let mut change = head.change(
        state,
        origin.clone(),
        held_note(head, summarize(&head.state, desired)),
    );
    if mark.is_some() {
        change.config = mark.cloned();
    }
    let mut outcome = Outcome::from(finish(head, change)?);
    let mut next = outcome
        .changes
        .last()
        .map_or_else(|| head.clone(), |c| head.after(c));
    for s in &desired.services {
        let Some(plan) = &s.rollout else { continue };
        let seen = next
            .rollouts
            .iter()
            .any(|r| r.service == s.name && (&r.plan == plan || !r.phase.is_final()));
        if seen {
            continue;
        }
        match rollouts::start(&next, &s.name, plan, live.observed, live.now) {
            Ok(Some(change)) => {
                next = next.after(&change);
                outcome.changes.push(change);
            }
            Ok(None) | Err(ControlError::RolloutPlan(PlanError::AlreadyThere { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(outcome)
}

fn service_mut<'a>(
    state: &'a mut DesiredState,
    service: &str,
) -> Result<&'a mut Service, ControlError> {
    state
        .services
        .iter_mut()
        .find(|s| s.name == service)
        .ok_or_else(|| ControlError::UnknownService {
            service: service.to_owned(),
        })
}

fn group_names(s: &Service) -> String {
    s.groups
        .iter()
        .map(|g| format!("{}={}", g.name, g.weight))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a service sends new connections anywhere: a group with weight and a backend.
fn takes_new_flows(s: &Service) -> bool {
    s.groups
        .iter()
        .any(|g| !g.weight.is_zero() && !g.backends.is_empty())
}

/// The services `next` leaves with no group taking new connections that took them in `before`.
fn newly_dropping<'a>(before: &DesiredState, next: &'a DesiredState) -> Vec<&'a str> {
    next.services
        .iter()
        .filter(|s| !takes_new_flows(s) && before.service(&s.name).is_some_and(takes_new_flows))
        .map(|s| s.name.as_str())
        .collect()
}

/// A weight change as an outcome, saying so when it leaves services dropping new connections.
fn dropping(before: &DesiredState, change: Option<Change>) -> Outcome {
    let note = change.as_ref().and_then(|c| {
        let services = newly_dropping(before, &c.state);
        (!services.is_empty()).then(|| {
            format!(
                "no group of {} takes new connections now: they are dropped until a group gets weight",
                services
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    });
    Outcome {
        changes: change.into_iter().collect(),
        note,
    }
}

/// Sets the weights of some groups of one or more services (a dual-stack pair, say) in one
/// revision; groups not named keep theirs. Every named group must exist in every service.
/// Refused when it leaves a service that took new connections with no group taking them (every
/// group at weight 0), unless forced: like draining the last group.
fn shift(
    head: &Head,
    services: &[String],
    weights: &[(String, Weight)],
    force: bool,
) -> Result<Option<Change>, ControlError> {
    if services.is_empty() {
        return Err(ControlError::BadRequest {
            what: "shift".to_owned(),
            reason: "no service named".to_owned(),
        });
    }
    let mut state = head.state.clone();
    let mut summary = Vec::new();
    for service in services {
        let s = service_mut(&mut state, service)?;
        for (group, weight) in weights {
            let g = s
                .groups
                .iter_mut()
                .find(|g| &g.name == group)
                .ok_or_else(|| ControlError::UnknownGroup {
                    service: service.clone(),
                    group: group.clone(),
                })?;
            g.weight = *weight;
        }
        summary.push(format!("{service}: {}", group_names(s)));
    }
    if !force && let Some(service) = newly_dropping(&head.state, &state).first() {
        return Err(ControlError::ShiftToNothing {
            service: (*service).to_owned(),
        });
    }
    let summary = format!("shift {}", summary.join("; "));
    finish(head, head.change(state, Origin::Shift, summary))
}

/// Sets a group's weight to 0 (its flows stay; `drain --wait` watches them end). Refused when
/// no other group would take new flows, unless forced. With `end`, the revision records the
/// paced drain (its deadline as a moment, from `now`), replacing one the group had, so a
/// restarted daemon continues it.
fn drain(
    head: &Head,
    service: &str,
    group: &str,
    force: bool,
    end: Option<&DrainEnd>,
    now: SystemTime,
) -> Result<Option<Change>, ControlError> {
    let mut state = head.state.clone();
    let s = service_mut(&mut state, service)?;
    let Some(this) = s.group(group) else {
        return Err(ControlError::UnknownGroup {
            service: service.to_owned(),
            group: group.to_owned(),
        });
    };
    let others_take_flows = s
        .groups
        .iter()
        .any(|g| g.name != group && !g.weight.is_zero() && !g.backends.is_empty());
    if !this.weight.is_zero() && !others_take_flows && !force {
        return Err(ControlError::DrainLastGroup {
            service: service.to_owned(),
            group: group.to_owned(),
        });
    }
    for g in s.groups.iter_mut().filter(|g| g.name == group) {
        g.weight = Weight::ZERO;
    }
    let mut summary = format!("drain {service}/{group}");
    let mut change = head.change(state, Origin::Drain, String::new());
    if let Some(end) = end {
        end.validate()?;
        let paced = PacedDrain::starting(service, group, *end, now).ok_or_else(|| {
            PlanError::DrainDeadlineTooLong {
                deadline: humantime::format_duration(end.deadline).to_string(),
                max: humantime::format_duration(DrainEnd::MAX_DEADLINE).to_string(),
            }
        })?;
        change.record_drain(paced);
        summary = format!(
            "{summary}, flows left ended after {} at {}",
            humantime::format_duration(end.deadline),
            end.pace
        );
    }
    change.summary = summary;
    finish(head, change)
}

fn prefix_of(prefix: &str) -> Result<(std::net::IpAddr, u8), ControlError> {
    parse_prefix(prefix).ok_or_else(|| ControlError::BadRequest {
        what: format!("prefix `{prefix}`"),
        reason: "not a network prefix with its host bits zero (e.g. 203.0.113.0/24)".to_owned(),
    })
}

/// Pins a client prefix of a service to a group (replacing an existing pin of the prefix).
fn pin(
    head: &Head,
    service: &str,
    prefix: &str,
    group: &str,
) -> Result<Option<Change>, ControlError> {
    let (addr, len) = prefix_of(prefix)?;
    let mut state = head.state.clone();
    let s = service_mut(&mut state, service)?;
    if s.group(group).is_none() {
        return Err(ControlError::UnknownGroup {
            service: service.to_owned(),
            group: group.to_owned(),
        });
    }
    if addr.is_ipv4() != s.vip.is_ipv4() {
        return Err(ControlError::BadRequest {
            what: format!("prefix {prefix}"),
            reason: format!("not of the VIP's address family ({})", s.vip),
        });
    }
    s.pins.retain(|p| (p.prefix, p.len) != (addr, len));
    s.pins.push(Pin {
        prefix: addr,
        len,
        group: group.to_owned(),
    });
    let summary = format!("pin {service} {addr}/{len} -> {group}");
    finish(head, head.change(state, Origin::Pin, summary))
}

/// Removes a pin.
fn unpin(head: &Head, service: &str, prefix: &str) -> Result<Option<Change>, ControlError> {
    let (addr, len) = prefix_of(prefix)?;
    let mut state = head.state.clone();
    let s = service_mut(&mut state, service)?;
    let before = s.pins.len();
    s.pins.retain(|p| (p.prefix, p.len) != (addr, len));
    if s.pins.len() == before {
        return Err(ControlError::UnknownPin {
            service: service.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    let summary = format!("unpin {service} {addr}/{len}");
    finish(head, head.change(state, Origin::Unpin, summary))
}

/// Re-applies revision `to` (default: the one before the live one) as a new revision; with a
/// service, only that service is taken from `to`.
fn rollback(
    head: &Head,
    history: &[Revision],
    service: Option<&str>,
    to: Option<u64>,
) -> Result<Option<Change>, ControlError> {
    let current = head.number;
    let to = match to {
        Some(n) => n,
        None => current
            .checked_sub(1)
            .filter(|n| *n > 0)
            .ok_or(ControlError::NothingToRollBack { current })?,
    };
    let target = &history
        .iter()
        .find(|r| r.number == to)
        .ok_or(ControlError::UnknownRevision { number: to })?
        .state;
    let (state, summary) = match service {
        None => (target.clone(), format!("rollback to revision {to}")),
        Some(name) => {
            let old = target.service(name).cloned().ok_or_else(|| {
                ControlError::ServiceNotAtRevision {
                    service: name.to_owned(),
                    number: to,
                }
            })?;
            let mut state = head.state.clone();
            match state.services.iter_mut().find(|s| s.name == name) {
                Some(s) => *s = old,
                None => state.services.push(old),
            }
            (state, format!("rollback {name} to revision {to}"))
        }
    };
    finish(
        head,
        head.change(state, Origin::Rollback { to }, held_note(head, summary)),
    )
}

/// A summary, saying which revision file could not be used when the head is held.
fn held_note(head: &Head, summary: String) -> String {
    match &head.held {
        Some(h) => format!("{summary} (revision {} could not be used)", h.number),
        None => summary,
    }
}

/// One line saying what differs between two states.
pub fn summarize(old: &DesiredState, new: &DesiredState) -> String {
    let mut parts = Vec::new();
    for s in &new.services {
        match old.service(&s.name) {
            None => parts.push(format!("+{}", s.name)),
            Some(o) if o != s => parts.push(format!("~{} ({})", s.name, group_names(s))),
            Some(_) => {}
        }
    }
    for s in &old.services {
        if new.service(&s.name).is_none() {
            parts.push(format!("-{}", s.name));
        }
    }
    if parts.is_empty() {
        "no change".to_owned()
    } else {
        parts.join(", ")
    }
}

/// What a desired state means, as a digest: equal for two states that steer alike, whatever
/// the text they were written in (comments, layout, key order) and the order of their services.
pub fn meaning(state: &DesiredState) -> String {
    let mut services: Vec<&crate::model::Service> = state.services.iter().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    // Infallible: the model's types serialize to JSON (plain data, string map keys).
    let json = serde_json::to_vec(&services).unwrap_or_default();
    digest(&json)
}

/// SHA-256 of `bytes`, hex.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

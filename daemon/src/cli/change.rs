//! What every command that changes the desired state shares: `--reason` (recorded with the
//! revision) and `--dry-run` (the change shown as a diff of the desired state, nothing applied),
//! and sending it to the daemon.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Global, block_on, exit::Failure, output};
use crate::api::protocol::{ApplyResponse, ChangeOptions, DiffEntry, DryRunResponse};

/// `--reason` and `--dry-run`.
#[derive(Debug, clap::Args)]
pub(super) struct ChangeArgs {
    /// Why: recorded with the revision (and shown by `veer history`); one line.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Show what would change, as a diff of the desired state, and change nothing (exit 0).
    #[arg(long)]
    dry_run: bool,
}

impl ChangeArgs {
    /// The options of the request.
    pub(super) fn options(&self) -> ChangeOptions {
        ChangeOptions {
            reason: self.reason.clone(),
            dry_run: self.dry_run,
        }
    }
}

/// `--reason` alone (rollout actions).
#[derive(Debug, clap::Args)]
pub(super) struct ReasonArg {
    /// Why: recorded with the revision (and shown by `veer history`); one line.
    #[arg(long, value_name = "TEXT")]
    pub(super) reason: Option<String>,
}

/// Sends a change (`body` carries `options`) and prints the answer: the revision, or with
/// `--dry-run` the diff.
pub(super) fn submit<B: Serialize>(
    g: &Global,
    path: &str,
    body: &B,
    dry_run: bool,
    what: &str,
) -> Result<(), Failure> {
    if dry_run {
        let r: DryRunResponse =
            block_on(g.client().post(path, body))?.map_err(|e| Failure::from(&e))?;
        return output::print(g.output, &r, || dry_run_text(&r, what));
    }
    let r: ApplyResponse = block_on(g.client().post(path, body))?.map_err(|e| Failure::from(&e))?;
    output::applied(g.output, &r, what)
}

/// A dry run for people: the diff, grouped by service, then what it would record.
pub(super) fn dry_run_text(r: &DryRunResponse, what: &str) -> String {
    let mut out = diff_text(&r.diff);
    if r.changed {
        let _ = writeln!(
            out,
            "{what}: dry run, nothing applied; revision {} stays in force",
            r.revision
        );
        for (i, summary) in r.revisions.iter().enumerate() {
            let _ = writeln!(
                out,
                "  would make revision {}: {summary}",
                r.revision + 1 + i as u64
            );
        }
        // What the change would mean beyond the diff (`--force`: new connections dropped).
        if let Some(note) = &r.note {
            let _ = writeln!(out, "  {note}");
        }
    } else {
        let why = r.note.as_deref().unwrap_or("no change");
        let _ = writeln!(
            out,
            "{what}: dry run: {why}; revision {} stays in force",
            r.revision
        );
    }
    if !r.pending_restart.is_empty() {
        let _ = writeln!(out, "{}", output::pending_restart(&r.pending_restart));
    }
    out
}

/// The differences as lines: `+` added, `-` removed, `~` changed, under their service.
pub(super) fn diff_text(diff: &[DiffEntry]) -> String {
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for d in diff {
        let service = service_of(d);
        match d {
            DiffEntry::ServiceAdded { service, endpoint } => {
                let _ = writeln!(out, "+ service {service} {endpoint}");
                current = Some(service);
                continue;
            }
            DiffEntry::ServiceRemoved { service, endpoint } => {
                let _ = writeln!(out, "- service {service} {endpoint}");
                current = Some(service);
                continue;
            }
            _ if current != Some(service) => {
                let _ = writeln!(out, "  service {service}");
                current = Some(service);
            }
            _ => {}
        }
        let line = match d {
            DiffEntry::ServiceAdded { .. } | DiffEntry::ServiceRemoved { .. } => continue,
            DiffEntry::EndpointChanged { from, to, .. } => format!("~   endpoint {from} -> {to}"),
            DiffEntry::GroupAdded { group, weight, .. } => {
                format!("+   group {group} weight {weight}%")
            }
            DiffEntry::GroupRemoved { group, weight, .. } => {
                format!("-   group {group} weight {weight}%")
            }
            DiffEntry::WeightChanged {
                group, from, to, ..
            } => format!("~   group {group} weight {from}% -> {to}%"),
            DiffEntry::BackendAdded { group, backend, .. } => {
                format!("+   group {group} backend {backend}")
            }
            DiffEntry::BackendRemoved { group, backend, .. } => {
                format!("-   group {group} backend {backend}")
            }
            DiffEntry::PinAdded { prefix, group, .. } => format!("+   pin {prefix} -> {group}"),
            DiffEntry::PinRemoved { prefix, group, .. } => format!("-   pin {prefix} -> {group}"),
            DiffEntry::PinChanged {
                prefix, from, to, ..
            } => format!("~   pin {prefix} -> {from} becomes -> {to}"),
            DiffEntry::HealthChanged { from, to, .. } => {
                changed("health check", from.as_deref(), to.as_deref())
            }
            DiffEntry::DeclaredRolloutChanged { from, to, .. } => {
                changed("declared rollout", from.as_deref(), to.as_deref())
            }
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

fn changed(what: &str, from: Option<&str>, to: Option<&str>) -> String {
    match (from, to) {
        (None, Some(to)) => format!("+   {what}: {to}"),
        (Some(from), None) => format!("-   {what}: {from}"),
        (Some(from), Some(to)) => format!("~   {what}: {from}\n    becomes: {to}"),
        (None, None) => format!("~   {what}"),
    }
}

fn service_of(d: &DiffEntry) -> &str {
    match d {
        DiffEntry::ServiceAdded { service, .. }
        | DiffEntry::ServiceRemoved { service, .. }
        | DiffEntry::EndpointChanged { service, .. }
        | DiffEntry::GroupAdded { service, .. }
        | DiffEntry::GroupRemoved { service, .. }
        | DiffEntry::WeightChanged { service, .. }
        | DiffEntry::BackendAdded { service, .. }
        | DiffEntry::BackendRemoved { service, .. }
        | DiffEntry::PinAdded { service, .. }
        | DiffEntry::PinRemoved { service, .. }
        | DiffEntry::PinChanged { service, .. }
        | DiffEntry::HealthChanged { service, .. }
        | DiffEntry::DeclaredRolloutChanged { service, .. } => service,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Weight;

    #[test]
    fn a_diff_reads_as_lines_under_their_service() {
        let w = |s: &str| Weight::from_percent_str(s).unwrap();
        let text = diff_text(&[
            DiffEntry::WeightChanged {
                service: "web".into(),
                group: "v1".into(),
                from: w("100"),
                to: w("90"),
            },
            DiffEntry::PinAdded {
                service: "web".into(),
                prefix: "203.0.113.7/32".into(),
                group: "v2".into(),
            },
            DiffEntry::ServiceAdded {
                service: "shop".into(),
                endpoint: "192.0.2.20:80/tcp".into(),
            },
            DiffEntry::GroupAdded {
                service: "shop".into(),
                group: "v1".into(),
                weight: w("100"),
            },
        ]);
        assert_eq!(
            text,
            "  service web\n~   group v1 weight 100% -> 90%\n+   pin 203.0.113.7/32 -> v2\n\
             + service shop 192.0.2.20:80/tcp\n+   group v1 weight 100%\n"
        );
    }
}

//! `veer fleet status`: one row per node, from the status documents the nodes write under their
//! leases: the config document it applied and how far behind the current one it is, whether it
//! is ready, its local revision, backend health, errors, and its part in rollouts. A node whose
//! lease expired has no status: it shows only when a rollout plan names it.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::{super::block_on, EtcdArgs};
use crate::{
    cli::{Global, exit::Failure, output},
    fleet::{
        AppliedConfig, FleetKey, FleetRollout, NodeName, NodeRollout, NodeStatus, RolloutPhase,
        StatusError,
    },
};

/// Arguments of `veer fleet status`.
#[derive(Debug, clap::Args)]
pub(in crate::cli) struct Args {
    /// Only this node.
    #[arg(long)]
    node: Option<String>,
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// Where a node's config is against the current document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Standing {
    /// It applied the current document.
    InSync,
    /// It applied an older one.
    Behind,
    /// It refused the current one (its errors say why).
    Refused,
    /// It has not synced since it started, or its document is gone.
    Unknown,
}

/// One node in `--output json`.
#[derive(Debug, Serialize)]
struct Row {
    node: String,
    /// False while it has not synced since it started; `null` when it has no status (down).
    ready: Option<bool>,
    /// The config document it applied.
    config: Option<AppliedConfig>,
    /// The current mod revision of that document.
    current_mod_revision: Option<i64>,
    /// `in_sync`, `behind`, `refused`, `unknown`.
    sync: Standing,
    /// Current mod revision minus the one applied (0: in sync).
    lag: i64,
    local_revision: Option<u64>,
    state_hash: Option<String>,
    backends: u32,
    up: u32,
    down: Vec<String>,
    errors: Vec<StatusError>,
    rollouts: Vec<RolloutRow>,
    local_changes: Vec<String>,
    last_sync: Option<String>,
    veer_version: Option<String>,
}

/// A node's part in a rollout.
#[derive(Debug, Serialize)]
struct RolloutRow {
    service: String,
    #[serde(flatten)]
    rollout: NodeRollout,
}

/// The whole answer in `--output json`.
#[derive(Debug, Serialize)]
struct Answer {
    prefix: String,
    /// The etcd revision of the read.
    revision: i64,
    /// The fleet's config document.
    config: Option<AppliedConfig>,
    /// The daemon that drives fleet rollouts, if one leads.
    driver: Option<String>,
    nodes: Vec<Row>,
    /// Status documents that do not parse.
    unreadable: Vec<String>,
}

fn row(s: &NodeStatus, current: &BTreeMap<String, i64>) -> Row {
    let current_mod = s.config.as_ref().and_then(|c| current.get(&c.key).copied());
    let refused_current = s.errors.iter().any(|e| {
        s.config
            .as_ref()
            .is_some_and(|c| e.key == c.key && Some(e.mod_revision) == current_mod)
    });
    let (sync, lag) = match (&s.config, current_mod) {
        (Some(c), Some(now)) if c.mod_revision == now => (Standing::InSync, 0),
        (Some(_), Some(now)) if refused_current => (
            Standing::Refused,
            now - s.config.as_ref().map_or(now, |c| c.mod_revision),
        ),
        (Some(c), Some(now)) => (Standing::Behind, now - c.mod_revision),
        _ if !s.errors.is_empty() && s.config.is_none() => (Standing::Refused, 0),
        _ => (Standing::Unknown, 0),
    };
    let groups = s.services.iter().flat_map(|svc| &svc.groups);
    Row {
        node: s.node.to_string(),
        ready: Some(s.ready),
        config: s.config.clone(),
        current_mod_revision: current_mod,
        sync,
        lag,
        local_revision: Some(s.local_revision),
        state_hash: Some(s.state_hash.clone()),
        backends: groups.clone().map(|g| g.backends).sum(),
        up: groups.clone().map(|g| g.up).sum(),
        down: groups
            .flat_map(|g| g.down.iter().map(ToString::to_string))
            .collect(),
        errors: s.errors.clone(),
        rollouts: s
            .services
            .iter()
            .filter_map(|svc| {
                Some(RolloutRow {
                    service: svc.name.clone(),
                    rollout: svc.rollout.clone()?,
                })
            })
            .collect(),
        local_changes: s.local_changes.clone(),
        last_sync: Some(humantime::format_rfc3339_millis(s.last_sync).to_string()),
        veer_version: Some(s.veer_version.clone()),
    }
}

/// A node a rollout plan names but that has no status (down, or its lease expired).
fn absent(node: &NodeName) -> Row {
    Row {
        node: node.to_string(),
        ready: None,
        config: None,
        current_mod_revision: None,
        sync: Standing::Unknown,
        lag: 0,
        local_revision: None,
        state_hash: None,
        backends: 0,
        up: 0,
        down: Vec::new(),
        errors: Vec::new(),
        rollouts: Vec::new(),
        local_changes: Vec::new(),
        last_sync: None,
        veer_version: None,
    }
}

/// `web->v2 1/5 running`.
pub(super) fn part(service: &str, r: &NodeRollout) -> String {
    let phase = match r.phase {
        RolloutPhase::Running => "running",
        RolloutPhase::Paused => "paused",
        RolloutPhase::Completed => "completed",
        RolloutPhase::RolledBack => "rolled back",
        RolloutPhase::Aborted => "aborted",
        RolloutPhase::Unknown => "?",
    };
    format!(
        "{service}->{} {}/{} {phase}",
        r.to,
        (r.step + 1).min(r.steps),
        r.steps
    )
}

fn human(a: &Answer) -> String {
    let mut out = format!(
        "fleet {} at etcd revision {}: config {}; driver {}\n",
        a.prefix,
        a.revision,
        a.config.as_ref().map_or_else(
            || "absent".to_owned(),
            |c| format!("mod revision {}", c.mod_revision)
        ),
        a.driver.as_deref().unwrap_or("none"),
    );
    let rows: Vec<Vec<String>> = a
        .nodes
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                match r.ready {
                    None => "NO STATUS".to_owned(),
                    Some(true) => "ready".to_owned(),
                    Some(false) => "syncing".to_owned(),
                },
                r.config.as_ref().map_or_else(
                    || "-".to_owned(),
                    |c| format!("{}@{}", c.key, c.mod_revision),
                ),
                match r.sync {
                    Standing::InSync => "in sync".to_owned(),
                    Standing::Behind => format!("behind {}", r.lag),
                    Standing::Refused => "REFUSED".to_owned(),
                    Standing::Unknown => "-".to_owned(),
                },
                r.local_revision
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                if r.ready.is_none() {
                    "-".to_owned()
                } else if r.down.is_empty() {
                    format!("{}/{} up", r.up, r.backends)
                } else {
                    format!("{}/{} up, DOWN {}", r.up, r.backends, r.down.join(" "))
                },
                r.errors.len().to_string(),
                if r.rollouts.is_empty() {
                    "-".to_owned()
                } else {
                    r.rollouts
                        .iter()
                        .map(|x| part(&x.service, &x.rollout))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ]
        })
        .collect();
    out.push_str(&output::table(
        &[
            "NODE", "READY", "CONFIG", "LAG", "REVISION", "HEALTH", "ERRORS", "ROLLOUT",
        ],
        &rows,
    ));
    out.push('\n');
    for r in &a.nodes {
        for e in &r.errors {
            let _ = writeln!(out, "{}: {}", r.node, e.message);
        }
        if !r.local_changes.is_empty() {
            let _ = writeln!(
                out,
                "{}: local changes in force until the next change of its config: {}",
                r.node,
                r.local_changes.join("; ")
            );
        }
    }
    for u in &a.unreadable {
        let _ = writeln!(out, "unreadable status: {u}");
    }
    out
}

/// Prints the fleet's status.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let fleet = args.etcd.connect()?;
    let only = args.node.as_deref();
    let answer = block_on(async {
        let e = |e: crate::sources::etcd::EtcdError| Failure::of("etcd", &e);
        let layout = fleet.layout().clone();
        let statuses = fleet.statuses().await.map_err(e)?;
        let (configs, _) = fleet.get_prefix(&layout.nodes_prefix()).await.map_err(e)?;
        let config = fleet.config().await.map_err(e)?;
        let (rollouts, _) = fleet
            .get_prefix(&layout.rollouts_prefix())
            .await
            .map_err(e)?;
        let driver = fleet.driver().await.map_err(e)?;
        let mut current: BTreeMap<String, i64> = configs
            .iter()
            .filter(|d| matches!(layout.parse(&d.key), Some(FleetKey::NodeConfig(_))))
            .map(|d| (d.key.clone(), d.mod_revision))
            .collect();
        if let Some(d) = &config.doc {
            current.insert(d.key.clone(), d.mod_revision);
        }
        let mut nodes: Vec<Row> = statuses.nodes.values().map(|s| row(s, &current)).collect();
        for d in &rollouts {
            if let Ok(plan) = FleetRollout::from_json(&d.value) {
                for n in plan.waves.iter().flatten() {
                    if !statuses.nodes.contains_key(n)
                        && !nodes.iter().any(|r| r.node == n.as_str())
                    {
                        nodes.push(absent(n));
                    }
                }
            }
        }
        nodes.retain(|r| only.is_none_or(|n| r.node == n));
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok::<_, Failure>(Answer {
            prefix: layout.prefix().to_owned(),
            revision: statuses.revision,
            config: config.doc.as_ref().map(|d| AppliedConfig {
                key: d.key.clone(),
                mod_revision: d.mod_revision,
            }),
            driver,
            nodes,
            unreadable: statuses
                .unreadable
                .iter()
                .map(|e| crate::error::chain(e))
                .collect(),
        })
    })??;
    if let Some(n) = only
        && answer.nodes.is_empty()
    {
        return Err(Failure::error(&std::io::Error::other(format!(
            "node {n} has no status under {} (down, its lease expired, or never started)",
            answer.prefix
        ))));
    }
    output::print(g.output, &answer, || human(&answer))
}

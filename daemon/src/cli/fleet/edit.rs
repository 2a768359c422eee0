//! `veer apply|shift|drain|pin|unpin|rollback --fleet`: the request a node would get, decided by
//! the control core (`control::edit`) on the fleet's config document in etcd, and written back
//! with a compare-and-swap on the document's mod revision. Two operators never lose each
//! other's change: the one whose write finds the document changed reads it again, applies its
//! request to what is there now, and writes again.
//!
//! `shift`, `drain`, `pin`, `unpin` and a one-service `rollback` write the document in veer's
//! own layout (`config::services_to_toml`; comments are not kept); `apply -f FILE` and a whole
//! `rollback` write the file's (or the old version's) text as it is.
//!
//! `--dry-run` reads the document once, makes the same decision, and shows how the services
//! would differ (the diff of `veer apply --dry-run`), writing nothing. `--reason` is refused:
//! nodes record their revisions from the fleet's config as made by `fleet`, and the document has
//! no place for a reason (`veer fleet history` lists its versions).

use std::{fmt::Write as _, path::Path, time::SystemTime};

use serde::Serialize;

use super::{super::block_on, FleetArgs};
use crate::{
    api::protocol::{ChangeOptions, DiffEntry},
    cli::{Global, change, exit::Failure, output},
    config::{self, ConfigErrors},
    control::{
        Request, diff,
        edit::{self, DocVersion, EditError, Owner},
    },
    fleet::{Document, DocumentError, FleetRollout, Progress},
    model::DesiredState,
    sources::etcd::{Fleet, HistoryEnd, UpdateError},
    state::Origin,
};

/// Reads and writes of one edit before it gives up on a key others keep changing.
const ATTEMPTS: u32 = 20;
/// Versions `rollback --fleet` looks back through.
const HISTORY: usize = 100;

/// Why an edit could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    /// The document in etcd is not a valid config.
    #[error(
        "the fleet's config in etcd is not valid (nodes refuse it too); replace it first (veer apply --fleet -f FILE)"
    )]
    Current(#[source] ConfigErrors),
    /// The document in etcd is not text.
    #[error(transparent)]
    Text(#[from] DocumentError),
    /// The control core (or the fleet rollout rule) refused the request.
    #[error(transparent)]
    Edit(#[from] EditError),
}

/// What an edit did, as `--output json` prints it.
#[derive(Debug, Serialize)]
struct Written {
    /// The document's key.
    key: String,
    /// Its mod revision now (0: it does not exist).
    mod_revision: i64,
    /// Whether it was written (false: it already said so).
    changed: bool,
    /// What changed.
    summary: Option<String>,
    /// Reads it took (more than 1: another writer got in between, and the edit was redone on
    /// top of its change).
    attempts: u32,
}

/// A failed read-modify-write: the core's (or the rollout rule's) refusal, a document that is
/// not a valid config, or etcd (kind `etcd`).
fn failure(e: &UpdateError<Refused>) -> Failure {
    match e {
        UpdateError::Edit(refused) => refusal(refused),
        UpdateError::Etcd(_) | UpdateError::Contended { .. } => Failure::of("etcd", e),
    }
}

/// A refused edit: an invalid document in etcd is `invalid_config` with its diagnostics.
fn refusal(e: &Refused) -> Failure {
    match e {
        Refused::Current(errors) => Failure::of("invalid_config", e)
            .with_details(serde_json::json!({ "diagnostics": errors.to_json() }))
            .with_report(format!("veer: {e}\n{}", errors.render())),
        other => Failure::error(other),
    }
}

/// The services a document holds (none when it does not exist).
fn services(doc: Option<&Document>) -> Result<DesiredState, Refused> {
    match doc {
        None => Ok(DesiredState::default()),
        Some(d) => config::parse_fleet(&d.key, d.text()?).map_err(Refused::Current),
    }
}

/// Fleet rollouts not over: they own their services' weights.
async fn owners(fleet: &Fleet) -> Result<Vec<Owner>, Failure> {
    let (docs, _) = fleet
        .get_prefix(&fleet.layout().rollouts_prefix())
        .await
        .map_err(|e| Failure::of("etcd", &e))?;
    let mut plans = std::collections::BTreeMap::new();
    let mut progress = std::collections::BTreeMap::new();
    for d in docs {
        match fleet.layout().parse(&d.key) {
            Some(crate::fleet::FleetKey::RolloutPlan(s)) => {
                if let Ok(p) = FleetRollout::from_json(&d.value) {
                    plans.insert(s, p);
                }
            }
            Some(crate::fleet::FleetKey::RolloutProgress(s)) => {
                if let Ok(p) = Progress::from_json(&d.value) {
                    progress.insert(s, p);
                }
            }
            _ => {}
        }
    }
    Ok(plans
        .into_iter()
        .filter(|(s, p)| {
            progress
                .get(s)
                .is_some_and(|g: &Progress| g.id == p.id && !g.state.is_final())
        })
        .map(|(service, p)| Owner {
            service,
            to: p.to,
            id: p.id,
        })
        .collect())
}

/// What a dry run would write, as `--output json` prints it.
#[derive(Debug, Serialize)]
struct WouldWrite {
    /// The document's key.
    key: String,
    /// Its mod revision now (0: it does not exist); it stays.
    mod_revision: i64,
    /// Whether the edit would write it.
    changed: bool,
    /// Always true: nothing was written.
    dry_run: bool,
    /// How its services would differ.
    diff: Vec<DiffEntry>,
    /// What would change, in one line.
    summary: Option<String>,
}

/// Prints what an edit did.
fn report(g: &Global, what: &str, w: &Written) -> Result<(), Failure> {
    output::print(g.output, w, || {
        if w.changed {
            format!(
                "{what}: {} is now at mod revision {} ({}); every node follows it (veer fleet status)",
                w.key,
                w.mod_revision,
                w.summary.as_deref().unwrap_or("changed")
            )
        } else {
            format!(
                "{what}: no change, {} stays at mod revision {}",
                w.key, w.mod_revision
            )
        }
    })
}

/// Prints what an edit would do.
fn report_dry_run(g: &Global, what: &str, w: &WouldWrite) -> Result<(), Failure> {
    output::print(g.output, w, || {
        let mut text = change::diff_text(&w.diff);
        // Infallible: writing into a String cannot fail.
        let _ = if w.changed {
            write!(
                text,
                "{what}: dry run, nothing written; {} stays at mod revision {}\n  would write: {}",
                w.key,
                w.mod_revision,
                w.summary.as_deref().unwrap_or("changed")
            )
        } else {
            write!(
                text,
                "{what}: dry run: no change; {} stays at mod revision {}",
                w.key, w.mod_revision
            )
        };
        text
    })
}

/// The options of a `--fleet` edit: whether it is a dry run. `--reason` is refused (see the
/// module's doc).
fn dry_run(options: &ChangeOptions) -> Result<bool, Failure> {
    if options.reason.is_some() {
        return Err(Failure::usage(
            "--reason cannot go with --fleet: nodes record the fleet's config as made by `fleet`, and etcd keeps no reason with it (`veer fleet history` lists its versions); leave --reason out"
                .to_owned(),
        ));
    }
    Ok(options.dry_run)
}

/// One edit of the document: what it would hold after, and how its services change.
struct Edit {
    bytes: Vec<u8>,
    before: DesiredState,
    after: DesiredState,
    summary: String,
}

/// Runs `decide` on the document at `key`: with `dry_run`, once on what is there now, writing
/// nothing; else with compare-and-swap, redone on top of another writer's change.
async fn run(
    fleet: &Fleet,
    key: String,
    dry_run: bool,
    what: &str,
    g: &Global,
    mut decide: impl FnMut(Option<&Document>) -> Result<Option<Edit>, Refused>,
) -> Result<(), Failure> {
    if dry_run {
        let read = fleet.get(&key).await.map_err(|e| Failure::of("etcd", &e))?;
        let edit = decide(read.doc.as_ref()).map_err(|e| refusal(&e))?;
        return report_dry_run(
            g,
            what,
            &WouldWrite {
                key,
                mod_revision: read.doc.map_or(0, |d| d.mod_revision),
                changed: edit.is_some(),
                dry_run: true,
                diff: edit.as_ref().map_or_else(Vec::new, |e| {
                    diff::between(&e.before, &e.after)
                        .iter()
                        .map(DiffEntry::from)
                        .collect()
                }),
                summary: edit.map(|e| e.summary),
            },
        );
    }
    let mut summary = None;
    let updated = fleet
        .update(&key, ATTEMPTS, |doc| {
            Ok::<_, Refused>(decide(doc)?.map(|e| {
                summary = Some(e.summary);
                e.bytes
            }))
        })
        .await
        .map_err(|e| failure(&e))?;
    report(
        g,
        what,
        &Written {
            key,
            mod_revision: updated.mod_revision,
            changed: updated.changed,
            summary,
            attempts: updated.attempts,
        },
    )
}

/// Runs `request` on the fleet's config: decided by the core, written with compare-and-swap.
pub(in crate::cli) fn edit(
    args: &FleetArgs,
    options: &ChangeOptions,
    request: &Request,
    what: &str,
    g: &Global,
) -> Result<(), Failure> {
    let dry_run = dry_run(options)?;
    let fleet = args.etcd.connect()?;
    block_on(async {
        let owners = owners(&fleet).await?;
        let key = fleet.layout().config();
        run(&fleet, key, dry_run, what, g, |doc| {
            let current = services(doc)?;
            let edited = edit::edit(request, &current, &[], &owners, SystemTime::now())?;
            Ok(edited.map(|e| Edit {
                bytes: config::services_to_toml(&e.state).into_bytes(),
                before: current,
                after: e.state,
                summary: e.summary,
            }))
        })
        .await
    })?
}

/// `veer apply --fleet -f FILE`: the file (services only) becomes the fleet's config, as
/// written, unless the config already means the same.
pub(in crate::cli) fn apply(
    args: &FleetArgs,
    file: &Path,
    options: &ChangeOptions,
    g: &Global,
) -> Result<(), Failure> {
    let dry_run = dry_run(options)?;
    let text = config::read(file).map_err(|e| Failure::of("io", &e))?;
    let state = config::parse_fleet(&file.display().to_string(), &text)
        .map_err(|e| Failure::invalid_config(&e))?;
    let request = Request::Apply {
        node: crate::model::NodeConfig::default(),
        state,
        origin: Origin::Apply {
            path: file.to_owned(),
        },
        mark: None,
    };
    let fleet = args.etcd.connect()?;
    let what = if dry_run { "apply" } else { "applied" };
    block_on(async {
        let owners = owners(&fleet).await?;
        let key = fleet.layout().config();
        run(
            &fleet,
            key,
            dry_run,
            &format!("{what} {}", file.display()),
            g,
            |doc| {
                let current = services(doc).unwrap_or_default();
                let edited = edit::edit(&request, &current, &[], &owners, SystemTime::now())?;
                Ok(edited.map(|e| Edit {
                    bytes: text.clone().into_bytes(),
                    before: current,
                    after: e.state,
                    summary: e.summary,
                }))
            },
        )
        .await
    })?
}

/// `veer rollback --fleet [SERVICE] [--to MOD_REVISION]`: back to a version of the fleet's
/// config that etcd still holds (default: the one before the current one), whole or one service.
pub(in crate::cli) fn rollback(
    args: &FleetArgs,
    options: &ChangeOptions,
    service: Option<&str>,
    to: Option<u64>,
    g: &Global,
) -> Result<(), Failure> {
    let dry_run = dry_run(options)?;
    let fleet = args.etcd.connect()?;
    block_on(async {
        let owners = owners(&fleet).await?;
        let key = fleet.layout().config();
        let history = fleet
            .history(&key, HISTORY)
            .await
            .map_err(|e| Failure::of("etcd", &e))?;
        let Some(current) = history.versions.first() else {
            return Err(Failure::error(&std::io::Error::other(format!(
                "{key} does not exist: there is nothing to roll back"
            ))));
        };
        let target = if let Some(n) = to {
            i64::try_from(n).unwrap_or(i64::MAX)
        } else {
            let Some(v) = history.versions.get(1) else {
                let why = if let HistoryEnd::Compacted { .. } = history.end {
                    "etcd compacted the older ones away"
                } else {
                    "it has only one version"
                };
                return Err(Failure::error(&std::io::Error::other(format!(
                    "{key} has no version before mod revision {} to roll back to: {why}",
                    current.mod_revision
                ))));
            };
            v.mod_revision
        };
        let mut versions = Vec::new();
        let mut target_text = None;
        for v in history.versions.iter().rev() {
            let text = String::from_utf8_lossy(&v.value).into_owned();
            match config::parse_fleet(&format!("{key}@{}", v.mod_revision), &text) {
                Ok(state) => versions.push(DocVersion {
                    mod_revision: v.mod_revision,
                    state,
                }),
                Err(e) if v.mod_revision == target => {
                    return Err(Failure::error(&std::io::Error::other(format!(
                        "the version of {key} at mod revision {target} is not a valid config (nodes refused it): {e}"
                    ))));
                }
                Err(_) => {}
            }
            if v.mod_revision == target {
                target_text = Some(text);
            }
        }
        let request = Request::Rollback {
            service: service.map(str::to_owned),
            to: Some(u64::try_from(target).unwrap_or(0)),
        };
        let what = match service {
            Some(s) => format!("rollback {s} to mod revision {target}"),
            None => format!("rollback to mod revision {target}"),
        };
        run(&fleet, key, dry_run, &what, g, |doc| {
            let now = services(doc)?;
            let mut history = versions.clone();
            // The current document (perhaps newer than the history read) is the head.
            if let Some(d) = doc {
                history.retain(|v| v.mod_revision != d.mod_revision);
                history.push(DocVersion {
                    mod_revision: d.mod_revision,
                    state: now.clone(),
                });
            }
            let edited = edit::edit(&request, &now, &history, &owners, SystemTime::now())?;
            Ok(edited.map(|e| Edit {
                bytes: match (service, &target_text) {
                    (None, Some(text)) => text.clone().into_bytes(),
                    _ => config::services_to_toml(&e.state).into_bytes(),
                },
                before: now,
                after: e.state,
                summary: e.summary,
            }))
        })
        .await
    })?
}

//! `veer fleet history`: the versions of the fleet's config document (or a node's own) that etcd
//! still holds, newest first, each with what changed from the one before. etcd keeps every
//! version until it is compacted, so the list goes back to the last compaction or to the key's
//! creation.

use serde::Serialize;

use super::{super::block_on, EtcdArgs};
use crate::{
    cli::{Global, exit::Failure, output},
    config,
    control::core::summarize,
    fleet::NodeName,
    sources::etcd::HistoryEnd,
};

/// Arguments of `veer fleet history`.
#[derive(Debug, clap::Args)]
pub(in crate::cli) struct Args {
    /// The node's own config (`nodes/NODE/config`) instead of the fleet's.
    #[arg(long)]
    node: Option<String>,
    /// Most versions listed.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// One version in `--output json`.
#[derive(Debug, Serialize)]
struct Entry {
    /// The etcd revision that wrote it (`veer rollback --fleet --to` takes it).
    mod_revision: i64,
    /// Its number since the key was created: 1, 2, 3 ...
    version: i64,
    /// Its services.
    services: Vec<String>,
    /// What changed from the version before (`+api, ~web (v1=90 v2=10)`).
    summary: String,
    /// Why nodes refused it, when it is not a valid config.
    error: Option<String>,
}

/// The whole answer in `--output json`.
#[derive(Debug, Serialize)]
struct Answer {
    key: String,
    versions: Vec<Entry>,
    /// Why the list ends: `created`, `compacted`, `limit` or `absent`.
    end: &'static str,
}

/// Lists the versions.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let fleet = args.etcd.connect()?;
    let key = match &args.node {
        Some(n) => fleet
            .layout()
            .node_config(&NodeName::new(n).map_err(|e| Failure::usage(format!("--node: {e}")))?),
        None => fleet.layout().config(),
    };
    let history =
        block_on(fleet.history(&key, args.limit.max(1)))?.map_err(|e| Failure::of("etcd", &e))?;
    let parsed: Vec<Result<crate::model::DesiredState, String>> = history
        .versions
        .iter()
        .map(|v| {
            let text = String::from_utf8_lossy(&v.value);
            config::parse_fleet(&format!("{key}@{}", v.mod_revision), &text)
                .map_err(|e| e.to_string())
        })
        .collect();
    let versions = history
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            // What changed from the nearest older version the nodes applied.
            let older = parsed[i + 1..].iter().find_map(|p| p.as_ref().ok());
            let (services, summary, error) = match &parsed[i] {
                Ok(s) => (
                    s.services.iter().map(|x| x.name.clone()).collect(),
                    match older {
                        Some(o) => summarize(o, s),
                        None if i + 1 < history.versions.len() => {
                            summarize(&crate::model::DesiredState::default(), s)
                        }
                        None => format!(
                            "first: {}",
                            summarize(&crate::model::DesiredState::default(), s)
                        ),
                    },
                    None,
                ),
                Err(e) => (
                    Vec::new(),
                    "refused by the nodes".to_owned(),
                    Some(e.clone()),
                ),
            };
            Entry {
                mod_revision: v.mod_revision,
                version: v.version,
                services,
                summary,
                error,
            }
        })
        .collect();
    let answer = Answer {
        key: key.clone(),
        versions,
        end: match history.end {
            HistoryEnd::Created => "created",
            HistoryEnd::Compacted { .. } => "compacted",
            HistoryEnd::Limit => "limit",
            HistoryEnd::Absent => "absent",
        },
    };
    output::print(g.output, &answer, || {
        let rows: Vec<Vec<String>> = answer
            .versions
            .iter()
            .map(|e| {
                vec![
                    e.mod_revision.to_string(),
                    e.version.to_string(),
                    e.services.join(","),
                    e.error
                        .as_ref()
                        .map_or_else(|| e.summary.clone(), |err| format!("INVALID: {err}")),
                ]
            })
            .collect();
        let mut out = output::table(&["MOD REVISION", "VERSION", "SERVICES", "CHANGE"], &rows);
        out.push('\n');
        out.push_str(match history.end {
            HistoryEnd::Created => "(back to the key's creation)",
            HistoryEnd::Compacted { .. } => "(older versions were compacted away by etcd)",
            HistoryEnd::Limit => "(more may exist: --limit)",
            HistoryEnd::Absent => "(the key does not exist)",
        });
        format!("{key}\n{out}")
    })
}

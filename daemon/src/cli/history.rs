//! `veer history [SERVICE]`: every revision, newest first, with who made it and why.

use super::{Global, block_on, exit::Failure, output, status::service_query};
use crate::{api::protocol::HistoryResponse, state::Author};

/// Arguments of `veer history`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Only revisions naming this service.
    service: Option<String>,
}

/// `alice (uid 1000)`, `config-file`, `rollout`, `-` (not recorded).
fn author(a: &Author) -> String {
    match a {
        Author::Unknown => "-".to_owned(),
        a => a.to_string(),
    }
}

/// Prints the revisions, newest first.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let h: HistoryResponse = block_on(g.client().get(&format!(
        "/v1/history{}",
        service_query(args.service.as_deref())
    )))?
    .map_err(|e| Failure::from(&e))?;
    output::print(g.output, &h, || {
        let rows: Vec<Vec<String>> = h
            .revisions
            .iter()
            .map(|e| {
                let r = &e.revision;
                vec![
                    r.number.to_string(),
                    r.time.clone(),
                    r.origin.clone(),
                    author(&r.author),
                    r.summary.clone(),
                    r.reason.clone().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        output::table(
            &["REVISION", "TIME", "ORIGIN", "AUTHOR", "SUMMARY", "REASON"],
            &rows,
        )
    })
}

//! `veer history [SERVICE]`.

use super::{Global, block_on, exit::Failure, output, status::service_query};
use crate::api::protocol::HistoryResponse;

/// Arguments of `veer history`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Only revisions naming this service.
    service: Option<String>,
}

/// Prints the revisions, newest first.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let h: HistoryResponse = block_on(g.client().get(&format!(
        "/v1/history{}",
        service_query(args.service.as_deref())
    )))?
    .map_err(|e| output::client_failure(&e))?;
    output::print(g.output, &h, || {
        let rows: Vec<Vec<String>> = h
            .revisions
            .iter()
            .map(|e| {
                vec![
                    e.revision.number.to_string(),
                    e.revision.time.clone(),
                    e.revision.origin.clone(),
                    e.revision.summary.clone(),
                ]
            })
            .collect();
        output::table(&["REVISION", "TIME", "ORIGIN", "SUMMARY"], &rows)
    })
}

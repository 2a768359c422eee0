//! Human output (tables, one line per change) or JSON (the API's bodies, stable field names).

use serde::Serialize;

use super::exit::Failure;
use crate::{api::protocol::ApplyResponse, model::NodeChange};

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Human,
    /// For scripts.
    Json,
}

/// Prints `value` as JSON, or `human()`.
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    human: impl FnOnce() -> String,
) -> Result<(), Failure> {
    match format {
        Format::Json => {
            let text = serde_json::to_string_pretty(value).map_err(|e| Failure::error(&e))?;
            println!("{text}");
        }
        Format::Human => {
            let text = human();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }
    Ok(())
}

/// The answer to a change, and the `[node]` settings it asked for that wait for a restart.
pub fn applied(format: Format, r: &ApplyResponse, what: &str) -> Result<(), Failure> {
    print(format, r, || {
        let mut text = match (&r.note, r.changed) {
            (Some(note), true) => format!("{what}: revision {}; {note}", r.revision),
            (None, true) => format!("{what}: revision {}", r.revision),
            (Some(note), false) => format!("{note}; revision {} stays in force", r.revision),
            (None, false) => format!("{what}: no change, revision {} stays in force", r.revision),
        };
        if !r.pending_restart.is_empty() {
            text.push('\n');
            text.push_str(&pending_restart(&r.pending_restart));
        }
        text
    })
}

/// `[node] settings wait for a daemon restart: conntrack_max 65536 -> 131072, ...`.
pub fn pending_restart(changes: &[NodeChange]) -> String {
    let list: Vec<String> = changes
        .iter()
        .map(|c| format!("{} {} -> {}", c.setting, c.running, c.wanted))
        .collect();
    format!(
        "[node] settings wait for a daemon restart: {}",
        list.join(", ")
    )
}

/// Prints `value` as one line of JSON (a stream of them is NDJSON), flushed at once so that a
/// reader sees each as it happens.
pub fn json_line<T: Serialize>(value: &T) -> Result<(), Failure> {
    use std::io::Write as _;
    let text = serde_json::to_string(value).map_err(|e| Failure::error(&e))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::of("io", &e))
}

/// Formats rows as an aligned table. Every row has one cell per heading: a cell without a
/// heading would push every number after it under the wrong one.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    debug_assert!(
        rows.iter().all(|r| r.len() == header.len()),
        "every row of a table has one cell per heading"
    );
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

//! `veer validate`: offline.

use std::path::PathBuf;

use super::{Global, exit::Failure, output};
use crate::{config, paths};

/// Arguments of `veer validate`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Config file.
    #[arg(long = "file", short = 'f', default_value = paths::CONFIG)]
    file: PathBuf,
}

/// Validates the file; exit 1 with the exact problem if it is invalid.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    match config::load(&args.file) {
        Ok((c, _)) => output::print(
            g.output,
            &serde_json::json!({ "valid": true, "file": args.file, "services": c.state.services.len() }),
            || {
                format!(
                    "{}: valid ({} services)",
                    args.file.display(),
                    c.state.services.len()
                )
            },
        ),
        Err(e) => {
            if g.output == output::Format::Json {
                let detail = match &e {
                    config::LoadError::Invalid(c) => serde_json::json!({
                        "file": c.location.file, "line": c.location.line, "column": c.location.column, "message": c.kind.to_string(),
                    }),
                    config::LoadError::Read { .. } => {
                        serde_json::json!({ "file": args.file, "message": crate::error::chain(&e) })
                    }
                };
                output::print(
                    g.output,
                    &serde_json::json!({ "valid": false, "error": detail }),
                    String::new,
                )?;
            }
            Err(Failure::error(&e))
        }
    }
}

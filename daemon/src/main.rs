//! The `veer` binary: parses the command line, runs it, maps failures to exit codes.

use std::process::ExitCode;

use clap::Parser as _;
// Every dependency is used by the library; the binary links them through it.
use {
    aya as _, bytes as _, clap_complete as _, etcd_client as _, http_body_util as _,
    humantime as _, hyper as _, hyper_util as _, libc as _, notify as _, prometheus_client as _,
    serde as _, serde_json as _, sha2 as _, thiserror as _, tokio as _, toml as _, tonic as _,
    tracing as _, tracing_subscriber as _, veer_common as _,
};

fn main() -> ExitCode {
    veer::cli::init_logging();
    match veer::cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("veer: {}", failure.message);
            failure.exit_code()
        }
    }
}

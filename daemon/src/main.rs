//! The `veer` binary: parses the command line, runs it, maps failures to exit codes
//! (`veer::cli::main`).

use std::process::ExitCode;

// Every dependency is used by the library; the binary links them through it.
use {
    aya as _, bytes as _, clap as _, clap_complete as _, clap_mangen as _, etcd_client as _,
    http_body_util as _, humantime as _, hyper as _, hyper_util as _, libc as _, notify as _,
    prometheus_client as _, sd_notify as _, serde as _, serde_json as _, sha2 as _, thiserror as _,
    tokio as _, toml as _, tonic as _, tracing as _, tracing_subscriber as _, veer_common as _,
};

fn main() -> ExitCode {
    veer::cli::main()
}

//! veer: shifts live traffic between versions of a service inside the kernel.

/// veer's kernel object (XDP and TC programs and their maps), built by `build.rs`.
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/veer-ebpf"));

/// Baseline XDP programs (`ebpf/src/bench.rs`) that `cargo xtask bench` measures beside veer's.
#[doc(hidden)]
pub const BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/veer-bench"));

pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod error;
pub mod files;
pub mod fleet;
pub mod health;
pub mod http;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod paths;
pub mod privileges;
pub mod rollout;
pub mod sources;
pub mod state;
pub mod supervisor;
pub mod throttle;

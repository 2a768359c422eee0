//! veer's test bed, shared by the test binaries under `tests/tests/`.
//!
//! - `config`: config files built as values (`ConfigBuilder`, the bed's `web` service in either
//!   `Family`) and written by veer's own writer.
//! - `packet`: builds Ethernet/VLAN/IPv4/IPv6/TCP/UDP frames with correct checksums, verifies the
//!   checksums of output frames, and diffs two frames field by field.
//! - `prog`: loads veer's kernel object, seeds its maps with domain helpers and runs a program on
//!   given bytes through `BPF_PROG_TEST_RUN`.
//! - `netns`: uniquely named network namespaces wired with veth pairs for the roles of a test, torn
//!   down on drop even when the test panics.
//! - `servers`: TCP/UDP servers that answer with their own name, run inside a namespace.
//! - `pty`: a command on a pseudo-terminal of a chosen size, and a small terminal that replays
//!   what it drew.
//! - `metrics`: what a scrape must be for Prometheus (`promtool check metrics`).
//! - `etcd`: a real etcd on loopback (plain, TLS-only with client certificates, or with users and
//!   the fleet roles), stopped and removed on drop; a proxy to cut one client off.
//! - `forge`: forged packets from a namespace (spoofed floods, segments on others' tuples).
//! - `legacy`: pinned maps of an older layout, made by hand, for migration tests.
//!
//! Everything here needs root; helpers panic with the missing prerequisite rather than skip.

// The runtime of the etcd tests and of the fleet benchmark; the library itself runs none.
use tokio as _;

pub mod config;
pub mod daemon;
pub mod etcd;
pub mod forge;
pub mod legacy;
pub mod metrics;
pub mod netns;
pub mod node;
pub mod packet;
pub mod prog;
pub mod pty;
pub mod servers;

/// How tests load veer's kernel object: private maps, and flow tables of 65,536 entries each
/// rather than the production sizes (each load preallocates its flow tables, and tests load many
/// at once).
pub const TEST_LOAD: veer::dataplane::loader::LoadOptions = veer::dataplane::loader::LoadOptions {
    pin_dir: None,
    conntrack_max: 65_536,
    conntrack_new_max: 65_536,
};

/// Panics unless the process runs as root: the test bed never skips silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "veer's kernel and namespace tests need root (euid is {euid}); run `cargo xtask test`"
    );
}

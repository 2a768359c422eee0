//! Default locations. Every one can be overridden on the command line.

/// The config file.
pub const CONFIG: &str = "/etc/veer/veer.toml";
/// The state directory (revisions).
pub const STATE_DIR: &str = "/var/lib/veer";
/// The control socket.
pub const SOCKET: &str = "/run/veer/veer.sock";
/// Pinned maps and links (bpffs is mounted at its parent when missing).
pub const PIN_DIR: &str = "/sys/fs/bpf/veer";
/// Links, under the pin directory.
pub const LINKS_SUBDIR: &str = "links";
/// The Prometheus metrics listener.
pub const METRICS: &str = "127.0.0.1:9464";

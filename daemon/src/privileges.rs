//! What `veer daemon` needs from the kernel before it tries anything: root, or the capabilities
//! that loading BPF programs, creating and pinning maps and attaching to interfaces take
//! (`CAP_BPF`, `CAP_NET_ADMIN`, `CAP_SYS_ADMIN`). Checked up front, so a daemon without them
//! says what is missing instead of failing on the first map it creates.

use std::fmt;

/// A capability the daemon needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// `CAP_BPF` (39): programs and maps.
    Bpf,
    /// `CAP_NET_ADMIN` (12): XDP and TC attachment, the qdisc, the redirect map.
    NetAdmin,
    /// `CAP_SYS_ADMIN` (21): mounting bpffs, pinning, reading other programs' links.
    SysAdmin,
}

impl Capability {
    /// Every capability the daemon needs.
    pub const NEEDED: [Self; 3] = [Self::Bpf, Self::NetAdmin, Self::SysAdmin];

    /// The bit in the capability sets of `/proc/PID/status` (`include/uapi/linux/capability.h`).
    const fn bit(self) -> u32 {
        match self {
            Self::Bpf => 39,
            Self::NetAdmin => 12,
            Self::SysAdmin => 21,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bpf => "CAP_BPF",
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::SysAdmin => "CAP_SYS_ADMIN",
        })
    }
}

/// The daemon lacks capabilities it needs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "veer daemon needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN; this process (uid {uid}) lacks {}: run it as root (sudo veer daemon, or dist/veer.service)",
    missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
)]
pub struct MissingPrivileges {
    /// Its effective user id.
    pub uid: u32,
    /// What it lacks.
    pub missing: Vec<Capability>,
}

/// The needed capabilities absent from the effective set `effective` (`CapEff`).
pub fn missing(effective: u64) -> Vec<Capability> {
    Capability::NEEDED
        .into_iter()
        .filter(|c| effective & (1 << c.bit()) == 0)
        .collect()
}

/// The effective capability set in a `/proc/PID/status` text.
fn effective(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Fails unless this process holds every capability the daemon needs. Where the kernel does not
/// say (no `/proc`), nothing is refused here: the first operation that needs one says so.
pub fn check() -> Result<(), MissingPrivileges> {
    let Some(caps) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(effective)
    else {
        return Ok(());
    };
    let missing = missing(caps);
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    Err(MissingPrivileges { uid, missing })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_says_what_is_missing() {
        let root = "Name:\tveer\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective(root).map(missing), Some(vec![]));
        let net_admin_only = "CapEff:\t0000000000001000\n";
        assert_eq!(
            effective(net_admin_only).map(missing),
            Some(vec![Capability::Bpf, Capability::SysAdmin])
        );
        let e = MissingPrivileges {
            uid: 65534,
            missing: missing(0),
        };
        assert_eq!(
            e.to_string(),
            "veer daemon needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN; this process (uid 65534) lacks CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN: run it as root (sudo veer daemon, or dist/veer.service)"
        );
        assert_eq!(effective("Name:\tveer\n"), None);
    }
}

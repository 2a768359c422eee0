//! Clients on the node itself: the cgroup socket hooks (`veer_sk_*`) attached to the root of the
//! cgroup v2 hierarchy, with links pinned next to the interface links and adopted like them; the
//! socket flows they record (`VEER_SOCK_FLOWS`), counted as active flows of their backends and
//! expired when an unconnected UDP socket stops sending.
//!
//! Why socket hooks (as Cilium's socket LB) rather than a hook on `lo` or on egress: a local
//! client's packets never come in on an interface, and rewriting them on the way out would need
//! per-packet NAT both ways plus conntrack for every local connection. Steering `connect()`
//! once costs nothing per packet, keeps the flow on its backend for the socket's whole life by
//! construction (the socket is connected to the backend), and uses the same selection
//! (pins, weights, Maglev) as the packet path. The hooks act only on sockets of the daemon's own
//! network namespace (the kernel object carries its cookie), so containers and other daemons on
//! the machine, which share the cgroup hierarchy, are never touched.

use std::{
    collections::HashMap,
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
    programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, links::FdLink},
};
use veer_common::{
    PROTO_UDP,
    maps::{self, progs},
    sock::{SockFlow, SockKey, SockPeer},
};

use super::{
    DataplaneError,
    loader::program_mut,
    maps::{is_missing, take},
};

/// Where the socket hooks stand, for `veer status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalClients {
    /// Whether clients on the node are steered.
    pub steered: bool,
    /// The cgroup the hooks are attached to.
    pub cgroup: Option<PathBuf>,
    /// Why (or why not).
    pub why: String,
}

/// The network-namespace cookie of the calling thread (`SO_NETNS_COOKIE`, Linux 5.14).
pub fn netns_cookie() -> io::Result<u64> {
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh socket owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The root of the cgroup v2 hierarchy as mounted here (`/sys/fs/cgroup` on a pure v2 system,
/// `/sys/fs/cgroup/unified` on a hybrid one), from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_root_in(&text)
}

/// The first cgroup2 mount of the hierarchy's root in a `mountinfo` text.
fn cgroup2_root_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mount-point options [optional...] - fstype source options
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// Undoes `mountinfo`'s octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pin of a socket hook's link.
fn link_path(dir: &Path, prog: &str) -> PathBuf {
    dir.join(format!("{prog}_cgroup"))
}

/// `bpf(2)` commands used directly: aya has no `attach_to_link` for cgroup programs.
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// Calls `bpf(cmd, attr)` with a zeroed 128-byte attribute block whose first words are `words`.
fn bpf(cmd: libc::c_long, words: [u64; 2]) -> io::Result<libc::c_long> {
    let mut attr = [0_u64; 16];
    attr[..2].copy_from_slice(&words);
    // SAFETY: `attr` is a valid, zero-padded `union bpf_attr` image for `cmd`, alive for the
    // call; the kernel reads at most its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of_val(&attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens a pinned link (`BPF_OBJ_GET`).
fn open_pin(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = bpf(BPF_OBJ_GET, [c.as_ptr() as u64, 0])?;
    // SAFETY: BPF_OBJ_GET returned a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Swaps `prog_fd` onto the link `link` (`BPF_LINK_UPDATE`: atomic).
fn update_link(link: &OwnedFd, prog_fd: RawFd) -> io::Result<()> {
    let first = u64::from(link.as_raw_fd() as u32) | (u64::from(prog_fd as u32) << 32);
    bpf(BPF_LINK_UPDATE, [first, 0]).map(drop)
}

/// Attaches (or adopts) every socket hook on the root cgroup, pinning the links under `dir`
/// (none: the links live as long as `ebpf`). Says why not when the machine has no cgroup v2.
pub fn attach(
    ebpf: &mut Ebpf,
    dir: Option<&Path>,
    netns_cookie: u64,
) -> Result<LocalClients, DataplaneError> {
    if netns_cookie == 0 {
        return Ok(LocalClients {
            steered: false,
            cgroup: None,
            why: "this kernel cannot tell a socket's network namespace (SO_NETNS_COOKIE, Linux \
                  5.14): clients on the node are not steered"
                .to_owned(),
        });
    }
    let Some(root) = cgroup2_root() else {
        return Ok(LocalClients {
            steered: false,
            cgroup: None,
            why: "no cgroup v2 hierarchy is mounted: clients on the node are not steered"
                .to_owned(),
        });
    };
    let cgroup = File::open(&root).map_err(|source| DataplaneError::PinDir {
        path: root.clone(),
        source,
    })?;
    let mut adopted = 0;
    for name in progs::SOCK {
        let err = |source: io::Error| DataplaneError::Cgroup {
            program: name,
            cgroup: root.clone(),
            source,
        };
        if let Some(dir) = dir {
            let path = link_path(dir, name);
            if path.exists() {
                let link = open_pin(&path).map_err(err)?;
                let prog_fd = if name == progs::SOCK_RELEASE {
                    let p: &mut CgroupSock = program_mut(ebpf, name)?;
                    program_fd(p.fd(), name)?
                } else {
                    let p: &mut CgroupSockAddr = program_mut(ebpf, name)?;
                    program_fd(p.fd(), name)?
                };
                update_link(&link, prog_fd).map_err(err)?;
                adopted += 1;
                continue;
            }
        }
        let link: Option<FdLink> = if name == progs::SOCK_RELEASE {
            let p: &mut CgroupSock = program_mut(ebpf, name)?;
            let id = p
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|e| cgroup_err(name, &root, &e))?;
            match dir {
                Some(_) => Some(
                    FdLink::try_from(p.take_link(id).map_err(|e| cgroup_err(name, &root, &e))?)
                        .map_err(|e| link_err(name, &root, e))?,
                ),
                None => None,
            }
        } else {
            let p: &mut CgroupSockAddr = program_mut(ebpf, name)?;
            let id = p
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|e| cgroup_err(name, &root, &e))?;
            match dir {
                Some(_) => Some(
                    FdLink::try_from(p.take_link(id).map_err(|e| cgroup_err(name, &root, &e))?)
                        .map_err(|e| link_err(name, &root, e))?,
                ),
                None => None,
            }
        };
        if let (Some(dir), Some(link)) = (dir, link) {
            link.pin(link_path(dir, name))
                .map_err(|e| DataplaneError::LinkPin {
                    interface: root.display().to_string(),
                    hook: name,
                    source: Box::new(e),
                })?;
        }
    }
    Ok(LocalClients {
        steered: true,
        cgroup: Some(root),
        why: format!(
            "socket hooks on the root cgroup ({} of {} links adopted), acting on this network \
             namespace only (cookie {netns_cookie})",
            adopted,
            progs::SOCK.len()
        ),
    })
}

fn program_fd(
    fd: Result<&aya::programs::ProgramFd, aya::programs::ProgramError>,
    name: &'static str,
) -> Result<RawFd, DataplaneError> {
    fd.map(|f| f.as_fd().as_raw_fd())
        .map_err(|e| DataplaneError::ProgramLoad {
            name,
            source: Box::new(e),
        })
}

fn link_err(name: &'static str, root: &Path, e: aya::programs::links::LinkError) -> DataplaneError {
    DataplaneError::Link {
        interface: root.display().to_string(),
        hook: name,
        source: Box::new(e),
    }
}

fn cgroup_err(name: &'static str, root: &Path, e: &aya::programs::ProgramError) -> DataplaneError {
    DataplaneError::Cgroup {
        program: name,
        cgroup: root.to_owned(),
        source: io::Error::other(crate::error::chain(e)),
    }
}

/// Unpins (and so detaches) every socket hook link under `dir`. Returns how many there were.
pub fn detach(dir: &Path) -> usize {
    let mut n = 0;
    for name in progs::SOCK {
        let path = link_path(dir, name);
        if path.exists() {
            match std::fs::remove_file(&path) {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not unpin link");
                }
            }
        }
    }
    n
}

/// The two socket maps.
pub struct SockMaps {
    flows: BpfHashMap<MapData, SockKey, SockFlow>,
    rev: BpfHashMap<MapData, SockKey, SockPeer>,
}

impl SockMaps {
    /// Takes the socket maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            flows: take(ebpf, maps::SOCK_FLOWS)?,
            rev: take(ebpf, maps::SOCK_REV)?,
        })
    }

    /// Every socket flow (a snapshot; the hooks keep writing).
    pub fn flows(&self) -> Result<Vec<(SockKey, SockFlow)>, DataplaneError> {
        self.flows
            .iter()
            .map(|r| {
                r.map_err(|source| DataplaneError::Map {
                    op: "iterate",
                    map: maps::SOCK_FLOWS,
                    source,
                })
            })
            .collect()
    }

    /// Active socket flows per backend id.
    pub fn census(&self) -> Result<HashMap<u32, u64>, DataplaneError> {
        let mut active: HashMap<u32, u64> = HashMap::new();
        for (_, f) in self.flows()? {
            *active.entry(f.backend_id).or_default() += 1;
        }
        Ok(active)
    }

    /// Removes the flows of unconnected UDP sockets idle for longer than `udp_timeout_ns` at
    /// `now_ns` (a connected socket's flow ends when it is closed). Returns how many went.
    pub fn expire(&mut self, udp_timeout_ns: u64, now_ns: u64) -> Result<u64, DataplaneError> {
        let mut n = 0;
        for (key, f) in self.flows()? {
            if key.proto != PROTO_UDP || now_ns.saturating_sub(f.last_seen_ns) <= udp_timeout_ns {
                continue;
            }
            let rev_key = SockKey {
                addr: f.backend_addr,
                port: f.backend_port,
                ..key
            };
            for (map, result) in [
                (maps::SOCK_FLOWS, self.flows.remove(&key)),
                (maps::SOCK_REV, self.rev.remove(&rev_key)),
            ] {
                match result {
                    // Gone already (its socket was released meanwhile) is what is wanted.
                    Ok(()) => {}
                    Err(e) if is_missing(&e) => {}
                    Err(source) => {
                        return Err(DataplaneError::Map {
                            op: "delete",
                            map,
                            source,
                        });
                    }
                }
            }
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_root_is_found_on_hybrid_and_pure_v2_systems() {
        let hybrid = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu";
        assert_eq!(
            cgroup2_root_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(cgroup2_root_in(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        // A container's view of a sub-cgroup bind mount is not the hierarchy's root.
        let sub = "40 30 0:30 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_root_in(sub), None);
        assert_eq!(cgroup2_root_in("garbage"), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape("/plain"), "/plain");
    }
}

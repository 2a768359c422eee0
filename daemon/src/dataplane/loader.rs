//! Loading veer's kernel object and attaching its programs.
//!
//! With a pin directory, every map is pinned (or, when already pinned, reused) by name under it,
//! after the existing pins' layouts are checked against this build: aya reuses a pinned map
//! without looking at its shape, so a changed layout would otherwise be used silently.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapInfo, MapType},
    programs::{SchedClassifier, TcAttachType, Xdp, XdpMode, tc},
};
use veer_common::maps::{self, LAYOUT_VERSION, progs};

use super::DataplaneError;
use crate::{EBPF_OBJECT, model::XdpAttachMode};

/// How the kernel object is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Pin (or adopt) maps under this directory; `None` for private maps (tests, tools).
    pub pin_dir: Option<PathBuf>,
    /// Capacity of the conntrack and reverse-NAT maps (entries).
    pub conntrack_max: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_dir: None,
            conntrack_max: maps::DEFAULT_CONNTRACK_MAX,
        }
    }
}

/// The shape every pinned map must have: (name, type, key size, value size, max entries or
/// `None` when configurable).
fn expected_layout(conntrack_max: u32) -> Vec<(&'static str, MapType, u32, u32, u32)> {
    use veer_common::{
        backend::BackendValue,
        counters::{BackendCounters, Reason, ServiceCounters},
        flow::{FlowEntry, FlowKey, RevNatValue},
        pin::PinKey,
        service::{ServiceKey, ServiceValue},
    };
    let sz = |n: usize| n as u32;
    vec![
        (
            maps::SERVICES,
            MapType::Hash,
            sz(size_of::<ServiceKey>()),
            sz(size_of::<ServiceValue>()),
            maps::MAX_SERVICES,
        ),
        (
            maps::BACKENDS,
            MapType::Hash,
            4,
            sz(size_of::<BackendValue>()),
            maps::MAX_BACKENDS,
        ),
        (maps::MAGLEV, MapType::ArrayOfMaps, 4, 4, maps::MAX_GROUPS),
        (
            maps::PINS,
            MapType::LpmTrie,
            4 + sz(size_of::<PinKey>()),
            4,
            maps::MAX_PINS,
        ),
        (
            maps::CONNTRACK,
            MapType::LruHash,
            sz(size_of::<FlowKey>()),
            sz(size_of::<FlowEntry>()),
            conntrack_max,
        ),
        (
            maps::REVNAT,
            MapType::LruHash,
            sz(size_of::<FlowKey>()),
            sz(size_of::<RevNatValue>()),
            conntrack_max,
        ),
        (
            maps::BE_STATS,
            MapType::PerCpuArray,
            4,
            sz(size_of::<BackendCounters>()),
            maps::MAX_BACKENDS,
        ),
        (
            maps::SVC_STATS,
            MapType::PerCpuArray,
            4,
            sz(size_of::<ServiceCounters>()),
            maps::MAX_SERVICES,
        ),
        (maps::REASONS, MapType::PerCpuArray, 4, 8, Reason::COUNT),
        (maps::LAYOUT, MapType::Array, 4, 4, 1),
        (
            maps::TX_PORTS,
            MapType::DevMapHash,
            4,
            8,
            maps::MAX_TX_PORTS,
        ),
    ]
}

/// Checks the maps a daemon pinned under `dir` (running or not) against this build's layout,
/// for a reader that opens them without loading anything (`veer status --offline`); returns the
/// conntrack capacity they were made with.
pub fn check_pinned(dir: &Path) -> Result<u32, DataplaneError> {
    let conntrack = dir.join(maps::CONNTRACK);
    let info = MapInfo::from_pin(&conntrack).map_err(|e| DataplaneError::PinnedMapLayout {
        path: conntrack.clone(),
        expected: "veer's conntrack map".to_owned(),
        found: format!("no readable map ({e})"),
    })?;
    let capacity = info.max_entries();
    check_pinned_layout(dir, capacity)?;
    Ok(capacity)
}

/// Checks every existing pin under `dir` against this build's layout.
fn check_pinned_layout(dir: &Path, conntrack_max: u32) -> Result<(), DataplaneError> {
    for (name, ty, key, value, max) in expected_layout(conntrack_max) {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let mismatch = |found: String| DataplaneError::PinnedMapLayout {
            path: path.clone(),
            expected: format!("{ty:?} key {key} value {value} max_entries {max}"),
            found,
        };
        let info =
            MapInfo::from_pin(&path).map_err(|e| mismatch(format!("no readable map ({e})")))?;
        let found_ty = info
            .map_type()
            .map_err(|e| mismatch(format!("an unknown map type ({e})")))?;
        if found_ty != ty
            || info.key_size() != key
            || info.value_size() != value
            || info.max_entries() != max
        {
            return Err(mismatch(format!(
                "{found_ty:?} key {} value {} max_entries {}",
                info.key_size(),
                info.value_size(),
                info.max_entries()
            )));
        }
    }
    // The layout version itself, when the pins say one.
    let layout = dir.join(maps::LAYOUT);
    if layout.exists() {
        let data =
            aya::maps::MapData::from_pin(&layout).map_err(|e| DataplaneError::PinnedMapLayout {
                path: layout.clone(),
                expected: format!("layout version {LAYOUT_VERSION}"),
                found: format!("no readable map ({e})"),
            })?;
        let arr =
            aya::maps::Array::<_, u32>::try_from(aya::maps::Map::Array(data)).map_err(|e| {
                DataplaneError::MapMissing {
                    name: maps::LAYOUT,
                    source: Some(e),
                }
            })?;
        let found = arr.get(&0, 0).unwrap_or(0);
        if found != 0 && found != LAYOUT_VERSION {
            return Err(DataplaneError::PinnedMapLayout {
                path: layout,
                expected: format!("layout version {LAYOUT_VERSION}"),
                found: format!("layout version {found}"),
            });
        }
    }
    Ok(())
}

/// Makes sure `dir` exists on bpffs, mounting bpffs at `/sys/fs/bpf` when it is missing there
/// (a pin directory elsewhere must already be on bpffs).
fn prepare_pin_dir(dir: &Path) -> Result<(), DataplaneError> {
    let err = |source| DataplaneError::PinDir {
        path: dir.to_owned(),
        source,
    };
    if let Some(mount_point) = dir.parent()
        && !is_bpffs(mount_point)
    {
        // Only where bpffs belongs: mounted over any other directory it would hide what is there.
        if mount_point != Path::new(BPF_MOUNT_POINT) {
            return Err(err(std::io::Error::other(format!(
                "{} is not on a BPF file system: choose a --pin-dir under {BPF_MOUNT_POINT}, or mount one there first (mount -t bpf bpf {})",
                mount_point.display(),
                mount_point.display()
            ))));
        }
        fs::create_dir_all(mount_point).map_err(err)?;
        mount_bpffs(mount_point).map_err(err)?;
    }
    fs::create_dir_all(dir).map_err(err)
}

/// Where bpffs is mounted when missing (and nowhere else).
const BPF_MOUNT_POINT: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;

pub(crate) fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we pass; `c` is a valid C string.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &raw mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

fn mount_bpffs(path: &Path) -> std::io::Result<()> {
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let fstype = c"bpf";
    // SAFETY: all pointers are valid C strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Loads the kernel object: maps (pinned or private) and both programs, verified, not attached.
pub fn load(opts: &LoadOptions) -> Result<Ebpf, DataplaneError> {
    if EBPF_OBJECT.is_empty() {
        return Err(DataplaneError::NoKernelObject);
    }
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::CONNTRACK, opts.conntrack_max)
        .map_max_entries(maps::REVNAT, opts.conntrack_max);
    if let Some(dir) = &opts.pin_dir {
        prepare_pin_dir(dir)?;
        check_pinned_layout(dir, opts.conntrack_max)?;
        for name in maps::ALL {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| DataplaneError::Load {
        source: Box::new(e),
    })?;
    let xdp = xdp_mut(&mut ebpf)?;
    load_retrying(progs::XDP_INGRESS, || xdp.load())?;
    let tc = tc_mut(&mut ebpf)?;
    load_retrying(progs::TC_REPLY, || tc.load())?;
    Ok(ebpf)
}

/// Times `BPF_PROG_LOAD` is tried when the verifier gives up with `EAGAIN`.
const LOAD_ATTEMPTS: u32 = 5;

/// Loads a program, trying again when the kernel answers `EAGAIN`: the verifier stops with it
/// when a signal is pending for the loading thread (a child process exiting, say), and the load
/// is sound to repeat (libbpf retries the same way).
pub fn load_retrying(
    name: &'static str,
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), DataplaneError> {
    let mut attempt = 1;
    loop {
        match load() {
            Ok(()) => return Ok(()),
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < LOAD_ATTEMPTS =>
            {
                tracing::debug!(
                    program = name,
                    attempt,
                    "verifier interrupted (EAGAIN); loading again"
                );
                attempt += 1;
            }
            Err(e) => {
                return Err(DataplaneError::ProgramLoad {
                    name,
                    source: Box::new(e),
                });
            }
        }
    }
}

/// The XDP program of a loaded object.
pub fn xdp_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(progs::XDP_INGRESS)
        .and_then(|p| p.try_into().ok())
        .ok_or(DataplaneError::ProgramMissing {
            name: progs::XDP_INGRESS,
        })
}

/// The TC program of a loaded object.
pub fn tc_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(progs::TC_REPLY)
        .and_then(|p| p.try_into().ok())
        .ok_or(DataplaneError::ProgramMissing {
            name: progs::TC_REPLY,
        })
}

/// Attaches the XDP program to `interface` in `mode`; returns the mode used and the link id.
pub fn attach_xdp(
    ebpf: &mut Ebpf,
    interface: &str,
    mode: XdpAttachMode,
) -> Result<(XdpMode, aya::programs::xdp::XdpLinkId), DataplaneError> {
    let attach_err = |hook: &'static str| {
        let interface = interface.to_owned();
        move |e| DataplaneError::Attach {
            program: progs::XDP_INGRESS,
            interface,
            hook,
            source: Box::new(e),
        }
    };
    let xdp = xdp_mut(ebpf)?;
    match mode {
        XdpAttachMode::Native => Ok((
            XdpMode::Driver,
            xdp.attach(interface, XdpMode::Driver)
                .map_err(attach_err("xdp native"))?,
        )),
        XdpAttachMode::Generic => Ok((
            XdpMode::Skb,
            xdp.attach(interface, XdpMode::Skb)
                .map_err(attach_err("xdp generic"))?,
        )),
        XdpAttachMode::Auto => match xdp.attach(interface, XdpMode::Driver) {
            Ok(id) => Ok((XdpMode::Driver, id)),
            Err(native) => {
                tracing::warn!(interface, error = %native, "native XDP unavailable, falling back to generic");
                Ok((
                    XdpMode::Skb,
                    xdp.attach(interface, XdpMode::Skb)
                        .map_err(attach_err("xdp generic"))?,
                ))
            }
        },
    }
}

/// Attaches both programs to `interface` (a name in the caller's network namespace): XDP on
/// ingress, TC on ingress (replies of remote backends) and egress (replies of local backends).
/// The links live as long as `ebpf` (see `links` for pinned ones). Returns the XDP mode used.
pub fn attach(
    ebpf: &mut Ebpf,
    interface: &str,
    mode: XdpAttachMode,
) -> Result<XdpMode, DataplaneError> {
    let (used, _) = attach_xdp(ebpf, interface, mode)?;
    // clsact is needed only where tcx is not (kernels before 6.6); one that exists already is
    // fine, and a real failure shows up as an attach error just below.
    if let Err(e) = tc::qdisc_add_clsact(interface) {
        tracing::debug!(interface, error = %e, "clsact qdisc not added");
    }
    let tc = tc_mut(ebpf)?;
    for (attach_type, hook) in [
        (TcAttachType::Ingress, "tc ingress"),
        (TcAttachType::Egress, "tc egress"),
    ] {
        tc.attach(interface, attach_type)
            .map_err(|e| DataplaneError::Attach {
                program: progs::TC_REPLY,
                interface: interface.to_owned(),
                hook,
                source: Box::new(e),
            })?;
    }
    Ok(used)
}

/// The capacity (`max_entries`) of the map pinned as `name` under `dir`, when there is one: the
/// size a restarted daemon runs with when no config file says otherwise.
pub fn pinned_capacity(dir: &Path, name: &str) -> Option<u32> {
    let path = dir.join(name);
    if !path.exists() {
        return None;
    }
    MapInfo::from_pin(&path).ok().map(|i| i.max_entries())
}

//! Loading veer's kernel object and attaching its programs.
//!
//! With a pin directory, every map is pinned (or, when already pinned, reused) by name under it,
//! after the existing pins' layouts are checked against this build (`common::specs::SPECS`): aya
//! reuses a pinned map without looking at its shape, so a changed layout would otherwise be used
//! silently. Pins of an older layout are migrated first (`migrate`), never reset.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapInfo, MapType},
    programs::{CgroupSock, CgroupSockAddr, SchedClassifier, Xdp},
};
use veer_common::{
    maps::{self, LAYOUT_VERSION, progs},
    specs::{Capacity, MapKind, MapSpec, SPECS},
};

use super::DataplaneError;
use crate::EBPF_OBJECT;

/// How the kernel object is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Pin (or adopt) maps under this directory; `None` for private maps (tests, tools).
    pub pin_dir: Option<PathBuf>,
    /// Capacity of `VEER_FLOWS`, the confirmed flows (entries).
    pub conntrack_max: u32,
    /// Capacity of `VEER_NEWFLOWS`, the handshakes, mid-flow misses and UDP flows (entries).
    pub conntrack_new_max: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_dir: None,
            conntrack_max: maps::DEFAULT_CONNTRACK_MAX,
            conntrack_new_max: maps::DEFAULT_NEWFLOWS_MAX,
        }
    }
}

impl LoadOptions {
    /// The entries a map of `capacity` holds with these options.
    pub fn entries(&self, capacity: Capacity) -> u32 {
        match capacity {
            Capacity::Fixed(n) => n,
            Capacity::Flows => self.conntrack_max,
            Capacity::NewFlows => self.conntrack_new_max,
        }
    }
}

/// aya's name for a map kind.
pub fn map_type(kind: MapKind) -> MapType {
    match kind {
        MapKind::Hash => MapType::Hash,
        MapKind::LruHash => MapType::LruHash,
        MapKind::Array => MapType::Array,
        MapKind::PerCpuArray => MapType::PerCpuArray,
        MapKind::ArrayOfMaps => MapType::ArrayOfMaps,
        MapKind::LpmTrie => MapType::LpmTrie,
        MapKind::DevMapHash => MapType::DevMapHash,
    }
}

/// The `[node]` key that sets a capacity, if one does.
fn capacity_key(capacity: Capacity) -> Option<&'static str> {
    match capacity {
        Capacity::Fixed(_) => None,
        Capacity::Flows => Some("conntrack_max"),
        Capacity::NewFlows => Some("conntrack_new_max"),
    }
}

/// Checks the pin of one map against its spec.
fn check_pin(path: &Path, spec: &MapSpec, opts: &LoadOptions) -> Result<(), DataplaneError> {
    let (ty, max) = (map_type(spec.kind), opts.entries(spec.capacity));
    let mismatch = |found: String| DataplaneError::PinnedMapLayout {
        path: path.to_owned(),
        expected: format!(
            "{ty:?} key {} value {} max_entries {max}",
            spec.key_size, spec.value_size
        ),
        found,
    };
    let info = MapInfo::from_pin(path).map_err(|e| mismatch(format!("no readable map ({e})")))?;
    let found_ty = info
        .map_type()
        .map_err(|e| mismatch(format!("an unknown map type ({e})")))?;
    if found_ty != ty || info.key_size() != spec.key_size || info.value_size() != spec.value_size {
        return Err(mismatch(format!(
            "{found_ty:?} key {} value {} max_entries {}",
            info.key_size(),
            info.value_size(),
            info.max_entries()
        )));
    }
    if info.max_entries() != max {
        return Err(match capacity_key(spec.capacity) {
            Some(key) => DataplaneError::PinnedCapacity {
                path: path.to_owned(),
                key,
                pinned: info.max_entries(),
                configured: max,
            },
            None => mismatch(format!("max_entries {}", info.max_entries())),
        });
    }
    Ok(())
}

/// Checks the maps a daemon pinned under `dir` (running or not) against this build's layout,
/// for a reader that opens them without loading anything (`veer status --offline`); returns the
/// capacities they were made with.
pub fn check_pinned(dir: &Path) -> Result<LoadOptions, DataplaneError> {
    let capacity = |name: &str| {
        let path = dir.join(name);
        MapInfo::from_pin(&path)
            .map(|i| i.max_entries())
            .map_err(|e| DataplaneError::PinnedMapLayout {
                path: path.clone(),
                expected: format!("veer's {name} map"),
                found: format!("no readable map ({e})"),
            })
    };
    let opts = LoadOptions {
        pin_dir: Some(dir.to_owned()),
        conntrack_max: capacity(maps::FLOWS)?,
        conntrack_new_max: capacity(maps::NEWFLOWS)?,
    };
    check_pinned_layout(dir, &opts)?;
    Ok(opts)
}

/// The `LAYOUT_VERSION` recorded in the pins under `dir` (0 when there is none).
pub(super) fn pinned_layout_version(dir: &Path) -> Result<u32, DataplaneError> {
    let layout = dir.join(maps::LAYOUT);
    if !layout.exists() {
        return Ok(0);
    }
    let unreadable = |e: &dyn std::fmt::Display| DataplaneError::PinnedMapLayout {
        path: layout.clone(),
        expected: format!("layout version {LAYOUT_VERSION}"),
        found: format!("no readable map ({e})"),
    };
    let data = aya::maps::MapData::from_pin(&layout).map_err(|e| unreadable(&e))?;
    let arr = aya::maps::Array::<_, u32>::try_from(aya::maps::Map::Array(data))
        .map_err(|e| unreadable(&e))?;
    Ok(arr.get(&0, 0).unwrap_or(0))
}

/// Checks every existing pin under `dir` against this build's layout. Pins of an older layout
/// must have been set aside by `migrate::prepare` already.
fn check_pinned_layout(dir: &Path, opts: &LoadOptions) -> Result<(), DataplaneError> {
    for spec in &SPECS {
        let path = dir.join(spec.name);
        if path.exists() {
            check_pin(&path, spec, opts)?;
        }
    }
    let found = pinned_layout_version(dir)?;
    if found > LAYOUT_VERSION {
        return Err(DataplaneError::PinnedLayoutNewer {
            path: dir.join(maps::LAYOUT),
            found,
        });
    }
    Ok(())
}

/// Makes sure `dir` exists on bpffs, mounting bpffs at `/sys/fs/bpf` when it is missing there
/// (a pin directory elsewhere must already be on bpffs).
pub(super) fn prepare_pin_dir(dir: &Path) -> Result<(), DataplaneError> {
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

/// Loads the kernel object: maps (pinned or private) and every program, verified, not attached.
/// Its socket hooks are inert (bound to no network namespace): tools and program tests.
pub fn load(opts: &LoadOptions) -> Result<Ebpf, DataplaneError> {
    load_in_netns(opts, 0)
}

/// Like `load`, with the socket hooks bound to the network namespace whose cookie is
/// `netns_cookie` (see `sockets::netns_cookie`; 0 leaves them inert).
pub fn load_in_netns(opts: &LoadOptions, netns_cookie: u64) -> Result<Ebpf, DataplaneError> {
    if EBPF_OBJECT.is_empty() {
        return Err(DataplaneError::NoKernelObject);
    }
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::FLOWS, opts.conntrack_max)
        .map_max_entries(maps::NEWFLOWS, opts.conntrack_new_max)
        .override_global(maps::NETNS_COOKIE_GLOBAL, &netns_cookie, true);
    if let Some(dir) = &opts.pin_dir {
        prepare_pin_dir(dir)?;
        check_pinned_layout(dir, opts)?;
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
    let steer = tc_steer_mut(&mut ebpf)?;
    load_retrying(progs::TC_STEER, || steer.load())?;
    for name in progs::SOCK {
        if name == progs::SOCK_RELEASE {
            let p: &mut CgroupSock = program_mut(&mut ebpf, name)?;
            load_retrying(name, || p.load())?;
        } else {
            let p: &mut CgroupSockAddr = program_mut(&mut ebpf, name)?;
            load_retrying(name, || p.load())?;
        }
    }
    Ok(ebpf)
}

/// A program of a loaded object, of type `P`.
pub fn program_mut<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut P, DataplaneError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(DataplaneError::ProgramMissing { name })
}

/// Times `BPF_PROG_LOAD` is tried when the verifier gives up with `EAGAIN`.
const LOAD_ATTEMPTS: u32 = 5;

/// Blocks every signal for the calling thread until dropped, then restores its mask. While a
/// thread blocks a signal, the kernel delivers a signal sent to the whole process (SIGCHLD of a
/// child that exited, say) to another thread, and one sent to this thread waits: either way no
/// signal is pending for it, so the verifier is not interrupted.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: sigfillset and pthread_sigmask write only the sets given; a zeroed sigset_t is
        // a valid value to start from.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&raw mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &raw const all, &raw mut old);
            Self(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &raw const self.0, std::ptr::null_mut());
        }
    }
}

/// Loads a program with every signal blocked for the loading thread, trying again when the
/// kernel still answers `EAGAIN`: the verifier stops with it when a signal is pending for the
/// loading thread, and the load is sound to repeat (libbpf retries the same way). A process
/// that spawns children (a test harness, the daemon's health checks) otherwise sees it often on
/// a busy machine, where verifying a program takes long.
pub fn load_retrying(
    name: &'static str,
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), DataplaneError> {
    let mut attempt = 1;
    loop {
        let loaded = {
            let _blocked = SignalsBlocked::new();
            load()
        };
        match loaded {
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
    program_mut(ebpf, progs::XDP_INGRESS)
}

/// The TC reply program of a loaded object.
pub fn tc_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    program_mut(ebpf, progs::TC_REPLY)
}

/// The TC steering program of a loaded object.
pub fn tc_steer_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    program_mut(ebpf, progs::TC_STEER)
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

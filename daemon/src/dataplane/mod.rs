//! The kernel side as user space sees it: loading and attaching the programs (`loader`), typed
//! access to their maps (`maps`), the pure Maglev builder (`maglev`), making the maps match a
//! desired state (`sync`), and `Dataplane`, which owns all of it.

pub mod loader;
pub mod maglev;
pub mod maps;
pub mod sync;

use std::{collections::HashMap, path::PathBuf, time::Instant};

use aya::{Ebpf, programs::XdpMode};

use crate::model::DesiredState;

/// A loaded kernel object, its maps, and the state applied to them.
pub struct Dataplane {
    // Owns the programs and their links: dropping it detaches unpinned links.
    ebpf: Ebpf,
    maps: maps::Maps,
    applied: sync::Applied,
}

impl Dataplane {
    /// Loads the programs and maps (see `loader::load`).
    pub fn load(opts: &loader::LoadOptions) -> Result<Self, DataplaneError> {
        let mut ebpf = loader::load(opts)?;
        let mut maps = maps::Maps::take(&mut ebpf)?;
        maps.write_layout_version()?;
        Ok(Self {
            ebpf,
            maps,
            applied: sync::Applied::default(),
        })
    }

    /// Attaches the programs to `interface` (in the calling thread's network namespace).
    pub fn attach(
        &mut self,
        interface: &str,
        mode: loader::XdpAttachMode,
    ) -> Result<XdpMode, DataplaneError> {
        loader::attach(&mut self.ebpf, interface, mode)
    }

    /// Makes the maps match `desired` without touching established flows. Returns the number of
    /// map operations it took (0: nothing changed).
    pub fn apply(&mut self, desired: &DesiredState) -> Result<usize, sync::SyncError> {
        let (next, ops) = sync::apply(&mut self.maps, &self.applied, desired, Instant::now())?;
        self.applied = next;
        Ok(ops)
    }

    /// The state in force and its ids.
    pub fn applied(&self) -> &sync::Applied {
        &self.applied
    }

    /// The maps.
    pub fn maps(&self) -> &maps::Maps {
        &self.maps
    }

    /// The maps, writable.
    pub fn maps_mut(&mut self) -> &mut maps::Maps {
        &mut self.maps
    }

    /// Conntrack entries per backend id, from one scan of the conntrack map.
    pub fn active_flows(&self) -> Result<HashMap<u32, u64>, DataplaneError> {
        let mut out = HashMap::new();
        for (_, entry) in self.maps.flows()? {
            *out.entry(entry.backend_id).or_default() += 1;
        }
        Ok(out)
    }
}

/// What went wrong talking to the kernel side.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The embedded kernel object is empty: the crate was built with `AYA_BUILD_SKIP=1`.
    #[error(
        "this veer binary was built without its kernel programs (AYA_BUILD_SKIP); rebuild it with `cargo xtask build`"
    )]
    NoKernelObject,
    /// `EbpfLoader::load` failed (verifier, map creation, pinned map reuse ...).
    #[error("loading veer's kernel object failed")]
    Load {
        /// The loader's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A program is missing from the object or has another type.
    #[error("program `{name}` is missing from the kernel object or has the wrong type")]
    ProgramMissing {
        /// Program name.
        name: &'static str,
    },
    /// Loading a program into the kernel failed (usually the verifier).
    #[error("the kernel refused program `{name}`")]
    ProgramLoad {
        /// Program name.
        name: &'static str,
        /// The kernel's answer, with the verifier log.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// Attaching a program to an interface failed.
    #[error("attaching `{program}` to interface `{interface}` ({hook}) failed")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Interface name.
        interface: String,
        /// Which hook (`xdp native`, `xdp generic`, `tc ingress`, `tc egress`).
        hook: &'static str,
        /// The kernel's answer.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map is missing from the object or has another type.
    #[error("map `{name}` is missing from the kernel object or has an unexpected type")]
    MapMissing {
        /// Map name.
        name: &'static str,
        /// Why the conversion failed, if it did.
        #[source]
        source: Option<aya::maps::MapError>,
    },
    /// A map operation failed.
    #[error("{op} on map `{map}` failed")]
    Map {
        /// What was being done (`update`, `delete`, `lookup`, `create inner table`).
        op: &'static str,
        /// Map name.
        map: &'static str,
        /// The kernel's answer.
        #[source]
        source: aya::maps::MapError,
    },
    /// A pinned map exists with a layout that does not match this build.
    #[error(
        "pinned map {path} has {found}, this build of veer expects {expected}; \
         run `veer teardown` to remove the old pins (this drops established flows) \
         or run the veer version that created them"
    )]
    PinnedMapLayout {
        /// Pin path.
        path: PathBuf,
        /// What this build expects.
        expected: String,
        /// What the pin has.
        found: String,
    },
    /// Preparing the pin directory (mounting bpffs, creating the directory) failed.
    #[error("preparing the pin directory {path} failed")]
    PinDir {
        /// Directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

//! The kernel side as user space sees it: loading and attaching the programs (`loader`), typed
//! access to their maps (`maps`), the pure Maglev builder (`maglev`), making the maps match a
//! desired state (`sync`), and `Dataplane`, which owns all of it.

pub mod batch;
pub mod flows;
pub mod links;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod sync;

use std::{collections::HashMap, path::PathBuf, time::Instant};

use aya::{Ebpf, programs::XdpMode};

use crate::model::{DesiredState, Down, Ids, XdpAttachMode};

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

    /// Attaches to `interface` with links pinned under `links_dir`, or adopts the links already
    /// pinned there (swapping this build's programs onto them atomically).
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        mode: XdpAttachMode,
        links_dir: &std::path::Path,
    ) -> Result<links::Attached, DataplaneError> {
        let attached = links::attach_pinned(&mut self.ebpf, interface, mode, links_dir)?;
        self.maps.add_tx_port(ifindex(interface)?)?;
        Ok(attached)
    }

    /// Makes maps of unknown content (adopted pins) hold exactly `desired` with `ids`: writes
    /// every backend, table, service and pin, then removes services, pins and backends the state
    /// does not name. Established flows are untouched; counters are kept.
    pub fn reconcile(
        &mut self,
        desired: &DesiredState,
        ids: Ids,
        down: &Down,
    ) -> Result<usize, sync::SyncError> {
        let plan = sync::reconcile_plan(desired, ids, down, Instant::now())?;
        let mut stale = Vec::new();
        let listing = |what: &str| {
            let op = format!("listing {what}");
            move |e: DataplaneError| sync::SyncError::Apply {
                op,
                source: Box::new(e),
                retire: Vec::new(),
            }
        };
        let keys: std::collections::HashSet<_> = desired
            .services
            .iter()
            .map(|s| sync::key_bytes(&sync::service_key(s)))
            .collect();
        for (key, _) in self.maps.services().map_err(listing("services"))? {
            if !keys.contains(&sync::key_bytes(&key)) {
                stale.push(sync::Op::RemoveService { key });
            }
        }
        let pins = sync::pins(desired, &plan.next.ids);
        for (service, prefix, len) in self.maps.pins().map_err(listing("pins"))? {
            if !pins.contains_key(&(service, prefix, len)) {
                stale.push(sync::Op::RemovePin {
                    service,
                    prefix,
                    len,
                });
            }
        }
        let backends: std::collections::HashSet<u32> =
            plan.next.ids.backends.values().copied().collect();
        for id in self.maps.backend_ids().map_err(listing("backends"))? {
            if !backends.contains(&id) {
                stale.push(sync::Op::RemoveBackend { id });
            }
        }
        // Write what the state names first, then remove what it does not (services before the
        // backends their tables named).
        for op in plan.ops.iter().chain(&stale) {
            sync::run(&mut self.maps, op).map_err(|e| sync::SyncError::Apply {
                op: format!("{op:?}"),
                source: Box::new(e),
                retire: Vec::new(),
            })?;
        }
        self.applied = plan.next;
        Ok(plan.ops.len() + stale.len())
    }

    /// Attaches the programs to `interface` (in the calling thread's network namespace).
    pub fn attach(
        &mut self,
        interface: &str,
        mode: XdpAttachMode,
    ) -> Result<XdpMode, DataplaneError> {
        let used = loader::attach(&mut self.ebpf, interface, mode)?;
        self.maps.add_tx_port(ifindex(interface)?)?;
        Ok(used)
    }

    /// Makes the maps match `desired` without touching established flows. Returns the number of
    /// map operations it took (0: nothing changed).
    pub fn apply(&mut self, desired: &DesiredState, down: &Down) -> Result<usize, sync::SyncError> {
        let now = Instant::now();
        match sync::apply(&mut self.maps, &self.applied, desired, down, now) {
            Ok((next, ops)) => {
                self.applied = next;
                Ok(ops)
            }
            Err(e) => {
                // Backend ids the failed apply wrote leave after the grace period, like any.
                if let sync::SyncError::Apply { retire, .. } = &e {
                    self.applied
                        .retiring
                        .extend(retire.iter().map(|id| (*id, now)));
                }
                Err(e)
            }
        }
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

    /// Active flows (SYN, established or UDP: not closing) per backend id, from one scan of the
    /// conntrack map.
    pub fn active_flows(&self) -> Result<HashMap<u32, u64>, DataplaneError> {
        Ok(flows::census(&self.maps)?.0)
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
    /// Opening or converting a pinned link failed.
    #[error("pinned link of interface `{interface}` ({hook}) cannot be used")]
    Link {
        /// Interface.
        interface: String,
        /// Hook.
        hook: &'static str,
        /// Why.
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    /// Pinning a link failed.
    #[error("pinning the link of interface `{interface}` ({hook}) failed")]
    LinkPin {
        /// Interface.
        interface: String,
        /// Hook.
        hook: &'static str,
        /// Why.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// Registering an interface as a redirect target failed.
    #[error("adding interface {ifindex} to `VEER_TX_PORTS` failed")]
    TxPort {
        /// Interface index.
        ifindex: u32,
        /// Why.
        #[source]
        source: Box<aya::maps::xdp::XdpMapError>,
    },
    /// No interface of that name in the daemon's network namespace.
    #[error("no interface `{name}` on this node (check `interfaces` in the config)")]
    UnknownInterface {
        /// Name.
        name: String,
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

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32, DataplaneError> {
    let unknown = || DataplaneError::UnknownInterface {
        name: name.to_owned(),
    };
    let c = std::ffi::CString::new(name).map_err(|_| unknown())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(unknown()),
        i => Ok(i),
    }
}

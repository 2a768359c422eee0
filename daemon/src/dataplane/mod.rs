//! The kernel side as user space sees it: loading and attaching the programs (`loader`), typed
//! access to their maps (`maps`), the pure Maglev builder (`maglev`), making the maps match a
//! desired state (`sync`, `vips`), conntrack upkeep (`flows`), carrying pinned maps of an older
//! layout over (`migrate`), and `Dataplane`, which owns all of it.

pub mod batch;
pub mod flows;
pub mod links;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod migrate;
pub mod sync;
pub mod vips;

use std::{collections::HashMap, path::PathBuf, time::Instant};

use aya::{Ebpf, programs::XdpMode};

use crate::model::{DesiredState, Down, Ids, XdpAttachMode};

/// A loaded kernel object, its maps, and the state applied to them.
pub struct Dataplane {
    // Owns the programs and their links: dropping it detaches unpinned links.
    ebpf: Ebpf,
    maps: maps::Maps,
    applied: sync::Applied,
    /// Pinned maps of an older layout being carried over (until `finish_migration`).
    legacy: Option<migrate::Legacy>,
    /// The VIPs live flows needed at the previous upkeep pass (a VIP is dropped from a
    /// backend only when two passes in a row found no flow needing it).
    live_vips: flows::LiveVips,
}

impl Dataplane {
    /// Loads the programs and maps (see `loader::load`). Pinned maps of an older layout are
    /// migrated: their flows and counters are copied into this layout's maps now, and again,
    /// for what the old programs did meanwhile, by `finish_migration` once the programs are
    /// swapped on the links.
    pub fn load(opts: &loader::LoadOptions) -> Result<Self, DataplaneError> {
        let legacy = match &opts.pin_dir {
            Some(dir) => {
                loader::prepare_pin_dir(dir)?;
                migrate::prepare(dir)?
            }
            None => None,
        };
        let mut ebpf = loader::load(opts)?;
        let mut maps = maps::Maps::take(&mut ebpf)?;
        if let Some(legacy) = &legacy {
            let copied = migrate::copy(legacy, &mut maps)?;
            tracing::info!(
                from = legacy.version(),
                to = veer_common::maps::LAYOUT_VERSION,
                confirmed = copied.flows,
                new = copied.new_flows,
                skipped = copied.skipped,
                "pinned maps of an older layout: flows and counters copied into this layout's maps"
            );
        }
        maps.write_layout_version()?;
        Ok(Self {
            ebpf,
            maps,
            applied: sync::Applied::default(),
            legacy,
            live_vips: flows::LiveVips::default(),
        })
    }

    /// Ends a migration started by `load`, once this build's programs run on every link: copies
    /// the flows the old programs created or confirmed since `load`, then removes the old pins.
    /// Nothing to do when no migration is pending.
    pub fn finish_migration(&mut self) -> Result<(), DataplaneError> {
        if let Some(legacy) = self.legacy.take() {
            let copied = migrate::finish(legacy, &mut self.maps)?;
            tracing::info!(
                confirmed = copied.flows,
                new = copied.new_flows,
                "migration finished: the old pins are removed"
            );
        }
        Ok(())
    }

    /// One conntrack upkeep pass (`flows::upkeep`), then the backends' VIPs pruned to what the
    /// desired state and the live flows need.
    pub fn upkeep(
        &mut self,
        timeouts: &crate::model::Timeouts,
        now: u32,
    ) -> Result<flows::Upkeep, DataplaneError> {
        let u = flows::upkeep(&mut self.maps, timeouts, now)?;
        let desired = vips::desired(&self.applied.state, &self.applied.ids);
        for (key, _) in self.maps.backend_vips()? {
            let live = |v: &veer_common::flow::RevNatValue| {
                [&u.live_vips, &self.live_vips]
                    .iter()
                    .any(|l| l.get(&key).is_some_and(|s| s.contains(&(v.vip, v.port))))
            };
            let want = desired.get(&key).map_or(&[][..], Vec::as_slice);
            self.maps.merge_backend_vips(key, want, live)?;
        }
        self.live_vips.clone_from(&u.live_vips);
        Ok(u)
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
        let (next, ops) =
            sync::apply(&mut self.maps, &self.applied, desired, down, Instant::now())?;
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

    /// Active flows (anything not closing) per backend id, from one scan of both flow tables.
    pub fn active_flows(&self) -> Result<HashMap<u32, u64>, DataplaneError> {
        Ok(flows::census(&self.maps)?.active)
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
    /// A pinned map exists with a layout that does not match this build and that veer cannot
    /// carry over.
    #[error(
        "pinned map {path} has {found}, this build of veer expects {expected}; veer leaves \
         pinned state it cannot carry over untouched: run the veer version that created these \
         pins (removing them with `veer teardown` drops every established flow)"
    )]
    PinnedMapLayout {
        /// Pin path.
        path: PathBuf,
        /// What this build expects.
        expected: String,
        /// What the pin has.
        found: String,
    },
    /// A pinned flow table holds another number of entries than the config asks for.
    #[error(
        "pinned map {path} holds {pinned} entries and the config asks for {configured} \
         (`{key}` in [node]); set `{key} = {pinned}` to run on the pinned maps with every \
         established flow (a new size takes a `veer teardown`, which drops them all)"
    )]
    PinnedCapacity {
        /// Pin path.
        path: PathBuf,
        /// The `[node]` key.
        key: &'static str,
        /// Entries of the pinned map.
        pinned: u32,
        /// Entries the config asks for.
        configured: u32,
    },
    /// The pins were made by a newer veer.
    #[error(
        "the pins next to {path} have layout version {found}, newer than this build's \
         ({}); run that veer version or a newer one",
        veer_common::maps::LAYOUT_VERSION
    )]
    PinnedLayoutNewer {
        /// The layout pin.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// Setting aside, opening or removing a pin of an older layout failed.
    #[error("migrating the pinned maps: {op} {path} failed")]
    MigrationPin {
        /// What was being done (`set aside`, `open`, `remove`).
        op: &'static str,
        /// The pin.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
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

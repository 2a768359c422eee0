//! The kernel side as user space sees it: loading the programs (`loader`), choosing each
//! interface's hook from what the kernel reports (`netlink`, `ifaces`) and attaching it
//! (`links`), the socket hooks for clients on the node (`sockets`), the node settings the data
//! path needs (`node`), typed access to the maps (`maps`), the pure Maglev builder (`maglev`),
//! making the maps match a desired state (`sync`, `vips`), conntrack upkeep (`flows`), carrying
//! pinned maps of an older layout over (`migrate`), and `Dataplane`, which owns all of it.

pub mod batch;
pub mod ending;
pub mod flows;
pub mod ifaces;
pub mod links;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod migrate;
pub mod netlink;
pub mod nexthop;
pub mod node;
pub mod sockets;
pub mod sync;
pub mod vips;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use aya::Ebpf;
use veer_common::flow::FlowKey;

use crate::model::{DesiredState, Down, HookChoice, Ids, XdpAttachMode};

/// One interface veer is attached to, as `veer status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceReport {
    /// The interface's name.
    pub name: String,
    /// Interface index now (0: the interface is gone).
    pub ifindex: u32,
    /// Link kind (`veth`, `bridge`, `physical (pci)` ...).
    pub kind: String,
    /// `xdp` or `tc`.
    pub hook: String,
    /// `native`, `generic`, `tcx` or `clsact`.
    pub mode: String,
    /// Why this hook.
    pub why: String,
    /// Whether `veer_xdp` redirects into it (`VEER_TX_PORTS`).
    pub xdp_redirect_target: bool,
    /// Why (or why not).
    pub xdp_redirect_why: String,
}

/// The kernel side's own account of itself: interfaces, node settings, local clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataplaneReport {
    /// Every interface veer is attached to.
    pub interfaces: Vec<InterfaceReport>,
    /// The node settings the data path depends on, as last checked.
    pub node_settings: Vec<node::Setting>,
    /// Clients on the node (the socket hooks).
    pub local_clients: sockets::LocalClients,
}

/// An interface veer attached to, and how to attach it again.
struct Attachment {
    name: String,
    index: u32,
    kind: String,
    hook: ifaces::Hook,
    why: String,
    xdp_mode: XdpAttachMode,
    choice: HookChoice,
    links_dir: Option<PathBuf>,
    redirect: (bool, String),
}

/// A loaded kernel object, its maps, and the state applied to them.
pub struct Dataplane {
    // Owns the programs and their links: dropping it detaches unpinned links.
    ebpf: Ebpf,
    maps: maps::Maps,
    sock_maps: sockets::SockMaps,
    applied: sync::Applied,
    attachments: Vec<Attachment>,
    local_clients: sockets::LocalClients,
    node_settings: Vec<node::Setting>,
    netns_cookie: u64,
    /// Pinned maps of an older layout being carried over (until `finish_migration`).
    legacy: Option<migrate::Legacy>,
    /// The VIPs live flows needed at the previous upkeep pass (a VIP is dropped from a
    /// backend only when two passes in a row found no flow needing it).
    live_vips: flows::LiveVips,
    /// Raw sockets that end flows for paced drains, opened at the first use.
    ender: Option<ending::Ender>,
    /// Keeps the next-hop cache's clock (`None`: the cache is off).
    nexthop: Option<nexthop::NextHopKeeper>,
}

impl Dataplane {
    /// Loads the programs and maps (see `loader::load`), binding the socket hooks to the calling
    /// thread's network namespace. Pinned maps of an older layout are migrated: their flows and
    /// counters are copied into this layout's maps now, and again, for what the old programs did
    /// meanwhile, by `finish_migration` once the programs are swapped on the links.
    pub fn load(opts: &loader::LoadOptions) -> Result<Self, DataplaneError> {
        let netns_cookie = sockets::netns_cookie().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read this network namespace's cookie; clients on the node will not be steered");
            0
        });
        let legacy = match &opts.pin_dir {
            Some(dir) => {
                loader::prepare_pin_dir(dir)?;
                migrate::prepare(dir)?
            }
            None => None,
        };
        let mut ebpf = loader::load_in_netns(opts, netns_cookie)?;
        let mut maps = maps::Maps::take(&mut ebpf)?;
        let sock_maps = sockets::SockMaps::take(&mut ebpf)?;
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
        let nexthop = start_nexthop_keeper(&mut ebpf)?;
        Ok(Self {
            ebpf,
            maps,
            sock_maps,
            applied: sync::Applied::default(),
            attachments: Vec::new(),
            local_clients: sockets::LocalClients::default(),
            node_settings: Vec::new(),
            netns_cookie,
            legacy,
            live_vips: flows::LiveVips::default(),
            ender: None,
            nexthop,
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
    /// desired state and the live flows need, then the socket flows of unconnected UDP sockets
    /// idle longer than the `udp` timeout expired (`sockets::SockMaps::expire`).
    pub fn upkeep(
        &mut self,
        timeouts: &crate::model::Timeouts,
        now: u32,
    ) -> Result<flows::Upkeep, DataplaneError> {
        let mut u = flows::upkeep(&mut self.maps, timeouts, now)?;
        let udp_ns = timeouts.udp.as_nanos().try_into().unwrap_or(u64::MAX);
        u.socket_flows_expired = self.sock_maps.expire(udp_ns, flows::monotonic_ns())?;
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

    /// Attaches to `interface` with the hook the kernel's report of it calls for (see
    /// `ifaces::decide`; `choice` overrides it), in the calling thread's network namespace.
    /// With `links_dir`, links are pinned there, or adopted when already pinned (this build's
    /// programs swapped onto them atomically); without, they live as long as the dataplane.
    pub fn attach_interface(
        &mut self,
        interface: &str,
        xdp_mode: XdpAttachMode,
        choice: HookChoice,
        links_dir: Option<&Path>,
    ) -> Result<InterfaceReport, DataplaneError> {
        let (links, features) = kernel_links()?;
        let link = links.iter().find(|l| l.name == interface).ok_or_else(|| {
            DataplaneError::UnknownInterface {
                name: interface.to_owned(),
            }
        })?;
        let decision = ifaces::decide(
            link,
            features.as_ref().and_then(|f| f.get(&link.index).copied()),
            xdp_mode,
            choice,
        )
        .map_err(|source| DataplaneError::Interface { source })?;
        let attached = links::attach(&mut self.ebpf, interface, &decision, links_dir)?;
        let why = match &attached.fallback {
            Some(f) => format!("{}; {f}", decision.why),
            None => decision.why.clone(),
        };
        tracing::info!(
            interface,
            hook = attached.hook.name(),
            mode = attached.hook.mode(),
            adopted = attached.adopted,
            why = %why,
            "attached"
        );
        self.attachments.retain(|a| a.name != interface);
        self.attachments.push(Attachment {
            name: interface.to_owned(),
            index: link.index,
            kind: ifaces::kind_name(link),
            hook: attached.hook,
            why,
            xdp_mode,
            choice,
            links_dir: links_dir.map(Path::to_owned),
            redirect: (false, String::new()),
        });
        self.refresh_redirect_targets(&links, features.as_ref())?;
        self.report_of(interface)
    }

    /// Attaches the socket hooks for clients on the node (see `sockets`), pinned under
    /// `links_dir` or owned by the dataplane.
    pub fn attach_local_clients(
        &mut self,
        links_dir: Option<&Path>,
    ) -> Result<&sockets::LocalClients, DataplaneError> {
        self.local_clients = sockets::attach(&mut self.ebpf, links_dir, self.netns_cookie)?;
        if self.local_clients.steered {
            tracing::info!(why = %self.local_clients.why, "clients on the node are steered");
        } else {
            tracing::warn!(why = %self.local_clients.why, "clients on the node are not steered");
        }
        Ok(&self.local_clients)
    }

    /// Looks at every attached interface again after a link event: an interface that was
    /// deleted and created again (a container restarted) is attached again, and the redirect
    /// targets of `veer_xdp` follow what each interface can take now (a veth's peer toggling GRO
    /// or XDP changes it). Returns whether anything changed.
    pub fn refresh_interfaces(&mut self) -> Result<bool, DataplaneError> {
        let (links, features) = kernel_links()?;
        let mut changed = false;
        let mut again = Vec::new();
        for a in &mut self.attachments {
            match links.iter().find(|l| l.name == a.name) {
                Some(l) if l.index != a.index => again.push(a.name.clone()),
                None if a.index != 0 => {
                    tracing::warn!(interface = %a.name, "attached interface is gone; veer attaches again when it comes back");
                    a.index = 0;
                    changed = true;
                }
                _ => {}
            }
        }
        for name in again {
            let Some(a) = self.attachments.iter().find(|a| a.name == name) else {
                continue;
            };
            let (mode, choice, dir) = (a.xdp_mode, a.choice, a.links_dir.clone());
            tracing::info!(interface = %name, "interface created again; attaching again");
            if let Some(dir) = &dir {
                links::detach_interface(dir, &name);
            }
            self.attach_interface(&name, mode, choice, dir.as_deref())?;
            changed = true;
        }
        changed |= self.refresh_redirect_targets(&links, features.as_ref())?;
        Ok(changed)
    }

    /// Puts exactly the attached interfaces that can take a redirected XDP frame in
    /// `VEER_TX_PORTS`. Returns whether any changed.
    fn refresh_redirect_targets(
        &mut self,
        links: &[netlink::Link],
        features: Option<&HashMap<u32, u64>>,
    ) -> Result<bool, DataplaneError> {
        let mut changed = false;
        for a in &mut self.attachments {
            let Some(link) = links
                .iter()
                .find(|l| l.name == a.name && l.index == a.index)
            else {
                continue;
            };
            let (ok, why) = ifaces::takes_xdp_frames(
                features.and_then(|f| f.get(&link.index).copied()),
                a.hook,
            );
            if ok == a.redirect.0 && why == a.redirect.1 {
                continue;
            }
            if ok {
                self.maps.add_tx_port(link.index)?;
            } else {
                // Not a target already is what is wanted (`remove_tx_port` takes it so).
                self.maps.remove_tx_port(link.index)?;
            }
            tracing::info!(interface = %a.name, redirect_target = ok, why = %why, "XDP redirect target");
            a.redirect = (ok, why);
            changed = true;
        }
        Ok(changed)
    }

    fn report_of(&self, interface: &str) -> Result<InterfaceReport, DataplaneError> {
        self.interfaces()
            .into_iter()
            .find(|r| r.name == interface)
            .ok_or_else(|| DataplaneError::UnknownInterface {
                name: interface.to_owned(),
            })
    }

    /// Every attached interface, its hook, mode and why.
    pub fn interfaces(&self) -> Vec<InterfaceReport> {
        self.attachments
            .iter()
            .map(|a| InterfaceReport {
                name: a.name.clone(),
                ifindex: a.index,
                kind: a.kind.clone(),
                hook: a.hook.name().to_owned(),
                mode: a.hook.mode().to_owned(),
                why: a.why.clone(),
                xdp_redirect_target: a.redirect.0,
                xdp_redirect_why: a.redirect.1.clone(),
            })
            .collect()
    }

    /// Interfaces, node settings and local clients, for `veer status`.
    pub fn report(&self) -> DataplaneReport {
        DataplaneReport {
            interfaces: self.interfaces(),
            node_settings: self.node_settings.clone(),
            local_clients: self.local_clients.clone(),
        }
    }

    /// Checks the node settings `desired` needs (see `node`), makes right those veer owns, and
    /// refuses, changing nothing, when one is the operator's to change. Call it before applying
    /// `desired`.
    pub fn prepare_node(&mut self, desired: &DesiredState) -> Result<(), DataplaneError> {
        let attached: BTreeMap<u32, String> = self
            .attachments
            .iter()
            .filter(|a| a.index != 0)
            .map(|a| (a.index, a.name.clone()))
            .collect();
        let mut sock =
            netlink::Socket::route().map_err(|source| DataplaneError::Netlink { source })?;
        let mut routes: HashMap<IpAddr, Option<netlink::Route>> = HashMap::new();
        let mut route = |addr: IpAddr| -> Result<Option<netlink::Route>, DataplaneError> {
            if let Some(r) = routes.get(&addr) {
                return Ok(*r);
            }
            let r = sock
                .route_to(addr)
                .map_err(|source| DataplaneError::Netlink { source })?;
            routes.insert(addr, r);
            Ok(r)
        };
        let mut services = Vec::new();
        for s in &desired.services {
            let mut backends = Vec::new();
            for g in &s.groups {
                for b in &g.backends {
                    backends.push((b.addr.ip(), route(b.addr.ip())?));
                }
            }
            services.push(node::ServiceFacts {
                name: s.name.clone(),
                vip: s.vip,
                vip_route: route(s.vip)?,
                backends,
            });
        }
        let plan = node::plan(&services, &attached, &node::read)
            .map_err(|source| DataplaneError::NodeSetting { source })?;
        for w in &plan.writes {
            node::write(&w.key, w.value).map_err(|source| DataplaneError::NodeSettingWrite {
                key: w.key.to_string(),
                source,
            })?;
            tracing::info!(setting = %w.key, value = w.value, was = %w.was, why = %w.why, "veer set a node setting");
        }
        self.node_settings = node::report(&plan);
        Ok(())
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

    /// Whether the next-hop cache is on (`nexthop::NextHopKeeper::is_on`).
    pub fn nexthop_cache_on(&self) -> bool {
        self.nexthop
            .as_ref()
            .is_some_and(nexthop::NextHopKeeper::is_on)
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

    /// Ends flow `key` for a paced drain (`ending`): a reset to both ends of a TCP flow, the
    /// entry of a UDP one.
    pub fn end_flow(&mut self, key: &FlowKey) -> Result<ending::Ended, DataplaneError> {
        let ender = match &mut self.ender {
            Some(e) => e,
            slot => slot.insert(ending::Ender::new()?),
        };
        ender.end(&mut self.maps, key)
    }

    /// The active flows (anything not closing) of backends `ids` in the flow tables, oldest
    /// first. Socket flows of clients on the node are not among them: a paced drain cannot end
    /// a process's own socket.
    pub fn active_flows_of(&self, ids: &BTreeSet<u32>) -> Result<Vec<FlowKey>, DataplaneError> {
        let now = flows::now_tick();
        let mut found: HashMap<FlowKey, u32> = HashMap::new();
        self.maps.for_each_flow(|_, k, e| {
            if e.is_active() && ids.contains(&e.backend_id) {
                found.insert(*k, veer_common::flow::ticks_since(now, e.created));
            }
        })?;
        let mut v: Vec<(FlowKey, u32)> = found.into_iter().collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.1));
        Ok(v.into_iter().map(|(k, _)| k).collect())
    }

    /// Active flows (anything not closing) per backend id, from one scan of both flow tables,
    /// plus the socket flows of clients on the node.
    pub fn active_flows(&self) -> Result<HashMap<u32, u64>, DataplaneError> {
        Ok(self.census()?.active)
    }

    /// Active flows per backend id (conntrack and socket flows of clients on the node) and the
    /// entries of each flow table, from one scan.
    pub fn census(&self) -> Result<flows::Census, DataplaneError> {
        let mut census = flows::census(&self.maps)?;
        for (id, n) in self.sock_maps.census()? {
            *census.active.entry(id).or_default() += n;
        }
        Ok(census)
    }
}

/// `xdp-features` by ifindex (none: the kernel does not report them).
type XdpFeatures = Option<HashMap<u32, u64>>;

/// Starts the keeper of the next-hop cache's clock. Where it cannot start (no rtnetlink), the
/// cache is turned off and stays off: a cached next hop is only ever used while watched.
fn start_nexthop_keeper(ebpf: &mut Ebpf) -> Result<Option<nexthop::NextHopKeeper>, DataplaneError> {
    let missing = || DataplaneError::NextHopClock {
        source: Box::new(aya::maps::MapError::InvalidName {
            name: veer_common::maps::NH_CLOCK.to_owned(),
        }),
    };
    let map = ebpf
        .take_map(veer_common::maps::NH_CLOCK)
        .ok_or_else(missing)?;
    let mut clock =
        aya::maps::Array::<_, u64>::try_from(map).map_err(|e| DataplaneError::NextHopClock {
            source: Box::new(e),
        })?;
    // Off until a keeper runs (a pinned clock may still hold a dead daemon's lease).
    clock
        .set(0, 0, 0)
        .map_err(|e| DataplaneError::NextHopClock {
            source: Box::new(e),
        })?;
    match nexthop::NextHopKeeper::start(clock) {
        Ok(k) => Ok(Some(k)),
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(&e), "cannot follow route and neighbour events; the next-hop cache is off (every packet looks its route up)");
            Ok(None)
        }
    }
}

/// Every link of the namespace and, where the kernel reports them, their `xdp-features`.
fn kernel_links() -> Result<(Vec<netlink::Link>, XdpFeatures), DataplaneError> {
    let nl = |source| DataplaneError::Netlink { source };
    let links = netlink::Socket::route()
        .and_then(|mut s| s.links())
        .map_err(nl)?;
    let features = match netlink::Netdev::open().map_err(nl)? {
        Some(mut n) => Some(n.xdp_features().map_err(nl)?),
        None => None,
    };
    Ok((links, features))
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
    /// Ending a flow for a paced drain failed (opening the raw sockets, or sending a probe or
    /// a reset).
    #[error("ending flows: {op} failed{}", if flow.is_empty() { String::new() } else { format!(" ({flow})") })]
    Ending {
        /// What was being done.
        op: &'static str,
        /// The flow (`client -> backend`), or empty.
        flow: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
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
    /// An interface cannot be attached as asked.
    #[error(transparent)]
    Interface {
        /// Why.
        #[from]
        source: ifaces::DecideError,
    },
    /// The next-hop cache's clock map is missing or cannot be written.
    #[error(
        "cannot write the next-hop cache's clock ({})",
        veer_common::maps::NH_CLOCK
    )]
    NextHopClock {
        /// The map error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The thread keeping the next-hop cache's clock could not start.
    #[error("cannot start the next-hop cache's keeper thread")]
    NextHopThread {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Asking the kernel about interfaces, addresses or routes failed.
    #[error("asking the kernel about the node's interfaces failed")]
    Netlink {
        /// Why.
        #[source]
        source: netlink::NetlinkError,
    },
    /// A node setting the data path needs is the operator's to change.
    #[error("node setting {}", source.key)]
    NodeSetting {
        /// What and what to do.
        #[source]
        source: node::Refusal,
    },
    /// Writing a node setting failed.
    #[error("setting {key} failed")]
    NodeSettingWrite {
        /// The setting.
        key: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Attaching a socket hook to the cgroup hierarchy failed.
    #[error("attaching `{program}` to cgroup {} failed", cgroup.display())]
    Cgroup {
        /// Program name.
        program: &'static str,
        /// The cgroup.
        cgroup: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
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

//! The next-hop cache (`veer_common::nexthop`): a backend's output interface and MACs from this
//! CPU's last successful route lookup, used while the daemon's clock says nothing changed since.
//! `forward` asks it before `bpf_fib_lookup` and fills it after one; nothing else touches it.

use veer_common::nexthop::{NextHop, generation_at};

use crate::maps::{VEER_NEXTHOPS, VEER_NH_CLOCK};

/// A backend's cache entry on this CPU, with the generation an entry must carry to be used.
pub(crate) struct Slot {
    entry: *mut NextHop,
    generation: u32,
}

/// Returns: the cache slot of `backend_id` at tick `now`, or `None` when the cache is off (no
/// daemon keeps the clock, or the node's routes depend on more than the destination).
#[inline(always)]
pub(crate) fn slot(backend_id: u32, now: u32) -> Option<Slot> {
    let generation = generation_at(*VEER_NH_CLOCK.get(0)?, now)?;
    let entry = VEER_NEXTHOPS.get_ptr_mut(backend_id)?;
    Some(Slot { entry, generation })
}

impl Slot {
    /// Returns: the cached next hop for a packet of IP length `len` that came in on
    /// `in_ifindex`, or `None` (filled under another generation, from another input interface,
    /// or for shorter packets only).
    #[inline(always)]
    pub(crate) fn get(&self, in_ifindex: u32, len: u16) -> Option<NextHop> {
        // SAFETY: per-CPU array slot from a lookup in this program run; only this CPU writes it.
        let e = unsafe { &*self.entry };
        if e.generation == self.generation && e.in_ifindex == in_ifindex && len <= e.max_len {
            Some(*e)
        } else {
            None
        }
    }

    /// Records what a successful route lookup answered for a packet of IP length `len` (the
    /// route's MTU was checked against it; `u16::MAX` where the kernel checks it later).
    #[inline(always)]
    pub(crate) fn fill(
        &self,
        in_ifindex: u32,
        out_ifindex: u32,
        len: u16,
        dmac: [u8; 6],
        smac: [u8; 6],
    ) {
        // SAFETY: as in `get`.
        let e = unsafe { &mut *self.entry };
        let same = e.generation == self.generation
            && e.in_ifindex == in_ifindex
            && e.out_ifindex == out_ifindex
            && e.dmac == dmac
            && e.smac == smac;
        e.max_len = if same && e.max_len > len {
            e.max_len
        } else {
            len
        };
        e.generation = self.generation;
        e.in_ifindex = in_ifindex;
        e.out_ifindex = out_ifindex;
        e.dmac = dmac;
        e.smac = smac;
    }
}

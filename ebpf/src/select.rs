//! Selection for a new flow: source-prefix pin, else group by weight; then the backend from the
//! group's Maglev table. Thin glue over `veer_common::select`, which host tests cover.

use aya_ebpf::btf_maps::lpm_trie::Key;
use veer_common::{
    FAMILY_V4,
    counters::Reason,
    flow::{FlowEntry, FlowKey},
    pin::PinKey,
    select::{flow_hash, maglev_slot, pick_group},
    service::ServiceValue,
};

use crate::maps::{VEER_BACKENDS, VEER_MAGLEV, VEER_PINS};

/// Returns the group a pin sends this client to, if any.
#[inline(always)]
fn pinned_group(svc: &ServiceValue, key: &FlowKey) -> Option<u32> {
    let addr_bits = if key.family == FAMILY_V4 { 32 } else { 128 };
    let lpm = Key::new(
        PinKey::SERVICE_BITS + addr_bits,
        PinKey {
            service_id_be: svc.service_id.to_be(),
            addr: key.src_addr,
        },
    );
    VEER_PINS.get(&lpm).copied()
}

/// Returns the backend id in `group`'s table for `hash`, or `None` (no table, empty slot).
#[inline(always)]
fn backend_in(group: u32, hash: u32) -> Option<u32> {
    match VEER_MAGLEV.get_value(group, &maglev_slot(hash)) {
        Some(&id) if id != 0 => Some(id),
        _ => None,
    }
}

/// Returns: a flow entry (state and times unset) naming the backend a new flow goes to, or
/// `NoBackend` when no group can take it.
#[inline(always)]
pub(crate) fn pick(svc: &ServiceValue, key: &FlowKey) -> Result<FlowEntry, Reason> {
    let hash = flow_hash(key);
    // A pin to a group with no backend falls back to the weights rather than dropping.
    let pinned = pinned_group(svc, key).and_then(|g| Some((g, backend_in(g, hash)?)));
    let backend_id = if let Some((_, id)) = pinned {
        id
    } else {
        let (_, group) = pick_group(svc, hash).ok_or(Reason::NoBackend)?;
        backend_in(group, hash).ok_or(Reason::NoBackend)?
    };
    // SAFETY: `BPF_F_NO_PREALLOC` map; the value is copied out at once.
    let backend = unsafe { VEER_BACKENDS.get(backend_id) }.ok_or(Reason::NoBackend)?;
    Ok(FlowEntry {
        backend_addr: backend.addr,
        backend_port: backend.port,
        state: 0,
        flags: 0,
        backend_id,
        last_seen: 0,
        created: 0,
        backend_isn: 0,
        backend_ack: 0,
    })
}

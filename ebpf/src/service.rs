//! Service lookup: (VIP, port, protocol) -> the service's split.

use veer_common::{
    counters::Reason,
    flow::FlowKey,
    service::{ServiceKey, ServiceValue},
};

use crate::maps::VEER_SERVICES;

/// Returns: the service a packet is addressed to, or `NoService`.
#[inline(always)]
pub(crate) fn lookup(key: &FlowKey) -> Result<&'static ServiceValue, Reason> {
    let skey = ServiceKey {
        addr: key.dst_addr,
        port: key.dst_port,
        proto: key.proto,
        family: key.family,
    };
    // SAFETY: the map is `BPF_F_NO_PREALLOC`: an update or delete frees the old element only
    // after an RCU grace period, so the reference stays valid for this program run.
    unsafe { VEER_SERVICES.get(skey) }.ok_or(Reason::NoService)
}

//! Steering orchestration for packets from clients, in the order of DESIGN.md's data path:
//! parse -> service -> conntrack (hit keeps the flow's backend) -> selection on a miss -> DNAT ->
//! counters -> forward (next-hop cache, else route lookup). Written once for both hooks (`veer_xdp` and `veer_tc_steer`) against
//! `packet::Packet`, so conntrack's TCP validation, its two tables and its flow events hold on
//! both.

use veer_common::counters::Reason;

use crate::{
    conntrack::{self, Request},
    counters, nexthop,
    packet::Packet,
    select, service,
};

/// Returns: the hook's verdict for a steered packet, or the `Reason` it was not steered (or was
/// steered and then handed to the kernel).
#[inline(always)]
pub(crate) fn run<P: Packet>(pkt: &P) -> Result<P::Verdict, Reason> {
    let mut h = pkt.headers()?;
    let svc = service::lookup(&h.key)?;
    let now = conntrack::now();
    let (flow, events) = match conntrack::request(&h, svc.service_id, now)? {
        Request::Known(flow, events) => (flow, events),
        Request::Select(create) => conntrack::create(&h, create, select::pick(svc, &h.key)?, now),
    };
    pkt.dnat(&h, &flow.backend_addr, flow.backend_port)?;
    counters::request(svc.service_id, flow.backend_id, pkt.len(), events);
    // In place rather than a copy: the verifier's stack is 512 bytes for the whole program.
    h.key.dst_port = flow.backend_port;
    pkt.forward(
        &h,
        &flow.backend_addr,
        nexthop::slot(flow.backend_id, now).as_ref(),
    )
}

//! Steering orchestration for packets from clients, in the order of DESIGN.md's data path:
//! parse -> service -> conntrack (hit keeps the flow's backend) -> selection on a miss -> DNAT ->
//! counters -> forward. Written once for both hooks (`veer_xdp` and `veer_tc_steer`) against
//! `packet::Packet`.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use veer_common::{PROTO_TCP, counters::Reason, flow::FlowEntry, service::ServiceValue};

use crate::{conntrack, counters, packet::Packet, parse::Headers, select, service};

/// Returns: the hook's verdict for a steered packet, or the `Reason` it was not steered (or was
/// steered and then handed to the kernel).
#[inline(always)]
pub(crate) fn run<P: Packet>(pkt: &P) -> Result<P::Verdict, Reason> {
    let mut h = pkt.headers()?;
    let svc = service::lookup(&h.key)?;
    let (flow, new_flow) = flow_of(svc, &h)?;
    pkt.dnat(&h, &flow.backend_addr, flow.backend_port)?;
    let bytes = pkt.len();
    let midflow = new_flow && h.key.proto == PROTO_TCP && !h.is_syn();
    counters::service(svc.service_id, bytes, new_flow, midflow);
    counters::backend(flow.backend_id, bytes, new_flow, false);
    // In place rather than a copy: the verifier's stack is 512 bytes for the whole program.
    h.key.dst_port = flow.backend_port;
    pkt.forward(&h, &flow.backend_addr)
}

/// The flow this packet belongs to: its conntrack entry (whatever the weights are now), or a
/// new one from selection. Returns it and whether it is new.
#[inline(always)]
fn flow_of(svc: &ServiceValue, h: &Headers) -> Result<(FlowEntry, bool), Reason> {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    match conntrack::lookup(&h.key).filter(|e| !conntrack::is_reused(*e, h)) {
        Some(entry) => {
            conntrack::touch_request(entry, h, now);
            // SAFETY: valid for this program run (see `conntrack`); copied out.
            Ok((unsafe { *entry }, false))
        }
        None => Ok((conntrack::create(h, select::pick(svc, &h.key)?, now), true)),
    }
}

//! XDP orchestration for packets from clients, in the order of DESIGN.md's data path:
//! parse -> service -> conntrack (hit keeps the flow's backend) -> selection on a miss -> DNAT ->
//! counters -> forward.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::XdpContext};
use veer_common::{PROTO_TCP, counters::Reason};

use crate::{conntrack, counters, forward, nat, parse, select, service};

/// Returns: the XDP verdict for a steered packet, or the `Reason` it was not steered.
#[inline(always)]
pub(crate) fn run(ctx: &XdpContext) -> Result<u32, Reason> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let h = parse::parse(start, end)?;
    let svc = service::lookup(&h.key)?;
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let (flow, new_flow) = match conntrack::lookup(&h.key).filter(|e| !conntrack::is_reused(*e, &h))
    {
        Some(entry) => {
            conntrack::touch_request(entry, &h, now);
            // SAFETY: valid for this program run (see `conntrack`); copied out.
            (unsafe { *entry }, false)
        }
        None => (conntrack::create(&h, select::pick(svc, &h.key)?, now), true),
    };
    nat::dnat(start, end, &h, &flow.backend_addr, flow.backend_port)?;
    let bytes = (end - start) as u64;
    let midflow = new_flow && h.key.proto == PROTO_TCP && !h.is_syn();
    counters::service(svc.service_id, bytes, new_flow, midflow);
    counters::backend(flow.backend_id, bytes, new_flow, false);
    let mut dnat_h = h;
    dnat_h.key.dst_port = flow.backend_port;
    forward::forward(ctx, &dnat_h, &flow.backend_addr)
}

//! XDP orchestration for packets from clients, in the order of DESIGN.md's data path:
//! parse -> service -> conntrack (hit keeps the flow's backend) -> selection on a miss -> DNAT ->
//! counters -> forward.

use aya_ebpf::programs::XdpContext;
use veer_common::counters::Reason;

use crate::{
    conntrack::{self, Request},
    counters, forward, nat, parse, select, service,
};

/// Returns: the XDP verdict for a steered packet, or the `Reason` it was not steered.
#[inline(always)]
pub(crate) fn run(ctx: &XdpContext) -> Result<u32, Reason> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let h = parse::parse(start, end)?;
    let svc = service::lookup(&h.key)?;
    let now = conntrack::now();
    let (flow, events) = match conntrack::request(&h, svc.service_id, now)? {
        Request::Known(flow, events) => (flow, events),
        Request::Select(create) => conntrack::create(&h, create, select::pick(svc, &h.key)?, now),
    };
    nat::dnat(start, end, &h, &flow.backend_addr, flow.backend_port)?;
    counters::request(
        svc.service_id,
        flow.backend_id,
        (end - start) as u64,
        events,
    );
    let mut dnat_h = h;
    dnat_h.key.dst_port = flow.backend_port;
    forward::forward(ctx, &dnat_h, &flow.backend_addr)
}

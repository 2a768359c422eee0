//! TC orchestration for replies: on ingress of backend-facing interfaces (remote backends) and on
//! egress of client-facing ones (local backends). A reply of a steered flow updates the flow
//! (the backend's side is authoritative: SYN-ACK, RST, FIN, confirmations) and gets the VIP and
//! service port back as its source; anything else passes untouched. A segment that would change
//! its flow or a signal is a reply only where the backend's replies come in (`replypath`): the
//! same segment on another interface (a host next to the clients forging the backend's side) is
//! not one, and passes untouched.

use aya_ebpf::programs::TcContext;
use veer_common::counters::{Reason, tc_action};

use crate::{conntrack, counters, counters::event, nat, parse, replypath, signals};

/// Bytes of headers made linear before parsing: Ethernet + VLAN + IPv6 + TCP with options.
const PULL_LEN: u32 = 14 + 4 + 40 + 60;

/// Returns: `TC_ACT_OK` for a rewritten reply, or the `Reason` it was left alone or dropped.
#[inline(always)]
pub(crate) fn run(ctx: &TcContext) -> Result<i32, Reason> {
    let len = ctx.len();
    if ctx.data_end() - ctx.data() < PULL_LEN as usize && len > (ctx.data_end() - ctx.data()) as u32
    {
        // Best effort: a failure leaves the headers where they are and parse says Truncated.
        let _ = ctx.pull_data(if len < PULL_LEN { len } else { PULL_LEN });
    }
    let h = parse::parse_frame(ctx.data(), ctx.data_end(), len as usize)?;
    let now = conntrack::now();
    let flow = conntrack::reply(&h, now, |backend_id| {
        replypath::from_backend_side(ctx, &h, backend_id, now)
    })?;
    counters::reply(
        flow.service_id,
        flow.backend_id,
        u64::from(len),
        flow.events,
    );
    if flow.events & event::ENDED != 0 {
        signals::end_with_rst(ctx, &h)?;
    }
    nat::reverse(ctx, &h, &flow.vip)?;
    Ok(tc_action::OK)
}

//! TC orchestration for replies: on ingress of backend-facing interfaces (remote backends) and on
//! egress of client-facing ones (local backends). A reply of a steered flow gets the VIP and
//! service port back as its source and refreshes the flow's conntrack entry; anything else
//! passes untouched.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use veer_common::{
    counters::{Reason, tc_action},
    flow::FlowKey,
};

use crate::{conntrack, counters, nat, parse};

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
    let rev = conntrack::revnat_lookup(&h.key).ok_or(Reason::NoReplyFlow)?;
    let client_key = FlowKey {
        src_addr: h.key.dst_addr,
        dst_addr: rev.vip,
        src_port: h.key.dst_port,
        dst_port: rev.port,
        proto: h.key.proto,
        family: h.key.family,
        _pad: [0; 2],
    };
    if let Some(entry) = conntrack::lookup(&client_key) {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        let refused = conntrack::touch_reply(entry, &h, unsafe { bpf_ktime_get_ns() });
        // SAFETY: valid for this program run (see `conntrack`).
        let backend_id = unsafe { (*entry).backend_id };
        counters::backend(backend_id, u64::from(len), false, refused);
    }
    nat::reverse(ctx, &h, &rev)?;
    Ok(tc_action::OK)
}

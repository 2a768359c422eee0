//! The two hooks the steering steps run in, behind one small trait: where the packet's headers
//! are, how it is rewritten for its backend, and how it leaves. `ingress::run` is written once
//! against `Packet`; XDP and TC differ only here.
//!
//! - XDP (`XdpContext`): frames off a wire. Their checksums are complete, so the rewrite updates
//!   them by hand (`nat::dnat`), and forwarding redirects into ports that take XDP frames.
//! - TC (`TcContext`): skbs, on interfaces whose packets may come from local senders (veth,
//!   bridge, VLAN ...). The kernel's checksum helpers know the skb's checksum state
//!   (`CHECKSUM_PARTIAL` included), and forwarding uses `bpf_redirect`/`bpf_redirect_neigh`,
//!   which work into any device.

use aya_ebpf::programs::{TcContext, XdpContext};
use veer_common::counters::Reason;

use crate::{
    forward, nat,
    nexthop::Slot,
    parse::{self, Headers},
};

/// What the steering steps need from the hook they run in.
pub(crate) trait Packet {
    /// The verdict handed back to the kernel for a steered packet.
    type Verdict;

    /// Returns: the parsed headers, or why the packet is not steered (see `parse::parse`).
    fn headers(&self) -> Result<Headers, Reason>;

    /// The packet's length in bytes, L2 header included.
    fn len(&self) -> u64;

    /// Rewrites the destination to the backend `addr`:`port` (network byte order), checksums
    /// included.
    fn dnat(&self, h: &Headers, addr: &[u32; 4], port: u16) -> Result<(), Reason>;

    /// Sends the rewritten packet (destination now `dst`) on its way, through the backend's
    /// next-hop cache slot `nh` when the cache is on.
    fn forward(
        &self,
        h: &Headers,
        dst: &[u32; 4],
        nh: Option<&Slot>,
    ) -> Result<Self::Verdict, Reason>;
}

impl Packet for XdpContext {
    type Verdict = u32;

    #[inline(always)]
    fn headers(&self) -> Result<Headers, Reason> {
        parse::parse(self.data(), self.data_end())
    }

    #[inline(always)]
    fn len(&self) -> u64 {
        (self.data_end() - self.data()) as u64
    }

    #[inline(always)]
    fn dnat(&self, h: &Headers, addr: &[u32; 4], port: u16) -> Result<(), Reason> {
        nat::dnat(self.data(), self.data_end(), h, addr, port)
    }

    #[inline(always)]
    fn forward(&self, h: &Headers, dst: &[u32; 4], nh: Option<&Slot>) -> Result<u32, Reason> {
        forward::xdp(self, h, dst, nh)
    }
}

/// Bytes of headers made linear before parsing an skb: Ethernet + VLAN + IPv6 + TCP with
/// options.
const PULL_LEN: u32 = 14 + 4 + 40 + 60;

impl Packet for TcContext {
    type Verdict = i32;

    #[inline(always)]
    fn headers(&self) -> Result<Headers, Reason> {
        let len = self.len();
        let linear = (self.data_end() - self.data()) as u32;
        if linear < PULL_LEN && len > linear {
            // Best effort: a failure leaves the headers where they are and parse says
            // Truncated (the packet passes untouched).
            let _ = self.pull_data(if len < PULL_LEN { len } else { PULL_LEN });
        }
        parse::parse_frame(self.data(), self.data_end(), len as usize)
    }

    #[inline(always)]
    fn len(&self) -> u64 {
        u64::from(TcContext::len(self))
    }

    #[inline(always)]
    fn dnat(&self, h: &Headers, addr: &[u32; 4], port: u16) -> Result<(), Reason> {
        nat::dnat_skb(self, h, addr, port)
    }

    #[inline(always)]
    fn forward(&self, h: &Headers, dst: &[u32; 4], nh: Option<&Slot>) -> Result<i32, Reason> {
        forward::tc(self, h, dst, nh)
    }
}

//! Counter layouts and the closed set of reasons a packet leaves the fast path.

use crate::pod;

/// Per-CPU counters of one backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCounters {
    /// Packets steered to the backend (requests, and replies reverse-NATed from it).
    pub packets: u64,
    /// Bytes of those packets, L2 header included.
    pub bytes: u64,
    /// Flows given to the backend (entries created for it).
    pub new_flows: u64,
    /// Connection attempts the backend answered with a SYN-ACK.
    pub answered_flows: u64,
    /// Connection attempts the backend refused: an RST answering the SYN.
    pub refused_flows: u64,
}
const _: () = assert!(size_of::<BackendCounters>() == 40);

/// Per-CPU counters of one service: its traffic, and what new flows and floods cost it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Packets to the VIP that were steered.
    pub packets: u64,
    /// Bytes of those packets, L2 header included.
    pub bytes: u64,
    /// Entries created in `VEER_NEWFLOWS` (SYNs, mid-flow misses, UDP flows).
    pub new_flows: u64,
    /// TCP segments with ACK and no entry (evicted, or a flow older than the programs): steered
    /// by the flow hash, tracked unconfirmed until the backend answers.
    pub midflow_misses: u64,
    /// Flows confirmed and moved into `VEER_FLOWS`.
    pub promotions: u64,
    /// Confirmed flows refused by a full `VEER_FLOWS` (each attempt: a refused flow stays in
    /// `VEER_NEWFLOWS` and tries again at most about once a second).
    pub promotions_refused: u64,
    /// TCP segments with a flag combination no TCP accepts (SYN+FIN, SYN+RST, no flags, FIN or
    /// data without ACK ...): dropped when no flow has their tuple, else forwarded unchanged to
    /// the flow's backend; never an entry or a state change.
    pub invalid_tcp: u64,
}
const _: () = assert!(size_of::<ServiceCounters>() == 56);

pod!(BackendCounters, ServiceCounters);

impl core::ops::AddAssign for BackendCounters {
    /// Adds another CPU's counters (user space sums the per-CPU values).
    fn add_assign(&mut self, o: Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_flows += o.new_flows;
        self.answered_flows += o.answered_flows;
        self.refused_flows += o.refused_flows;
    }
}

impl core::ops::AddAssign for ServiceCounters {
    /// Adds another CPU's counters (user space sums the per-CPU values).
    fn add_assign(&mut self, o: Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_flows += o.new_flows;
        self.midflow_misses += o.midflow_misses;
        self.promotions += o.promotions;
        self.promotions_refused += o.promotions_refused;
        self.invalid_tcp += o.invalid_tcp;
    }
}

/// XDP verdict values (`enum xdp_action` in `include/uapi/linux/bpf.h`).
pub mod xdp_action {
    /// `XDP_ABORTED`.
    pub const ABORTED: u32 = 0;
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
    /// `XDP_TX`.
    pub const TX: u32 = 3;
    /// `XDP_REDIRECT`.
    pub const REDIRECT: u32 = 4;
}

/// TC verdict values (`TC_ACT_*` in `include/uapi/linux/pkt_cls.h`).
pub mod tc_action {
    /// `TC_ACT_OK`: continue with the packet.
    pub const OK: i32 = 0;
    /// `TC_ACT_SHOT`: drop the packet.
    pub const SHOT: i32 = 2;
    /// `TC_ACT_UNSPEC`: no verdict; the next program of the hook (tcx, or the next clsact
    /// filter) runs, and the packet passes when there is none.
    pub const UNSPEC: i32 = -1;
    /// `TC_ACT_REDIRECT`: the packet goes where `bpf_redirect`/`bpf_redirect_neigh` sent it.
    pub const REDIRECT: i32 = 7;
}

/// Why a packet left the steering path. Every exit that does not steer a packet is one of these,
/// counted once per packet in `VEER_REASONS` (index = discriminant).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4/IPv6 (ARP, LLDP, a second VLAN tag ...). Passed untouched.
    NotIp = 0,
    /// An IP fragment (first or later). Passed untouched.
    Fragment = 1,
    /// A header is shorter than it claims or than the frame. Passed untouched.
    Truncated = 2,
    /// Neither TCP nor UDP (ICMP, an unskipped IPv6 extension header ...). Passed untouched.
    NotTcpUdp = 3,
    /// Not addressed to a service. Passed untouched.
    NoService = 4,
    /// A packet seen by the reply program that is not a reply of a steered flow. Passed untouched.
    NoReplyFlow = 5,
    /// A new flow to a service none of whose groups can take it (all weights 0, or no backend).
    /// Dropped.
    NoBackend = 6,
    /// The rewritten packet could not be routed by `bpf_fib_lookup` (no route, blackhole,
    /// prohibit ...). Passed to the kernel after DNAT, so it answers as its routing says.
    FibFailed = 7,
    /// Rewriting a TC packet failed midway (`bpf_skb_store_bytes` or a checksum helper).
    /// Dropped, as the packet may be half rewritten.
    RewriteFailed = 8,
    /// Creating a flow entry (or a socket flow of a client on the node) failed. The packet or
    /// socket is still steered (the flow hash gives the same backend while weights are unchanged).
    ConntrackFull = 9,
    /// A TCP segment with a flag combination no TCP accepts (SYN+FIN, SYN+RST, no flags, FIN or
    /// data without ACK ...) and no flow for its tuple. Dropped: the backend would discard it, and
    /// it must not create an entry.
    InvalidTcp = 10,
    /// Rewritten for its backend, then handed to the kernel because the next hop's neighbour
    /// (ARP/NDP) entry is not resolved yet (XDP; TC resolves it with `bpf_redirect_neigh`).
    KernelNoNeigh = 11,
    /// Rewritten for its backend, then handed to the kernel because the backend is an address of
    /// the node itself (local delivery).
    KernelLocal = 12,
    /// Rewritten for its backend, then handed to the kernel because the route leaves through an
    /// interface that cannot take a redirected XDP frame (not in `VEER_TX_PORTS`: veer is not
    /// attached there, or the device has no XDP transmit, e.g. a veth whose peer has neither
    /// NAPI/GRO nor an XDP program, a bridge, a VLAN device).
    KernelNoXdpXmit = 13,
    /// Rewritten for its backend, then handed to the kernel because it carries a VLAN tag (the
    /// kernel's VLAN devices own tag handling).
    KernelVlan = 14,
    /// Rewritten for its backend, then handed to the kernel because its TTL / hop limit would
    /// expire here (the kernel answers with ICMP time exceeded).
    KernelTtl = 15,
    /// Rewritten for its backend, then handed to the kernel because forwarding is off on the
    /// interface it came in on (`bpf_fib_lookup` refuses to route). veer turns forwarding on
    /// where it needs it, so this counts a setting changed behind its back.
    KernelFwdDisabled = 16,
}

impl Reason {
    /// Every reason, in discriminant order.
    pub const ALL: [Reason; 17] = [
        Reason::NotIp,
        Reason::Fragment,
        Reason::Truncated,
        Reason::NotTcpUdp,
        Reason::NoService,
        Reason::NoReplyFlow,
        Reason::NoBackend,
        Reason::FibFailed,
        Reason::RewriteFailed,
        Reason::ConntrackFull,
        Reason::InvalidTcp,
        Reason::KernelNoNeigh,
        Reason::KernelLocal,
        Reason::KernelNoXdpXmit,
        Reason::KernelVlan,
        Reason::KernelTtl,
        Reason::KernelFwdDisabled,
    ];

    /// Number of reasons (size of `VEER_REASONS`).
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NotIp => "not_ip",
            Reason::Fragment => "fragment",
            Reason::Truncated => "truncated",
            Reason::NotTcpUdp => "not_tcp_udp",
            Reason::NoService => "no_service",
            Reason::NoReplyFlow => "no_reply_flow",
            Reason::NoBackend => "no_backend",
            Reason::FibFailed => "fib_failed",
            Reason::RewriteFailed => "rewrite_failed",
            Reason::ConntrackFull => "conntrack_full",
            Reason::InvalidTcp => "invalid_tcp",
            Reason::KernelNoNeigh => "kernel_no_neigh",
            Reason::KernelLocal => "kernel_local",
            Reason::KernelNoXdpXmit => "kernel_no_xdp_xmit",
            Reason::KernelVlan => "kernel_vlan",
            Reason::KernelTtl => "kernel_ttl",
            Reason::KernelFwdDisabled => "kernel_forwarding_disabled",
        }
    }

    /// Whether the packet is dropped (as opposed to passed on).
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::NoBackend | Reason::RewriteFailed | Reason::InvalidTcp
        )
    }

    /// The XDP verdict for a packet leaving with this reason.
    pub const fn xdp_action(self) -> u32 {
        if self.is_drop() {
            xdp_action::DROP
        } else {
            xdp_action::PASS
        }
    }

    /// Whether the packet leaves exactly as it came (nothing of veer's applies to it).
    pub const fn is_untouched(self) -> bool {
        matches!(
            self,
            Reason::NotIp
                | Reason::Fragment
                | Reason::Truncated
                | Reason::NotTcpUdp
                | Reason::NoService
                | Reason::NoReplyFlow
        )
    }

    /// The verdict of the TC steering program for a packet leaving with this reason: an
    /// untouched packet goes on to the next program of the hook (`veer_tc_reply`, or another
    /// tool's), a dropped one is shot, and a rewritten one goes to the kernel's stack.
    pub const fn tc_steer_action(self) -> i32 {
        if self.is_drop() {
            tc_action::SHOT
        } else if self.is_untouched() {
            tc_action::UNSPEC
        } else {
            tc_action::OK
        }
    }

    /// The TC verdict for a packet leaving with this reason.
    pub const fn tc_action(self) -> i32 {
        if self.is_drop() {
            tc_action::SHOT
        } else {
            tc_action::OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn all_is_in_discriminant_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    #[test]
    fn steering_verdicts_leave_untouched_packets_to_the_next_program() {
        use super::tc_action;
        assert_eq!(Reason::NoService.tc_steer_action(), tc_action::UNSPEC);
        assert_eq!(Reason::NotIp.tc_steer_action(), tc_action::UNSPEC);
        assert_eq!(Reason::NoBackend.tc_steer_action(), tc_action::SHOT);
        assert_eq!(Reason::InvalidTcp.tc_steer_action(), tc_action::SHOT);
        assert_eq!(Reason::KernelLocal.tc_steer_action(), tc_action::OK);
        assert_eq!(Reason::FibFailed.tc_steer_action(), tc_action::OK);
        for r in Reason::ALL {
            assert!(!(r.is_drop() && r.is_untouched()), "{r:?}");
        }
    }

    #[test]
    fn labels_are_unique_snake_case() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            let label = r.as_str();
            assert!(
                Reason::ALL[..i].iter().all(|o| o.as_str() != label),
                "{label} twice"
            );
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
        }
    }
}

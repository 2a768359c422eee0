//! [`PacketBuilder`]: Ethernet (+ one 802.1Q tag) / IPv4 or IPv6 / TCP, UDP or raw L4 frames
//! with correct checksums, and [`ethernet_only`] for non-IP frames.

use std::net::{IpAddr, SocketAddr};

use super::checksum::{Addrs, checksum, l4_checksum};
use super::{
    DEFAULT_DST_MAC, DEFAULT_SRC_MAC, DEFAULT_TCP_WINDOW, ETH_HLEN, IPV4_DF, IPV4_FRAG_OFFSET_MASK,
    IPV4_HLEN, IPV4_MAX_OPTIONS, IPV4_MF, IPV6_HLEN, TCP_HLEN, UDP_HLEN, VLAN_HLEN, ethertype,
    ipproto, tcp_flags,
};

/// The L4 part a builder produces.
#[derive(Clone, Debug)]
pub(super) enum L4 {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: u8,
        seq: u32,
        ack: u32,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        zero_checksum: bool,
    },
    Raw {
        proto: u8,
    },
}

impl L4 {
    fn proto(&self) -> u8 {
        match self {
            Self::Tcp { .. } => ipproto::TCP,
            Self::Udp { .. } => ipproto::UDP,
            Self::Raw { proto } => *proto,
        }
    }
}

/// Builds one Ethernet frame with correct IPv4 header and TCP/UDP checksums.
///
/// Defaults: MACs [`DEFAULT_SRC_MAC`] -> [`DEFAULT_DST_MAC`], no VLAN tag, TTL/hop limit 64,
/// IPv4 id 0, no IPv4 flags or options, TOS/traffic class and flow label 0, TCP flags SYN,
/// seq 0, ack 0, window [`DEFAULT_TCP_WINDOW`], no TCP options, empty payload. IPv6 packets
/// carry the L4 protocol directly in the next-header field (no extension headers).
///
/// ```
/// use veer_tests::packet::{PacketBuilder, tcp_flags, verify_checksums};
/// let syn = PacketBuilder::tcp("203.0.113.7:40000".parse().unwrap(), "192.0.2.10:80".parse().unwrap())
///     .vlan(100)
///     .build();
/// assert!(verify_checksums(&syn).is_ok());
/// let ack = PacketBuilder::tcp("203.0.113.7:40000".parse().unwrap(), "192.0.2.10:80".parse().unwrap())
///     .tcp_flags(tcp_flags::ACK)
///     .seq(1)
///     .ack(1)
///     .payload(b"GET / HTTP/1.1\r\n\r\n")
///     .build();
/// assert!(verify_checksums(&ack).is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    vlan: Option<u16>,
    addrs: Addrs,
    pub(super) l4: L4,
    payload: Vec<u8>,
    ttl: u8,
    ip_id: u16,
    ip_options: Vec<u8>,
    frag_offset: u16,
    more_fragments: bool,
    dont_fragment: bool,
}

impl PacketBuilder {
    fn with(addrs: Addrs, l4: L4) -> Self {
        Self {
            eth_src: DEFAULT_SRC_MAC,
            eth_dst: DEFAULT_DST_MAC,
            vlan: None,
            addrs,
            l4,
            payload: Vec::new(),
            ttl: 64,
            ip_id: 0,
            ip_options: Vec::new(),
            frag_offset: 0,
            more_fragments: false,
            dont_fragment: false,
        }
    }

    /// A TCP segment from `src` to `dst` (SYN unless [`tcp_flags`](Self::tcp_flags) says
    /// otherwise). The family comes from the addresses.
    ///
    /// Panics if `src` and `dst` are of different families.
    pub fn tcp(src: SocketAddr, dst: SocketAddr) -> Self {
        let addrs = Addrs::new(src.ip(), dst.ip(), "tcp");
        Self::with(
            addrs,
            L4::Tcp {
                src_port: src.port(),
                dst_port: dst.port(),
                flags: tcp_flags::SYN,
                seq: 0,
                ack: 0,
            },
        )
    }

    /// A UDP datagram from `src` to `dst`. The family comes from the addresses.
    ///
    /// Panics if `src` and `dst` are of different families.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        let addrs = Addrs::new(src.ip(), dst.ip(), "udp");
        Self::with(
            addrs,
            L4::Udp {
                src_port: src.port(),
                dst_port: dst.port(),
                zero_checksum: false,
            },
        )
    }

    /// An IP packet with protocol (IPv6 next header) `proto` whose L4 bytes are exactly the
    /// [`payload`](Self::payload): no L4 header is written and no L4 checksum is computed
    /// (for ICMP, GRE, or a hand-made TCP/UDP header).
    ///
    /// Panics if `src` and `dst` are of different families.
    pub fn ip_proto(src: IpAddr, dst: IpAddr, proto: u8) -> Self {
        Self::with(Addrs::new(src, dst, "ip_proto"), L4::Raw { proto })
    }

    /// Sets the Ethernet source and destination MACs.
    #[must_use]
    pub fn eth(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.eth_src = src;
        self.eth_dst = dst;
        self
    }

    /// Adds one 802.1Q tag (TPID 0x8100, PCP 0, DEI 0) with VLAN id `vid`; a second call
    /// replaces the first.
    ///
    /// Panics if `vid` does not fit in 12 bits.
    #[must_use]
    pub fn vlan(mut self, vid: u16) -> Self {
        assert!(
            vid <= 0x0fff,
            "PacketBuilder::vlan: VLAN id {vid} does not fit in 12 bits"
        );
        self.vlan = Some(vid);
        self
    }

    /// Replaces source and destination (addresses and ports), keeping everything else: what a
    /// NAT does to a packet. Panics if the builder has no ports (`ip_proto`) or the families
    /// differ.
    #[must_use]
    pub fn with_addrs(mut self, src: SocketAddr, dst: SocketAddr) -> Self {
        self.addrs = Addrs::new(src.ip(), dst.ip(), "with_addrs");
        match &mut self.l4 {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp {
                src_port, dst_port, ..
            } => {
                *src_port = src.port();
                *dst_port = dst.port();
            }
            L4::Raw { proto } => {
                panic!("PacketBuilder::with_addrs: IP protocol {proto} has no ports")
            }
        }
        self
    }

    /// Sets the TCP flags byte (see [`tcp_flags`](mod@tcp_flags)).
    ///
    /// Panics unless the builder was made with [`tcp`](Self::tcp).
    #[must_use]
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        match &mut self.l4 {
            L4::Tcp { flags: f, .. } => *f = flags,
            _ => panic!("PacketBuilder::tcp_flags on a non-TCP packet"),
        }
        self
    }

    /// Sets the TCP sequence number.
    ///
    /// Panics unless the builder was made with [`tcp`](Self::tcp).
    #[must_use]
    pub fn seq(mut self, seq: u32) -> Self {
        match &mut self.l4 {
            L4::Tcp { seq: s, .. } => *s = seq,
            _ => panic!("PacketBuilder::seq on a non-TCP packet"),
        }
        self
    }

    /// Sets the TCP acknowledgment number (the ACK flag is separate, see
    /// [`tcp_flags`](Self::tcp_flags)).
    ///
    /// Panics unless the builder was made with [`tcp`](Self::tcp).
    #[must_use]
    pub fn ack(mut self, ack: u32) -> Self {
        match &mut self.l4 {
            L4::Tcp { ack: a, .. } => *a = ack,
            _ => panic!("PacketBuilder::ack on a non-TCP packet"),
        }
        self
    }

    /// Sets the bytes after the L4 header (for [`ip_proto`](Self::ip_proto): all L4 bytes).
    #[must_use]
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Sets the IPv4 TTL or IPv6 hop limit.
    #[must_use]
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the IPv4 identification field.
    ///
    /// Panics on an IPv6 packet.
    #[must_use]
    pub fn ip_id(mut self, id: u16) -> Self {
        self.require_ipv4("ip_id");
        self.ip_id = id;
        self
    }

    /// Sets the IPv4 options; they are padded with zero bytes (End of Option List) to a
    /// multiple of 4 and the IHL grows to match.
    ///
    /// Panics on an IPv6 packet or if the padded options exceed 40 bytes.
    #[must_use]
    pub fn ip_options(mut self, opts: &[u8]) -> Self {
        self.require_ipv4("ip_options");
        let padded = opts.len().next_multiple_of(4);
        assert!(
            padded <= IPV4_MAX_OPTIONS,
            "PacketBuilder::ip_options: {} bytes of options (padded to {padded}) exceed 40",
            opts.len()
        );
        self.ip_options = opts.to_vec();
        self.ip_options.resize(padded, 0);
        self
    }

    /// Sets the IPv4 fragment offset (in units of 8 bytes) and the More Fragments bit. The L4
    /// checksum is still computed over this packet's L4 bytes, as if it were whole.
    ///
    /// Panics on an IPv6 packet or if the offset does not fit in 13 bits.
    #[must_use]
    pub fn fragment(mut self, offset_units_of_8: u16, more_fragments: bool) -> Self {
        self.require_ipv4("fragment");
        assert!(
            offset_units_of_8 <= IPV4_FRAG_OFFSET_MASK,
            "PacketBuilder::fragment: offset {offset_units_of_8} does not fit in 13 bits"
        );
        self.frag_offset = offset_units_of_8;
        self.more_fragments = more_fragments;
        self
    }

    /// Sets the IPv4 Don't Fragment bit.
    ///
    /// Panics on an IPv6 packet.
    #[must_use]
    pub fn dont_fragment(mut self) -> Self {
        self.require_ipv4("dont_fragment");
        self.dont_fragment = true;
        self
    }

    /// Writes a UDP checksum of 0. Over IPv4 that means "no checksum" and is valid; over IPv6
    /// it makes an invalid packet (RFC 8200 section 8.1), which negative tests may want.
    ///
    /// Panics unless the builder was made with [`udp`](Self::udp).
    #[must_use]
    pub fn udp_zero_checksum(mut self) -> Self {
        match &mut self.l4 {
            L4::Udp { zero_checksum, .. } => *zero_checksum = true,
            _ => panic!("PacketBuilder::udp_zero_checksum on a non-UDP packet"),
        }
        self
    }

    fn require_ipv4(&self, what: &str) {
        assert!(
            matches!(self.addrs, Addrs::V4(..)),
            "PacketBuilder::{what} applies to IPv4 only, this packet is IPv6"
        );
    }

    /// Returns the frame bytes: Ethernet header, optional 802.1Q tag, IP header, L4 header
    /// and payload, with the IPv4 header checksum and the TCP/UDP checksum filled in.
    ///
    /// Panics if the IP packet would exceed 65535 bytes.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let mut frame =
            Vec::with_capacity(ETH_HLEN + VLAN_HLEN + IPV6_HLEN + self.ip_options.len() + l4.len());
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        if let Some(vid) = self.vlan {
            frame.extend_from_slice(&ethertype::VLAN.to_be_bytes());
            frame.extend_from_slice(&vid.to_be_bytes());
        }
        match self.addrs {
            Addrs::V4(src, dst) => {
                frame.extend_from_slice(&ethertype::IPV4.to_be_bytes());
                let header_len = IPV4_HLEN + self.ip_options.len();
                let total_len = header_len + l4.len();
                assert!(
                    u16::try_from(total_len).is_ok(),
                    "PacketBuilder::build: IPv4 packet of {total_len} bytes exceeds 65535"
                );
                let mut flags_frag = self.frag_offset;
                if self.dont_fragment {
                    flags_frag |= IPV4_DF;
                }
                if self.more_fragments {
                    flags_frag |= IPV4_MF;
                }
                let start = frame.len();
                frame.push(0x40 | (header_len / 4) as u8);
                frame.push(0); // TOS
                frame.extend_from_slice(&(total_len as u16).to_be_bytes());
                frame.extend_from_slice(&self.ip_id.to_be_bytes());
                frame.extend_from_slice(&flags_frag.to_be_bytes());
                frame.push(self.ttl);
                frame.push(self.l4.proto());
                frame.extend_from_slice(&[0, 0]);
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
                frame.extend_from_slice(&self.ip_options);
                let csum = checksum(&frame[start..]);
                frame[start + 10..start + 12].copy_from_slice(&csum.to_be_bytes());
            }
            Addrs::V6(src, dst) => {
                frame.extend_from_slice(&ethertype::IPV6.to_be_bytes());
                assert!(
                    u16::try_from(l4.len()).is_ok(),
                    "PacketBuilder::build: IPv6 payload of {} bytes exceeds 65535",
                    l4.len()
                );
                // Version 6, traffic class 0, flow label 0.
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                frame.push(self.l4.proto());
                frame.push(self.ttl);
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
            }
        }
        frame.extend_from_slice(&l4);
        frame
    }

    /// L4 header and payload with the L4 checksum filled in.
    fn l4_bytes(&self) -> Vec<u8> {
        match self.l4 {
            L4::Tcp {
                src_port,
                dst_port,
                flags,
                seq,
                ack,
            } => {
                let mut seg = Vec::with_capacity(TCP_HLEN + self.payload.len());
                seg.extend_from_slice(&src_port.to_be_bytes());
                seg.extend_from_slice(&dst_port.to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&ack.to_be_bytes());
                seg.push(((TCP_HLEN / 4) as u8) << 4);
                seg.push(flags);
                seg.extend_from_slice(&DEFAULT_TCP_WINDOW.to_be_bytes());
                seg.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                seg.extend_from_slice(&self.payload);
                let csum = l4_checksum(self.addrs, ipproto::TCP, &seg);
                seg[16..18].copy_from_slice(&csum.to_be_bytes());
                seg
            }
            L4::Udp {
                src_port,
                dst_port,
                zero_checksum,
            } => {
                let len = UDP_HLEN + self.payload.len();
                assert!(
                    u16::try_from(len).is_ok(),
                    "PacketBuilder::build: UDP datagram of {len} bytes exceeds 65535"
                );
                let mut seg = Vec::with_capacity(len);
                seg.extend_from_slice(&src_port.to_be_bytes());
                seg.extend_from_slice(&dst_port.to_be_bytes());
                seg.extend_from_slice(&(len as u16).to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                seg.extend_from_slice(&self.payload);
                if !zero_checksum {
                    // RFC 768: a computed 0 is sent as all ones, 0 means "no checksum".
                    let csum = match l4_checksum(self.addrs, ipproto::UDP, &seg) {
                        0 => 0xffff,
                        c => c,
                    };
                    seg[6..8].copy_from_slice(&csum.to_be_bytes());
                }
                seg
            }
            L4::Raw { .. } => self.payload.clone(),
        }
    }
}

/// Returns an untagged Ethernet frame ([`DEFAULT_SRC_MAC`] -> [`DEFAULT_DST_MAC`]) carrying
/// `payload` under `ethertype`, for non-IP traffic such as ARP. No padding is added.
pub fn ethernet_only(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + payload.len());
    frame.extend_from_slice(&DEFAULT_DST_MAC);
    frame.extend_from_slice(&DEFAULT_SRC_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::fixtures::*;
    use crate::packet::*;

    #[test]
    #[should_panic(expected = "mixed address families")]
    fn mixed_families_panic() {
        drop(PacketBuilder::tcp(
            sock("203.0.113.7:1"),
            sock("[2001:db8::1]:2"),
        ));
    }

    #[test]
    #[should_panic(expected = "IPv4 only")]
    fn ipv4_options_on_ipv6_panic() {
        drop(PacketBuilder::udp(sock("[2001:db8::2]:1"), sock("[2001:db8::1]:2")).ip_options(&[1]));
    }

    #[test]
    #[should_panic(expected = "non-TCP")]
    fn tcp_fields_on_udp_panic() {
        drop(PacketBuilder::udp(sock("203.0.113.7:1"), sock("192.0.2.1:2")).seq(1));
    }

    #[test]
    fn builder_sets_fragment_and_option_fields() {
        let frame = client_syn()
            .fragment(185, false)
            .ip_options(&[1; 9])
            .build();
        let h = decode(&frame).unwrap().ipv4().unwrap().clone();
        assert_eq!((h.flags, h.frag_offset, h.ihl), (0, 185, 8));
        assert_eq!(h.options, [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
        // A non-first fragment: header checked only, L4 left raw.
        assert_eq!(verify_checksums(&frame), Ok(()));
        assert_eq!(decode(&frame).unwrap().transport, Transport::Undecoded);
    }
}

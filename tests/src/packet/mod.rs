//! Test packets for veer's `BPF_PROG_TEST_RUN` and namespace tests.
//!
//! This module owns the byte-level view of a frame, and nothing else (no sockets, no BPF, no
//! root, no veer map types):
//! - [`PacketBuilder`] builds Ethernet (+ one 802.1Q tag) / IPv4 or IPv6 / TCP, UDP or raw L4
//!   frames with correct checksums; [`ethernet_only`] builds non-IP frames (ARP, ...).
//! - [`decode`] gives every header field of a frame, for assertions and diffs.
//! - [`verify_checksums`] checks the IPv4 header checksum and the TCP/UDP checksum over the
//!   pseudo-header; [`checksum`] is the RFC 1071 sum itself.
//! - [`diff`] and [`assert_frames_eq`] compare two frames field by field, so a failing case
//!   prints `ipv4.dst: 192.0.2.10 -> 198.51.100.11`, not two hex blobs.
//! - [`Mutator`] draws seeded random frames and malformations for fuzz tests.
//!
//! Addresses in defaults and examples are documentation ranges: 203.0.113.0/24 clients,
//! 192.0.2.0/24 VIPs, 198.51.100.0/24 backends, `2001:db8::/32` for IPv6.
//!
//! Builder methods panic on impossible requests (mixed address families, TCP fields on a UDP
//! packet, IPv4-only fields on IPv6, oversized headers): those are bugs in the test, and a loud
//! panic names them. Decoding, verifying, diffing and mutating never panic, whatever the bytes.

mod build;
mod checksum;
mod decode;
mod diff;
#[cfg(test)]
mod fixtures;
mod mutate;

pub use build::{PacketBuilder, ethernet_only};
pub use checksum::{ChecksumError, Family, checksum, verify_checksums};
pub use decode::{
    DecodeError, Decoded, Ethernet, Ipv4Header, Ipv6Header, Layer, Network, TcpHeader, Transport,
    UdpHeader, decode,
};
pub use diff::{assert_frames_eq, diff};
pub use mutate::{Mutation, Mutator};

/// TCP flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// `EtherType` values used by the builder, decoder and mutator.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP (`0x0806`).
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag (the only tag [`decode`](fn@super::decode) understands).
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (`QinQ` outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// IP protocol numbers (IPv4 protocol / IPv6 next header) used in tests.
pub mod ipproto {
    /// ICMP (1).
    pub const ICMP: u8 = 1;
    /// TCP (6).
    pub const TCP: u8 = 6;
    /// UDP (17).
    pub const UDP: u8 = 17;
    /// IPv6 fragment extension header.
    pub const IPV6_FRAGMENT: u8 = 44;
    /// GRE (47).
    pub const GRE: u8 = 47;
    /// `ICMPv6`.
    pub const ICMPV6: u8 = 58;
}

/// Source MAC the builder uses unless [`PacketBuilder::eth`] says otherwise.
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Destination MAC the builder uses unless [`PacketBuilder::eth`] says otherwise.
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// TCP window the builder writes.
pub const DEFAULT_TCP_WINDOW: u16 = 64240;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const IPV4_MAX_OPTIONS: usize = 40;
const IPV4_DF: u16 = 0x4000;
const IPV4_MF: u16 = 0x2000;
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

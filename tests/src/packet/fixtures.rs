//! Frames and helpers shared by the packet module's unit tests.

use std::net::{IpAddr, SocketAddr};

use super::{PacketBuilder, ipproto, tcp_flags};

pub(super) fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A second, deliberately different RFC 1071 implementation: 16-bit arithmetic with the
/// end-around carry added at every step, over the concatenation of `parts`.
pub(super) fn reference_checksum(parts: &[&[u8]]) -> u16 {
    let bytes = parts.concat();
    let mut acc: u16 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        let (sum, carry) = acc.overflowing_add(word);
        acc = sum + u16::from(carry);
    }
    !acc
}

pub(super) fn client_syn() -> PacketBuilder {
    PacketBuilder::tcp(sock("203.0.113.7:40000"), sock("192.0.2.10:80")).seq(1)
}

/// Every shape the builder makes, for checksum and round-trip tests.
pub(super) fn sample_frames() -> Vec<(&'static str, Vec<u8>)> {
    let v4c = sock("203.0.113.7:40000");
    let v4v = sock("192.0.2.10:80");
    let v6c = sock("[2001:db8:c::7]:40000");
    let v6v = sock("[2001:db8::10]:443");
    vec![
        ("v4 tcp syn", PacketBuilder::tcp(v4c, v4v).build()),
        (
            "v4 tcp data odd",
            PacketBuilder::tcp(v4c, v4v)
                .tcp_flags(tcp_flags::PSH | tcp_flags::ACK)
                .payload(b"hello")
                .build(),
        ),
        (
            "v4 tcp vlan",
            PacketBuilder::tcp(v4c, v4v).vlan(100).build(),
        ),
        (
            "v4 tcp options",
            PacketBuilder::tcp(v4c, v4v)
                .ip_options(&[0x94, 0x04, 0, 0, 1])
                .payload(b"x")
                .build(),
        ),
        (
            "v4 udp",
            PacketBuilder::udp(v4c, sock("192.0.2.10:53"))
                .payload(b"query")
                .build(),
        ),
        (
            "v4 udp vlan options df",
            PacketBuilder::udp(v4c, sock("192.0.2.10:53"))
                .vlan(4095)
                .ip_options(&[1, 1, 1, 1, 1, 1])
                .dont_fragment()
                .payload(&[0xff; 33])
                .build(),
        ),
        (
            "v4 udp zero checksum",
            PacketBuilder::udp(v4c, sock("192.0.2.10:53"))
                .udp_zero_checksum()
                .payload(b"q")
                .build(),
        ),
        (
            "v4 icmp",
            PacketBuilder::ip_proto(ip("203.0.113.7"), ip("192.0.2.10"), ipproto::ICMP)
                .payload(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0])
                .build(),
        ),
        ("v6 tcp syn", PacketBuilder::tcp(v6c, v6v).build()),
        (
            "v6 tcp data vlan",
            PacketBuilder::tcp(v6c, v6v)
                .vlan(7)
                .tcp_flags(tcp_flags::ACK)
                .payload(b"GET / HTTP/1.1\r\n\r\n!")
                .build(),
        ),
        (
            "v6 udp",
            PacketBuilder::udp(v6c, sock("[2001:db8::10]:53"))
                .payload(b"query!")
                .build(),
        ),
        (
            "v6 udp vlan",
            PacketBuilder::udp(v6c, sock("[2001:db8::10]:53"))
                .vlan(1)
                .payload(&[0; 100])
                .build(),
        ),
    ]
}

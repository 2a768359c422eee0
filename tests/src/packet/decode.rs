//! [`decode`]: every header field of a frame, for assertions and diffs. Never panics.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{
    ETH_HLEN, IPV4_FRAG_OFFSET_MASK, IPV4_HLEN, IPV6_HLEN, TCP_HLEN, UDP_HLEN, VLAN_HLEN,
    ethertype, ipproto,
};

/// A protocol layer, as named in [`DecodeError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet header (14 bytes).
    Ethernet,
    /// 802.1Q tag (4 bytes).
    Vlan,
    /// IPv4 header without options (20 bytes), or the datagram its total length declares.
    Ipv4,
    /// IPv4 options (IHL * 4 - 20 bytes).
    Ipv4Options,
    /// IPv6 header (40 bytes), or the packet its payload length declares.
    Ipv6,
    /// TCP header without options (20 bytes).
    Tcp,
    /// TCP options (data offset * 4 - 20 bytes).
    TcpOptions,
    /// UDP header (8 bytes).
    Udp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ethernet => "ethernet",
            Self::Vlan => "vlan",
            Self::Ipv4 => "ipv4",
            Self::Ipv4Options => "ipv4 options",
            Self::Ipv6 => "ipv6",
            Self::Tcp => "tcp",
            Self::TcpOptions => "tcp options",
            Self::Udp => "udp",
        })
    }
}

/// Where and why a frame could not be decoded (or checked) further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame ends inside `layer`.
    Truncated {
        /// The layer that does not fit.
        layer: Layer,
        /// Frame offset where that layer starts.
        offset: usize,
        /// Bytes the layer needs.
        needed: usize,
        /// Bytes the frame has from `offset` on.
        available: usize,
    },
    /// A length field of `layer` has an impossible value.
    Invalid {
        /// The layer holding the field.
        layer: Layer,
        /// Frame offset where that layer starts.
        offset: usize,
        /// Field name, as in the [`diff`](fn@super::diff) output (`ihl`, `data_offset`,
        /// `length`, ...).
        field: &'static str,
        /// The value found.
        value: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated {
                layer,
                offset,
                needed,
                available,
            } => write!(
                f,
                "{layer} at offset {offset} is truncated: needs {needed} bytes, frame has {available}"
            ),
            Self::Invalid {
                layer,
                offset,
                field,
                value,
            } => write!(
                f,
                "{layer} at offset {offset} has an impossible {field} of {value}"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

pub(super) fn truncated(
    layer: Layer,
    offset: usize,
    needed: usize,
    available: usize,
) -> DecodeError {
    DecodeError::Truncated {
        layer,
        offset,
        needed,
        available,
    }
}

pub(super) fn invalid(layer: Layer, offset: usize, field: &'static str, value: u32) -> DecodeError {
    DecodeError::Invalid {
        layer,
        offset,
        field,
        value,
    }
}

/// Ethernet header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ethernet {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// TCI (PCP, DEI, VLAN id) of the 802.1Q tag, if the frame has one.
    pub vlan: Option<u16>,
    /// `EtherType` after the tag (if any).
    pub ethertype: u16,
}

/// IPv4 header fields, as found in the frame (not validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Version nibble (4 in a sane packet).
    pub version: u8,
    /// Header length in 32-bit words.
    pub ihl: u8,
    /// Type of service (DSCP and ECN).
    pub tos: u8,
    /// Total length of the datagram in bytes.
    pub total_len: u16,
    /// Identification (fragment reassembly id).
    pub id: u16,
    /// The three flag bits: 0b100 reserved, 0b010 DF, 0b001 MF.
    pub flags: u8,
    /// Fragment offset in units of 8 bytes.
    pub frag_offset: u16,
    /// Time to live.
    pub ttl: u8,
    /// L4 protocol.
    pub proto: u8,
    /// Header checksum.
    pub checksum: u16,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Option bytes (IHL * 4 - 20 of them; empty when they do not fit or IHL < 5).
    pub options: Vec<u8>,
}

impl Ipv4Header {
    /// Whether this is a fragment: More Fragments set or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        self.flags & 0b001 != 0 || self.frag_offset != 0
    }
}

/// IPv6 fixed header fields (extension headers are not decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Header {
    /// Version nibble (6 in a sane packet).
    pub version: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Payload length in bytes.
    pub payload_len: u16,
    /// Next header.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
}

/// TCP header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Header length in 32-bit words.
    pub data_offset: u8,
    /// The low nibble of byte 12 (reserved bits and the old NS bit).
    pub reserved: u8,
    /// Flag byte (see [`tcp_flags`](mod@super::tcp_flags)).
    pub flags: u8,
    /// Receive window.
    pub window: u16,
    /// Checksum, as found.
    pub checksum: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Option bytes (data offset * 4 - 20 of them; empty when they do not fit or the offset
    /// is below 5).
    pub options: Vec<u8>,
}

/// UDP header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length field (header + data).
    pub length: u16,
    /// Checksum (0 = none over IPv4).
    pub checksum: u16,
}

/// The network layer of a decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// IPv4 header.
    Ipv4(Ipv4Header),
    /// IPv6 fixed header.
    Ipv6(Ipv6Header),
    /// Not IP, or the IP header is truncated: the bytes are in [`Decoded::payload`].
    Undecoded,
}

/// The transport layer of a decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// TCP header.
    Tcp(TcpHeader),
    /// UDP header.
    Udp(UdpHeader),
    /// Another protocol, a non-first IPv4 fragment, an IPv6 extension header, or a truncated
    /// header: the bytes are in [`Decoded::payload`].
    Undecoded,
}

/// Every field of a frame, as [`decode`] found it.
///
/// The headers are decoded against the end of the frame, not against the lengths the headers
/// declare, so lying length fields show up as field values rather than stopping the decoder.
/// The declared IP length only splits the rest into `payload` and `trailer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Ethernet header and optional 802.1Q tag.
    pub eth: Ethernet,
    /// IP header, if the `EtherType` is IPv4/IPv6 and the fixed header fits.
    pub network: Network,
    /// TCP/UDP header, if the protocol is TCP/UDP, the packet is not a non-first fragment and
    /// the fixed header fits.
    pub transport: Transport,
    /// Bytes after the last decoded header, up to the end of the IP packet as its header
    /// declares (or the end of the frame, whichever comes first).
    pub payload: Vec<u8>,
    /// Bytes after the end of the IP packet as its header declares (Ethernet padding, junk).
    /// Always empty for non-IP frames.
    pub trailer: Vec<u8>,
    /// Why decoding stopped before a layer it would have decoded (truncation, or an IHL or TCP
    /// data offset below 5); `None` when every recognised layer was decoded.
    pub stopped: Option<DecodeError>,
}

impl Decoded {
    /// Frame offset of the network header (14, or 18 with a VLAN tag).
    pub fn l3_offset(&self) -> usize {
        ETH_HLEN
            + if self.eth.vlan.is_some() {
                VLAN_HLEN
            } else {
                0
            }
    }

    /// Frame offset of the transport header, if the network layer was decoded.
    pub fn l4_offset(&self) -> Option<usize> {
        match &self.network {
            Network::Ipv4(h) => Some(self.l3_offset() + IPV4_HLEN + h.options.len()),
            Network::Ipv6(_) => Some(self.l3_offset() + IPV6_HLEN),
            Network::Undecoded => None,
        }
    }

    /// Frame offset of [`payload`](Self::payload).
    pub fn payload_offset(&self) -> usize {
        let Some(l4) = self.l4_offset() else {
            return self.l3_offset();
        };
        match &self.transport {
            Transport::Tcp(h) => l4 + TCP_HLEN + h.options.len(),
            Transport::Udp(_) => l4 + UDP_HLEN,
            Transport::Undecoded => l4,
        }
    }

    /// The IPv4 header, if any.
    pub fn ipv4(&self) -> Option<&Ipv4Header> {
        match &self.network {
            Network::Ipv4(h) => Some(h),
            _ => None,
        }
    }

    /// The IPv6 header, if any.
    pub fn ipv6(&self) -> Option<&Ipv6Header> {
        match &self.network {
            Network::Ipv6(h) => Some(h),
            _ => None,
        }
    }

    /// The TCP header, if any.
    pub fn tcp(&self) -> Option<&TcpHeader> {
        match &self.transport {
            Transport::Tcp(h) => Some(h),
            _ => None,
        }
    }

    /// The UDP header, if any.
    pub fn udp(&self) -> Option<&UdpHeader> {
        match &self.transport {
            Transport::Udp(h) => Some(h),
            _ => None,
        }
    }

    /// Source address and port, if both the IP and the TCP/UDP headers were decoded.
    pub fn src(&self) -> Option<SocketAddr> {
        let ip = match &self.network {
            Network::Ipv4(h) => IpAddr::V4(h.src),
            Network::Ipv6(h) => IpAddr::V6(h.src),
            Network::Undecoded => return None,
        };
        let port = match &self.transport {
            Transport::Tcp(h) => h.src_port,
            Transport::Udp(h) => h.src_port,
            Transport::Undecoded => return None,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// Destination address and port, if both the IP and the TCP/UDP headers were decoded.
    pub fn dst(&self) -> Option<SocketAddr> {
        let ip = match &self.network {
            Network::Ipv4(h) => IpAddr::V4(h.dst),
            Network::Ipv6(h) => IpAddr::V6(h.dst),
            Network::Undecoded => return None,
        };
        let port = match &self.transport {
            Transport::Tcp(h) => h.dst_port,
            Transport::Udp(h) => h.dst_port,
            Transport::Undecoded => return None,
        };
        Some(SocketAddr::new(ip, port))
    }
}

pub(super) fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(super) fn ipv4_at(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
}

pub(super) fn ipv6_at(b: &[u8], off: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[off..off + 16]);
    Ipv6Addr::from(octets)
}

fn mac_at(b: &[u8], off: usize) -> [u8; 6] {
    [
        b[off],
        b[off + 1],
        b[off + 2],
        b[off + 3],
        b[off + 4],
        b[off + 5],
    ]
}

/// Ethernet header and L3 offset; only the VLAN TCI of a truncated tag is not decoded.
pub(super) fn decode_ethernet(frame: &[u8]) -> Result<(Ethernet, usize), DecodeError> {
    if frame.len() < ETH_HLEN {
        return Err(truncated(Layer::Ethernet, 0, ETH_HLEN, frame.len()));
    }
    let mut eth = Ethernet {
        dst: mac_at(frame, 0),
        src: mac_at(frame, 6),
        vlan: None,
        ethertype: be16(frame, 12),
    };
    if eth.ethertype != ethertype::VLAN {
        return Ok((eth, ETH_HLEN));
    }
    if frame.len() < ETH_HLEN + VLAN_HLEN {
        return Err(truncated(
            Layer::Vlan,
            ETH_HLEN - 2,
            VLAN_HLEN,
            frame.len() - (ETH_HLEN - 2),
        ));
    }
    eth.vlan = Some(be16(frame, 14));
    eth.ethertype = be16(frame, 16);
    Ok((eth, ETH_HLEN + VLAN_HLEN))
}

/// Decodes `frame` layer by layer.
///
/// Truncated frames: only a frame shorter than the 14-byte Ethernet header is an error
/// ([`DecodeError::Truncated`] at [`Layer::Ethernet`]). Otherwise every layer whose fixed
/// header fits is decoded, the first one that does not fit (or has an IHL/data offset below
/// 5) is named in [`Decoded::stopped`], and its bytes and everything after them are left raw
/// in [`Decoded::payload`]. A VLAN tag cut short leaves `eth.ethertype` = 0x8100 and
/// `eth.vlan` = `None`. Only one 802.1Q tag (0x8100) is decoded; a second tag or an 802.1ad tag
/// leaves the network layer undecoded.
pub fn decode(frame: &[u8]) -> Result<Decoded, DecodeError> {
    let mut stopped = None;
    let (eth, l3) = match decode_ethernet(frame) {
        Ok(found) => found,
        Err(
            e @ DecodeError::Truncated {
                layer: Layer::Vlan, ..
            },
        ) => {
            stopped = Some(e);
            let eth = Ethernet {
                dst: mac_at(frame, 0),
                src: mac_at(frame, 6),
                vlan: None,
                ethertype: ethertype::VLAN,
            };
            (eth, ETH_HLEN)
        }
        Err(e) => return Err(e),
    };
    let mut decoded = Decoded {
        eth,
        network: Network::Undecoded,
        transport: Transport::Undecoded,
        payload: Vec::new(),
        trailer: Vec::new(),
        stopped,
    };
    // Offset of the first byte not yet decoded, and the end of the IP packet as declared.
    let mut next = l3;
    let mut declared_end = frame.len();
    if decoded.stopped.is_none() {
        let l4 = decode_network(frame, l3, &mut decoded);
        if let Network::Ipv4(h) = &decoded.network {
            declared_end = l3 + usize::from(h.total_len);
        } else if let Network::Ipv6(h) = &decoded.network {
            declared_end = l3 + IPV6_HLEN + usize::from(h.payload_len);
        }
        if let Some((proto, l4)) = l4 {
            next = l4;
            if decoded.stopped.is_none() {
                next = decode_transport(frame, l4, proto, &mut decoded);
            }
        }
    }
    let end = declared_end.clamp(next, frame.len());
    decoded.payload = frame[next..end].to_vec();
    decoded.trailer = frame[end..].to_vec();
    Ok(decoded)
}

/// Decodes the IP header at `l3` into `decoded`. Returns the L4 protocol and offset when the
/// transport layer is worth trying (or when decoding stopped, the offset the raw bytes start
/// at), `None` when the network layer is undecoded.
fn decode_network(frame: &[u8], l3: usize, decoded: &mut Decoded) -> Option<(Option<u8>, usize)> {
    let available = frame.len() - l3;
    match decoded.eth.ethertype {
        ethertype::IPV4 => {
            if available < IPV4_HLEN {
                decoded.stopped = Some(truncated(Layer::Ipv4, l3, IPV4_HLEN, available));
                return None;
            }
            let ihl = frame[l3] & 0x0f;
            let flags_frag = be16(frame, l3 + 6);
            let header_len = usize::from(ihl) * 4;
            let mut header = Ipv4Header {
                version: frame[l3] >> 4,
                ihl,
                tos: frame[l3 + 1],
                total_len: be16(frame, l3 + 2),
                id: be16(frame, l3 + 4),
                flags: (flags_frag >> 13) as u8,
                frag_offset: flags_frag & IPV4_FRAG_OFFSET_MASK,
                ttl: frame[l3 + 8],
                proto: frame[l3 + 9],
                checksum: be16(frame, l3 + 10),
                src: ipv4_at(frame, l3 + 12),
                dst: ipv4_at(frame, l3 + 16),
                options: Vec::new(),
            };
            if header_len < IPV4_HLEN {
                decoded.stopped = Some(invalid(Layer::Ipv4, l3, "ihl", ihl.into()));
            } else if header_len > available {
                decoded.stopped = Some(truncated(
                    Layer::Ipv4Options,
                    l3 + IPV4_HLEN,
                    header_len - IPV4_HLEN,
                    available - IPV4_HLEN,
                ));
            } else {
                header.options = frame[l3 + IPV4_HLEN..l3 + header_len].to_vec();
            }
            let l4 = l3 + IPV4_HLEN + header.options.len();
            // A non-first fragment carries no L4 header.
            let proto = (header.frag_offset == 0).then_some(header.proto);
            decoded.network = Network::Ipv4(header);
            Some((proto, l4))
        }
        ethertype::IPV6 => {
            if available < IPV6_HLEN {
                decoded.stopped = Some(truncated(Layer::Ipv6, l3, IPV6_HLEN, available));
                return None;
            }
            let word = be32(frame, l3);
            let header = Ipv6Header {
                version: (word >> 28) as u8,
                traffic_class: (word >> 20) as u8,
                flow_label: word & 0x000f_ffff,
                payload_len: be16(frame, l3 + 4),
                next_header: frame[l3 + 6],
                hop_limit: frame[l3 + 7],
                src: ipv6_at(frame, l3 + 8),
                dst: ipv6_at(frame, l3 + 24),
            };
            let proto = Some(header.next_header);
            decoded.network = Network::Ipv6(header);
            Some((proto, l3 + IPV6_HLEN))
        }
        _ => None,
    }
}

/// Decodes a TCP/UDP header at `l4` into `decoded`; returns where the payload starts.
fn decode_transport(frame: &[u8], l4: usize, proto: Option<u8>, decoded: &mut Decoded) -> usize {
    let available = frame.len() - l4;
    match proto {
        Some(ipproto::TCP) => {
            if available < TCP_HLEN {
                decoded.stopped = Some(truncated(Layer::Tcp, l4, TCP_HLEN, available));
                return l4;
            }
            let data_offset = frame[l4 + 12] >> 4;
            let header_len = usize::from(data_offset) * 4;
            let mut header = TcpHeader {
                src_port: be16(frame, l4),
                dst_port: be16(frame, l4 + 2),
                seq: be32(frame, l4 + 4),
                ack: be32(frame, l4 + 8),
                data_offset,
                reserved: frame[l4 + 12] & 0x0f,
                flags: frame[l4 + 13],
                window: be16(frame, l4 + 14),
                checksum: be16(frame, l4 + 16),
                urgent: be16(frame, l4 + 18),
                options: Vec::new(),
            };
            if header_len < TCP_HLEN {
                decoded.stopped = Some(invalid(Layer::Tcp, l4, "data_offset", data_offset.into()));
            } else if header_len > available {
                decoded.stopped = Some(truncated(
                    Layer::TcpOptions,
                    l4 + TCP_HLEN,
                    header_len - TCP_HLEN,
                    available - TCP_HLEN,
                ));
            } else {
                header.options = frame[l4 + TCP_HLEN..l4 + header_len].to_vec();
            }
            let next = l4 + TCP_HLEN + header.options.len();
            decoded.transport = Transport::Tcp(header);
            next
        }
        Some(ipproto::UDP) => {
            if available < UDP_HLEN {
                decoded.stopped = Some(truncated(Layer::Udp, l4, UDP_HLEN, available));
                return l4;
            }
            decoded.transport = Transport::Udp(UdpHeader {
                src_port: be16(frame, l4),
                dst_port: be16(frame, l4 + 2),
                length: be16(frame, l4 + 4),
                checksum: be16(frame, l4 + 6),
            });
            l4 + UDP_HLEN
        }
        _ => l4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::fixtures::*;
    use crate::packet::mutate::put16;
    use crate::packet::*;

    #[test]
    fn decode_round_trips_builder_fields_ipv4() {
        let frame = PacketBuilder::tcp(sock("203.0.113.7:40000"), sock("192.0.2.10:80"))
            .eth([0x02, 0xaa, 0, 0, 0, 1], [0x02, 0xbb, 0, 0, 0, 2])
            .vlan(100)
            .tcp_flags(tcp_flags::PSH | tcp_flags::ACK)
            .seq(0xdead_beef)
            .ack(7)
            .ttl(3)
            .ip_id(0x1234)
            .ip_options(&[0x94, 0x04, 0, 0, 1])
            .dont_fragment()
            .fragment(0, true)
            .payload(b"GET /")
            .build();
        let d = decode(&frame).unwrap();
        let Network::Ipv4(h) = &d.network else {
            panic!("not ipv4: {d:?}");
        };
        let expected = Decoded {
            eth: Ethernet {
                dst: [0x02, 0xbb, 0, 0, 0, 2],
                src: [0x02, 0xaa, 0, 0, 0, 1],
                vlan: Some(100),
                ethertype: ethertype::IPV4,
            },
            network: Network::Ipv4(Ipv4Header {
                version: 4,
                ihl: 7,
                tos: 0,
                total_len: 28 + 20 + 5,
                id: 0x1234,
                flags: 0b011,
                frag_offset: 0,
                ttl: 3,
                proto: ipproto::TCP,
                checksum: h.checksum,
                src: "203.0.113.7".parse().unwrap(),
                dst: "192.0.2.10".parse().unwrap(),
                options: vec![0x94, 0x04, 0, 0, 1, 0, 0, 0],
            }),
            transport: Transport::Tcp(TcpHeader {
                src_port: 40000,
                dst_port: 80,
                seq: 0xdead_beef,
                ack: 7,
                data_offset: 5,
                reserved: 0,
                flags: tcp_flags::PSH | tcp_flags::ACK,
                window: DEFAULT_TCP_WINDOW,
                checksum: d.tcp().unwrap().checksum,
                urgent: 0,
                options: vec![],
            }),
            payload: b"GET /".to_vec(),
            trailer: vec![],
            stopped: None,
        };
        assert_eq!(d, expected);
        assert!(h.is_fragment());
        assert_eq!(d.l3_offset(), 18);
        assert_eq!(d.l4_offset(), Some(18 + 28));
        assert_eq!(d.payload_offset(), 18 + 28 + 20);
        assert_eq!(d.src(), Some(sock("203.0.113.7:40000")));
        assert_eq!(d.dst(), Some(sock("192.0.2.10:80")));
        assert_eq!(verify_checksums(&frame), Ok(()));
    }

    #[test]
    fn decode_round_trips_builder_fields_ipv6_and_raw() {
        let frame = PacketBuilder::udp(sock("[2001:db8:c::7]:5353"), sock("[2001:db8::10]:53"))
            .ttl(9)
            .payload(b"q")
            .build();
        let d = decode(&frame).unwrap();
        assert_eq!(
            d.network,
            Network::Ipv6(Ipv6Header {
                version: 6,
                traffic_class: 0,
                flow_label: 0,
                payload_len: 9,
                next_header: ipproto::UDP,
                hop_limit: 9,
                src: "2001:db8:c::7".parse().unwrap(),
                dst: "2001:db8::10".parse().unwrap(),
            })
        );
        assert_eq!(
            d.transport,
            Transport::Udp(UdpHeader {
                src_port: 5353,
                dst_port: 53,
                length: 9,
                checksum: be16(&frame, 54 + 6),
            })
        );
        assert_eq!(d.payload, b"q");
        assert_eq!(d.eth.vlan, None);
        assert_eq!(d.dst(), Some(sock("[2001:db8::10]:53")));

        let gre = PacketBuilder::ip_proto(ip("203.0.113.1"), ip("198.51.100.11"), ipproto::GRE)
            .payload(&[0, 0, 0x08, 0x00])
            .build();
        let d = decode(&gre).unwrap();
        assert_eq!(d.ipv4().unwrap().proto, ipproto::GRE);
        assert_eq!(d.transport, Transport::Undecoded);
        assert_eq!(d.payload, [0, 0, 0x08, 0x00]);
        assert_eq!(d.src(), None);

        let arp = ethernet_only(ethertype::ARP, &[7; 28]);
        let d = decode(&arp).unwrap();
        assert_eq!(d.eth.ethertype, ethertype::ARP);
        assert_eq!(d.network, Network::Undecoded);
        assert_eq!(d.payload, [7; 28]);
        assert_eq!(d.stopped, None);
    }

    #[test]
    fn decode_names_the_truncated_layer() {
        let frame = client_syn().vlan(5).payload(b"abc").build();
        assert_eq!(
            decode(&frame[..10]),
            Err(DecodeError::Truncated {
                layer: Layer::Ethernet,
                offset: 0,
                needed: 14,
                available: 10
            })
        );
        let cases = [
            (16, Layer::Vlan, 12),
            (30, Layer::Ipv4, 18),
            (18 + 20 + 7, Layer::Tcp, 38),
        ];
        for (cut, layer, offset) in cases {
            let d = decode(&frame[..cut]).unwrap();
            let Some(DecodeError::Truncated {
                layer: l,
                offset: o,
                ..
            }) = d.stopped
            else {
                panic!("cut {cut}: {d:?}");
            };
            assert_eq!((l, o), (layer, offset), "cut {cut}");
            // Undecoded bytes are kept, nothing is lost.
            assert_eq!(d.payload_offset() + d.payload.len() + d.trailer.len(), cut);
            assert_eq!(&frame[d.payload_offset()..cut], d.payload.as_slice());
        }
        // Every prefix decodes; only one shorter than Ethernet is an error.
        for cut in 0..=frame.len() {
            assert_eq!(decode(&frame[..cut]).is_err(), cut < 14, "cut {cut}");
        }
    }

    #[test]
    fn decode_handles_lying_lengths() {
        let frame = client_syn().payload(b"abcd").build();
        let mut short = frame.clone();
        put16(&mut short, 16, 20 + 20 + 2); // total length cuts the payload in half
        let d = decode(&short).unwrap();
        assert_eq!(d.payload, b"ab");
        assert_eq!(d.trailer, b"cd");
        let mut bad_ihl = frame.clone();
        bad_ihl[14] = 0x43;
        let d = decode(&bad_ihl).unwrap();
        assert_eq!(
            d.stopped,
            Some(DecodeError::Invalid {
                layer: Layer::Ipv4,
                offset: 14,
                field: "ihl",
                value: 3
            })
        );
        assert_eq!(d.transport, Transport::Undecoded);
        let mut big_offset = frame.clone();
        big_offset[14 + 20 + 12] = 0xf0;
        let d = decode(&big_offset).unwrap();
        assert!(matches!(
            d.stopped,
            Some(DecodeError::Truncated {
                layer: Layer::TcpOptions,
                ..
            })
        ));
        assert_eq!(d.tcp().unwrap().data_offset, 15);
    }
}

//! The RFC 1071 checksum and [`verify_checksums`], which checks a frame's IPv4 header and
//! TCP/UDP checksums.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::decode::{be16, decode_ethernet, invalid, ipv4_at, ipv6_at, truncated};
use super::{
    DecodeError, IPV4_FRAG_OFFSET_MASK, IPV4_HLEN, IPV4_MF, IPV6_HLEN, Layer, TCP_HLEN, UDP_HLEN,
    ethertype, ipproto,
};

/// Source and destination of one packet, of one family by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Addrs {
    /// Pairs `src` and `dst`; panics when their families differ (`what` names the caller).
    pub(super) fn new(src: IpAddr, dst: IpAddr, what: &str) -> Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Self::V4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => Self::V6(s, d),
            _ => panic!("PacketBuilder::{what}: mixed address families {src} -> {dst}"),
        }
    }

    /// Plain (unfolded) sum of the TCP/UDP pseudo-header words for a segment of `len` bytes.
    fn pseudo_sum(self, proto: u8, len: usize) -> u64 {
        match self {
            Self::V4(s, d) => {
                let sum = sum_words(&s.octets()) + sum_words(&d.octets());
                sum + u64::from(proto) + len as u64
            }
            Self::V6(s, d) => {
                let mut sum = sum_words(&s.octets()) + sum_words(&d.octets());
                sum += (len as u64 >> 16) + (len as u64 & 0xffff);
                sum + u64::from(proto)
            }
        }
    }

    pub(super) fn family(self) -> Family {
        match self {
            Self::V4(..) => Family::Ipv4,
            Self::V6(..) => Family::Ipv6,
        }
    }
}

/// Plain sum of big-endian 16-bit words; an odd trailing byte is padded with zero.
fn sum_words(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u64 = chunks
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds carries back into the low 16 bits (one's complement addition).
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Returns the RFC 1071 Internet checksum of `data`: the one's complement of the one's
/// complement sum of its big-endian 16-bit words, an odd trailing byte padded with zero.
///
/// Over a header whose checksum field is zero this is the value to store in that field.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data))
}

/// TCP/UDP checksum of `segment` (with its checksum field zeroed) over the pseudo-header.
pub(super) fn l4_checksum(addrs: Addrs, proto: u8, segment: &[u8]) -> u16 {
    !fold(addrs.pseudo_sum(proto, segment.len()) + sum_words(segment))
}

/// An IP family, as named in [`ChecksumError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        })
    }
}

/// Why [`verify_checksums`] rejected a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChecksumError {
    /// The IPv4 header checksum is wrong.
    Ipv4Header {
        /// Checksum field in the frame.
        found: u16,
        /// Checksum of the header as it is.
        expected: u16,
    },
    /// The TCP checksum over the pseudo-header is wrong.
    Tcp {
        /// Family of the pseudo-header.
        family: Family,
        /// Checksum field in the frame.
        found: u16,
        /// Checksum of the segment as it is.
        expected: u16,
    },
    /// The UDP checksum over the pseudo-header is wrong, or is 0 over IPv6.
    Udp {
        /// Family of the pseudo-header.
        family: Family,
        /// Checksum field in the frame (0 over IPv6 means it was omitted, which is invalid).
        found: u16,
        /// Checksum of the datagram as it is.
        expected: u16,
    },
    /// A length field or the frame's size leaves no well-defined range to check.
    Malformed {
        /// What is wrong, and where.
        source: DecodeError,
    },
}

impl fmt::Display for ChecksumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4Header { found, expected } => {
                write!(
                    f,
                    "ipv4 header checksum is {found:#06x}, expected {expected:#06x}"
                )
            }
            Self::Tcp {
                family,
                found,
                expected,
            } => write!(
                f,
                "tcp checksum over the {family} pseudo-header is {found:#06x}, expected {expected:#06x}"
            ),
            Self::Udp {
                family: Family::Ipv6,
                found: 0,
                expected,
            } => write!(
                f,
                "udp checksum over ipv6 is 0 (omitted), which IPv6 forbids; expected {expected:#06x}"
            ),
            Self::Udp {
                family,
                found,
                expected,
            } => write!(
                f,
                "udp checksum over the {family} pseudo-header is {found:#06x}, expected {expected:#06x}"
            ),
            Self::Malformed { source } => write!(f, "cannot verify checksums: {source}"),
        }
    }
}

impl std::error::Error for ChecksumError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Malformed { source } => Some(source),
            _ => None,
        }
    }
}

/// Verifies the checksums of `frame`.
///
/// - IPv4: the header checksum, then the TCP or UDP checksum over the pseudo-header. An IPv4
///   UDP checksum of 0 means "none" and passes. Fragments (MF set or offset non-zero) have
///   only their header checked, since their L4 checksum covers the reassembled datagram.
/// - IPv6 (L4 protocol directly in next header): the TCP or UDP checksum; a UDP checksum of 0
///   is an error.
/// - The L4 range is the one the IP header declares (IPv4 total length, IPv6 payload length,
///   then the UDP length), so Ethernet padding after it is ignored.
/// - Both one's complement zeros (0x0000 and 0xffff) are accepted, as receivers do:
///   incremental updates (RFC 1624) may produce either.
/// - Frames with nothing to check pass: non-IP `EtherType`s, and IP protocols other than TCP and
///   UDP (no ICMP checksum is checked). Only one 802.1Q tag is understood.
///
/// Returns [`ChecksumError::Malformed`] when a header is truncated or a length field points
/// outside the frame, since no checksum can then be judged.
pub fn verify_checksums(frame: &[u8]) -> Result<(), ChecksumError> {
    let malformed = |source| ChecksumError::Malformed { source };
    let (eth, l3) = decode_ethernet(frame).map_err(malformed)?;
    match eth.ethertype {
        ethertype::IPV4 => verify_ipv4(frame, l3),
        ethertype::IPV6 => verify_ipv6(frame, l3),
        _ => Ok(()),
    }
}

fn verify_ipv4(frame: &[u8], l3: usize) -> Result<(), ChecksumError> {
    let malformed = |source| ChecksumError::Malformed { source };
    let available = frame.len() - l3;
    if available < IPV4_HLEN {
        return Err(malformed(truncated(Layer::Ipv4, l3, IPV4_HLEN, available)));
    }
    let ihl = frame[l3] & 0x0f;
    let header_len = usize::from(ihl) * 4;
    if header_len < IPV4_HLEN {
        return Err(malformed(invalid(Layer::Ipv4, l3, "ihl", ihl.into())));
    }
    if available < header_len {
        return Err(malformed(truncated(
            Layer::Ipv4Options,
            l3 + IPV4_HLEN,
            header_len - IPV4_HLEN,
            available - IPV4_HLEN,
        )));
    }
    let header = &frame[l3..l3 + header_len];
    let sum = sum_words(header);
    if fold(sum) != 0xffff {
        let found = be16(header, 10);
        return Err(ChecksumError::Ipv4Header {
            found,
            expected: !fold(sum - u64::from(found)),
        });
    }
    let total_len = usize::from(be16(header, 2));
    if total_len < header_len {
        return Err(malformed(invalid(
            Layer::Ipv4,
            l3,
            "total_len",
            total_len as u32,
        )));
    }
    if total_len > available {
        return Err(malformed(truncated(Layer::Ipv4, l3, total_len, available)));
    }
    if be16(header, 6) & (IPV4_MF | IPV4_FRAG_OFFSET_MASK) != 0 {
        return Ok(());
    }
    let addrs = Addrs::V4(ipv4_at(header, 12), ipv4_at(header, 16));
    verify_l4(frame, addrs, header[9], l3 + header_len, l3 + total_len)
}

fn verify_ipv6(frame: &[u8], l3: usize) -> Result<(), ChecksumError> {
    let malformed = |source| ChecksumError::Malformed { source };
    let available = frame.len() - l3;
    if available < IPV6_HLEN {
        return Err(malformed(truncated(Layer::Ipv6, l3, IPV6_HLEN, available)));
    }
    let header = &frame[l3..l3 + IPV6_HLEN];
    let payload_len = usize::from(be16(header, 4));
    if IPV6_HLEN + payload_len > available {
        return Err(malformed(truncated(
            Layer::Ipv6,
            l3,
            IPV6_HLEN + payload_len,
            available,
        )));
    }
    let addrs = Addrs::V6(ipv6_at(header, 8), ipv6_at(header, 24));
    verify_l4(
        frame,
        addrs,
        header[6],
        l3 + IPV6_HLEN,
        l3 + IPV6_HLEN + payload_len,
    )
}

/// Verifies the TCP/UDP checksum of `frame[l4..end]`; other protocols pass.
fn verify_l4(
    frame: &[u8],
    addrs: Addrs,
    proto: u8,
    l4: usize,
    end: usize,
) -> Result<(), ChecksumError> {
    let malformed = |source| ChecksumError::Malformed { source };
    let segment = &frame[l4..end];
    let family = addrs.family();
    match proto {
        ipproto::TCP => {
            if segment.len() < TCP_HLEN {
                return Err(malformed(truncated(
                    Layer::Tcp,
                    l4,
                    TCP_HLEN,
                    segment.len(),
                )));
            }
            let sum = addrs.pseudo_sum(proto, segment.len()) + sum_words(segment);
            if fold(sum) == 0xffff {
                return Ok(());
            }
            let found = be16(segment, 16);
            Err(ChecksumError::Tcp {
                family,
                found,
                expected: !fold(sum - u64::from(found)),
            })
        }
        ipproto::UDP => {
            if segment.len() < UDP_HLEN {
                return Err(malformed(truncated(
                    Layer::Udp,
                    l4,
                    UDP_HLEN,
                    segment.len(),
                )));
            }
            let length = usize::from(be16(segment, 4));
            if length < UDP_HLEN || length > segment.len() {
                return Err(malformed(invalid(Layer::Udp, l4, "length", length as u32)));
            }
            let datagram = &segment[..length];
            let found = be16(datagram, 6);
            if found == 0 && family == Family::Ipv4 {
                return Ok(());
            }
            let sum = addrs.pseudo_sum(proto, length) + sum_words(datagram);
            if found != 0 && fold(sum) == 0xffff {
                return Ok(());
            }
            let expected = match !fold(sum - u64::from(found)) {
                0 => 0xffff,
                c => c,
            };
            Err(ChecksumError::Udp {
                family,
                found,
                expected,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::decode::be16;
    use crate::packet::fixtures::*;
    use crate::packet::mutate::{fix_ipv4_checksum, put16};
    use crate::packet::*;

    #[test]
    fn checksum_matches_rfc1071_vectors() {
        // RFC 1071 section 3 example: the sum is 0xddf2, so the checksum is !0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // The common IPv4 header example (checksum field zeroed) whose checksum is 0xb861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
        // Odd length: the last byte is the high byte of a zero-padded word.
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), !(0x1234u16 + 0x5600));
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn ipv4_tcp_syn_matches_hand_computed_bytes() {
        let frame = client_syn().build();
        // IPv4 checksum: 4500+0028+0000+0000+4006+0000+cb00+7107+c000+020a = 0x2833f,
        // folded 0x8341, complemented 0x7cbe. The TCP checksum 0x1a4e (pseudo-header
        // cb00 7107 c000 020a 0006 0014) was computed with a separate Python RFC 1071
        // implementation.
        #[rustfmt::skip]
        let expected: [u8; 54] = [
            // Ethernet: dst, src, IPv4
            0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
            // IPv4: ver/ihl, tos, len 40, id 0, no flags, ttl 64, tcp, checksum
            0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x40, 0x06, 0x7c, 0xbe,
            203, 0, 113, 7, 192, 0, 2, 10,
            // TCP: 40000 -> 80, seq 1, ack 0, offset 5, SYN, window 64240, checksum, urgent 0
            0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0,
            0x1a, 0x4e, 0x00, 0x00,
        ];
        assert_frames_eq("hand-computed SYN", &expected, &frame);
        assert_eq!(frame, expected);

        // Cross-check against the second implementation.
        let mut ip_header = frame[14..34].to_vec();
        ip_header[10..12].fill(0);
        assert_eq!(reference_checksum(&[&ip_header]), 0x7cbe);
        let mut tcp = frame[34..].to_vec();
        tcp[16..18].fill(0);
        let pseudo = [203, 0, 113, 7, 192, 0, 2, 10, 0, 6, 0, 20];
        assert_eq!(reference_checksum(&[&pseudo, &tcp]), 0x1a4e);
    }

    #[test]
    fn ipv6_udp_matches_independent_checksum() {
        let frame = PacketBuilder::udp(sock("[2001:db8::1]:5353"), sock("[2001:db8::10]:53"))
            .payload(b"veer!")
            .build();
        assert_eq!(frame.len(), 14 + 40 + 8 + 5);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(&frame[14..22], &[0x60, 0, 0, 0, 0, 13, 17, 64]);
        // 0x925b computed with a separate Python implementation over the IPv6 pseudo-header.
        assert_eq!(be16(&frame, 54 + 6), 0x925b);
        let mut udp = frame[54..].to_vec();
        udp[6..8].fill(0);
        let mut pseudo = frame[22..54].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 13, 0, 0, 0, 17]);
        assert_eq!(reference_checksum(&[&pseudo, &udp]), 0x925b);
    }

    #[test]
    fn built_frames_pass_verification_and_match_reference() {
        for (name, frame) in sample_frames() {
            assert_eq!(verify_checksums(&frame), Ok(()), "{name}");
            let d = decode(&frame).unwrap();
            assert_eq!(d.stopped, None, "{name}");
            let l3 = d.l3_offset();
            let l4 = d.l4_offset().unwrap();
            let (pseudo, proto) = match &d.network {
                Network::Ipv4(h) => {
                    let mut header = frame[l3..l4].to_vec();
                    header[10..12].fill(0);
                    assert_eq!(reference_checksum(&[&header]), h.checksum, "{name}");
                    let mut p = [h.src.octets(), h.dst.octets()].concat();
                    p.extend_from_slice(&[0, h.proto]);
                    p.extend_from_slice(&((frame.len() - l4) as u16).to_be_bytes());
                    (p, h.proto)
                }
                Network::Ipv6(h) => {
                    let mut p = [h.src.octets(), h.dst.octets()].concat();
                    p.extend_from_slice(&((frame.len() - l4) as u32).to_be_bytes());
                    p.extend_from_slice(&[0, 0, 0, h.next_header]);
                    (p, h.next_header)
                }
                Network::Undecoded => panic!("{name}: no network layer"),
            };
            let mut seg = frame[l4..].to_vec();
            match proto {
                ipproto::TCP => {
                    seg[16..18].fill(0);
                    assert_eq!(
                        reference_checksum(&[&pseudo, &seg]),
                        d.tcp().unwrap().checksum
                    );
                }
                ipproto::UDP if d.udp().unwrap().checksum != 0 => {
                    seg[6..8].fill(0);
                    assert_eq!(
                        reference_checksum(&[&pseudo, &seg]),
                        d.udp().unwrap().checksum
                    );
                }
                _ => {}
            }
        }
    }

    #[test]
    fn any_corrupted_ip_or_l4_byte_fails_verification() {
        for (name, frame) in sample_frames() {
            let d = decode(&frame).unwrap();
            let (l3, l4) = (d.l3_offset(), d.l4_offset().unwrap());
            let mut checked: Vec<usize> = match &d.network {
                // ICMP bytes are not checksummed by verify_checksums.
                Network::Ipv4(h) if h.proto == ipproto::ICMP => (l3..l4).collect(),
                Network::Ipv4(_) => (l3..frame.len()).collect(),
                // No IPv6 header checksum: version, traffic class, flow label and hop limit
                // are covered by nothing, and a changed next header is "not TCP/UDP".
                Network::Ipv6(_) => (l3 + 4..l3 + 6).chain(l3 + 8..frame.len()).collect(),
                Network::Undecoded => panic!("{name}: no network layer"),
            };
            checked.sort_unstable();
            assert!(checked.len() >= 8, "{name}");
            for i in checked {
                for flip in [0x01, 0x80, 0xff] {
                    let mut bad = frame.clone();
                    bad[i] ^= flip;
                    if d.ipv4().is_some() && d.udp().is_some() && i >= l4 && be16(&bad, l4 + 6) == 0
                    {
                        continue; // 0 legitimately means "no checksum" over IPv4.
                    }
                    assert!(
                        verify_checksums(&bad).is_err(),
                        "{name}: byte {i} ^ {flip:#04x} went unnoticed"
                    );
                }
            }
        }
    }

    #[test]
    fn verification_errors_name_layer_found_and_expected() {
        let good = client_syn().build();
        let mut bad = good.clone();
        bad[24] ^= 0xff; // IPv4 checksum high byte
        assert_eq!(
            verify_checksums(&bad),
            Err(ChecksumError::Ipv4Header {
                found: 0x7cbe ^ 0xff00,
                expected: 0x7cbe
            })
        );
        let mut bad = good.clone();
        bad[14 + 20 + 13] = tcp_flags::ACK; // flags changed, checksum left stale
        let err = verify_checksums(&bad).unwrap_err();
        let ChecksumError::Tcp {
            family: Family::Ipv4,
            found: 0x1a4e,
            expected,
        } = err
        else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(expected, 0x1a4e - 0x0e); // SYN (0x02) -> ACK (0x10) adds 0x0e
        assert!(err.to_string().contains("tcp checksum"), "{err}");
        assert!(err.to_string().contains("0x1a4e"), "{err}");
    }

    #[test]
    fn both_ones_complement_zeros_are_accepted() {
        // A payload word equal to the checksum of the same segment with a zero payload word
        // makes the one's complement sum 0xffff, so the computed checksum is 0x0000.
        let tcp = |word: [u8; 2]| client_syn().payload(&word).build();
        let c = be16(&tcp([0, 0]), 34 + 16);
        let zero = tcp(c.to_be_bytes());
        assert_eq!(be16(&zero, 34 + 16), 0x0000);
        assert_eq!(verify_checksums(&zero), Ok(()));
        let mut ones = zero.clone();
        put16(&mut ones, 34 + 16, 0xffff);
        assert_eq!(verify_checksums(&ones), Ok(()));

        // UDP sends a computed 0 as 0xffff (RFC 768).
        let udp = |word: [u8; 2]| {
            PacketBuilder::udp(sock("203.0.113.7:1000"), sock("192.0.2.10:53"))
                .payload(&word)
                .build()
        };
        let c = be16(&udp([0, 0]), 34 + 6);
        let ones = udp(c.to_be_bytes());
        assert_eq!(be16(&ones, 34 + 6), 0xffff);
        assert_eq!(verify_checksums(&ones), Ok(()));
    }

    #[test]
    fn udp_zero_checksum_is_none_on_ipv4_and_an_error_on_ipv6() {
        let v4 = PacketBuilder::udp(sock("203.0.113.7:1000"), sock("192.0.2.10:53"))
            .udp_zero_checksum()
            .payload(b"abc")
            .build();
        assert_eq!(be16(&v4, 14 + 20 + 6), 0);
        assert_eq!(verify_checksums(&v4), Ok(()));

        let good = PacketBuilder::udp(sock("[2001:db8::1]:5353"), sock("[2001:db8::10]:53"))
            .payload(b"veer!")
            .build();
        let zero = PacketBuilder::udp(sock("[2001:db8::1]:5353"), sock("[2001:db8::10]:53"))
            .payload(b"veer!")
            .udp_zero_checksum()
            .build();
        let err = verify_checksums(&zero).unwrap_err();
        assert_eq!(
            err,
            ChecksumError::Udp {
                family: Family::Ipv6,
                found: 0,
                expected: 0x925b
            }
        );
        assert!(err.to_string().contains("IPv6 forbids"), "{err}");
        assert_eq!(diff(&good, &zero), ["udp.checksum: 0x925b -> 0x0000"]);
    }

    #[test]
    fn verification_reports_malformed_frames() {
        let frame = client_syn().payload(b"data").build();
        let err = verify_checksums(&frame[..30]).unwrap_err();
        assert_eq!(
            err,
            ChecksumError::Malformed {
                source: DecodeError::Truncated {
                    layer: Layer::Ipv4,
                    offset: 14,
                    needed: 20,
                    available: 16
                }
            }
        );
        assert!(std::error::Error::source(&err).is_some());
        // Total length pointing past the frame, with a correct header checksum.
        let mut long = frame.clone();
        put16(&mut long, 16, 200);
        fix_ipv4_checksum(&mut long, 14);
        assert!(matches!(
            verify_checksums(&long),
            Err(ChecksumError::Malformed {
                source: DecodeError::Truncated {
                    layer: Layer::Ipv4,
                    needed: 200,
                    ..
                }
            })
        ));
        // Ethernet padding after the datagram is ignored.
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(verify_checksums(&padded), Ok(()));
        // Non-IP frames have nothing to check.
        assert_eq!(
            verify_checksums(&ethernet_only(ethertype::ARP, &[1; 28])),
            Ok(())
        );
        assert!(verify_checksums(&[0; 13]).is_err());
    }
}

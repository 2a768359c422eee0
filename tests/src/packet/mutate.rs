//! [`Mutator`]: seeded random frames and malformations for fuzz tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::build::L4;
use super::decode::be16;
use super::{
    ETH_HLEN, Family, IPV4_FRAG_OFFSET_MASK, IPV4_HLEN, IPV4_MAX_OPTIONS, IPV4_MF, IPV6_HLEN,
    PacketBuilder, UDP_HLEN, VLAN_HLEN, checksum, ethertype, ipproto, tcp_flags,
};

/// One kind of malformation [`Mutator`] can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// Cut the frame at a random length (half the time inside the first 80 bytes, where the
    /// headers are).
    Truncate,
    /// XOR one to four distinct random bytes with a non-zero value.
    FlipBytes,
    /// Set the IPv4 total length to a lying value.
    Ipv4TotalLength,
    /// Set the IPv4 IHL to another value in 0..=15.
    Ipv4Ihl,
    /// Set the IPv6 payload length to a lying value.
    Ipv6PayloadLength,
    /// Set the UDP length to a lying value.
    UdpLength,
    /// Set the TCP data offset to another value in 0..=15.
    TcpDataOffset,
    /// Set the IPv4 protocol / IPv6 next header to another random number.
    IpProtocol,
    /// IPv4: set other fragment bits (MF, offset, DF, reserved); IPv6: insert a fragment
    /// extension header.
    Fragment,
    /// Replace the (innermost) `EtherType` with another one.
    Ethertype,
    /// Insert VLAN tags in front so the frame has at least two.
    SecondVlan,
    /// Append 1 to 64 random bytes.
    AppendJunk,
}

impl Mutation {
    /// Every mutation, in declaration order.
    pub const ALL: [Self; 12] = [
        Self::Truncate,
        Self::FlipBytes,
        Self::Ipv4TotalLength,
        Self::Ipv4Ihl,
        Self::Ipv6PayloadLength,
        Self::UdpLength,
        Self::TcpDataOffset,
        Self::IpProtocol,
        Self::Fragment,
        Self::Ethertype,
        Self::SecondVlan,
        Self::AppendJunk,
    ];
}

/// Where the mutable fields of a frame are, found without trusting any length field more than
/// needed to locate the next header.
#[derive(Clone, Copy, Debug, Default)]
struct Layout {
    /// Number of VLAN tags (0x8100 or 0x88a8) after the MACs.
    tags: usize,
    /// Offset of the innermost `EtherType` field.
    ethertype: Option<usize>,
    /// IP family and header offset, when the fixed header fits.
    l3: Option<(Family, usize)>,
    /// L4 protocol and header offset, when the IP header fits and this is not a non-first
    /// IPv4 fragment.
    l4: Option<(u8, usize)>,
}

impl Layout {
    fn of(frame: &[u8]) -> Self {
        let mut layout = Self::default();
        if frame.len() < ETH_HLEN {
            return layout;
        }
        let mut off = ETH_HLEN - 2;
        while off + VLAN_HLEN + 2 <= frame.len()
            && matches!(be16(frame, off), ethertype::VLAN | ethertype::QINQ)
        {
            off += VLAN_HLEN;
            layout.tags += 1;
        }
        layout.ethertype = Some(off);
        let l3 = off + 2;
        match be16(frame, off) {
            ethertype::IPV4 if l3 + IPV4_HLEN <= frame.len() => {
                layout.l3 = Some((Family::Ipv4, l3));
                let header_len = usize::from(frame[l3] & 0x0f) * 4;
                let first = be16(frame, l3 + 6) & IPV4_FRAG_OFFSET_MASK == 0;
                if header_len >= IPV4_HLEN && l3 + header_len <= frame.len() && first {
                    layout.l4 = Some((frame[l3 + 9], l3 + header_len));
                }
            }
            ethertype::IPV6 if l3 + IPV6_HLEN <= frame.len() => {
                layout.l3 = Some((Family::Ipv6, l3));
                layout.l4 = Some((frame[l3 + 6], l3 + IPV6_HLEN));
            }
            _ => {}
        }
        layout
    }

    fn ipv4(&self) -> Option<usize> {
        match self.l3 {
            Some((Family::Ipv4, off)) => Some(off),
            _ => None,
        }
    }

    fn ipv6(&self) -> Option<usize> {
        match self.l3 {
            Some((Family::Ipv6, off)) => Some(off),
            _ => None,
        }
    }

    /// Offset of the UDP header when its length field is in the frame.
    fn udp(&self, len: usize) -> Option<usize> {
        match self.l4 {
            Some((ipproto::UDP, off)) if off + 6 <= len => Some(off),
            _ => None,
        }
    }

    /// Offset of the TCP header when its data-offset byte is in the frame.
    fn tcp(&self, len: usize) -> Option<usize> {
        match self.l4 {
            Some((ipproto::TCP, off)) if off + 13 <= len => Some(off),
            _ => None,
        }
    }

    fn allows(&self, mutation: Mutation, len: usize) -> bool {
        match mutation {
            Mutation::Truncate | Mutation::FlipBytes => len > 0,
            Mutation::Ipv4TotalLength | Mutation::Ipv4Ihl => self.ipv4().is_some(),
            Mutation::Ipv6PayloadLength => self.ipv6().is_some(),
            Mutation::UdpLength => self.udp(len).is_some(),
            Mutation::TcpDataOffset => self.tcp(len).is_some(),
            Mutation::IpProtocol | Mutation::Fragment => self.l3.is_some(),
            Mutation::Ethertype => self.ethertype.is_some(),
            Mutation::SecondVlan => len >= ETH_HLEN - 2,
            Mutation::AppendJunk => true,
        }
    }
}

pub(super) fn put16(frame: &mut [u8], off: usize, value: u16) {
    frame[off..off + 2].copy_from_slice(&value.to_be_bytes());
}

/// Recomputes the IPv4 header checksum when the IHL is sane and the header fits.
pub(super) fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let header_len = usize::from(frame[l3] & 0x0f) * 4;
    if header_len < IPV4_HLEN || l3 + header_len > frame.len() {
        return;
    }
    put16(frame, l3 + 10, 0);
    let csum = checksum(&frame[l3..l3 + header_len]);
    put16(frame, l3 + 10, csum);
}

/// Seeded source of random frames and malformations for fuzz tests. The same seed gives the
/// same sequence of frames and mutations (for a given `rand` version).
#[derive(Clone, Debug)]
pub struct Mutator {
    rng: StdRng,
}

impl Mutator {
    /// A mutator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The random number generator, for callers that draw their own values; drawing from it
    /// changes what the mutator produces next, deterministically.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Returns `frame` with one random [`Mutation`] applied, chosen uniformly among those the
    /// frame has the fields for ([`Mutation::AppendJunk`] always applies). The result always
    /// differs from `frame`.
    pub fn mutate(&mut self, frame: &[u8]) -> Vec<u8> {
        let layout = Layout::of(frame);
        let allowed: Vec<Mutation> = Mutation::ALL
            .into_iter()
            .filter(|m| layout.allows(*m, frame.len()))
            .collect();
        let mutation = allowed
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(Mutation::AppendJunk);
        self.apply(mutation, frame, &layout)
            .unwrap_or_else(|| self.append_junk(frame))
    }

    /// Returns `frame` with `mutation` applied, or `None` if the frame lacks the field it
    /// changes (for example [`Mutation::UdpLength`] on a TCP frame). A returned frame always
    /// differs from `frame`.
    pub fn mutate_with(&mut self, mutation: Mutation, frame: &[u8]) -> Option<Vec<u8>> {
        let layout = Layout::of(frame);
        self.apply(mutation, frame, &layout)
    }

    fn apply(&mut self, mutation: Mutation, frame: &[u8], layout: &Layout) -> Option<Vec<u8>> {
        if !layout.allows(mutation, frame.len()) {
            return None;
        }
        let mut out = frame.to_vec();
        let len = frame.len();
        match mutation {
            Mutation::Truncate => {
                let limit = if self.rng.gen_bool(0.5) {
                    len.min(80)
                } else {
                    len
                };
                out.truncate(self.rng.gen_range(0..limit));
            }
            Mutation::FlipBytes => {
                let count = self.rng.gen_range(1..=4).min(len);
                for i in rand::seq::index::sample(&mut self.rng, len, count) {
                    out[i] ^= self.rng.gen_range(1..=u8::MAX);
                }
            }
            Mutation::Ipv4TotalLength => {
                let l3 = layout.ipv4()?;
                let header_len = usize::from(frame[l3] & 0x0f) * 4;
                let value = self.lying_length(be16(frame, l3 + 2), len - l3, header_len);
                put16(&mut out, l3 + 2, value);
                self.maybe_fix_ipv4(&mut out, l3);
            }
            Mutation::Ipv4Ihl => {
                let l3 = layout.ipv4()?;
                let ihl = self.other_nibble(frame[l3] & 0x0f);
                out[l3] = (frame[l3] & 0xf0) | ihl;
                self.maybe_fix_ipv4(&mut out, l3);
            }
            Mutation::Ipv6PayloadLength => {
                let l3 = layout.ipv6()?;
                let value = self.lying_length(be16(frame, l3 + 4), len - l3 - IPV6_HLEN, 0);
                put16(&mut out, l3 + 4, value);
            }
            Mutation::UdpLength => {
                let l4 = layout.udp(len)?;
                let value = self.lying_length(be16(frame, l4 + 4), len - l4, UDP_HLEN);
                put16(&mut out, l4 + 4, value);
            }
            Mutation::TcpDataOffset => {
                let l4 = layout.tcp(len)?;
                let data_offset = self.other_nibble(frame[l4 + 12] >> 4);
                out[l4 + 12] = (data_offset << 4) | (frame[l4 + 12] & 0x0f);
            }
            Mutation::IpProtocol => {
                let (family, l3) = layout.l3?;
                let at = if family == Family::Ipv4 {
                    l3 + 9
                } else {
                    l3 + 6
                };
                let current = frame[at];
                out[at] = current.wrapping_add(self.rng.gen_range(1..=u8::MAX));
                if family == Family::Ipv4 {
                    self.maybe_fix_ipv4(&mut out, l3);
                }
            }
            Mutation::Fragment => {
                let (family, l3) = layout.l3?;
                self.fragment(&mut out, family, l3);
            }
            Mutation::Ethertype => {
                let at = layout.ethertype?;
                let value = self.other_ethertype(be16(frame, at));
                put16(&mut out, at, value);
            }
            Mutation::SecondVlan => {
                let tags = self.vlan_tags(if layout.tags == 0 { 2 } else { 1 });
                out.splice(ETH_HLEN - 2..ETH_HLEN - 2, tags);
            }
            Mutation::AppendJunk => out = self.append_junk(frame),
        }
        Some(out)
    }

    /// IPv4: other flag/offset bits; IPv6: a fragment extension header inserted after the
    /// fixed header.
    fn fragment(&mut self, frame: &mut Vec<u8>, family: Family, l3: usize) {
        match family {
            Family::Ipv4 => {
                let current = be16(frame, l3 + 6);
                let offset = self.rng.gen_range(1..=IPV4_FRAG_OFFSET_MASK);
                let mut value = match self.rng.gen_range(0..5) {
                    0 => IPV4_MF,
                    1 => IPV4_MF | offset,
                    2 => offset,
                    3 => 0x8000 | (current & 0x7fff),
                    _ => self.rng.r#gen::<u16>(),
                };
                if value == current {
                    value ^= IPV4_MF;
                }
                put16(frame, l3 + 6, value);
                self.maybe_fix_ipv4(frame, l3);
            }
            Family::Ipv6 => {
                let at = l3 + IPV6_HLEN;
                let offset = self.rng.gen_range(0..=IPV4_FRAG_OFFSET_MASK);
                let more = u16::from(self.rng.gen_bool(0.5));
                let mut ext = vec![frame[l3 + 6], 0];
                ext.extend_from_slice(&((offset << 3) | more).to_be_bytes());
                ext.extend_from_slice(&self.rng.r#gen::<u32>().to_be_bytes());
                frame.splice(at..at, ext);
                frame[l3 + 6] = ipproto::IPV6_FRAGMENT;
                let payload_len = be16(frame, l3 + 4);
                put16(frame, l3 + 4, payload_len.wrapping_add(8));
            }
        }
    }

    /// An `EtherType` other than `current`, usually a meaningful one.
    fn other_ethertype(&mut self, current: u16) -> u16 {
        let choices = [
            ethertype::IPV4,
            ethertype::IPV6,
            ethertype::ARP,
            ethertype::VLAN,
            ethertype::QINQ,
            self.rng.r#gen(),
        ];
        let value = choices.choose(&mut self.rng).copied().unwrap_or_default();
        if value == current {
            current ^ 0x0100
        } else {
            value
        }
    }

    /// `count` VLAN tags (TPID 0x8100 or 0x88a8, random VLAN id).
    fn vlan_tags(&mut self, count: usize) -> Vec<u8> {
        let mut tags = Vec::with_capacity(count * VLAN_HLEN);
        for _ in 0..count {
            let tpid = if self.rng.gen_bool(0.5) {
                ethertype::VLAN
            } else {
                ethertype::QINQ
            };
            tags.extend_from_slice(&tpid.to_be_bytes());
            tags.extend_from_slice(&self.rng.gen_range(0..0x1000u16).to_be_bytes());
        }
        tags
    }

    fn append_junk(&mut self, frame: &[u8]) -> Vec<u8> {
        let mut out = frame.to_vec();
        let mut junk = vec![0u8; self.rng.gen_range(1..=64)];
        self.rng.fill(junk.as_mut_slice());
        out.extend_from_slice(&junk);
        out
    }

    /// Half the time, makes the IPv4 header checksum right again so the lie gets past
    /// checksum validation.
    fn maybe_fix_ipv4(&mut self, frame: &mut [u8], l3: usize) {
        if self.rng.gen_bool(0.5) {
            fix_ipv4_checksum(frame, l3);
        }
    }

    /// A 4-bit value other than `current`.
    fn other_nibble(&mut self, current: u8) -> u8 {
        let value = self.rng.gen_range(0..15u8);
        if value >= current { value + 1 } else { value }
    }

    /// A length other than `current`: zero, one below `header_len`, off by one, the real
    /// remaining size, the maximum, or random.
    fn lying_length(&mut self, current: u16, remaining: usize, header_len: usize) -> u16 {
        let remaining = remaining.min(usize::from(u16::MAX)) as u16;
        let choices = [
            0,
            (header_len as u16).saturating_sub(1),
            current.wrapping_sub(1),
            current.wrapping_add(1),
            remaining,
            remaining.wrapping_add(1),
            u16::MAX,
            self.rng.r#gen(),
        ];
        let value = choices.choose(&mut self.rng).copied().unwrap_or_default();
        if value == current {
            current.wrapping_add(1)
        } else {
            value
        }
    }

    /// A random but well-formed frame with correct checksums: IPv4 (60%) or IPv6; TCP (50%),
    /// UDP (40%) or another protocol with raw bytes; client addresses in 203.0.113.0/24 or
    /// `2001:db8:c::/48`, destinations half the time among the first 16 addresses of
    /// 192.0.2.0/24 or `2001:db8:0:2::/64` and ports 53, 80, 443 or 8080 (so services a test
    /// seeds get hit), random otherwise; sometimes a VLAN tag, IPv4 options, DF, a fragment or
    /// a zero UDP checksum; a random payload of up to 200 bytes.
    pub fn random_frame(&mut self) -> Vec<u8> {
        let ipv4 = self.rng.gen_bool(0.6);
        let near = self.rng.gen_bool(0.5);
        let (src, dst) = if ipv4 {
            let src = Ipv4Addr::new(203, 0, 113, self.rng.r#gen());
            let host = if near {
                self.rng.gen_range(1..=16)
            } else {
                self.rng.r#gen()
            };
            (IpAddr::V4(src), IpAddr::V4(Ipv4Addr::new(192, 0, 2, host)))
        } else {
            let src = Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xc,
                0,
                0,
                0,
                self.rng.r#gen(),
                self.rng.r#gen(),
            );
            let dst = if near {
                Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, self.rng.gen_range(1..=16))
            } else {
                let words: [u16; 6] = self.rng.r#gen();
                Ipv6Addr::new(
                    0x2001, 0xdb8, words[0], words[1], words[2], words[3], words[4], words[5],
                )
            };
            (IpAddr::V6(src), IpAddr::V6(dst))
        };
        let src_port = self.rng.gen_range(1024..=u16::MAX);
        let dst_port = if self.rng.gen_bool(0.5) {
            [53, 80, 443, 8080]
                .choose(&mut self.rng)
                .copied()
                .unwrap_or(80)
        } else {
            self.rng.r#gen()
        };
        let src = SocketAddr::new(src, src_port);
        let dst = SocketAddr::new(dst, dst_port);

        let mut builder = match self.rng.gen_range(0..10) {
            0..=4 => {
                use tcp_flags::{ACK, FIN, PSH, RST, SYN};
                let flags = [SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK]
                    .choose(&mut self.rng)
                    .copied()
                    .unwrap_or(SYN);
                let flags = if self.rng.gen_bool(0.1) {
                    self.rng.r#gen()
                } else {
                    flags
                };
                PacketBuilder::tcp(src, dst)
                    .tcp_flags(flags)
                    .seq(self.rng.r#gen())
                    .ack(self.rng.r#gen())
            }
            5..=8 => PacketBuilder::udp(src, dst),
            _ => {
                let icmp = if ipv4 { ipproto::ICMP } else { ipproto::ICMPV6 };
                let mut proto = [icmp, ipproto::GRE, 132, 50, self.rng.r#gen()]
                    .choose(&mut self.rng)
                    .copied()
                    .unwrap_or(ipproto::GRE);
                if proto == ipproto::TCP || proto == ipproto::UDP {
                    proto = ipproto::GRE;
                }
                PacketBuilder::ip_proto(src.ip(), dst.ip(), proto)
            }
        };
        let mut payload = vec![0u8; self.rng.gen_range(0..=200)];
        self.rng.fill(payload.as_mut_slice());
        builder = builder
            .payload(&payload)
            .ttl(self.rng.gen_range(1..=u8::MAX));
        if self.rng.gen_bool(0.25) {
            builder = builder.vlan(self.rng.gen_range(1..0x0fff));
        }
        if ipv4 {
            builder = builder.ip_id(self.rng.r#gen());
            if self.rng.gen_bool(0.2) {
                builder = builder.ip_options(&self.random_ip_options());
            }
            if self.rng.gen_bool(0.5) {
                builder = builder.dont_fragment();
            }
            if self.rng.gen_bool(0.05) {
                let offset = self.rng.gen_range(0..=IPV4_FRAG_OFFSET_MASK);
                builder = builder.fragment(offset, offset == 0 || self.rng.gen_bool(0.5));
            }
            if matches!(builder.l4, L4::Udp { .. }) && self.rng.gen_bool(0.1) {
                builder = builder.udp_zero_checksum();
            }
        }
        builder.build()
    }

    /// 1 to 40 bytes of IPv4 options: NOPs, a Router Alert, or random bytes.
    fn random_ip_options(&mut self) -> Vec<u8> {
        let len = self.rng.gen_range(1..=IPV4_MAX_OPTIONS);
        match self.rng.gen_range(0..3) {
            0 => vec![1; len],
            1 => vec![0x94, 0x04, 0, 0],
            _ => {
                let mut opts = vec![0u8; len];
                self.rng.fill(opts.as_mut_slice());
                opts
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::diff::{network_name, transport_name};
    use crate::packet::fixtures::*;
    use crate::packet::*;

    fn sequence(seed: u64) -> Vec<Vec<u8>> {
        let mut m = Mutator::new(seed);
        let mut out = Vec::new();
        for _ in 0..200 {
            let frame = m.random_frame();
            out.push(m.mutate(&frame));
            out.push(frame);
        }
        out.push(m.rng().r#gen::<u64>().to_be_bytes().to_vec());
        out
    }

    #[test]
    fn mutator_is_deterministic_per_seed() {
        assert_eq!(sequence(7), sequence(7));
        assert_ne!(sequence(7), sequence(8));
    }

    #[test]
    fn random_frames_are_well_formed() {
        let mut m = Mutator::new(1);
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let frame = m.random_frame();
            assert_eq!(verify_checksums(&frame), Ok(()), "frame {i}: {frame:02x?}");
            let d = decode(&frame).unwrap();
            assert_eq!(d.stopped, None, "frame {i}");
            assert!(d.trailer.is_empty(), "frame {i}");
            // Raw protocols and non-first fragments keep their L4 header in the payload.
            let limit = if d.transport == Transport::Undecoded {
                200 + TCP_HLEN
            } else {
                200
            };
            assert!(d.payload.len() <= limit, "frame {i}");
            seen.insert((
                network_name(&d.network),
                transport_name(&d.transport),
                d.eth.vlan.is_some(),
            ));
        }
        // Both families, TCP, UDP and other protocols, with and without VLAN.
        assert_eq!(seen.len(), 2 * 3 * 2, "{seen:?}");
    }

    #[test]
    fn each_mutation_changes_frames_it_applies_to() {
        let mut m = Mutator::new(3);
        let frames = sample_frames();
        for mutation in Mutation::ALL {
            let mut applied = 0;
            for (name, frame) in &frames {
                for _ in 0..20 {
                    if let Some(out) = m.mutate_with(mutation, frame) {
                        applied += 1;
                        assert_ne!(&out, frame, "{mutation:?} on {name}");
                    }
                }
            }
            assert!(applied > 0, "{mutation:?} never applied");
        }
        assert_eq!(
            m.mutate_with(Mutation::UdpLength, &client_syn().build()),
            None
        );
        assert_eq!(
            m.mutate_with(Mutation::Ipv6PayloadLength, &client_syn().build()),
            None
        );
        let tagged = m
            .mutate_with(Mutation::SecondVlan, &client_syn().vlan(1).build())
            .unwrap();
        assert_eq!(Layout::of(&tagged).tags, 2);
        let untagged = m
            .mutate_with(Mutation::SecondVlan, &client_syn().build())
            .unwrap();
        assert_eq!(Layout::of(&untagged).tags, 2);
    }

    #[test]
    fn decode_verify_and_diff_survive_mutated_frames() {
        let mut m = Mutator::new(42);
        let mut kinds = std::collections::HashSet::new();
        for _ in 0..5000 {
            let frame = m.random_frame();
            let once = m.mutate(&frame);
            assert_ne!(once, frame);
            let mutated = if m.rng().gen_bool(0.3) {
                m.mutate(&once)
            } else {
                once
            };
            if let Ok(d) = decode(&mutated) {
                assert_eq!(
                    d.payload_offset() + d.payload.len() + d.trailer.len(),
                    mutated.len()
                );
            }
            if let Err(e) = verify_checksums(&mutated) {
                kinds.insert(std::mem::discriminant(&e));
                assert!(!e.to_string().is_empty());
            }
            assert_eq!(diff(&frame, &mutated).is_empty(), frame == mutated);
        }
        assert!(!m.mutate(&[]).is_empty());
        // Malformed, IPv4 header and L4 errors all happen.
        assert!(kinds.len() >= 3, "{kinds:?}");
    }
}

//! Header parsing: Ethernet (+ one 802.1Q tag), IPv4 (IHL-aware, fragments detected), IPv6 and
//! TCP/UDP, into `Headers`. The only module that bounds-checks packet pointers; everything else
//! works on the offsets it returns.
//!
//! Returns `Err(Reason)` for anything veer does not steer (`NotIp`, `Fragment`, `Truncated`,
//! `NotTcpUdp`); the caller passes those untouched.

use core::mem::size_of;

use veer_common::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, counters::Reason, flow::FlowKey};

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_FRAGMENT: u8 = 44;

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// IPv4 `frag_off` bits that make a packet a fragment: MF and the 13-bit offset.
const IPV4_FRAG_MASK: u16 = 0x3FFF;

/// TCP flag bits as in the header's 13th byte.
pub(crate) mod tcp_flags {
    pub(crate) const FIN: u8 = 0x01;
    pub(crate) const SYN: u8 = 0x02;
    pub(crate) const RST: u8 = 0x04;
    pub(crate) const ACK: u8 = 0x10;
}

/// Where the headers of a packet are and what they say.
pub(crate) struct Headers {
    /// Offset of the IP header from the start of the frame.
    pub(crate) l3_off: usize,
    /// Offset of the TCP/UDP header.
    pub(crate) l4_off: usize,
    /// The flow as seen on the wire (source -> destination).
    pub(crate) key: FlowKey,
    /// TCP flags (0 for UDP).
    pub(crate) tcp_flags: u8,
    /// TCP sequence number (0 for UDP). Host byte order.
    pub(crate) tcp_seq: u32,
    /// TCP acknowledgment number (0 for UDP). Host byte order.
    pub(crate) tcp_ack: u32,
    /// Whether a UDP checksum is present (IPv4 allows 0 = none; always true for TCP and IPv6).
    pub(crate) l4_csum_present: bool,
    /// Whether a TCP segment carries payload (the IP packet is longer than its headers).
    pub(crate) tcp_payload: bool,
}

impl Headers {
    /// Offset of the L4 checksum field.
    #[inline(always)]
    pub(crate) fn l4_csum_off(&self) -> usize {
        self.l4_off + if self.key.proto == PROTO_TCP { 16 } else { 6 }
    }
}

/// Largest offset `ptr_at` accepts: Ethernet + VLAN + IPv6 + TCP with options, rounded up.
const MAX_OFF: usize = 0x1FF;

/// Bounds `off` by `MAX_OFF` with a mask LLVM cannot see through.
///
/// Offsets travel through `Headers` on the stack; LLVM may spill them in a way the verifier
/// reads back as an unbounded scalar ("math between pkt pointer and register with unbounded min
/// value"), and it would delete a plain `& MAX_OFF` it can prove redundant. Written as inline
/// assembly, the mask is always emitted right before the pointer arithmetic, so the verifier
/// always sees `off <= MAX_OFF`.
#[inline(always)]
fn bounded(off: usize) -> usize {
    #[cfg(target_arch = "bpf")]
    {
        let mut v = off;
        // SAFETY: one ALU instruction on a register; no memory, no control flow.
        unsafe {
            core::arch::asm!("{v} &= 0x1ff", v = inout(reg) v, options(pure, nomem, nostack));
        }
        v
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        off & MAX_OFF
    }
}

/// Returns a pointer to a `T` at `off` bytes into the packet, or `Truncated` if it does not fit
/// before `end` (or `off` is beyond any header veer parses).
#[inline(always)]
pub(crate) fn ptr_at<T>(start: usize, end: usize, off: usize) -> Result<*mut T, Reason> {
    if off > MAX_OFF {
        return Err(Reason::Truncated);
    }
    let off = bounded(off);
    if start + off + size_of::<T>() > end {
        return Err(Reason::Truncated);
    }
    Ok((start + off) as *mut T)
}

/// Reads a `T` (unaligned) at `off`, exactly as it lies in memory (no byte swapping).
#[inline(always)]
pub(crate) fn read_raw<T: Copy>(start: usize, end: usize, off: usize) -> Result<T, Reason> {
    read(start, end, off)
}

/// Reads a `T` (unaligned) at `off`.
#[inline(always)]
fn read<T: Copy>(start: usize, end: usize, off: usize) -> Result<T, Reason> {
    let p = ptr_at::<T>(start, end, off)?;
    // SAFETY: `ptr_at` checked that the `size_of::<T>()` bytes at `p` lie inside the packet.
    Ok(unsafe { p.read_unaligned() })
}

/// Writes a `T` (unaligned) at `off`.
#[inline(always)]
pub(crate) fn write<T>(start: usize, end: usize, off: usize, v: T) -> Result<(), Reason> {
    let p = ptr_at::<T>(start, end, off)?;
    // SAFETY: `ptr_at` checked that the `size_of::<T>()` bytes at `p` lie inside the packet.
    unsafe { p.write_unaligned(v) };
    Ok(())
}

/// IPv6 extension headers skipped on the way to TCP/UDP.
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_DSTOPTS: u8 = 60;
/// At most this many option headers are skipped (RFC 8200 allows two in practice: hop-by-hop
/// and destination options).
const MAX_IPV6_OPTIONS: usize = 4;

/// Skips hop-by-hop and destination-options headers after the IPv6 header.
///
/// Returns: the upper-layer protocol and its offset; `Fragment` for a fragment header; a
/// routing header, AH, ESP or a chain longer than `MAX_IPV6_OPTIONS` ends the walk with that
/// header as the "protocol", so the caller passes the packet untouched as `NotTcpUdp` (rewriting
/// the destination under a routing header or an AH would be wrong).
#[inline(always)]
fn skip_ipv6_options(
    start: usize,
    end: usize,
    mut next: u8,
    mut off: usize,
) -> Result<(u8, usize), Reason> {
    let mut i = 0;
    while i < MAX_IPV6_OPTIONS {
        match next {
            IPPROTO_FRAGMENT => return Err(Reason::Fragment),
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS => {
                let h = read::<[u8; 2]>(start, end, off)?;
                next = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            _ => return Ok((next, off)),
        }
        i += 1;
    }
    Err(Reason::NotTcpUdp)
}

/// Parses the frame between `start` and `end` (packet pointers), the whole frame (XDP).
///
/// Returns: see `parse_frame`.
#[inline(always)]
pub(crate) fn parse(start: usize, end: usize) -> Result<Headers, Reason> {
    parse_frame(start, end, end - start)
}

/// Parses a frame of `frame_len` bytes whose first bytes lie between `start` and `end` (packet
/// pointers). For an skb, `end` is the end of its linear part and `frame_len` its length: the
/// headers must be linear, the payload may be in pages (a local sender's TCP data is, on any
/// device with scatter-gather).
///
/// Returns: the headers of a TCP or UDP packet over IPv4/IPv6 that is not a fragment, or
/// `NotIp`, `Fragment`, `Truncated` (a header runs past the linear data, or a length field past
/// the frame) or `NotTcpUdp`.
#[expect(
    clippy::too_many_lines,
    reason = "one linear walk down the headers, each step next to its bounds check"
)]
#[inline(always)]
pub(crate) fn parse_frame(start: usize, end: usize, frame_len: usize) -> Result<Headers, Reason> {
    let mut l3_off = ETH_HLEN;
    let mut ethertype = u16::from_be(read::<u16>(start, end, 12)?);
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = u16::from_be(read::<u16>(start, end, ETH_HLEN + 2)?);
        l3_off += VLAN_HLEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            // A second tag (QinQ): not steered.
            return Err(Reason::NotIp);
        }
    }
    // Every fixed-size header is copied out whole, with one bounds check, before any length field
    // is compared with the frame: LLVM drops constant-offset checks that a variable-length check
    // implies, and the verifier cannot follow that reasoning.
    let (family, proto, l4_off, l3_end, src_addr, dst_addr) = match ethertype {
        ETH_P_IP => {
            let ip = read::<[u8; IPV4_MIN_HLEN]>(start, end, l3_off)?;
            if ip[0] >> 4 != 4 {
                return Err(Reason::NotIp);
            }
            let hlen = ((ip[0] & 0x0F) as usize) * 4;
            if hlen < IPV4_MIN_HLEN {
                return Err(Reason::Truncated);
            }
            let total_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if u16::from_be_bytes([ip[6], ip[7]]) & IPV4_FRAG_MASK != 0 {
                return Err(Reason::Fragment);
            }
            if total_len < hlen || l3_off + total_len > frame_len {
                return Err(Reason::Truncated);
            }
            let word = |i: usize| u32::from_ne_bytes([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]);
            (
                FAMILY_V4,
                ip[9],
                l3_off + hlen,
                l3_off + total_len,
                [word(12), 0, 0, 0],
                [word(16), 0, 0, 0],
            )
        }
        ETH_P_IPV6 => {
            let ip = read::<[u32; IPV6_HLEN / 4]>(start, end, l3_off)?;
            let first = ip[0].to_ne_bytes();
            if first[0] >> 4 != 6 {
                return Err(Reason::NotIp);
            }
            let second = ip[1].to_ne_bytes();
            let payload_len = u16::from_be_bytes([second[0], second[1]]) as usize;
            if l3_off + IPV6_HLEN + payload_len > frame_len {
                return Err(Reason::Truncated);
            }
            let (next, l4_off) = skip_ipv6_options(start, end, second[2], l3_off + IPV6_HLEN)?;
            (
                FAMILY_V6,
                next,
                l4_off,
                l3_off + IPV6_HLEN + payload_len,
                [ip[2], ip[3], ip[4], ip[5]],
                [ip[6], ip[7], ip[8], ip[9]],
            )
        }
        _ => return Err(Reason::NotIp),
    };
    // The TCP header's length, for whether the segment carries payload.
    let mut tcp_hlen = 0;
    let (src_port, dst_port, tcp_flags, tcp_seq, tcp_ack, l4_csum_present) = match proto {
        PROTO_TCP => {
            let tcp = read::<[u8; TCP_MIN_HLEN]>(start, end, l4_off)?;
            tcp_hlen = ((tcp[12] >> 4) as usize) * 4;
            if tcp_hlen < TCP_MIN_HLEN {
                return Err(Reason::Truncated);
            }
            (
                u16::from_ne_bytes([tcp[0], tcp[1]]),
                u16::from_ne_bytes([tcp[2], tcp[3]]),
                tcp[13],
                u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
                u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
                true,
            )
        }
        PROTO_UDP => {
            let udp = read::<[u8; UDP_HLEN]>(start, end, l4_off)?;
            (
                u16::from_ne_bytes([udp[0], udp[1]]),
                u16::from_ne_bytes([udp[2], udp[3]]),
                0,
                0,
                0,
                family == FAMILY_V6 || udp[6] != 0 || udp[7] != 0,
            )
        }
        _ => return Err(Reason::NotTcpUdp),
    };
    Ok(Headers {
        l3_off,
        l4_off,
        key: FlowKey {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            proto,
            family,
            _pad: [0; 2],
        },
        tcp_flags,
        tcp_seq,
        tcp_ack,
        l4_csum_present,
        tcp_payload: tcp_hlen > 0 && l3_end > l4_off + tcp_hlen,
    })
}

//! Ending flows for a paced drain: a reset to both ends, with sequence numbers each end accepts.
//!
//! # How
//!
//! A TCP end accepts an RST only when its sequence number is exactly the next one it expects
//! (RFC 5961 section 3; Linux answers any other in-window RST with a challenge ACK). The flow
//! entry holds the backend's side of that: the last acknowledgment number the backend sent
//! (`backend_ack`, the sequence number the backend expects next). The client's side (the
//! backend's next sequence number) is asked of the backend itself:
//!
//! 1. The entry is marked `FLAG_ENDING`.
//! 2. A probe goes to the backend as if from the client: an ACK whose sequence number lies a
//!    quarter of the sequence space behind `backend_ack`, outside any window. The backend
//!    answers an unacceptable segment with an ACK carrying its exact next sequence number
//!    (RFC 9293 section 3.10.7.4; Linux `tcp_send_dupack`).
//! 3. `veer_tc_reply` turns that answer, the first segment of a marked flow that is neither SYN,
//!    FIN nor RST, into an RST+ACK to the client (kernel side: `ebpf/src/signals.rs`), closes the
//!    flow and counts it as ended.
//! 4. Right behind the probe, an RST goes to the backend as if from the client, with sequence
//!    number `backend_ack`: the backend's socket is closed. The backend handles the two in
//!    order, so its answer to the probe is on its way before its socket is gone.
//!
//! Both go out of raw sockets in the node's namespace, routed like any packet to the backend:
//! a remote backend gets them through its interface, a local one over loopback; the same
//! mechanism for both (see README, Rollouts and drains, for why not `bpf_sock_destroy`).
//!
//! A UDP flow has no connection to end: its entry is deleted, and its next datagram is steered
//! by today's weights.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use veer_common::{
    PROTO_TCP,
    addr::words_addr,
    flow::{FLAG_ENDING, FlowEntry, FlowKey, STATE_CLOSING},
};

use super::{
    DataplaneError,
    maps::{FlowTable, Maps},
};

/// `BPF_EXIST`: update an element only if it exists.
const BPF_EXIST: u64 = 2;

/// TCP flags the segments carry.
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// How far behind the backend's window the probe's sequence number lies: a quarter of the
/// sequence space, beyond any receive window (at most 2^30 with window scaling, RFC 7323).
const PROBE_BEHIND: u32 = 1 << 30;

/// What ending one flow did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// A TCP flow: probe and reset sent (the client's reset follows the backend's answer).
    Reset,
    /// A UDP flow: its entry deleted.
    Forgotten,
    /// The flow had already closed or gone.
    Gone,
}

/// Raw sockets that send the probes and resets.
pub struct Ender {
    v4: OwnedFd,
    v6: OwnedFd,
}

fn raw_socket(domain: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just opened and own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Ender {
    /// Opens the raw sockets (`IPPROTO_RAW`: the header is ours, IPv4 and IPv6) in the calling
    /// thread's network namespace.
    pub fn new() -> Result<Self, DataplaneError> {
        let open = |domain| {
            raw_socket(domain).map_err(|source| DataplaneError::Ending {
                op: "open a raw socket",
                flow: String::new(),
                source,
            })
        };
        Ok(Self {
            v4: open(libc::AF_INET)?,
            v6: open(libc::AF_INET6)?,
        })
    }

    /// Ends flow `key` if it is still active: a TCP flow is marked and gets the probe and the
    /// backend's reset; a UDP flow's entry is deleted.
    pub fn end(&self, maps: &mut Maps, key: &FlowKey) -> Result<Ended, DataplaneError> {
        let Some((table, mut entry)) = maps.flow(key)? else {
            return Ok(Ended::Gone);
        };
        if entry.state == STATE_CLOSING {
            return Ok(Ended::Gone);
        }
        if key.proto != PROTO_TCP {
            maps.remove_flow(table, key)?;
            return Ok(Ended::Forgotten);
        }
        entry.flags |= FLAG_ENDING;
        // Replacing the element may lose a concurrent refresh of `last_seen` or `backend_ack`
        // by a packet on another CPU: both are about to stop mattering, and the backend's
        // answer to the probe carries its own numbers.
        // `BPF_EXIST`: a flow promoted (or expired) since the lookup is not written back into
        // the table it left; a promoted one is marked where it is now.
        if maps.insert_flow(table, *key, entry, BPF_EXIST).is_err()
            && (table == FlowTable::Flows
                || maps
                    .insert_flow(FlowTable::Flows, *key, entry, BPF_EXIST)
                    .is_err())
        {
            return Ok(Ended::Gone);
        }
        let (client, backend) = endpoints(key, &entry);
        let flow = || format!("{client} -> {backend}");
        let probe = segment(
            client,
            backend,
            TCP_ACK,
            entry.backend_ack.wrapping_sub(PROBE_BEHIND),
            0,
        );
        let rst = segment(client, backend, TCP_RST, entry.backend_ack, 0);
        for (what, bytes) in [("send the probe", probe), ("send the reset", rst)] {
            self.send(backend.ip(), &bytes)
                .map_err(|source| DataplaneError::Ending {
                    op: what,
                    flow: flow(),
                    source,
                })?;
        }
        Ok(Ended::Reset)
    }

    fn send(&self, dst: IpAddr, bytes: &[u8]) -> io::Result<()> {
        let sent = match dst {
            IpAddr::V4(a) => {
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `bytes` and `sa` are valid for the lengths given.
                unsafe {
                    libc::sendto(
                        self.v4.as_raw_fd(),
                        bytes.as_ptr().cast(),
                        bytes.len(),
                        0,
                        (&raw const sa).cast(),
                        size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            }
            IpAddr::V6(a) => {
                let sa = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: 0,
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    sin6_scope_id: 0,
                };
                // SAFETY: `bytes` and `sa` are valid for the lengths given.
                unsafe {
                    libc::sendto(
                        self.v6.as_raw_fd(),
                        bytes.as_ptr().cast(),
                        bytes.len(),
                        0,
                        (&raw const sa).cast(),
                        size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            }
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The client and backend addresses of a flow.
fn endpoints(key: &FlowKey, entry: &FlowEntry) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(
            words_addr(key.src_addr, key.family),
            u16::from_be(key.src_port),
        ),
        SocketAddr::new(
            words_addr(entry.backend_addr, key.family),
            u16::from_be(entry.backend_port),
        ),
    )
}

/// Sums 16-bit big-endian words.
fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IP packet carrying a bare TCP segment (20-byte header, window 0, no options) from `src`
/// to `dst`, checksums filled in (IPv4 header checksum too, although the kernel rewrites it).
/// Both addresses are of one family.
pub fn segment(src: SocketAddr, dst: SocketAddr, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    let (mut out, pseudo) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = PROTO_TCP;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = fold(sum16(&ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let pseudo = sum16(&s.octets()) + sum16(&d.octets()) + u32::from(PROTO_TCP) + 20;
            (ip.to_vec(), pseudo)
        }
        (s, d) => {
            let (s, d) = (v6(s), v6(d));
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = PROTO_TCP;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s);
            ip[24..40].copy_from_slice(&d);
            let pseudo = sum16(&s) + sum16(&d) + u32::from(PROTO_TCP) + 20;
            (ip.to_vec(), pseudo)
        }
    };
    let c = fold(pseudo + sum16(&tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&tcp);
    out
}

/// An address as IPv6 octets (IPv4 mapped, for a mixed pair that validation excludes).
fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verifies a checksum over `bytes` (plus a pseudo-header sum): the one's-complement sum
    /// of everything, checksum included, is 0xFFFF.
    fn verifies(pseudo: u32, bytes: &[u8]) -> bool {
        fold(pseudo + sum16(bytes)) == 0
    }

    #[test]
    fn segments_carry_valid_checksums_in_both_families() {
        let v4 = segment(
            "203.0.113.7:40000".parse().unwrap(),
            "198.51.100.11:8080".parse().unwrap(),
            TCP_RST,
            0xDEAD_BEEF,
            0,
        );
        assert_eq!(v4.len(), 40);
        assert!(verifies(0, &v4[..20]), "IPv4 header checksum");
        let pseudo = sum16(&v4[12..20]) + u32::from(PROTO_TCP) + 20;
        assert!(verifies(pseudo, &v4[20..]), "TCP checksum");
        assert_eq!(&v4[24..28], &0xDEAD_BEEFu32.to_be_bytes());
        assert_eq!(v4[33], TCP_RST);

        let v6 = segment(
            "[2001:db8:c::7]:40000".parse().unwrap(),
            "[2001:db8:b::11]:8080".parse().unwrap(),
            TCP_ACK,
            1,
            2,
        );
        assert_eq!(v6.len(), 60);
        let pseudo = sum16(&v6[8..40]) + u32::from(PROTO_TCP) + 20;
        assert!(
            verifies(pseudo, &v6[40..]),
            "TCP checksum over the IPv6 pseudo-header"
        );
        assert_eq!(v6[53], TCP_ACK);
    }

    #[test]
    fn the_probe_lies_outside_any_window() {
        // A receive window is at most 2^30 (RFC 7323); the probe is 2^30 behind the next
        // expected sequence number, across the wrap too.
        for next in [0u32, 1, 1 << 31, u32::MAX] {
            let probe = next.wrapping_sub(PROBE_BEHIND);
            assert_eq!(next.wrapping_sub(probe), PROBE_BEHIND);
        }
    }
}

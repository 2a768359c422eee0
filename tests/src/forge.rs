//! Forged packets from inside a namespace: floods of spoofed SYNs or UDP datagrams, and segments
//! with other connections' tuples (blind RSTs, SYN+FIN, junk flags), sent through a raw IPv4
//! socket (`IPPROTO_RAW`, which implies `IP_HDRINCL`): the test writes every header byte, source
//! address included, and the kernel only routes the packet.
//!
//! Every send loop is bounded in count and time. Spoofed sources stay inside the documentation
//! prefixes (clients 203.0.113.0/24); the packets go to VIPs of the test's own node namespace.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use crate::{netns::Netns, packet::PacketBuilder};

/// A raw IPv4 socket created inside a namespace.
pub struct RawSender {
    fd: OwnedFd,
}

impl RawSender {
    /// Opens the socket inside `ns`.
    pub fn open(ns: &Netns) -> io::Result<Self> {
        let fd = ns.enter(|| {
            // SAFETY: plain socket(2) call; the result is checked below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                // SAFETY: `fd` is a fresh descriptor this closure owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        })??;
        Ok(Self { fd })
    }

    /// Sends one IPv4 packet (IP header first) to its destination address. A full device
    /// queue (`ENOBUFS`) is waited out briefly, at most 100 times.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let dst = packet
            .get(16..20)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IPv4 packet"))?;
        // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]);
        for _ in 0..100 {
            // SAFETY: `packet` and `addr` are valid for the call; the lengths are theirs.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Err(io::Error::other("the device queue stayed full"))
    }
}

/// The IPv4 packet of a frame built by `PacketBuilder` (its Ethernet header cut off).
pub fn ip_packet(frame: &PacketBuilder) -> Vec<u8> {
    frame.build().split_off(14)
}

/// The `i`-th spoofed client: addresses 203.0.113.100 to .254 (not the test client's), ports
/// 1024 and up, every (address, port) pair different for the first 9.9 million.
pub fn spoofed_source(i: u32) -> SocketAddr {
    let addr = Ipv4Addr::new(203, 0, 113, 100 + (i % 155) as u8);
    SocketAddr::new(IpAddr::V4(addr), 1024 + ((i / 155) % 64_000) as u16)
}

/// What a flood did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FloodReport {
    /// Packets sent.
    pub sent: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl FloodReport {
    /// Packets per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends `count` packets made by `packet(i)` from `ns`, stopping early after `max_time`.
pub fn flood(
    ns: &Netns,
    count: u32,
    max_time: Duration,
    packet: impl Fn(u32) -> PacketBuilder,
) -> io::Result<FloodReport> {
    let sender = RawSender::open(ns)?;
    let start = Instant::now();
    let mut sent = 0;
    for i in 0..count {
        if start.elapsed() > max_time {
            break;
        }
        sender.send(&ip_packet(&packet(i)))?;
        sent += 1;
    }
    Ok(FloodReport {
        sent,
        elapsed: start.elapsed(),
    })
}

/// A SYN from spoofed source `i` to `dst`, with a sequence number of its own.
pub fn spoofed_syn(i: u32, dst: SocketAddr) -> PacketBuilder {
    PacketBuilder::tcp(spoofed_source(i), dst)
        .tcp_flags(crate::packet::tcp_flags::SYN)
        .seq(i.wrapping_mul(2_654_435_761))
}

/// A UDP datagram from spoofed source `i` to `dst`.
pub fn spoofed_udp(i: u32, dst: SocketAddr) -> PacketBuilder {
    PacketBuilder::udp(spoofed_source(i), dst).payload(b"flood")
}

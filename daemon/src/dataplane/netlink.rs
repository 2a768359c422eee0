//! What the kernel says about the node's interfaces, addresses and routes, over netlink, and the
//! events that say it changed. A small synchronous client (no crate: the requests are few and
//! fixed, and the daemon's async runtime only needs the watch sockets' file descriptors):
//!
//! - rtnetlink: `RTM_GETLINK` (name, link kind from `IFLA_INFO_KIND`, flags, peer/lower link,
//!   parent bus), `RTM_GETADDR` (the node's own addresses), `RTM_GETROUTE` (how an address is
//!   reached: local, or through which interface);
//! - generic netlink, family `netdev` (Linux 6.3+): every device's `xdp-features` (can it run
//!   native XDP, can it take redirected XDP frames), resolved through `nlctrl`;
//! - a watch on `RTMGRP_LINK`/address groups and the `netdev` `mgmt` group: a veth's
//!   `NETDEV_XDP_ACT_NDO_XMIT` changes when its peer (maybe in another namespace) toggles GRO or
//!   an XDP program, and only the `netdev` family reports that.
//!
//! Everything runs in the calling thread's network namespace (a socket stays in the namespace it
//! was created in). Pure parsing is separate from the socket and unit-tested on byte fixtures.

use std::{
    collections::HashMap,
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    time::Duration,
};

/// Why a netlink exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket failed (open, send, receive, timeout).
    #[error("netlink {op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered a request with an error.
    #[error("netlink {op}: the kernel answered {source}")]
    Kernel {
        /// The request.
        op: &'static str,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// An answer did not parse.
    #[error("netlink {op}: malformed answer ({what})")]
    Malformed {
        /// The request.
        op: &'static str,
        /// What was wrong.
        what: &'static str,
    },
}

// ---- Constants from linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/genetlink.h,
// ---- linux/netdev.h (UAPI: stable numbers) ---------------------------------------------------

const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;

const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const RTM_GETADDR: u16 = 22;
const RTM_NEWADDR: u16 = 20;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWROUTE: u16 = 24;

const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_PARENT_DEV_BUS_NAME: u16 = 57;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;

/// `rtm_type` of a route to a local address.
pub const RTN_LOCAL: u8 = 2;
/// `rtm_type` of an ordinary route.
pub const RTN_UNICAST: u8 = 1;

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_NEIGH: u32 = 0x4;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV4_RULE: u32 = 0x80;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
/// `1 << (RTNLGRP_IPV6_RULE - 1)`.
const RTMGRP_IPV6_RULE: u32 = 1 << 18;
/// `1 << (RTNLGRP_IPV4_NETCONF - 1)`: forwarding settings.
const RTMGRP_IPV4_NETCONF: u32 = 1 << 23;
/// `1 << (RTNLGRP_IPV6_NETCONF - 1)`.
const RTMGRP_IPV6_NETCONF: u32 = 1 << 24;

const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTM_GETRULE: u16 = 34;
const FIB_RULE_HDR_LEN: usize = 12;
const FRA_PRIORITY: u16 = 6;
const FRA_SUPPRESS_IFGROUP: u16 = 13;
const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
const FRA_TABLE: u16 = 15;
const FRA_PROTOCOL: u16 = 21;
/// `FR_ACT_TO_TBL`: look the route up in a table.
const FR_ACT_TO_TBL: u8 = 1;
/// The kernel's default rules, `(priority, table)`: `local`, `main`, `default` (IPv6 has no
/// `default` rule).
const DEFAULT_RULES: [(u32, u32); 3] = [(0, 255), (32766, 254), (32767, 253)];

const GENL_ID_CTRL: u16 = 0x10;
const GENL_HDRLEN: usize = 4;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

const NETDEV_FAMILY: &str = "netdev";
const NETDEV_MCGRP_MGMT: &str = "mgmt";
const NETDEV_FAMILY_VERSION: u8 = 1;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// `xdp-features` bits (`enum netdev_xdp_act`).
pub mod xdp_act {
    /// Native XDP: `XDP_PASS`, `XDP_DROP`, `XDP_ABORTED`, `XDP_TX` in the driver.
    pub const BASIC: u64 = 1;
    /// The driver's XDP program may `XDP_REDIRECT` away.
    pub const REDIRECT: u64 = 2;
    /// The device takes frames redirected to it (`ndo_xdp_xmit`). A veth sets it only while its
    /// peer has NAPI (GRO on, or an XDP program attached).
    pub const NDO_XMIT: u64 = 4;
}

/// How long one request may take before it is abandoned.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer: the kernel sends dumps in messages of at most a page or so, several per read.
const RECV_BUF: usize = 64 * 1024;

/// One netlink message: header fields and payload (after the 16-byte header).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Message {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: Vec<u8>,
}

/// Rounds up to the 4-byte netlink alignment.
const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits a datagram into messages. Stops at a header that does not fit.
fn split_messages(buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        out.push(Message {
            ty: u16::from_ne_bytes([buf[off + 4], buf[off + 5]]),
            flags: u16::from_ne_bytes([buf[off + 6], buf[off + 7]]),
            seq: u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]),
            payload: buf[off + NLMSG_HDRLEN..off + len].to_vec(),
        });
        off += align4(len);
    }
    out
}

/// Iterates the attributes (`struct nlattr`/`rtattr`: length, type, value) in `buf`: yields the
/// type (flags masked off) and the value. Stops at an attribute that does not fit.
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let value = &buf[off + 4..off + len];
        off += align4(len);
        Some((ty, value))
    })
}

/// Appends one attribute to `buf`.
fn put_attr(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align4(buf.len()), 0);
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn u64_of(v: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?))
}

fn u16_of(v: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?))
}

/// A NUL-terminated string attribute.
fn str_of(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn addr_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
        16 => {
            let octets: [u8; 16] = v.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// An interface as `RTM_GETLINK` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, `bond`, `vlan` ...); none for a physical NIC and for
    /// `lo`.
    pub kind: Option<String>,
    /// `IFF_*` flags.
    pub flags: u32,
    /// `IFLA_LINK`: a veth's peer, a VLAN device's lower device (an index in the peer's or the
    /// lower device's namespace).
    pub link: Option<u32>,
    /// `IFLA_MASTER`: the bridge or bond this interface is a port of.
    pub master: Option<u32>,
    /// `IFLA_PARENT_DEV_BUS_NAME` (`pci`, `virtio` ...): set for devices on a bus, i.e. real or
    /// emulated hardware.
    pub parent_bus: Option<String>,
}

impl Link {
    /// Whether this is the loopback device.
    pub fn is_loopback(&self) -> bool {
        self.flags & libc::IFF_LOOPBACK as u32 != 0
    }

    /// Whether the interface is administratively up.
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP as u32 != 0
    }
}

/// Parses one `RTM_NEWLINK` payload.
fn parse_link(payload: &[u8]) -> Option<Link> {
    let hdr = payload.get(..IFINFOMSG_LEN)?;
    let mut link = Link {
        index: u32::from_ne_bytes(hdr[4..8].try_into().ok()?),
        flags: u32::from_ne_bytes(hdr[8..12].try_into().ok()?),
        ..Link::default()
    };
    for (ty, v) in attrs(&payload[IFINFOMSG_LEN..]) {
        match ty {
            IFLA_IFNAME => link.name = str_of(v),
            IFLA_LINK => link.link = u32_of(v),
            IFLA_MASTER => link.master = u32_of(v),
            IFLA_PARENT_DEV_BUS_NAME => link.parent_bus = Some(str_of(v)),
            IFLA_LINKINFO => {
                link.kind = attrs(v)
                    .find(|(t, _)| *t == IFLA_INFO_KIND)
                    .map(|(_, k)| str_of(k));
            }
            _ => {}
        }
    }
    Some(link)
}

/// Parses one `RTM_NEWADDR` payload: the interface index and the address.
fn parse_addr(payload: &[u8]) -> Option<(u32, IpAddr)> {
    let hdr = payload.get(..IFADDRMSG_LEN)?;
    let index = u32::from_ne_bytes(hdr[4..8].try_into().ok()?);
    let mut local = None;
    let mut address = None;
    for (ty, v) in attrs(&payload[IFADDRMSG_LEN..]) {
        match ty {
            IFA_LOCAL => local = addr_of(v),
            IFA_ADDRESS => address = addr_of(v),
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the peer's; IFA_LOCAL is always ours when present.
    Some((index, local.or(address)?))
}

/// How the node reaches an address (`RTM_GETROUTE` for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// `rtm_type`: `RTN_LOCAL` for an address of the node, `RTN_UNICAST` for a routed one.
    pub kind: u8,
    /// Output interface.
    pub oif: Option<u32>,
}

impl Route {
    /// Whether the address is one of the node's own.
    pub fn is_local(&self) -> bool {
        self.kind == RTN_LOCAL
    }
}

/// Parses one `RTM_NEWROUTE` payload.
fn parse_route(payload: &[u8]) -> Option<Route> {
    let hdr = payload.get(..RTMSG_LEN)?;
    let kind = hdr[7];
    let oif = attrs(&payload[RTMSG_LEN..])
        .find(|(t, _)| *t == RTA_OIF)
        .and_then(|(_, v)| u32_of(v));
    Some(Route { kind, oif })
}

/// The `netdev` generic-netlink family, as `nlctrl` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Family {
    id: u16,
    mgmt_group: Option<u32>,
}

/// Parses a `CTRL_CMD_NEWFAMILY` payload (after the genl header).
/// Whether a `fib_rule_hdr` message is one of the kernel's default rules (`from all lookup
/// local|main|default` at their priorities, no selector), or a rule of another family than IPv4
/// and IPv6 (multicast routing's): `None` for a short message.
fn is_default_rule(payload: &[u8]) -> Option<bool> {
    let hdr = payload.get(..FIB_RULE_HDR_LEN)?;
    if i32::from(hdr[0]) != libc::AF_INET && i32::from(hdr[0]) != libc::AF_INET6 {
        return Some(true);
    }
    let (dst_len, src_len, tos, action) = (hdr[1], hdr[2], hdr[3], hdr[7]);
    let mut table = u32::from(hdr[4]);
    let mut priority = 0;
    let mut plain = dst_len == 0 && src_len == 0 && tos == 0 && action == FR_ACT_TO_TBL;
    for (ty, v) in attrs(&payload[FIB_RULE_HDR_LEN..]) {
        match ty {
            FRA_PRIORITY => priority = u32_of(v)?,
            FRA_TABLE => table = u32_of(v)?,
            FRA_PROTOCOL => {}
            // -1 is "not set" (the kernel sends it for every rule).
            FRA_SUPPRESS_PREFIXLEN | FRA_SUPPRESS_IFGROUP => plain &= u32_of(v)? == u32::MAX,
            // Any selector (interface, mark, ports, uid, VRF ...) or other action.
            _ => plain = false,
        }
    }
    Some(plain && DEFAULT_RULES.contains(&(priority, table)))
}

fn parse_family(attrs_buf: &[u8]) -> Option<Family> {
    let mut id = None;
    let mut mgmt_group = None;
    for (ty, v) in attrs(attrs_buf) {
        match ty {
            CTRL_ATTR_FAMILY_ID => id = u16_of(v),
            CTRL_ATTR_MCAST_GROUPS => {
                for (_, group) in attrs(v) {
                    let mut name = None;
                    let mut gid = None;
                    for (t, gv) in attrs(group) {
                        match t {
                            CTRL_ATTR_MCAST_GRP_NAME => name = Some(str_of(gv)),
                            CTRL_ATTR_MCAST_GRP_ID => gid = u32_of(gv),
                            _ => {}
                        }
                    }
                    if name.as_deref() == Some(NETDEV_MCGRP_MGMT) {
                        mgmt_group = gid;
                    }
                }
            }
            _ => {}
        }
    }
    Some(Family {
        id: id?,
        mgmt_group,
    })
}

/// Parses a `netdev` device message (after the genl header): ifindex and `xdp-features`.
fn parse_netdev(attrs_buf: &[u8]) -> Option<(u32, u64)> {
    let mut index = None;
    let mut features = None;
    for (ty, v) in attrs(attrs_buf) {
        match ty {
            NETDEV_A_DEV_IFINDEX => index = u32_of(v),
            NETDEV_A_DEV_XDP_FEATURES => features = u64_of(v),
            _ => {}
        }
    }
    Some((index?, features.unwrap_or(0)))
}

/// A netlink socket of one protocol, in the namespace it was created in.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens a socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_GENERIC`) joined to `groups`.
    fn open(protocol: libc::c_int, groups: u32, op: &'static str) -> Result<Self, NetlinkError> {
        let io = |source| NetlinkError::Io { op, source };
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh socket owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zero is valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = groups;
        // SAFETY: `sa` is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io(io::Error::last_os_error()));
        }
        let tv = libc::timeval {
            tv_sec: TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io(io::Error::last_os_error()));
        }
        Ok(Self { fd, seq: 0 })
    }

    /// A rtnetlink socket for requests.
    pub fn route() -> Result<Self, NetlinkError> {
        Self::open(libc::NETLINK_ROUTE, 0, "open rtnetlink socket")
    }

    /// A generic-netlink socket for requests.
    fn generic() -> Result<Self, NetlinkError> {
        Self::open(libc::NETLINK_GENERIC, 0, "open generic netlink socket")
    }

    /// Sends one request; returns its sequence number.
    fn send(
        &mut self,
        ty: u16,
        flags: u16,
        payload: &[u8],
        op: &'static str,
    ) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::with_capacity(align4(len));
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0_u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        // SAFETY: `msg` is valid for reads of its length; the kernel is the default destination.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if rc < 0 {
            return Err(NetlinkError::Io {
                op,
                source: io::Error::last_os_error(),
            });
        }
        Ok(self.seq)
    }

    /// Receives the answers to request `seq`: every message of a dump (until `NLMSG_DONE`), or
    /// the one answer of a plain request. An `NLMSG_ERROR` with an errno is the kernel's refusal.
    fn receive(
        &mut self,
        seq: u32,
        dump: bool,
        op: &'static str,
    ) -> Result<Vec<Message>, NetlinkError> {
        let mut out = Vec::new();
        let mut buf = vec![0_u8; RECV_BUF];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let source = io::Error::last_os_error();
                if source.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Io { op, source });
            }
            for m in split_messages(&buf[..n as usize]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = m
                            .payload
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, i32::from_ne_bytes);
                        if errno == 0 {
                            return Ok(out);
                        }
                        return Err(NetlinkError::Kernel {
                            op,
                            source: io::Error::from_raw_os_error(-errno),
                        });
                    }
                    _ => {
                        let multi = m.flags & NLM_F_MULTI != 0;
                        out.push(m);
                        if !dump && !multi {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    /// Every interface of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        const OP: &str = "RTM_GETLINK";
        let seq = self.send(RTM_GETLINK, NLM_F_DUMP, &[0; IFINFOMSG_LEN], OP)?;
        let msgs = self.receive(seq, true, OP)?;
        msgs.iter()
            .filter(|m| m.ty == RTM_NEWLINK)
            .map(|m| {
                parse_link(&m.payload).ok_or(NetlinkError::Malformed {
                    op: OP,
                    what: "short ifinfomsg",
                })
            })
            .collect()
    }

    /// Every address of the namespace, with its interface index.
    pub fn addresses(&mut self) -> Result<Vec<(u32, IpAddr)>, NetlinkError> {
        const OP: &str = "RTM_GETADDR";
        let seq = self.send(RTM_GETADDR, NLM_F_DUMP, &[0; IFADDRMSG_LEN], OP)?;
        let msgs = self.receive(seq, true, OP)?;
        Ok(msgs
            .iter()
            .filter(|m| m.ty == RTM_NEWADDR)
            .filter_map(|m| parse_addr(&m.payload))
            .collect())
    }

    /// How the node reaches `dst` (`ip route get`), or `None` when it has no route to it.
    pub fn route_to(&mut self, dst: IpAddr) -> Result<Option<Route>, NetlinkError> {
        const OP: &str = "RTM_GETROUTE";
        let (family, bits, bytes): (u8, u8, Vec<u8>) = match dst {
            IpAddr::V4(a) => (libc::AF_INET as u8, 32, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6 as u8, 128, a.octets().to_vec()),
        };
        let mut payload = vec![0_u8; RTMSG_LEN];
        payload[0] = family;
        payload[1] = bits;
        put_attr(&mut payload, RTA_DST, &bytes);
        let seq = self.send(RTM_GETROUTE, 0, &payload, OP)?;
        match self.receive(seq, false, OP) {
            Ok(msgs) => Ok(msgs
                .iter()
                .find(|m| m.ty == RTM_NEWROUTE)
                .and_then(|m| parse_route(&m.payload))),
            Err(NetlinkError::Kernel { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether every policy-routing rule of the namespace (IPv4 and IPv6) is one of the kernel's
    /// defaults: then a route depends on its destination only (and the input interface).
    pub fn only_default_rules(&mut self) -> Result<bool, NetlinkError> {
        const OP: &str = "RTM_GETRULE";
        // Family AF_UNSPEC: the rules of every family.
        let seq = self.send(RTM_GETRULE, NLM_F_DUMP, &[0; FIB_RULE_HDR_LEN], OP)?;
        let msgs = self.receive(seq, true, OP)?;
        for m in msgs.iter().filter(|m| m.ty == RTM_NEWRULE) {
            match is_default_rule(&m.payload) {
                Some(true) => {}
                Some(false) => return Ok(false),
                None => {
                    return Err(NetlinkError::Malformed {
                        op: OP,
                        what: "short fib_rule_hdr",
                    });
                }
            }
        }
        Ok(true)
    }
}

/// The `netdev` generic-netlink family: devices' XDP capabilities.
pub struct Netdev {
    sock: Socket,
    family: Family,
}

impl Netdev {
    /// Resolves the family; `None` on kernels without it (before 6.3).
    pub fn open() -> Result<Option<Self>, NetlinkError> {
        const OP: &str = "CTRL_CMD_GETFAMILY netdev";
        let mut sock = Socket::generic()?;
        let mut payload = vec![CTRL_CMD_GETFAMILY, 1, 0, 0];
        let mut name = NETDEV_FAMILY.as_bytes().to_vec();
        name.push(0);
        put_attr(&mut payload, CTRL_ATTR_FAMILY_NAME, &name);
        let seq = sock.send(GENL_ID_CTRL, 0, &payload, OP)?;
        let msgs = match sock.receive(seq, false, OP) {
            Ok(m) => m,
            Err(NetlinkError::Kernel { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let family = msgs
            .iter()
            .find(|m| m.ty == GENL_ID_CTRL)
            .and_then(|m| parse_family(m.payload.get(GENL_HDRLEN..)?))
            .ok_or(NetlinkError::Malformed {
                op: OP,
                what: "no family id",
            })?;
        Ok(Some(Self { sock, family }))
    }

    /// `xdp-features` of every device of the namespace, by ifindex.
    pub fn xdp_features(&mut self) -> Result<HashMap<u32, u64>, NetlinkError> {
        const OP: &str = "NETDEV_CMD_DEV_GET";
        let payload = [NETDEV_CMD_DEV_GET, NETDEV_FAMILY_VERSION, 0, 0];
        let seq = self.sock.send(self.family.id, NLM_F_DUMP, &payload, OP)?;
        let msgs = self.sock.receive(seq, true, OP)?;
        Ok(msgs
            .iter()
            .filter(|m| m.ty == self.family.id)
            .filter_map(|m| parse_netdev(m.payload.get(GENL_HDRLEN..)?))
            .collect())
    }

    /// The `mgmt` multicast group (device added, removed, changed), when the family has one.
    fn mgmt_group(&self) -> Option<u32> {
        self.family.mgmt_group
    }
}

/// Sockets that become readable when an interface or an address of the namespace changes, or a
/// device's XDP capabilities do. The daemon polls their descriptors; `drain` empties them.
pub struct Watch {
    route: OwnedFd,
    netdev: Option<OwnedFd>,
}

impl Watch {
    /// Subscribes to link and address events, and to `netdev` device events where the kernel
    /// has the family.
    pub fn open() -> Result<Self, NetlinkError> {
        let route = Socket::open(
            libc::NETLINK_ROUTE,
            RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
            "subscribe to rtnetlink events",
        )?
        .fd;
        let netdev = match Netdev::open()? {
            Some(n) => match n.mgmt_group() {
                Some(group) => {
                    let fd = n.sock.fd;
                    // SAFETY: `group` is a valid u32 of the size passed.
                    let rc = unsafe {
                        libc::setsockopt(
                            fd.as_raw_fd(),
                            libc::SOL_NETLINK,
                            libc::NETLINK_ADD_MEMBERSHIP,
                            (&raw const group).cast(),
                            size_of::<u32>() as libc::socklen_t,
                        )
                    };
                    if rc < 0 {
                        return Err(NetlinkError::Io {
                            op: "join the netdev mgmt group",
                            source: io::Error::last_os_error(),
                        });
                    }
                    Some(fd)
                }
                None => None,
            },
            None => None,
        };
        for fd in std::iter::once(&route).chain(netdev.as_ref()) {
            set_nonblocking(fd.as_fd()).map_err(|source| NetlinkError::Io {
                op: "make a watch socket non-blocking",
                source,
            })?;
        }
        Ok(Self { route, netdev })
    }

    /// The descriptors to wait on.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.route.as_fd())
            .chain(self.netdev.as_ref().map(AsFd::as_fd))
            .collect()
    }

    /// Reads every pending event; returns whether there was any. An overrun (`ENOBUFS`) counts
    /// as an event: something changed and was lost, so everything is looked at again.
    pub fn drain(&self) -> bool {
        let mut any = false;
        let mut buf = vec![0_u8; RECV_BUF];
        for fd in self.fds() {
            loop {
                // SAFETY: `buf` is valid for writes of its length.
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    any = true;
                    continue;
                }
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                    any = true;
                    continue;
                }
                break;
            }
        }
        any
    }
}

/// What a batch of forwarding events held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardingEvents {
    /// Anything at all (an overrun counts: events were lost).
    pub any: bool,
    /// A policy-routing rule was added or removed (or events were lost).
    pub rules: bool,
}

/// A socket that becomes readable when anything a route lookup depends on changes: routes,
/// neighbours, links, addresses, policy-routing rules, forwarding settings (IPv4 and IPv6).
pub struct ForwardingWatch {
    sock: Socket,
}

impl ForwardingWatch {
    /// Subscribes to the events (non-blocking).
    pub fn open() -> Result<Self, NetlinkError> {
        let sock = Socket::open(
            libc::NETLINK_ROUTE,
            RTMGRP_LINK
                | RTMGRP_NEIGH
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_ROUTE
                | RTMGRP_IPV4_RULE
                | RTMGRP_IPV6_RULE
                | RTMGRP_IPV4_NETCONF
                | RTMGRP_IPV6_NETCONF,
            "subscribe to forwarding events",
        )?;
        set_nonblocking(sock.fd.as_fd()).map_err(|source| NetlinkError::Io {
            op: "make the forwarding watch non-blocking",
            source,
        })?;
        Ok(Self { sock })
    }

    /// The descriptor to wait on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.fd.as_fd()
    }

    /// Reads every pending event.
    pub fn drain(&self) -> ForwardingEvents {
        let mut ev = ForwardingEvents::default();
        let mut buf = vec![0_u8; RECV_BUF];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.sock.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                ev.any = true;
                ev.rules |= split_messages(&buf[..n as usize])
                    .iter()
                    .any(|m| matches!(m.ty, RTM_NEWRULE | RTM_DELRULE));
                continue;
            }
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                ev = ForwardingEvents {
                    any: true,
                    rules: true,
                };
                continue;
            }
            return ev;
        }
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor with integer arguments.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0_u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    fn ifinfomsg(index: u32, flags: u32) -> Vec<u8> {
        let mut h = vec![0_u8; IFINFOMSG_LEN];
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        h[8..12].copy_from_slice(&flags.to_ne_bytes());
        h
    }

    fn rule(priority: u32, table: u8, src_len: u8, extra: Option<(u16, &[u8])>) -> Vec<u8> {
        let mut p = vec![
            libc::AF_INET as u8,
            0,
            src_len,
            0,
            table,
            0,
            0,
            FR_ACT_TO_TBL,
        ];
        p.extend_from_slice(&[0; 4]);
        put_attr(&mut p, FRA_PRIORITY, &priority.to_ne_bytes());
        put_attr(&mut p, FRA_TABLE, &u32::from(table).to_ne_bytes());
        put_attr(&mut p, FRA_SUPPRESS_PREFIXLEN, &u32::MAX.to_ne_bytes());
        put_attr(&mut p, FRA_PROTOCOL, &[2]);
        if let Some((ty, v)) = extra {
            put_attr(&mut p, ty, v);
        }
        p
    }

    #[test]
    fn only_the_kernels_own_rules_count_as_default() {
        assert_eq!(is_default_rule(&rule(0, 255, 0, None)), Some(true));
        assert_eq!(is_default_rule(&rule(32766, 254, 0, None)), Some(true));
        assert_eq!(is_default_rule(&rule(32767, 253, 0, None)), Some(true));
        // `from 203.0.113.0/24 lookup main`, a custom priority, a table, an iif selector.
        assert_eq!(is_default_rule(&rule(32766, 254, 24, None)), Some(false));
        assert_eq!(is_default_rule(&rule(100, 254, 0, None)), Some(false));
        assert_eq!(is_default_rule(&rule(32766, 100, 0, None)), Some(false));
        assert_eq!(
            is_default_rule(&rule(32766, 254, 0, Some((3, b"eth0\0")))),
            Some(false)
        );
        assert_eq!(
            is_default_rule(&rule(
                32766,
                254,
                0,
                Some((FRA_SUPPRESS_PREFIXLEN, &[0; 4]))
            )),
            Some(false),
            "`suppress_prefixlength 0`"
        );
        let mut ipmr = rule(32767, 254, 0, None);
        ipmr[0] = 128;
        assert_eq!(
            is_default_rule(&ipmr),
            Some(true),
            "multicast routing's rules"
        );
        assert_eq!(is_default_rule(&[0; 4]), None);
    }

    #[test]
    fn a_veth_link_message_parses_with_its_kind_and_peer() {
        let mut p = ifinfomsg(7, libc::IFF_UP as u32);
        put_attr(&mut p, IFLA_IFNAME, b"n-client\0");
        put_attr(&mut p, IFLA_LINK, &3_u32.to_ne_bytes());
        let mut info = Vec::new();
        put_attr(&mut info, IFLA_INFO_KIND, b"veth\0");
        put_attr(&mut p, IFLA_LINKINFO | 0x8000, &info);
        let link = parse_link(&p).unwrap();
        assert_eq!(
            link,
            Link {
                index: 7,
                name: "n-client".into(),
                kind: Some("veth".into()),
                flags: libc::IFF_UP as u32,
                link: Some(3),
                master: None,
                parent_bus: None,
            }
        );
        assert!(link.is_up());
        assert!(!link.is_loopback());
    }

    #[test]
    fn a_nic_has_no_kind_and_a_bus() {
        let mut p = ifinfomsg(2, 0);
        put_attr(&mut p, IFLA_IFNAME, b"eth0\0");
        put_attr(&mut p, IFLA_PARENT_DEV_BUS_NAME, b"pci\0");
        put_attr(&mut p, IFLA_MASTER, &9_u32.to_ne_bytes());
        let link = parse_link(&p).unwrap();
        assert_eq!(link.kind, None);
        assert_eq!(link.parent_bus.as_deref(), Some("pci"));
        assert_eq!(link.master, Some(9));
        assert!(parse_link(&[0; 8]).is_none(), "short header");
    }

    #[test]
    fn several_messages_in_one_datagram_split_and_a_torn_tail_is_dropped() {
        let mut buf = message(RTM_NEWLINK, NLM_F_MULTI, 5, &ifinfomsg(1, 0));
        buf.extend(message(NLMSG_DONE, NLM_F_MULTI, 5, &[0; 4]));
        let mut torn = message(RTM_NEWLINK, 0, 5, &ifinfomsg(2, 0));
        torn.truncate(20);
        buf.extend(torn);
        let msgs = split_messages(&buf);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].ty, RTM_NEWLINK);
        assert_eq!(msgs[1].ty, NLMSG_DONE);
        assert!(msgs.iter().all(|m| m.seq == 5));
    }

    #[test]
    fn attributes_stop_at_one_that_does_not_fit() {
        let mut buf = Vec::new();
        put_attr(&mut buf, 1, &[1, 2, 3]);
        put_attr(&mut buf, 2, &[4; 8]);
        buf.extend_from_slice(&40_u16.to_ne_bytes());
        buf.extend_from_slice(&3_u16.to_ne_bytes());
        let got: Vec<_> = attrs(&buf).collect();
        assert_eq!(got, vec![(1, &[1, 2, 3][..]), (2, &[4; 8][..])]);
    }

    #[test]
    fn addresses_prefer_ifa_local() {
        let mut p = vec![0_u8; IFADDRMSG_LEN];
        p[0] = libc::AF_INET as u8;
        p[4..8].copy_from_slice(&4_u32.to_ne_bytes());
        put_attr(&mut p, IFA_ADDRESS, &[203, 0, 113, 9]);
        put_attr(&mut p, IFA_LOCAL, &[203, 0, 113, 1]);
        assert_eq!(parse_addr(&p), Some((4, "203.0.113.1".parse().unwrap())));
        let mut p6 = vec![0_u8; IFADDRMSG_LEN];
        p6[4..8].copy_from_slice(&5_u32.to_ne_bytes());
        put_attr(
            &mut p6,
            IFA_ADDRESS,
            &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
        );
        assert_eq!(parse_addr(&p6), Some((5, "2001:db8::1".parse().unwrap())));
    }

    #[test]
    fn routes_say_local_or_through_which_interface() {
        let mut p = vec![0_u8; RTMSG_LEN];
        p[7] = RTN_UNICAST;
        put_attr(&mut p, RTA_OIF, &12_u32.to_ne_bytes());
        let r = parse_route(&p).unwrap();
        assert_eq!(
            r,
            Route {
                kind: RTN_UNICAST,
                oif: Some(12)
            }
        );
        assert!(!r.is_local());
        let mut l = vec![0_u8; RTMSG_LEN];
        l[7] = RTN_LOCAL;
        assert!(parse_route(&l).unwrap().is_local());
    }

    #[test]
    fn the_netdev_family_and_its_mgmt_group_parse() {
        let mut buf = Vec::new();
        put_attr(&mut buf, CTRL_ATTR_FAMILY_ID, &0x1c_u16.to_ne_bytes());
        let mut group = Vec::new();
        put_attr(&mut group, CTRL_ATTR_MCAST_GRP_ID, &11_u32.to_ne_bytes());
        put_attr(&mut group, CTRL_ATTR_MCAST_GRP_NAME, b"mgmt\0");
        let mut other = Vec::new();
        put_attr(&mut other, CTRL_ATTR_MCAST_GRP_ID, &12_u32.to_ne_bytes());
        put_attr(&mut other, CTRL_ATTR_MCAST_GRP_NAME, b"page-pool\0");
        let mut groups = Vec::new();
        put_attr(&mut groups, 1 | 0x8000, &group);
        put_attr(&mut groups, 2 | 0x8000, &other);
        put_attr(&mut buf, CTRL_ATTR_MCAST_GROUPS | 0x8000, &groups);
        assert_eq!(
            parse_family(&buf),
            Some(Family {
                id: 0x1c,
                mgmt_group: Some(11)
            })
        );
    }

    #[test]
    fn a_netdev_device_parses_with_its_xdp_features() {
        let mut buf = Vec::new();
        put_attr(&mut buf, NETDEV_A_DEV_IFINDEX, &6_u32.to_ne_bytes());
        let f = xdp_act::BASIC | xdp_act::REDIRECT | xdp_act::NDO_XMIT;
        put_attr(&mut buf, NETDEV_A_DEV_XDP_FEATURES, &f.to_ne_bytes());
        assert_eq!(parse_netdev(&buf), Some((6, f)));
        let mut none = Vec::new();
        put_attr(&mut none, NETDEV_A_DEV_IFINDEX, &6_u32.to_ne_bytes());
        assert_eq!(parse_netdev(&none), Some((6, 0)));
    }
}

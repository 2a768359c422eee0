//! Socket-level steering of clients on the node itself (a health checker, a sidecar, `curl`):
//! their packets never cross an interface veer's packet programs see on the way in, so the
//! cgroup socket hooks steer the socket instead, once, when it is connected (TCP, connected UDP)
//! or sends (unconnected UDP):
//!
//! - `connect`/`sendmsg`: service lookup -> the socket's flow for that VIP (kept for the socket's
//!   whole life, whatever the weights are now) or, on a miss, selection exactly as for packets
//!   (pins, weights, Maglev) -> the destination the application passed becomes the backend;
//! - `recvmsg`/`getpeername`: the backend shows as the VIP again, so the application sees the
//!   address it asked for;
//! - `sock_release`: a connected socket's flow is forgotten when the socket is closed
//!   (unconnected UDP flows expire by the `udp` idle timeout, in the daemon's upkeep).
//!
//! Every hook first checks that the socket lives in the network namespace of the daemon that
//! loaded it (`VEER_NETNS_COOKIE`, set at load): the hooks are attached to the root cgroup, so
//! they see every socket of the machine, and must leave other namespaces (containers, other
//! daemons) alone.
//!
//! These are socket operations, not packets: untouched ones are not counted as `Reason`s; a
//! connection refused because no group can take it is (`NoBackend`). Flows count as new and
//! active flows of their backend; their packets and bytes do not pass veer's packet programs.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{bpf_sock, bpf_sock_addr},
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_ns},
    programs::{SockAddrContext, SockContext},
};
use veer_common::{
    FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP,
    counters::Reason,
    flow::FlowKey,
    sock::{SockFlow, SockKey, SockPeer},
};

use crate::{
    counters,
    maps::{VEER_NETNS_COOKIE, VEER_SOCK_FLOWS, VEER_SOCK_REV},
    select, service,
};

/// `last_seen_ns` of a socket flow is refreshed at most this often.
const TOUCH_INTERVAL_NS: u64 = 1_000_000_000;

/// The first three words of an IPv4-mapped IPv6 address (`::ffff:0:0/96`), as loaded.
const V4_MAPPED: [u32; 3] = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff])];

/// Offsets of the `struct bpf_sock` fields read here (`include/uapi/linux/bpf.h`).
mod sk_off {
    pub(super) const FAMILY: usize = 4;
    pub(super) const PROTOCOL: usize = 12;
    pub(super) const SRC_IP4: usize = 24;
    pub(super) const SRC_IP6: usize = 28;
    pub(super) const DST_PORT: usize = 48;
    pub(super) const DST_IP4: usize = 52;
    pub(super) const DST_IP6: usize = 56;
}
const _: () = {
    assert!(core::mem::offset_of!(bpf_sock, family) == sk_off::FAMILY);
    assert!(core::mem::offset_of!(bpf_sock, protocol) == sk_off::PROTOCOL);
    assert!(core::mem::offset_of!(bpf_sock, src_ip4) == sk_off::SRC_IP4);
    assert!(core::mem::offset_of!(bpf_sock, src_ip6) == sk_off::SRC_IP6);
    assert!(core::mem::offset_of!(bpf_sock, dst_port) == sk_off::DST_PORT);
    assert!(core::mem::offset_of!(bpf_sock, dst_ip4) == sk_off::DST_IP4);
    assert!(core::mem::offset_of!(bpf_sock, dst_ip6) == sk_off::DST_IP6);
};

/// Loads the `u32` at byte `OFF` of a `bpf_sock`.
///
/// The verifier allows no pointer arithmetic on a socket pointer: every field must be read at a
/// constant offset from it. LLVM merges the addresses of fields read on different branches
/// (`src_ip4` or `src_ip6[0]`) into one computed pointer, so the load is written in assembly.
#[inline(always)]
fn sk_u32<const OFF: usize>(sk: *const bpf_sock) -> u32 {
    #[cfg(target_arch = "bpf")]
    {
        let v: u64;
        // SAFETY: one load at a constant offset inside the `bpf_sock` the verifier vouches for.
        unsafe {
            core::arch::asm!(
                "{v} = *(u32 *)({p} + {off})",
                v = out(reg) v,
                p = in(reg) sk,
                off = const OFF,
                options(readonly, nostack, preserves_flags)
            );
        }
        v as u32
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        // SAFETY: as above (host builds only type-check this).
        unsafe { sk.cast::<u8>().add(OFF).cast::<u32>().read_unaligned() }
    }
}

/// Loads the `u16` at byte `OFF` of a `bpf_sock` (see `sk_u32`).
#[inline(always)]
fn sk_u16<const OFF: usize>(sk: *const bpf_sock) -> u16 {
    #[cfg(target_arch = "bpf")]
    {
        let v: u64;
        // SAFETY: as in `sk_u32`.
        unsafe {
            core::arch::asm!(
                "{v} = *(u16 *)({p} + {off})",
                v = out(reg) v,
                p = in(reg) sk,
                off = const OFF,
                options(readonly, nostack, preserves_flags)
            );
        }
        v as u16
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        // SAFETY: as above.
        unsafe { sk.cast::<u8>().add(OFF).cast::<u16>().read_unaligned() }
    }
}

/// Whether a socket of this context lives in the daemon's network namespace.
#[inline(always)]
fn is_ours(ctx: *mut core::ffi::c_void) -> bool {
    // SAFETY: a read-only global set at load; volatile so the compiler keeps the load the
    // loader patched.
    let ours = unsafe { core::ptr::read_volatile(&raw const VEER_NETNS_COOKIE) };
    // SAFETY: plain helper call on the program's context.
    ours != 0 && unsafe { bpf_get_netns_cookie(ctx) } == ours
}

/// An address as the socket hooks see it: the family the service lookup uses (an IPv4-mapped
/// IPv6 address is IPv4), the address in `FlowKey` form, and whether it came mapped.
#[derive(Clone, Copy)]
struct Target {
    family: u8,
    addr: [u32; 4],
    mapped: bool,
}

/// Reads the address the application passed (`user_ip4`/`user_ip6`).
#[inline(always)]
fn user_target(sa: &bpf_sock_addr, ipv6: bool) -> Target {
    if !ipv6 {
        return Target {
            family: FAMILY_V4,
            addr: [sa.user_ip4, 0, 0, 0],
            mapped: false,
        };
    }
    // The verifier wants 4-byte loads of `user_ip6`, one word at a time.
    let w = [
        sa.user_ip6[0],
        sa.user_ip6[1],
        sa.user_ip6[2],
        sa.user_ip6[3],
    ];
    if [w[0], w[1], w[2]] == V4_MAPPED {
        Target {
            family: FAMILY_V4,
            addr: [w[3], 0, 0, 0],
            mapped: true,
        }
    } else {
        Target {
            family: FAMILY_V6,
            addr: w,
            mapped: false,
        }
    }
}

/// Writes `addr`:`port` back as the address the socket operation uses.
#[inline(always)]
fn set_user_target(sa: &mut bpf_sock_addr, ipv6: bool, t: Target, addr: &[u32; 4], port: u16) {
    if !ipv6 {
        sa.user_ip4 = addr[0];
    } else if t.mapped {
        sa.user_ip6[0] = V4_MAPPED[0];
        sa.user_ip6[1] = V4_MAPPED[1];
        sa.user_ip6[2] = V4_MAPPED[2];
        sa.user_ip6[3] = addr[0];
    } else {
        sa.user_ip6[0] = addr[0];
        sa.user_ip6[1] = addr[1];
        sa.user_ip6[2] = addr[2];
        sa.user_ip6[3] = addr[3];
    }
    // `user_port` holds the port in network byte order in its low 16 bits.
    sa.user_port = u32::from(port);
}

/// The socket's protocol, if veer steers it.
#[inline(always)]
fn proto_of(sa: &bpf_sock_addr) -> Option<u8> {
    match sa.protocol {
        p if p == u32::from(PROTO_TCP) => Some(PROTO_TCP),
        p if p == u32::from(PROTO_UDP) => Some(PROTO_UDP),
        _ => None,
    }
}

/// Folds a socket cookie into 16 bits: the "source port" of the flow key selection hashes, so
/// that sockets spread over groups and backends as flows do.
#[inline(always)]
fn fold16(cookie: u64) -> u16 {
    (cookie ^ (cookie >> 16) ^ (cookie >> 32) ^ (cookie >> 48)) as u16
}

/// `connect` (TCP, connected UDP) and `sendmsg` (unconnected UDP): steers the socket's
/// destination to its backend. Only a new flow that no group can take is refused.
///
/// Returns: `Ok` (allow the operation, rewritten or untouched), or `NoBackend` (refuse it).
#[inline(always)]
pub(crate) fn steer(ctx: &SockAddrContext, ipv6: bool) -> Result<(), Reason> {
    if !is_ours(ctx.as_ptr()) {
        return Ok(());
    }
    // SAFETY: the context pointer is valid for the program run; fields are read and written
    // through it as the verifier allows (4-byte accesses).
    let sa = unsafe { &mut *ctx.sock_addr };
    let Some(proto) = proto_of(sa) else {
        return Ok(());
    };
    let t = user_target(sa, ipv6);
    let port = sa.user_port as u16;
    // The bound source address (zero when unbound): source-prefix pins match it.
    // SAFETY: `sk` is the operation's socket (never null here), valid for the program run.
    let sk = unsafe { sa.__bindgen_anon_1.sk };
    let src = if ipv6 {
        let w = [
            sk_u32::<{ sk_off::SRC_IP6 }>(sk),
            sk_u32::<{ sk_off::SRC_IP6 + 4 }>(sk),
            sk_u32::<{ sk_off::SRC_IP6 + 8 }>(sk),
            sk_u32::<{ sk_off::SRC_IP6 + 12 }>(sk),
        ];
        if t.mapped { [w[3], 0, 0, 0] } else { w }
    } else {
        [sk_u32::<{ sk_off::SRC_IP4 }>(sk), 0, 0, 0]
    };
    // SAFETY: plain helper call on the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = FlowKey {
        src_addr: src,
        dst_addr: t.addr,
        src_port: fold16(cookie),
        dst_port: port,
        proto,
        family: t.family,
        _pad: [0; 2],
    };
    let Ok(svc) = service::lookup(&key) else {
        return Ok(());
    };
    let skey = SockKey {
        cookie,
        addr: t.addr,
        port,
        proto,
        family: t.family,
        _pad: 0,
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let flow = if let Some(f) = VEER_SOCK_FLOWS.get_ptr_mut(skey) {
        // SAFETY: `BPF_F_NO_PREALLOC` hash elements stay valid under RCU until the program
        // returns; racing writers of `last_seen_ns` store values that are right for their
        // moment.
        let f = unsafe { &mut *f };
        if now.wrapping_sub(f.last_seen_ns) >= TOUCH_INTERVAL_NS {
            f.last_seen_ns = now;
        }
        *f
    } else {
        let e = select::pick(svc, &key)?;
        let flow = SockFlow {
            backend_addr: e.backend_addr,
            backend_port: e.backend_port,
            _pad: 0,
            backend_id: e.backend_id,
            service_id: svc.service_id,
            _pad2: 0,
            last_seen_ns: now,
        };
        let rev_key = SockKey {
            addr: flow.backend_addr,
            port: flow.backend_port,
            ..skey
        };
        let peer = SockPeer {
            addr: t.addr,
            port,
            _pad: [0; 2],
        };
        // A failed insert (the table is full) still steers this operation, untracked; the next
        // one selects again, with the same result while weights are unchanged.
        if VEER_SOCK_REV.insert(rev_key, peer, 0).is_err()
            || VEER_SOCK_FLOWS.insert(skey, flow, 0).is_err()
        {
            counters::reason(Reason::ConntrackFull);
        }
        counters::new_socket_flow(svc.service_id, flow.backend_id);
        flow
    };
    set_user_target(sa, ipv6, t, &flow.backend_addr, flow.backend_port);
    Ok(())
}

/// `recvmsg` (UDP) and `getpeername`: a peer that is a backend this socket was steered to shows
/// as the VIP the application asked for.
#[inline(always)]
pub(crate) fn unsteer(ctx: &SockAddrContext, ipv6: bool) {
    if !is_ours(ctx.as_ptr()) {
        return;
    }
    // SAFETY: as in `steer`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let Some(proto) = proto_of(sa) else {
        return;
    };
    let t = user_target(sa, ipv6);
    let key = SockKey {
        // SAFETY: plain helper call on the program's context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        addr: t.addr,
        port: sa.user_port as u16,
        proto,
        family: t.family,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(peer) = unsafe { VEER_SOCK_REV.get(key) }.copied() {
        set_user_target(sa, ipv6, t, &peer.addr, peer.port);
    }
}

/// `sock_release`: forgets the flow of a connected socket being closed. (An unconnected UDP
/// socket has no peer here; its flows expire by the `udp` idle timeout.)
#[inline(always)]
pub(crate) fn release(ctx: &SockContext) {
    if !is_ours(ctx.as_ptr()) {
        return;
    }
    let sk: *const bpf_sock = ctx.sock;
    let proto = match sk_u32::<{ sk_off::PROTOCOL }>(sk) {
        p if p == u32::from(PROTO_TCP) => PROTO_TCP,
        p if p == u32::from(PROTO_UDP) => PROTO_UDP,
        _ => return,
    };
    let w = [
        sk_u32::<{ sk_off::DST_IP6 }>(sk),
        sk_u32::<{ sk_off::DST_IP6 + 4 }>(sk),
        sk_u32::<{ sk_off::DST_IP6 + 8 }>(sk),
        sk_u32::<{ sk_off::DST_IP6 + 12 }>(sk),
    ];
    let (family, addr) = if sk_u32::<{ sk_off::FAMILY }>(sk) == u32::from(FAMILY_V4) {
        (FAMILY_V4, [sk_u32::<{ sk_off::DST_IP4 }>(sk), 0, 0, 0])
    } else if [w[0], w[1], w[2]] == V4_MAPPED {
        (FAMILY_V4, [w[3], 0, 0, 0])
    } else {
        (FAMILY_V6, w)
    };
    let rev_key = SockKey {
        // SAFETY: plain helper call on the program's context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        addr,
        port: sk_u16::<{ sk_off::DST_PORT }>(sk),
        proto,
        family,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(peer) = (unsafe { VEER_SOCK_REV.get(rev_key) }).copied() else {
        return;
    };
    let key = SockKey {
        addr: peer.addr,
        port: peer.port,
        ..rev_key
    };
    // Either may already be gone (evicted, or expired by the daemon): nothing to do then.
    let _ = VEER_SOCK_FLOWS.remove(key);
    let _ = VEER_SOCK_REV.remove(rev_key);
}

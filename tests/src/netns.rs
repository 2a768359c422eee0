//! Network-namespace topologies for integration tests: one namespace per role (client, node,
//! backend groups), wired with veth pairs, uniquely named per test, torn down on drop.
//!
//! Owns the namespaces and the veth pairs between them; it loads no BPF program and starts no
//! server (see [`crate::servers`]). Only documentation addresses are used, and no interface is
//! ever created in the root namespace: each veth pair is created with both ends directly inside
//! their namespaces (`ip link add A netns NS1 type veth peer name B netns NS2`).
//!
//! # Names
//!
//! A topology's namespaces are `veer-{pid}-{n}-{role}`, where `n` comes from a process-wide
//! counter and `role` is `node`, `client` or the backend group's name, so tests run in parallel
//! and can be listed with `ip netns list`. Interface names fit the kernel's 15 bytes.
//!
//! # Addressing plan
//!
//! ```text
//!  client ns                    node ns                                     backend ns "v1"
//!  eth0 ──────────────────── n-client                        n-v1 ────────── eth0
//!  203.0.113.2/24               203.0.113.1/24              198.51.100.254/32    198.51.100.11/32 ...
//!  2001:db8:c::2/64             2001:db8:c::1/64            2001:db8:b::fe/128   2001:db8:b::11/128 ...
//!  + extras (/32, /128)         routes: extra/32 dev n-client
//!  default via 203.0.113.1              backend-addr/32 dev n-v1             198.51.100.254/32 dev eth0
//!  ::/0 via 2001:db8:c::1               backend-addr/128 dev n-v1            default via 198.51.100.254
//!                                                                            2001:db8:b::fe/128 dev eth0
//!                                                                            ::/0 via 2001:db8:b::fe
//! ```
//!
//! - Client namespace: `eth0` holds [`CLIENT_ADDR`]/24 and [`CLIENT_ADDR_V6`]/64, plus any extra
//!   client addresses as /32 (/128), with default routes through the node.
//! - Node namespace: `n-client` ([`NODE_CLIENT_IFNAME`]) faces the client with
//!   [`NODE_CLIENT_ADDR`]/24 and [`NODE_CLIENT_ADDR_V6`]/64, and a host route for each extra
//!   client address. Each backend group gets `n-<name>` (name cut to fit 15 bytes) holding
//!   [`NODE_BACKEND_ADDR`]/32 (and [`NODE_BACKEND_ADDR_V6`]/128 when the group has IPv6
//!   addresses), plus a host route per backend address.
//! - Backend namespace: `eth0` holds the group's addresses as /32 (/128), with an on-link host
//!   route to the node's address and a default route through it, per family present. Backends
//!   answer with their own address to the client's address: replies route back through the node
//!   (no SNAT), where veer's TC program restores the VIP.
//! - A topology without backends (local-backend tests) is just node and client; add addresses to
//!   the node with `topology.node().run(&["ip", "addr", "add", ...])`.
//! - Every namespace has `lo` up, and every address is added `nodad` so it is usable at once (an
//!   address flag, not a sysctl).
//!
//! # Kernel defaults
//!
//! The bed changes no sysctl and no offload: forwarding is off in the node, `rp_filter`,
//! `accept_ra` and `accept_local` are what a new namespace gets, and every veth keeps the
//! kernel's offloads (TX checksum offload on, so local senders hand the node `CHECKSUM_PARTIAL`
//! skbs; GRO off, so a veth peer has no NAPI and cannot take redirected XDP frames), as a
//! container runtime leaves them. veer sets, checks or reports what it needs itself. Tests about
//! a setting change it explicitly: [`Topology::enable_forwarding`] for plain kernel routing
//! without veer, [`Netns::set_offload`] for the offload matrix.
//!
//! # Teardown
//!
//! Dropping a [`Netns`] runs `ip netns del`, which destroys the veth ends inside it (and so their
//! peers). Failures are logged on stderr, never panicked on, so teardown also runs while a failed
//! test unwinds. Stop the servers and processes living in a topology before dropping it (declare
//! them after the topology): a process or socket inside a deleted namespace keeps it alive.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Write as _};
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The client's primary IPv4 address, on its `eth0`.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The client's primary IPv6 address, on its `eth0`.
pub const CLIENT_ADDR_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2);
/// The node's IPv4 address on the client side; the client's IPv4 default gateway.
pub const NODE_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The node's IPv6 address on the client side; the client's IPv6 default gateway.
pub const NODE_CLIENT_ADDR_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
/// The node's IPv4 address on every backend-facing interface; the backends' default gateway.
pub const NODE_BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
/// The node's IPv6 address on every backend-facing interface; the backends' default gateway.
pub const NODE_BACKEND_ADDR_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0xfe);
/// The node's interface facing the client (inside the node namespace).
pub const NODE_CLIENT_IFNAME: &str = "n-client";
/// The interface of the client and of every backend namespace, facing the node.
pub const PEER_IFNAME: &str = "eth0";
/// The node's bridge when backends sit behind one ([`TopologyBuilder::backends_behind_bridge`]).
pub const NODE_BRIDGE_IFNAME: &str = "n-br";

/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";
/// Kernel limit on interface names, without the terminating NUL (`IFNAMSIZ - 1`).
const MAX_IFNAME_LEN: usize = 15;
/// Longest backend group name accepted (it is also part of a namespace name).
const MAX_GROUP_NAME_LEN: usize = 32;
/// Roles a backend group may not be named after: their namespace or interface names are taken.
const RESERVED_ROLES: [&str; 2] = ["node", "client"];

/// A boolean offload of an interface, as `ethtool -K` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// `tx`: TX checksum offload (`ETHTOOL_STXCSUM`). On by default on a veth: a local sender's
    /// packets leave with `CHECKSUM_PARTIAL`.
    TxChecksum,
    /// `gro`: generic receive offload (`ETHTOOL_SGRO`). Off by default on a veth; on, it gives
    /// the veth NAPI, so its peer can take redirected XDP frames.
    Gro,
}

impl Offload {
    /// The `ETHTOOL_S*` command from `linux/ethtool.h`.
    fn set_cmd(self) -> u32 {
        match self {
            Offload::TxChecksum => 0x17,
            Offload::Gro => 0x2c,
        }
    }
}

/// Process-wide counter making namespace names unique within this test process.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Writes a warning to stderr without ever panicking (used from `Drop`).
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    // A failed write to stderr has nowhere else to be reported.
    drop(
        stderr
            .write_fmt(args)
            .and_then(|()| stderr.write_all(b"\n")),
    );
}

/// Returns a fresh `veer-{pid}-{n}` prefix for namespace names.
fn unique_prefix() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("veer-{}-{n}", std::process::id())
}

/// Turns a finished command into its output, or an error carrying its stderr.
fn checked(what: &str, output: Output) -> io::Result<Output> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(io::Error::other(format!(
            "`{what}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Runs a command in the current (root) namespace; error with stderr text on non-zero exit.
fn run_host(args: &[&str]) -> io::Result<Output> {
    let (program, rest) = args
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let what = args.join(" ");
    let output = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("spawn `{what}`: {e}")))?;
    checked(&what, output)
}

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
///
/// Commands run in it through `nsenter --net=...` and in-process sockets are created on a thread
/// that `setns(2)`-ed into it; a socket stays in the namespace it was created in.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates a standalone namespace named `veer-{pid}-{n}-{role}`, with `lo` up.
    ///
    /// Panics if the process is not root.
    pub fn create(role: &str) -> io::Result<Self> {
        crate::require_root();
        validate_role(role)?;
        let ns = Self::add(format!("{}-{role}", unique_prefix()))?;
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip netns add NAME`; the returned guard deletes it on drop.
    fn add(name: String) -> io::Result<Self> {
        run_host(&["ip", "netns", "add", &name])?;
        let path = Path::new(NETNS_DIR).join(&name);
        Ok(Self { name, path })
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's handle, `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `Command` running `program` inside this namespace (through `nsenter --net=...`, which
    /// execs `program`, so the child's pid is the program's). For long-lived processes; never
    /// uses `ip netns exec`, which remounts `/sys`.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `args` (program first) inside this namespace and waits for it. Fails, with the
    /// command's stderr in the message, on a non-zero exit.
    pub fn run(&self, args: &[&str]) -> io::Result<Output> {
        let (program, rest) = args
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let what = format!("{} (in netns {})", args.join(" "), self.name);
        let output = self
            .command(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn `{what}`: {e}")))?;
        checked(&what, output)
    }

    /// Runs several `ip` commands (one per line, without the leading `ip`) in one `ip -batch`
    /// process, stopping at the first failure.
    fn ip_batch(&self, commands: &[String]) -> io::Result<()> {
        let script = commands.join("\n");
        let what = format!("ip -batch (in netns {}):\n{script}\n", self.name);
        let mut child = self
            .command("ip")
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawn `{what}`: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
            stdin.write_all(b"\n")?;
        }
        checked(&what, child.wait_with_output()?).map(drop)
    }

    /// Sets sysctls inside this namespace (`sysctl -q -w key=value ...`, keys in dotted form).
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> io::Result<()> {
        let assignments: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["sysctl", "-q", "-w"];
        args.extend(assignments.iter().map(String::as_str));
        self.run(&args).map(drop)
    }

    /// Runs `f` on a new thread that has entered this namespace with `setns(2)`, waits for it and
    /// returns its result. Sockets `f` creates live in this namespace, as do threads it spawns.
    ///
    /// A panic in `f` is resumed on the caller's thread.
    pub fn enter<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let handle = File::open(&self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", self.path.display())))?;
        let name = self.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || -> io::Result<T> {
                // SAFETY: `handle` is an open namespace file for the duration of the call;
                // CLONE_NEWNET moves only the calling thread, which ends when `f` returns.
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    let e = io::Error::last_os_error();
                    return Err(io::Error::new(e.kind(), format!("setns into {name}: {e}")));
                }
                drop(handle);
                Ok(f())
            })?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Connects to `dst` from a socket created inside this namespace, within `timeout`. The
    /// stream gets `timeout` as read and write timeout too.
    pub fn tcp_connect(&self, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let stream = self.enter(move || TcpStream::connect_timeout(&dst, timeout))??;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(stream)
    }

    /// Like [`Netns::tcp_connect`], from the given source address (port 0 for any), e.g. an
    /// extra client address for source-prefix pin tests.
    pub fn tcp_connect_from(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let stream = self.enter(move || connect_from(src, dst, timeout))??;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(stream)
    }

    /// A UDP socket bound to `bind` inside this namespace.
    pub fn udp_socket(&self, bind: SocketAddr) -> io::Result<UdpSocket> {
        self.enter(move || UdpSocket::bind(bind))?
    }

    /// Turns an offload of interface `ifname` of this namespace on or off, like `ethtool -K`
    /// (through the `SIOCETHTOOL` ioctl, so the `ethtool` binary is not needed). For tests about
    /// offloads only: the bed itself keeps the kernel's defaults.
    pub fn set_offload(&self, ifname: &str, offload: Offload, on: bool) -> io::Result<()> {
        let ifname = ifname.to_owned();
        self.enter(move || set_ethtool_flag(&ifname, offload.set_cmd(), on))?
    }
}

/// The calling thread's stay in a namespace (see [`Netns::enter_current_thread`]); dropping it
/// moves the thread back where it came from.
#[derive(Debug)]
pub struct EnteredNetns {
    original: File,
    // setns moved this thread only: the guard must not move to another thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for EnteredNetns {
    fn drop(&mut self) {
        // SAFETY: `original` is the namespace file this thread came from, open until here.
        if unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            warn(format_args!(
                "veer-tests: cannot return to the original netns: {}",
                io::Error::last_os_error()
            ));
        }
    }
}

impl Netns {
    /// Moves the calling thread into this namespace until the guard drops (aya's `NetNsGuard`
    /// shape). For code that must run in the namespace on this thread: loading and attaching
    /// programs, `BPF_PROG_TEST_RUN` with `bpf_fib_lookup`. Drop the guard before the `Netns`.
    pub fn enter_current_thread(&self) -> io::Result<EnteredNetns> {
        let original = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(&self.path)?;
        // SAFETY: `target` is an open namespace file; CLONE_NEWNET moves only this thread.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("setns into {}: {e}", self.name),
            ));
        }
        Ok(EnteredNetns {
            original,
            _not_send: std::marker::PhantomData,
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_host(&["ip", "netns", "del", &self.name]) {
            warn(format_args!(
                "veer-tests: cannot delete netns {}: {e}",
                self.name
            ));
        }
    }
}

/// A raw socket address for `bind(2)`/`connect(2)`.
fn raw_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid (AF_UNSPEC) value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Returns `Err(last_os_error)` with context when a libc call returned -1.
fn cvt(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc == -1 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(rc)
    }
}

/// A new close-on-exec socket.
fn new_socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
    let fd = cvt(fd, "socket")?;
    // SAFETY: `fd` is a fresh, valid socket owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Connects a TCP socket bound to `src` to `dst` within `timeout`, in the current namespace.
fn connect_from(src: SocketAddr, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let domain = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let socket = new_socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)?;
    let (src_raw, src_len) = raw_sockaddr(src);
    // SAFETY: `src_raw` is a valid sockaddr of length `src_len`, alive for the call.
    let rc = unsafe { libc::bind(socket.as_raw_fd(), (&raw const src_raw).cast(), src_len) };
    cvt(rc, &format!("bind {src}"))?;
    let (dst_raw, dst_len) = raw_sockaddr(dst);
    // SAFETY: as above, for `dst_raw`.
    let rc = unsafe { libc::connect(socket.as_raw_fd(), (&raw const dst_raw).cast(), dst_len) };
    if rc == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(io::Error::new(
                e.kind(),
                format!("connect {src} -> {dst}: {e}"),
            ));
        }
        let mut pollfd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd, alive for the call.
        let ready = unsafe { libc::poll(&raw mut pollfd, 1, millis) };
        let ready = cvt(ready, "poll")?;
        if ready == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect {src} -> {dst}: timed out after {timeout:?}"),
            ));
        }
        let mut error: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `error` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut error).cast(),
                &raw mut len,
            )
        };
        cvt(rc, "getsockopt SO_ERROR")?;
        if error != 0 {
            let e = io::Error::from_raw_os_error(error);
            return Err(io::Error::new(
                e.kind(),
                format!("connect {src} -> {dst}: {e}"),
            ));
        }
    }
    let stream = TcpStream::from(socket);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Sets one boolean ethtool feature (`ETHTOOL_S*` command) of an interface in the current
/// namespace, like `ethtool -K`.
fn set_ethtool_flag(ifname: &str, cmd: u32, on: bool) -> io::Result<()> {
    /// `struct ethtool_value` from `linux/ethtool.h`.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd,
        data: u32::from(on),
    };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    if ifname.len() > MAX_IFNAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname:?} is longer than {MAX_IFNAME_LEN} bytes"),
        ));
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    let socket = new_socket(libc::AF_INET, libc::SOCK_DGRAM)?;
    // SAFETY: `ifr` is a valid ifreq whose data pointer targets `value`, both alive for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &raw mut ifr) };
    cvt(rc, &format!("SIOCETHTOOL {cmd:#x} on {ifname}"))?;
    Ok(())
}

/// Checks a role or backend group name: ASCII letters, digits, `-` and `_`, not reserved.
fn validate_role(name: &str) -> io::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_GROUP_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "role name {name:?} must be 1..={MAX_GROUP_NAME_LEN} ASCII letters, digits, `-` or `_`"
            ),
        ))
    }
}

/// Whether `addr` is a documentation address (RFC 5737, RFC 3849): the only ones tests use.
fn is_documentation(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => matches!(
            v4.octets(),
            [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _]
        ),
        IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0x0db8],
    }
}

/// `ADDR/32` or `ADDR/128`.
fn host_prefix(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// The `ip addr add` line (without `ip`) for a host address on `dev`, `nodad` for IPv6.
fn addr_add(addr: IpAddr, dev: &str) -> String {
    match addr {
        IpAddr::V4(_) => format!("addr add {} dev {dev}", host_prefix(addr)),
        IpAddr::V6(_) => format!("addr add {} dev {dev} nodad", host_prefix(addr)),
    }
}

/// Creates a topology namespace with `lo` up, everything else at the kernel's defaults.
fn topology_ns(name: String) -> io::Result<Netns> {
    let ns = Netns::add(name)?;
    ns.run(&["ip", "link", "set", "lo", "up"])?;
    Ok(ns)
}

/// Creates a veth pair with `a` in `ns_a` and `b` in `ns_b`, never touching the root namespace.
fn add_veth(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) -> io::Result<()> {
    run_host(&[
        "ip",
        "link",
        "add",
        "name",
        a,
        "netns",
        ns_a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        ns_b.name(),
    ])
    .map(drop)
}

/// The client namespace of a topology.
#[derive(Debug)]
struct Client {
    ns: Netns,
    extra: Vec<IpAddr>,
}

/// One backend group's namespace.
#[derive(Debug)]
struct Backend {
    name: String,
    node_ifname: String,
    addrs: Vec<IpAddr>,
    ns: Netns,
}

/// Namespaces wired for one test: node, optional client, one namespace per backend group.
///
/// Dropping it deletes every namespace (and so every veth); see the module docs for the
/// addressing plan.
#[derive(Debug)]
pub struct Topology {
    // Dropped in declaration order: backends, client, then the node.
    backends: Vec<Backend>,
    client: Option<Client>,
    bridged: bool,
    node: Netns,
}

/// Describes a [`Topology`]; [`TopologyBuilder::build`] creates it.
#[derive(Debug, Default)]
#[must_use]
pub struct TopologyBuilder {
    client: bool,
    client_extra: Vec<IpAddr>,
    backends: Vec<(String, Vec<IpAddr>)>,
    bridged: bool,
}

impl Topology {
    /// Starts describing a topology; the node namespace always exists.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// The node namespace, where veer's programs run.
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// The client namespace.
    ///
    /// # Panics
    /// If the topology was built without [`TopologyBuilder::client`].
    pub fn client(&self) -> &Netns {
        &self.client_part().ns
    }

    /// The namespace of backend group `name`.
    ///
    /// # Panics
    /// If the topology has no backend group `name`.
    pub fn backend(&self, name: &str) -> &Netns {
        &self.backend_part(name).ns
    }

    /// The addresses of backend group `name`, as given to [`TopologyBuilder::backend`].
    ///
    /// # Panics
    /// If the topology has no backend group `name`.
    pub fn backend_addrs(&self, name: &str) -> &[IpAddr] {
        &self.backend_part(name).addrs
    }

    /// The node's interface facing the client (its name inside the node namespace).
    ///
    /// # Panics
    /// If the topology was built without [`TopologyBuilder::client`].
    pub fn node_client_ifname(&self) -> &str {
        self.client_part();
        NODE_CLIENT_IFNAME
    }

    /// The node's interface facing backend group `name` (its name inside the node namespace).
    ///
    /// # Panics
    /// If the topology has no backend group `name`.
    pub fn node_backend_ifname(&self, name: &str) -> &str {
        &self.backend_part(name).node_ifname
    }

    /// The interfaces of the node that carry IP (veer attaches there): the client-facing one
    /// first, then one per backend group in the order they were added, or the bridge when the
    /// backends sit behind one (its ports carry no address).
    pub fn node_ifnames(&self) -> Vec<String> {
        let backends: Vec<String> = if self.bridged {
            vec![NODE_BRIDGE_IFNAME.to_owned()]
        } else {
            self.backends
                .iter()
                .map(|b| b.node_ifname.clone())
                .collect()
        };
        self.client
            .as_ref()
            .map(|_| NODE_CLIENT_IFNAME.to_owned())
            .into_iter()
            .chain(backends)
            .collect()
    }

    /// The client's primary IPv4 address, [`CLIENT_ADDR`].
    pub fn client_addr(&self) -> IpAddr {
        IpAddr::V4(CLIENT_ADDR)
    }

    /// The client's primary IPv6 address, [`CLIENT_ADDR_V6`].
    pub fn client_addr_v6(&self) -> IpAddr {
        IpAddr::V6(CLIENT_ADDR_V6)
    }

    /// The client's extra addresses, as given to [`TopologyBuilder::client_addrs`].
    pub fn client_extra_addrs(&self) -> &[IpAddr] {
        self.client.as_ref().map_or(&[], |c| &c.extra)
    }

    /// The node's IPv4 address on the client side, [`NODE_CLIENT_ADDR`].
    pub fn node_addr(&self) -> IpAddr {
        IpAddr::V4(NODE_CLIENT_ADDR)
    }

    /// The node's IPv6 address on the client side, [`NODE_CLIENT_ADDR_V6`].
    pub fn node_addr_v6(&self) -> IpAddr {
        IpAddr::V6(NODE_CLIENT_ADDR_V6)
    }

    /// Turns IPv4 and IPv6 forwarding on in the node, for tests of plain kernel routing without
    /// veer (which sets what it needs itself).
    pub fn enable_forwarding(&self) -> io::Result<()> {
        self.node.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ])
    }

    /// The names of every namespace of this topology, node first.
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(&self.node)
            .chain(self.client.as_ref().map(|c| &c.ns))
            .chain(self.backends.iter().map(|b| &b.ns))
            .map(|ns| ns.name().to_owned())
            .collect()
    }

    fn client_part(&self) -> &Client {
        match &self.client {
            Some(client) => client,
            None => panic!("this topology has no client: call TopologyBuilder::client()"),
        }
    }

    fn backend_part(&self, name: &str) -> &Backend {
        match self.backends.iter().find(|b| b.name == name) {
            Some(backend) => backend,
            None => panic!("this topology has no backend group {name:?}"),
        }
    }
}

impl TopologyBuilder {
    /// Adds the client namespace.
    pub fn client(mut self) -> Self {
        self.client = true;
        self
    }

    /// Adds extra addresses to the client's `eth0` (as /32 or /128, routed back by the node),
    /// e.g. `203.0.113.50` for source-prefix pin tests. Implies [`TopologyBuilder::client`].
    pub fn client_addrs(mut self, extra: &[IpAddr]) -> Self {
        self.client = true;
        self.client_extra.extend_from_slice(extra);
        self
    }

    /// Adds a namespace for backend group `name` holding `addrs` (IPv4 and/or IPv6), e.g.
    /// `("v1", [198.51.100.11, 198.51.100.12])`.
    pub fn backend(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        self.backends.push((name.to_owned(), addrs.to_vec()));
        self
    }

    /// Puts the backends behind a bridge, docker0-style: the node gets bridge
    /// [`NODE_BRIDGE_IFNAME`] holding [`NODE_BACKEND_ADDR`]/24 and [`NODE_BACKEND_ADDR_V6`]/64,
    /// each backend's veth peer in the node is a port of it (no address), and the backends hold
    /// their addresses in those prefixes, routed through the bridge's addresses.
    pub fn backends_behind_bridge(mut self) -> Self {
        self.bridged = true;
        self
    }

    /// Creates the namespaces, veth pairs, addresses and routes. On error, whatever was
    /// created is removed again.
    ///
    /// Panics if the process is not root.
    pub fn build(self) -> io::Result<Topology> {
        crate::require_root();
        let ifnames = self.validate()?;
        let prefix = unique_prefix();

        let node = topology_ns(format!("{prefix}-node"))?;
        if self.bridged {
            node.ip_batch(&[
                format!("link add {NODE_BRIDGE_IFNAME} type bridge"),
                format!("addr add {NODE_BACKEND_ADDR}/24 dev {NODE_BRIDGE_IFNAME}"),
                format!("addr add {NODE_BACKEND_ADDR_V6}/64 dev {NODE_BRIDGE_IFNAME} nodad"),
                format!("link set {NODE_BRIDGE_IFNAME} up"),
            ])?;
        }
        let client = if self.client {
            let ns = topology_ns(format!("{prefix}-client"))?;
            wire_client(&node, &ns, &self.client_extra)?;
            Some(Client {
                ns,
                extra: self.client_extra,
            })
        } else {
            None
        };
        let mut backends = Vec::with_capacity(self.backends.len());
        for ((name, addrs), node_ifname) in self.backends.into_iter().zip(ifnames) {
            let ns = topology_ns(format!("{prefix}-{name}"))?;
            if self.bridged {
                wire_bridged_backend(&node, &node_ifname, &ns, &addrs)?;
            } else {
                wire_backend(&node, &node_ifname, &ns, &addrs)?;
            }
            backends.push(Backend {
                name,
                node_ifname,
                addrs,
                ns,
            });
        }
        Ok(Topology {
            backends,
            client,
            bridged: self.bridged,
            node,
        })
    }

    /// Checks names and addresses; returns the node's interface name for each backend group.
    fn validate(&self) -> io::Result<Vec<String>> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        let reserved: Vec<IpAddr> = vec![
            CLIENT_ADDR.into(),
            CLIENT_ADDR_V6.into(),
            NODE_CLIENT_ADDR.into(),
            NODE_CLIENT_ADDR_V6.into(),
            NODE_BACKEND_ADDR.into(),
            NODE_BACKEND_ADDR_V6.into(),
        ];
        let mut seen: HashSet<IpAddr> = reserved.iter().copied().collect();
        let all_addrs = self
            .client_extra
            .iter()
            .chain(self.backends.iter().flat_map(|(_, addrs)| addrs));
        for &addr in all_addrs {
            if !is_documentation(addr) {
                return Err(invalid(format!(
                    "{addr} is not a documentation address (192.0.2.0/24, 198.51.100.0/24, \
                     203.0.113.0/24, 2001:db8::/32)"
                )));
            }
            if !seen.insert(addr) {
                return Err(invalid(format!(
                    "{addr} is used twice or is one of the topology's own addresses"
                )));
            }
        }

        let mut ifnames = Vec::with_capacity(self.backends.len());
        let mut taken: HashSet<String> =
            HashSet::from([NODE_CLIENT_IFNAME.to_owned(), NODE_BRIDGE_IFNAME.to_owned()]);
        for (name, addrs) in &self.backends {
            validate_role(name)?;
            if RESERVED_ROLES.contains(&name.as_str()) {
                return Err(invalid(format!("backend group name {name:?} is reserved")));
            }
            if addrs.is_empty() {
                return Err(invalid(format!("backend group {name:?} has no address")));
            }
            // Names are ASCII (validated above), so cutting at a byte index is safe.
            let ifname = format!("n-{}", &name[..name.len().min(MAX_IFNAME_LEN - 2)]);
            if !taken.insert(ifname.clone()) {
                return Err(invalid(format!(
                    "backend group {name:?}: node interface name {ifname:?} is taken \
                     (group names are cut to {} bytes)",
                    MAX_IFNAME_LEN - 2
                )));
            }
            ifnames.push(ifname);
        }
        Ok(ifnames)
    }
}

/// Wires the client namespace to the node (see the module docs).
fn wire_client(node: &Netns, client: &Netns, extra: &[IpAddr]) -> io::Result<()> {
    add_veth(node, NODE_CLIENT_IFNAME, client, PEER_IFNAME)?;

    let dev = NODE_CLIENT_IFNAME;
    let mut node_cmds = vec![
        format!("addr add {NODE_CLIENT_ADDR}/24 dev {dev}"),
        format!("addr add {NODE_CLIENT_ADDR_V6}/64 dev {dev} nodad"),
        format!("link set {dev} up"),
    ];
    node_cmds.extend(
        extra
            .iter()
            .map(|&addr| format!("route add {} dev {dev}", host_prefix(addr))),
    );
    node.ip_batch(&node_cmds)?;

    let dev = PEER_IFNAME;
    let mut client_cmds = vec![
        format!("addr add {CLIENT_ADDR}/24 dev {dev}"),
        format!("addr add {CLIENT_ADDR_V6}/64 dev {dev} nodad"),
    ];
    client_cmds.extend(extra.iter().map(|&addr| addr_add(addr, dev)));
    client_cmds.extend([
        format!("link set {dev} up"),
        format!("route add 0.0.0.0/0 via {NODE_CLIENT_ADDR} dev {dev}"),
        format!("route add ::/0 via {NODE_CLIENT_ADDR_V6} dev {dev}"),
    ]);
    client.ip_batch(&client_cmds)
}

/// Wires one backend group's namespace to the node (see the module docs).
fn wire_backend(
    node: &Netns,
    node_ifname: &str,
    backend: &Netns,
    addrs: &[IpAddr],
) -> io::Result<()> {
    add_veth(node, node_ifname, backend, PEER_IFNAME)?;
    let has_v4 = addrs.iter().any(IpAddr::is_ipv4);
    let has_v6 = addrs.iter().any(IpAddr::is_ipv6);

    let dev = node_ifname;
    let mut node_cmds = vec![format!("link set {dev} up")];
    if has_v4 {
        node_cmds.push(addr_add(NODE_BACKEND_ADDR.into(), dev));
    }
    if has_v6 {
        node_cmds.push(addr_add(NODE_BACKEND_ADDR_V6.into(), dev));
    }
    node_cmds.extend(
        addrs
            .iter()
            .map(|&addr| format!("route add {} dev {dev}", host_prefix(addr))),
    );
    node.ip_batch(&node_cmds)?;

    let dev = PEER_IFNAME;
    let mut backend_cmds: Vec<String> = addrs.iter().map(|&addr| addr_add(addr, dev)).collect();
    backend_cmds.push(format!("link set {dev} up"));
    if has_v4 {
        backend_cmds.extend([
            format!("route add {NODE_BACKEND_ADDR}/32 dev {dev}"),
            format!("route add 0.0.0.0/0 via {NODE_BACKEND_ADDR} dev {dev}"),
        ]);
    }
    if has_v6 {
        backend_cmds.extend([
            format!("route add {NODE_BACKEND_ADDR_V6}/128 dev {dev}"),
            format!("route add ::/0 via {NODE_BACKEND_ADDR_V6} dev {dev}"),
        ]);
    }
    backend.ip_batch(&backend_cmds)
}

/// Wires one backend group's namespace to the node's bridge (see
/// [`TopologyBuilder::backends_behind_bridge`]).
fn wire_bridged_backend(
    node: &Netns,
    port: &str,
    backend: &Netns,
    addrs: &[IpAddr],
) -> io::Result<()> {
    add_veth(node, port, backend, PEER_IFNAME)?;
    node.ip_batch(&[
        format!("link set {port} master {NODE_BRIDGE_IFNAME}"),
        format!("link set {port} up"),
    ])?;
    let dev = PEER_IFNAME;
    let mut cmds: Vec<String> = addrs
        .iter()
        .map(|addr| match addr {
            IpAddr::V4(_) => format!("addr add {addr}/24 dev {dev}"),
            IpAddr::V6(_) => format!("addr add {addr}/64 dev {dev} nodad"),
        })
        .collect();
    cmds.push(format!("link set {dev} up"));
    if addrs.iter().any(IpAddr::is_ipv4) {
        cmds.push(format!(
            "route add 0.0.0.0/0 via {NODE_BACKEND_ADDR} dev {dev}"
        ));
    }
    if addrs.iter().any(IpAddr::is_ipv6) {
        cmds.push(format!(
            "route add ::/0 via {NODE_BACKEND_ADDR_V6} dev {dev}"
        ));
    }
    backend.ip_batch(&cmds)
}

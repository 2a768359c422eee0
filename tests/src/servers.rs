//! Backends for namespace tests: TCP and UDP servers that answer with their own name, so a test
//! sees which backend a connection landed on, plus the client helpers that ask them.
//!
//! Each server's socket is bound inside a [`Netns`] (on a `setns(2)` thread) and then served from
//! ordinary threads: a socket keeps the namespace it was created in. Dropping a server stops it
//! within a bounded time and never panics.
//!
//! Protocols:
//! - TCP, line mode: every line received (`ping\n`) is answered with `<name>\n`.
//! - TCP, HTTP mode, chosen when the first line starts with `GET `: minimal HTTP/1.1 with
//!   keep-alive. Each request's headers are read up to the blank line (a `Content-Length` body is
//!   discarded) and answered with `HTTP/1.1 200 OK`, `Content-Length`, `Content-Type:
//!   text/plain` and the body `<name>\n`; `Connection: close` (or HTTP/1.0 without keep-alive)
//!   ends the connection after the answer.
//! - UDP: every datagram is answered with `<name>\n` to its sender.
//!
//! Every socket has read and write timeouts; every loop ends on EOF, error, or the stop flag.

use std::collections::HashMap;
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::netns::{Netns, warn};

/// Live TCP connections a server serves at once; further ones are closed on accept.
pub const MAX_LIVE_CONNECTIONS: usize = 4096;
/// How often blocked server threads look at their stop flag.
const TICK: Duration = Duration::from_millis(50);
/// Write timeout of server sockets.
const SERVER_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a server waits for its threads before leaving them behind (logged).
const STOP_DEADLINE: Duration = Duration::from_secs(5);
/// Read/write timeout [`ask_tcp`] sets on a stream that has none.
const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line or header line accepted.
const MAX_LINE: usize = 8192;
/// Most header lines accepted in one HTTP request.
const MAX_HEADERS: usize = 100;
/// Largest HTTP request body accepted (and discarded).
const MAX_BODY: usize = 1 << 20;
/// Longest answer line [`ask_tcp`] and [`ask_udp`] accept.
const MAX_ANSWER: usize = 512;

/// How a [`TcpServer`] misbehaves, for the canary judge's tests: slow application code and
/// connections it resets. The default behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// Waited before each answer (the kernel answers the handshake at once: this is a slow
    /// application, which only time to first byte sees).
    pub delay: Duration,
    /// Every `n`-th connection accepted (the n-th, 2n-th ...) is reset (`SO_LINGER` 0, close)
    /// when its first request arrives, instead of answered; 0: none.
    pub reset_every: u64,
    /// The connections accepted first, up to this many, are reset the same way.
    pub reset_first: u64,
}

impl Behaviour {
    /// Whether connection `id` (1-based, in accept order) is reset.
    fn resets(&self, id: u64) -> bool {
        id <= self.reset_first || (self.reset_every > 0 && id.is_multiple_of(self.reset_every))
    }
}

/// State shared by a TCP server's threads.
#[derive(Debug)]
struct Shared {
    name: String,
    behaviour: Behaviour,
    stop: AtomicBool,
    accepted: AtomicU64,
    live: AtomicUsize,
    /// Clones of the live connections, so that dropping the server can shut them down.
    streams: Mutex<HashMap<u64, TcpStream>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// A TCP server inside a namespace answering with its name (line mode or HTTP, see the module
/// docs). One thread per connection, at most [`MAX_LIVE_CONNECTIONS`] live.
///
/// Dropping it stops accepting, shuts down live connections and joins its threads (bounded).
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `bind` inside `ns` (with `SO_REUSEADDR`) and starts serving as `name`.
    pub fn start(ns: &Netns, bind: SocketAddr, name: &str) -> io::Result<Self> {
        Self::start_with(ns, bind, name, Behaviour::default())
    }

    /// [`TcpServer::start`], misbehaving as `behaviour` says.
    pub fn start_with(
        ns: &Netns,
        bind: SocketAddr,
        name: &str,
        behaviour: Behaviour,
    ) -> io::Result<Self> {
        // std sets SO_REUSEADDR on listening sockets on Unix.
        let listener = ns.enter(move || TcpListener::bind(bind))?.map_err(|e| {
            io::Error::new(e.kind(), format!("bind tcp {bind} in {}: {e}", ns.name()))
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            behaviour,
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            streams: Mutex::new(HashMap::new()),
            workers: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("tcp {name} {addr}"))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (including those closed at once for exceeding the cap).
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections being served right now.
    pub fn live_connections(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(acceptor) = self.acceptor.take()
            && acceptor.join().is_err()
        {
            warn(format_args!(
                "veer-tests: tcp server {} acceptor panicked",
                self.addr
            ));
        }
        // Wake readers blocked on their sockets; the stop flag ends their loops anyway.
        for stream in lock(&self.shared.streams).values() {
            drop(stream.shutdown(Shutdown::Both));
        }
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        join_bounded(workers, &format!("tcp server {}", self.addr));
    }
}

/// Locks a mutex, ignoring poisoning (the data is still consistent for our uses).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Joins `handles` within [`STOP_DEADLINE`]; threads still running after it are left behind and
/// logged. Never panics.
fn join_bounded(mut handles: Vec<JoinHandle<()>>, what: &str) {
    let deadline = Instant::now() + STOP_DEADLINE;
    loop {
        let (finished, running): (Vec<_>, Vec<_>) =
            handles.into_iter().partition(JoinHandle::is_finished);
        for handle in finished {
            if handle.join().is_err() {
                warn(format_args!("veer-tests: a thread of {what} panicked"));
            }
        }
        handles = running;
        if handles.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            warn(format_args!(
                "veer-tests: {} thread(s) of {what} still running after {STOP_DEADLINE:?}; \
                 leaving them behind",
                handles.len()
            ));
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Waits up to `timeout` for `fd` to be readable; `Ok(false)` on timeout.
fn wait_readable(fd: &impl AsRawFd, timeout: Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, alive for the call.
    let rc = unsafe { libc::poll(&raw mut pollfd, 1, millis) };
    match rc {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// Accepts connections until the stop flag is set, one thread per connection.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut next_id: u64 = 0;
    while !shared.stopping() {
        match wait_readable(listener, TICK) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn(format_args!(
                    "veer-tests: tcp server {}: poll: {e}",
                    shared.name
                ));
                thread::sleep(TICK);
                continue;
            }
        }
        // Drain the backlog (bounded by the cap on live connections and the stop flag).
        while !shared.stopping() {
            let stream = match listener.accept() {
                Ok((stream, _peer)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. EMFILE: back off, the stop flag still ends the loop.
                    warn(format_args!(
                        "veer-tests: tcp server {}: accept: {e}",
                        shared.name
                    ));
                    thread::sleep(TICK);
                    break;
                }
            };
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            if shared.live.load(Ordering::Relaxed) >= MAX_LIVE_CONNECTIONS {
                // Over the cap: close at once (the client sees EOF or a reset).
                continue;
            }
            next_id += 1;
            if let Err(e) = spawn_connection(stream, next_id, shared) {
                warn(format_args!("veer-tests: tcp server {}: {e}", shared.name));
            }
        }
    }
}

/// Registers a connection and starts its thread.
fn spawn_connection(stream: TcpStream, id: u64, shared: &Arc<Shared>) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TICK))?;
    stream.set_write_timeout(Some(SERVER_WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    lock(&shared.streams).insert(id, stream.try_clone()?);
    shared.live.fetch_add(1, Ordering::Relaxed);
    let guard = ConnectionGuard {
        id,
        shared: Arc::clone(shared),
    };
    let spawned = thread::Builder::new()
        .name(format!("tcp {} conn {id}", shared.name))
        .spawn(move || {
            let guard = guard;
            // Errors (peer reset, timeouts on write) just end the connection.
            drop(serve_connection(stream, id, &guard.shared));
        });
    let handle = spawned?;
    let mut workers = lock(&shared.workers);
    workers.retain(|w| !w.is_finished());
    workers.push(handle);
    Ok(())
}

/// Unregisters a connection when its thread ends, even by panic.
struct ConnectionGuard {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        lock(&self.shared.streams).remove(&self.id);
        self.shared.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads lines and bodies from a stream whose read timeout is [`TICK`], looking at the stop
/// flag between ticks.
struct Reader<'a> {
    inner: BufReader<TcpStream>,
    shared: &'a Shared,
    buf: Vec<u8>,
}

impl Reader<'_> {
    /// The next line, newline included (a last line may lack it); `None` on EOF or stop.
    fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.shared.stopping() {
                return Ok(None);
            }
            let limit = (MAX_LINE + 1).saturating_sub(self.buf.len()) as u64;
            match (&mut self.inner)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
            {
                Ok(_) if self.buf.ends_with(b"\n") => {
                    return Ok(Some(std::mem::take(&mut self.buf)));
                }
                Ok(_) if self.buf.len() > MAX_LINE => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
                }
                // EOF: a last line without newline still counts.
                Ok(_) if self.buf.is_empty() => return Ok(None),
                Ok(_) => return Ok(Some(std::mem::take(&mut self.buf))),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and discards `len` bytes; `false` on EOF or stop before that.
    fn discard(&mut self, mut len: usize) -> io::Result<bool> {
        let mut chunk = [0_u8; 4096];
        while len > 0 {
            if self.shared.stopping() {
                return Ok(false);
            }
            let want = len.min(chunk.len());
            match self.inner.read(&mut chunk[..want]) {
                Ok(0) => return Ok(false),
                Ok(n) => len -= n,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Whether an I/O error is a socket timeout (`EAGAIN` shows up as either kind).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Serves one connection in line mode or HTTP mode, until EOF, error or stop.
fn serve_connection(stream: TcpStream, id: u64, shared: &Shared) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = Reader {
        inner: BufReader::new(stream),
        shared,
        buf: Vec::new(),
    };
    let Some(first) = reader.next_line()? else {
        return Ok(());
    };
    if shared.behaviour.resets(id) {
        // Closing with a zero linger sends an RST instead of a FIN (the last clone of the
        // socket closes when the connection's guard drops).
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a `linger` alive for the call.
        let rc = unsafe {
            libc::setsockopt(
                writer.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        return if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
    }
    let delay = shared.behaviour.delay;
    if first.starts_with(b"GET ") {
        return serve_http(first, &mut reader, &mut writer, &shared.name);
    }
    let answer = format!("{}\n", shared.name);
    let mut line = Some(first);
    while line.is_some() {
        thread::sleep(delay);
        writer.write_all(answer.as_bytes())?;
        line = reader.next_line()?;
    }
    Ok(())
}

/// Serves HTTP/1.1 requests (keep-alive) starting with `request_line`.
fn serve_http(
    request_line: Vec<u8>,
    reader: &mut Reader<'_>,
    writer: &mut TcpStream,
    name: &str,
) -> io::Result<()> {
    let mut pending = Some(request_line);
    loop {
        let line = match pending.take() {
            Some(line) => line,
            None => match reader.next_line()? {
                Some(line) => line,
                None => return Ok(()),
            },
        };
        let line = String::from_utf8_lossy(&line);
        let line = line.trim();
        if line.is_empty() {
            // Blank lines before a request line are allowed (RFC 9112 section 2.2).
            continue;
        }
        let http10 = line.ends_with("HTTP/1.0");
        let mut close = http10;
        let mut content_length = 0_usize;
        let mut headers = 0;
        loop {
            let Some(header) = reader.next_line()? else {
                return Ok(());
            };
            let header = String::from_utf8_lossy(&header);
            let header = header.trim();
            if header.is_empty() {
                break;
            }
            headers += 1;
            if headers > MAX_HEADERS {
                writer.write_all(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\
                      Connection: close\r\n\r\n",
                )?;
                return Ok(());
            }
            let Some((key, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if key.trim().eq_ignore_ascii_case("connection") {
                if value.eq_ignore_ascii_case("close") {
                    close = true;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            } else if key.trim().eq_ignore_ascii_case("content-length") {
                content_length = match value.parse::<usize>() {
                    Ok(len) if len <= MAX_BODY => len,
                    _ => {
                        writer.write_all(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\
                              Connection: close\r\n\r\n",
                        )?;
                        return Ok(());
                    }
                };
            }
        }
        if !reader.discard(content_length)? {
            return Ok(());
        }
        let connection = if close { "Connection: close\r\n" } else { "" };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{connection}\r\n{name}\n",
            name.len() + 1
        );
        writer.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

/// A UDP server inside a namespace answering every datagram with `<name>\n`.
///
/// Dropping it stops and joins its thread (bounded).
#[derive(Debug)]
pub struct UdpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    datagrams: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    /// Binds `bind` inside `ns` and starts serving as `name`.
    pub fn start(ns: &Netns, bind: SocketAddr, name: &str) -> io::Result<Self> {
        let socket = ns.udp_socket(bind).map_err(|e| {
            io::Error::new(e.kind(), format!("bind udp {bind} in {}: {e}", ns.name()))
        })?;
        socket.set_read_timeout(Some(TICK))?;
        socket.set_write_timeout(Some(SERVER_WRITE_TIMEOUT))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let datagrams = Arc::new(AtomicU64::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let datagrams = Arc::clone(&datagrams);
            let answer = format!("{name}\n");
            thread::Builder::new()
                .name(format!("udp {name} {addr}"))
                .spawn(move || serve_udp(&socket, answer.as_bytes(), &stop, &datagrams))?
        };
        Ok(Self {
            addr,
            stop,
            datagrams,
            thread: Some(thread),
        })
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn datagrams(&self) -> u64 {
        self.datagrams.load(Ordering::Relaxed)
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            join_bounded(vec![thread], &format!("udp server {}", self.addr));
        }
    }
}

/// Answers datagrams until `stop` is set.
fn serve_udp(socket: &UdpSocket, answer: &[u8], stop: &AtomicBool, datagrams: &AtomicU64) {
    let mut buf = [0_u8; 2048];
    while !stop.load(Ordering::Acquire) {
        match socket.recv_from(&mut buf) {
            Ok((_, from)) => {
                datagrams.fetch_add(1, Ordering::Relaxed);
                // A lost answer is the client's timeout to report.
                drop(socket.send_to(answer, from));
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. ICMP errors reported on the socket: keep serving, bounded by `stop`.
                warn(format_args!("veer-tests: udp server {answer:?}: recv: {e}"));
                thread::sleep(TICK);
            }
        }
    }
}

/// Sends `ping\n` on `stream` and returns the answering server's name (the line read back,
/// trimmed). Streams without read or write timeout get a 5 s one.
pub fn ask_tcp(stream: &mut TcpStream) -> io::Result<String> {
    if stream.read_timeout()?.is_none() {
        stream.set_read_timeout(Some(DEFAULT_ASK_TIMEOUT))?;
    }
    if stream.write_timeout()?.is_none() {
        stream.set_write_timeout(Some(DEFAULT_ASK_TIMEOUT))?;
    }
    stream.write_all(b"ping\n")?;
    // Byte by byte, so no byte of a later answer is consumed and lost.
    let mut line = Vec::new();
    let mut byte = [0_u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a full answer ({:?} so far)",
                        String::from_utf8_lossy(&line)
                    ),
                ));
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                line.push(byte[0]);
                if line.len() > MAX_ANSWER {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "answer too long",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    answer_text(&line)
}

/// `GET path` on `addr` (`"127.0.0.1:9464"`) from inside `ns`, where metrics and Prometheus
/// listen: the answer's body, `None` when nothing answers within `timeout`.
pub fn http_get(ns: &Netns, addr: &str, path: &str, timeout: Duration) -> Option<String> {
    let addr = addr.to_owned();
    let path = path.to_owned();
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out.split_once("\r\n\r\n")?.1.to_owned())
    })
    .ok()
    .flatten()
}

/// Connects to `dst` from inside `ns`, asks once with [`ask_tcp`] and closes.
pub fn ask_once(ns: &Netns, dst: SocketAddr, timeout: Duration) -> io::Result<String> {
    let mut stream = ns.tcp_connect(dst, timeout)?;
    ask_tcp(&mut stream)
}

/// Like [`ask_once`], from source address `src` (port 0 for any).
pub fn ask_once_from(
    ns: &Netns,
    src: SocketAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<String> {
    let mut stream = ns.tcp_connect_from(src, dst, timeout)?;
    ask_tcp(&mut stream)
}

/// Sends `ping\n` to `dst` from a fresh UDP socket inside `ns` and returns the answering
/// server's name. Fails if no answer comes within `timeout` or the answer's source is not `dst`
/// (e.g. a reply whose source was not translated back to the VIP).
pub fn ask_udp(ns: &Netns, dst: SocketAddr, timeout: Duration) -> io::Result<String> {
    let bind: SocketAddr = if dst.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = ns.udp_socket(bind)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    socket.send_to(b"ping\n", dst)?;
    let mut buf = [0_u8; MAX_ANSWER];
    let (len, from) = socket.recv_from(&mut buf)?;
    if from != dst {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("udp answer came from {from}, not from {dst}"),
        ));
    }
    answer_text(&buf[..len])
}

/// A server's answer as its trimmed name.
fn answer_text(bytes: &[u8]) -> io::Result<String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("answer is not UTF-8: {e}"),
        )
    })?;
    Ok(text.trim().to_owned())
}

/// Sends one HTTP/1.1 `GET /` on `stream` (keep-alive) and returns the response body, trimmed:
/// the answering server's name. Streams without timeouts get a 5 s one.
pub fn ask_http(stream: &mut TcpStream) -> io::Result<String> {
    if stream.read_timeout()?.is_none() {
        stream.set_read_timeout(Some(DEFAULT_ASK_TIMEOUT))?;
    }
    if stream.write_timeout()?.is_none() {
        stream.set_write_timeout(Some(DEFAULT_ASK_TIMEOUT))?;
    }
    stream.write_all(b"GET / HTTP/1.1\r\nHost: veer-test\r\n\r\n")?;
    // Read the head byte by byte up to the blank line, then exactly Content-Length bytes.
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too long",
            ));
        }
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside the response head",
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected response head: {head:?}"),
        ));
    }
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .filter(|&len| len <= MAX_ANSWER)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no usable Content-Length in {head:?}"),
            )
        })?;
    let mut body = vec![0_u8; len];
    stream.read_exact(&mut body)?;
    answer_text(&body)
}

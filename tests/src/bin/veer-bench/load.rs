//! Client load from inside a namespace that counts every failure by kind (included by
//! `veer-demo` and `veer-bench` with `#[path]`).
//!
//! - Workers open new connections back to back: connect, one `GET /` with `Connection: close`,
//!   read the answer up to the server's close, so the server always closes first and the client
//!   keeps no `TIME_WAIT` (ports are not held back; see BENCHMARKS.md).
//! - Held connections: opened once (HTTP keep-alive) and asked again and again; one that fails
//!   is counted as broken and not reopened, one that answers from another backend as moved.
//!
//! Every loop is bounded by a request count, a deadline and the stop flag (also set by Ctrl-C).

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use veer_tests::{netns::Netns, servers::ask_http};

use crate::bed::{self, Context as _, Result};

/// How long a connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer may take before it counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer read.
const MAX_ANSWER: usize = 4096;
/// First failure messages kept.
const KEEP_ERRORS: usize = 10;

/// What a load does.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Threads opening new connections.
    pub(crate) workers: usize,
    /// Pause between two connections of one worker.
    pub(crate) pause: Duration,
    /// Stop after this many new-connection requests (all workers together).
    pub(crate) max_requests: u64,
    /// Stop after this long.
    pub(crate) max_time: Duration,
    /// Long-lived keep-alive connections.
    pub(crate) held: usize,
    /// How often each held connection is asked.
    pub(crate) held_every: Duration,
}

/// Ways a request fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Connection refused or unreachable.
    Refused,
    /// Connect or answer took too long.
    Timeout,
    /// Reset by the peer, or closed before a whole answer.
    Reset,
    /// An answer that is not `200` with a body.
    Bad,
}

/// Counters a load updates while it runs.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    ok: AtomicU64,
    refused: AtomicU64,
    timeout: AtomicU64,
    reset: AtomicU64,
    bad: AtomicU64,
    held_open: AtomicU64,
    held_asked: AtomicU64,
    held_broken: AtomicU64,
    held_moved: AtomicU64,
    answers: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<Vec<String>>,
}

/// What a load saw, at one moment.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// Requests answered (new connections).
    pub(crate) ok: u64,
    /// Refused or unreachable.
    pub(crate) refused: u64,
    /// Timed out.
    pub(crate) timeout: u64,
    /// Reset or closed early.
    pub(crate) reset: u64,
    /// Bad answers.
    pub(crate) bad: u64,
    /// Held connections opened.
    pub(crate) held_open: u64,
    /// Requests on held connections answered.
    pub(crate) held_asked: u64,
    /// Held connections that failed (reset, closed, timed out).
    pub(crate) held_broken: u64,
    /// Held connections answered by another backend than at first.
    pub(crate) held_moved: u64,
    /// Answers of new connections by backend name.
    pub(crate) answers: BTreeMap<String, u64>,
    /// First failure messages.
    pub(crate) errors: Vec<String>,
}

impl Snapshot {
    /// Failed new-connection requests.
    pub(crate) fn failed(&self) -> u64 {
        self.refused + self.timeout + self.reset + self.bad
    }

    /// Requests sent (new connections).
    pub(crate) fn sent(&self) -> u64 {
        self.ok + self.failed()
    }

    /// Answers from backend `name`.
    pub(crate) fn answered_by(&self, name: &str) -> u64 {
        self.answers.get(name).copied().unwrap_or(0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    fn note_error(&self, what: String) {
        let mut errors = lock(&self.errors);
        if errors.len() < KEEP_ERRORS {
            errors.push(what);
        }
    }

    fn fail(&self, kind: Failure, what: String) {
        let counter = match kind {
            Failure::Refused => &self.refused,
            Failure::Timeout => &self.timeout,
            Failure::Reset => &self.reset,
            Failure::Bad => &self.bad,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.note_error(what);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            ok: get(&self.ok),
            refused: get(&self.refused),
            timeout: get(&self.timeout),
            reset: get(&self.reset),
            bad: get(&self.bad),
            held_open: get(&self.held_open),
            held_asked: get(&self.held_asked),
            held_broken: get(&self.held_broken),
            held_moved: get(&self.held_moved),
            answers: lock(&self.answers).clone(),
            errors: lock(&self.errors).clone(),
        }
    }
}

/// A running load; dropping it stops it.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Opens the held connections (all must succeed), then starts the workers.
    pub(crate) fn start(client: &Netns, dst: SocketAddr, plan: &Plan) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut load = Self {
            stop: Arc::clone(&stop),
            stats: Arc::clone(&stats),
            threads: Vec::new(),
        };
        let deadline = Instant::now() + plan.max_time;
        if plan.held > 0 {
            let (n, every) = (plan.held, plan.held_every);
            let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
            let held = client
                .enter(move || open_held(dst, n))
                .context("entering the client namespace")??;
            stats.held_open.store(n as u64, Ordering::Relaxed);
            load.threads.push(
                std::thread::Builder::new()
                    .name("held".into())
                    .spawn(move || ask_held(held, every, deadline, &stop, &stats))
                    .context("starting the held-connections thread")?,
            );
        }
        let issued = Arc::new(AtomicU64::new(0));
        for i in 0..plan.workers {
            let (stop, stats, issued) =
                (Arc::clone(&stop), Arc::clone(&stats), Arc::clone(&issued));
            let (ns, pause, max) = (client.path().to_owned(), plan.pause, plan.max_requests);
            load.threads.push(
                std::thread::Builder::new()
                    .name(format!("load {i}"))
                    .spawn(move || {
                        if let Err(e) = enter(&ns) {
                            stats.note_error(format!("worker {i}: {e}"));
                            return;
                        }
                        while !stop.load(Ordering::Relaxed)
                            && !bed::interrupted()
                            && Instant::now() < deadline
                            && issued.fetch_add(1, Ordering::Relaxed) < max
                        {
                            match request(dst) {
                                Ok(name) => {
                                    stats.ok.fetch_add(1, Ordering::Relaxed);
                                    *lock(&stats.answers).entry(name).or_default() += 1;
                                }
                                Err((kind, what)) => stats.fail(kind, what),
                            }
                            if !pause.is_zero() {
                                std::thread::sleep(pause);
                            }
                        }
                    })
                    .context("starting a load worker")?,
            );
        }
        Ok(load)
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Stops the load, waits for its threads, and returns what it saw.
    pub(crate) fn finish(mut self) -> Snapshot {
        self.halt();
        self.stats.snapshot()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            // A panicking load thread has already printed its message.
            drop(t.join());
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &std::path::Path) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: `file` is an open namespace file; CLONE_NEWNET moves only this thread.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn classify(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable
        | io::ErrorKind::AddrNotAvailable => Failure::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::Timeout,
        io::ErrorKind::InvalidData => Failure::Bad,
        _ => Failure::Reset,
    }
}

/// One request on a new connection; returns the answering backend's name.
fn request(dst: SocketAddr) -> Result<String, (Failure, String)> {
    let fail = |stage: &str, e: &io::Error| (classify(e), format!("{stage}: {e}"));
    let mut s =
        TcpStream::connect_timeout(&dst, CONNECT_TIMEOUT).map_err(|e| fail("connect", &e))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| s.set_nodelay(true))
        .map_err(|e| fail("socket options", &e))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: veer-bench\r\nConnection: close\r\n\r\n")
        .map_err(|e| fail("send", &e))?;
    let mut answer = Vec::with_capacity(256);
    let mut buf = [0_u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if answer.len() + n > MAX_ANSWER => {
                return Err((Failure::Bad, "answer too long".into()));
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail("receive", &e)),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err((
            Failure::Reset,
            format!("closed inside the answer head: {text:?}"),
        ));
    };
    let body = body.trim();
    if !(head.starts_with("HTTP/1.1 200 ") || head.starts_with("HTTP/1.0 200 ")) || body.is_empty()
    {
        return Err((
            Failure::Bad,
            format!("unexpected answer: {:?}", head.lines().next()),
        ));
    }
    Ok(body.to_owned())
}

/// A held connection and the backend that answered it first.
struct Held {
    stream: Option<TcpStream>,
    first: String,
}

/// Opens `n` keep-alive connections (in the calling thread's namespace) and asks each once.
fn open_held(dst: SocketAddr, n: usize) -> Result<Vec<Held>> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&dst, CONNECT_TIMEOUT)
                .context(format!("opening held connection {i}"))?;
            s.set_read_timeout(Some(IO_TIMEOUT))
                .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
                .context("socket options")?;
            let first = ask_http(&mut s).context(format!("asking held connection {i}"))?;
            Ok(Held {
                stream: Some(s),
                first,
            })
        })
        .collect()
}

/// Asks every held connection every `every` until stopped.
fn ask_held(
    mut held: Vec<Held>,
    every: Duration,
    deadline: Instant,
    stop: &AtomicBool,
    stats: &Stats,
) {
    while !stop.load(Ordering::Relaxed) && !bed::interrupted() && Instant::now() < deadline {
        for (i, h) in held.iter_mut().enumerate() {
            let Some(s) = h.stream.as_mut() else {
                continue;
            };
            match ask_http(s) {
                Ok(name) => {
                    stats.held_asked.fetch_add(1, Ordering::Relaxed);
                    if name != h.first {
                        stats.held_moved.fetch_add(1, Ordering::Relaxed);
                        stats.note_error(format!(
                            "held connection {i} moved from {} to {name}",
                            h.first
                        ));
                        h.first = name;
                    }
                }
                Err(e) => {
                    stats.held_broken.fetch_add(1, Ordering::Relaxed);
                    stats.note_error(format!("held connection {i}: {e}"));
                    h.stream = None;
                }
            }
        }
        let next = Instant::now() + every;
        while Instant::now() < next && !stop.load(Ordering::Relaxed) && !bed::interrupted() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

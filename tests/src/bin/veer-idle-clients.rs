//! `veer-idle-clients TARGET COUNT SECONDS [--stall]`: a local user's attempt to take a listener
//! down by holding connections. The hardening tests run it as a non-root user (`setpriv`).
//!
//! Opens up to COUNT connections to TARGET (`tcp:ADDR:PORT` or `unix:PATH`), one after another,
//! each within 2 s; with `--stall`, sends on each the start of a request that never ends (headers
//! with no blank line). Waits 1 s, then prints `opened N closed M` (M: connections the server
//! already closed) and holds the others open until SECONDS passed or stdin closes. Raises its own
//! soft descriptor limit to the hard one first.

// This binary links every dependency of `veer-tests`.
use {
    aya as _, rand as _, rcgen as _, serde_json as _, tokio as _, veer as _, veer_common as _,
    veer_tests as _,
};

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    process::ExitCode,
    time::{Duration, Instant},
};

/// One held connection.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn open(target: &str) -> std::io::Result<Self> {
        if let Some(addr) = target.strip_prefix("tcp:") {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(Self::Tcp)
        } else if let Some(path) = target.strip_prefix("unix:") {
            UnixStream::connect(path).map(Self::Unix)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "TARGET is tcp:ADDR:PORT or unix:PATH",
            ))
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(bytes),
            Self::Unix(s) => s.write_all(bytes),
        }
    }

    /// Whether the server closed it (a read returns end of file or an error, after any answer).
    fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            let r = match self {
                Self::Tcp(s) => s.set_nonblocking(true).and_then(|()| s.read(&mut buf)),
                Self::Unix(s) => s.set_nonblocking(true).and_then(|()| s.read(&mut buf)),
            };
            match r {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(target), Some(Ok(count)), Some(Ok(seconds))) = (
        args.first(),
        args.get(1).map(|a| a.parse::<usize>()),
        args.get(2).map(|a| a.parse::<u64>()),
    ) else {
        eprintln!("usage: veer-idle-clients TARGET COUNT SECONDS [--stall]");
        return ExitCode::from(2);
    };
    let stall = args.iter().any(|a| a == "--stall");
    raise_nofile();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut conns = Vec::new();
    for _ in 0..count {
        if Instant::now() >= deadline {
            break;
        }
        match Conn::open(target) {
            Ok(mut c) => {
                if stall {
                    // Headers that never end: no blank line.
                    drop(c.write(
                        b"POST /v1/shift HTTP/1.1\r\nhost: veer\r\ncontent-length: 100\r\n",
                    ));
                }
                conns.push(c);
            }
            Err(e) => {
                eprintln!("connection {}: {e}", conns.len());
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let closed = conns.iter_mut().map(Conn::is_closed).filter(|c| *c).count();
    println!("opened {} closed {closed}", conns.len());
    drop(std::io::stdout().flush());
    // Hold until the deadline or until stdin closes (the test is done).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        drop(std::io::stdin().read_to_end(&mut sink));
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    drop(conns);
    ExitCode::SUCCESS
}

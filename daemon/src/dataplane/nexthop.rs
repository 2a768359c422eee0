//! Keeper of the next-hop cache's clock (`veer_common::nexthop`): a thread that follows every
//! rtnetlink event a route lookup depends on (routes, neighbours, links, addresses, rules,
//! forwarding settings) and bumps the generation at each, so the kernel programs look routes up
//! again; and that renews the lease, so the cache turns itself off within `LEASE` when nobody
//! watches any more (daemon stopped or dead).
//!
//! The cache is off (generation 0) while the namespace has policy-routing rules other than the
//! kernel's defaults: a route could then depend on the client's address, ports or mark, and one
//! entry per backend would not hold it.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{Array, MapData};
use veer_common::{
    flow::ticks_ceil,
    nexthop::{clock, next_generation},
};

use super::{
    DataplaneError,
    flows::now_tick,
    netlink::{ForwardingWatch, Socket},
};

/// How long the clock stays valid after a write: the longest a cached next hop may be used
/// after its keeper stopped watching.
pub const LEASE: Duration = Duration::from_millis(500);
/// How often the lease is renewed (several times per lease, so a busy machine that delays the
/// keeper a little does not turn the cache off).
const RENEW: Duration = Duration::from_millis(100);

/// The thread keeping the clock. Dropping it stops the thread and turns the cache off.
pub struct NextHopKeeper {
    stop: Arc<AtomicBool>,
    /// Whether the last clock written turned the cache on.
    on: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NextHopKeeper {
    /// Subscribes to the events in the calling thread's network namespace, turns the cache on
    /// (a new generation: whatever changed while nobody watched is looked up again) and starts
    /// the thread.
    pub fn start(mut clock_map: Array<MapData, u64>) -> Result<Self, DataplaneError> {
        let nl = |source| DataplaneError::Netlink { source };
        let watch = ForwardingWatch::open().map_err(nl)?;
        let mut rules = Socket::route().map_err(nl)?;
        let simple = rules.only_default_rules().map_err(nl)?;
        let previous = clock_map.get(&0, 0).unwrap_or(0) as u32;
        let mut state = Clock {
            generation: next_generation(previous),
            simple,
        };
        write(&mut clock_map, &state).map_err(|source| DataplaneError::NextHopClock {
            source: Box::new(source),
        })?;
        if !simple {
            tracing::info!(
                "policy-routing rules besides the kernel's defaults: the next-hop cache is off (every packet looks its route up)"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let on = Arc::new(AtomicBool::new(simple));
        let (thread_stop, thread_on) = (Arc::clone(&stop), Arc::clone(&on));
        let thread = std::thread::Builder::new()
            .name("veer-nexthop".into())
            .spawn(move || {
                keep(
                    &watch,
                    &mut rules,
                    &mut clock_map,
                    &mut state,
                    (&thread_stop, &thread_on),
                );
            })
            .map_err(|source| DataplaneError::NextHopThread { source })?;
        Ok(Self {
            stop,
            on,
            thread: Some(thread),
        })
    }

    /// Whether the cache is on: the keeper runs and the node's routes depend on their
    /// destination only (no policy-routing rules besides the kernel's).
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }
}

impl Drop for NextHopKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The thread wakes within `RENEW`, writes the cache off and ends; a panic in it has
            // been reported by the runtime already.
            if t.join().is_err() {
                tracing::warn!("the next-hop keeper thread panicked");
            }
        }
    }
}

/// What the keeper writes.
struct Clock {
    generation: u32,
    /// Only the kernel's default rules: the cache may be on.
    simple: bool,
}

/// Writes the clock: on (this generation, lease from now) or off.
fn write(map: &mut Array<MapData, u64>, c: &Clock) -> Result<(), aya::maps::MapError> {
    let value = if c.simple {
        clock(
            c.generation,
            now_tick().wrapping_add(ticks_ceil(LEASE.as_nanos() as u64) as u32),
        )
    } else {
        0
    };
    map.set(0, value, 0)
}

/// The thread: wait for events or the renewal time, bump on events, write, until stopped.
fn keep(
    watch: &ForwardingWatch,
    rules: &mut Socket,
    map: &mut Array<MapData, u64>,
    c: &mut Clock,
    (stop, on): (&AtomicBool, &AtomicBool),
) {
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: watch.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a timeout in milliseconds.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, RENEW.as_millis() as libc::c_int) };
        if rc > 0 {
            let ev = watch.drain();
            if ev.any {
                c.generation = next_generation(c.generation);
            }
            if ev.rules {
                match rules.only_default_rules() {
                    Ok(simple) => {
                        if simple != c.simple {
                            tracing::info!(
                                on = simple,
                                "policy-routing rules changed: next-hop cache"
                            );
                        }
                        c.simple = simple;
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::error::chain(&e), "cannot read the policy-routing rules; next-hop cache off");
                        c.simple = false;
                    }
                }
            }
        }
        match write(map, c) {
            Ok(()) => {
                failing = false;
                on.store(c.simple, Ordering::Relaxed);
            }
            Err(e) if !failing => {
                failing = true;
                on.store(false, Ordering::Relaxed);
                tracing::warn!(error = %crate::error::chain(&e), "cannot renew the next-hop cache's clock; it turns itself off within its lease");
            }
            Err(_) => {}
        }
    }
    if let Err(e) = map.set(0, 0, 0) {
        tracing::warn!(error = %crate::error::chain(&e), "cannot turn the next-hop cache off; it does within its lease");
    }
}

//! `veer daemon`'s task wiring (mini-redis shape): the control socket, the metrics listener,
//! conntrack upkeep every second, config reload on SIGHUP and on file change, and a clean stop
//! on SIGINT/SIGTERM that leaves the programs attached and traffic flowing.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    api::server::{self, Access, SocketError},
    control::{self, ControlError, Controller},
    error::chain,
    health::check::{self, CheckError},
    metrics,
    model::BackendRef,
    privileges::{self, MissingPrivileges},
    rollout::{self, GateFailure},
};

/// Why the daemon could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// This process may not load programs or create maps.
    #[error(transparent)]
    Privileges(#[from] MissingPrivileges),
    /// The async runtime could not be created.
    #[error("starting the daemon's runtime failed")]
    Runtime {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The control layer could not start (programs, maps, revisions, config file).
    #[error(transparent)]
    Start(#[from] ControlError),
    /// The control socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The metrics listener could not be bound.
    #[error(
        "binding the metrics listener on {addr} failed (pass --metrics off, or another address)"
    )]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("installing the {signal} handler failed")]
    Signal {
        /// Which signal.
        signal: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How often idle flows are expired and counted.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often rollouts are decided: a breach restores weights well within a second.
pub const ROLLOUT_TICK: Duration = Duration::from_millis(200);
/// Granularity of health-check scheduling.
const HEALTH_TICK: Duration = Duration::from_millis(100);

fn lock(ctl: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    ctl.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs every service's active checks at its interval, each bounded by its timeout, and feeds
/// the results to the controller.
async fn health_checks(ctl: Arc<Mutex<Controller>>, mut stop: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<(BackendRef, Result<(), CheckError>)>(1024);
    let mut due: std::collections::HashMap<String, tokio::time::Instant> =
        std::collections::HashMap::new();
    let mut tick = tokio::time::interval(HEALTH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            Some((backend, result)) = rx.recv() => {
                if let Err(e) = lock(&ctl).health_result(&backend, &result) {
                    tracing::warn!(error = %chain(&e), "applying a health change failed");
                }
            }
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                let jobs = lock(&ctl).health_jobs();
                let mut started = std::collections::HashSet::new();
                for job in jobs {
                    let service = job.backend.0.clone();
                    if due.get(&service).is_some_and(|d| *d > now) {
                        continue;
                    }
                    started.insert((service, job.check.interval));
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let r = check::run(&job.check.kind, job.addr, job.check.timeout).await;
                        // The receiver is gone only when the daemon stops.
                        drop(tx.send((job.backend, r)).await);
                    });
                }
                for (service, interval) in started {
                    due.insert(service, now + interval);
                }
            }
        }
    }
}

/// Decides rollouts every `ROLLOUT_TICK`, and runs their extra gates off the lock; ends what
/// paced drains may end at the same ticks.
async fn rollouts(ctl: Arc<Mutex<Controller>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ROLLOUT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = lock(&ctl).drain_tick(std::time::SystemTime::now()) {
            tracing::error!(error = %chain(&e), "paced drain failed; will retry");
        }
        let jobs = match lock(&ctl).rollout_tick(std::time::SystemTime::now()) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %chain(&e), "rollout step failed; will retry");
                continue;
            }
        };
        for job in jobs {
            let ctl = Arc::clone(&ctl);
            tokio::spawn(async move {
                let mut outcome = Ok(());
                for gate in &job.gates {
                    if let Err(e) = rollout::gate::check(gate, job.timeout).await {
                        outcome = Err(GateFailure {
                            gate: gate.to_string(),
                            why: chain(&e),
                        });
                        break;
                    }
                }
                lock(&ctl).gate_result(job.key, outcome);
            });
        }
    }
}

/// Everything `veer daemon` needs.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Where the control layer keeps things.
    pub control: control::Options,
    /// Control socket.
    pub socket: PathBuf,
    /// Who besides root may use it.
    pub access: Access,
    /// Metrics listener (`None`: off).
    pub metrics: Option<SocketAddr>,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    privileges::check()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| DaemonError::Runtime { source })?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: DaemonOptions) -> Result<(), DaemonError> {
    server::ensure_unused(&opts.socket)?;
    let ctl = Controller::start(opts.control.clone())?;
    let config_path = ctl.config_path().to_owned();
    let ctl = Arc::new(Mutex::new(ctl));
    let listener = server::bind(&opts.socket, opts.access)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        // An error means the sender is gone: stop as well.
        drop(rx.wait_for(|s| *s).await);
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server::serve(
        listener,
        Arc::clone(&ctl),
        opts.access,
        stopped(stop_rx.clone()),
    ));
    if let Some(addr) = opts.metrics {
        let l = metrics::bind(addr)
            .await
            .map_err(|source| DaemonError::Metrics { addr, source })?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        tasks.spawn(metrics::serve(
            l,
            Arc::clone(&ctl),
            stopped(stop_rx.clone()),
        ));
    }
    tasks.spawn(upkeep(Arc::clone(&ctl), stop_rx.clone()));
    tasks.spawn(links_watch(Arc::clone(&ctl), stop_rx.clone()));
    tasks.spawn(health_checks(Arc::clone(&ctl), stop_rx.clone()));
    tasks.spawn(rollouts(Arc::clone(&ctl), stop_rx.clone()));
    let (reload_tx, reload_rx) = mpsc::channel::<&'static str>(8);
    let _watcher = watch_config(&config_path, reload_tx.clone());
    tasks.spawn(reloader(Arc::clone(&ctl), reload_rx, stop_rx.clone()));

    tracing::info!(socket = %opts.socket.display(), "veer daemon ready");
    let handler = |kind, signal_name| {
        signal(kind).map_err(|source| DaemonError::Signal {
            signal: signal_name,
            source,
        })
    };
    let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
    let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut hup = handler(SignalKind::hangup(), "SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => { let _ = reload_tx.try_send("SIGHUP"); }
        }
    }
    tracing::info!(
        "stopping; programs stay attached and traffic keeps flowing (veer teardown removes them)"
    );
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    if let Err(e) = std::fs::remove_file(&opts.socket) {
        tracing::warn!(socket = %opts.socket.display(), error = %e, "could not remove the control socket");
    }
    Ok(())
}

/// A raw descriptor for `AsyncFd`; the `Watch` that owns it outlives the `AsyncFd`.
struct Fd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Follows link, address and XDP-capability events of the node (see `dataplane::netlink::Watch`)
/// and lets the controller catch up: interfaces created again are attached again, XDP redirect
/// targets follow what each interface can take, node settings are checked again. Bursts are
/// folded into one pass.
async fn links_watch(ctl: Arc<Mutex<Controller>>, mut stop: watch::Receiver<bool>) {
    use std::os::fd::AsRawFd as _;
    let w = match crate::dataplane::netlink::Watch::open() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %chain(&e), "cannot watch link events; interfaces are looked at again only on apply");
            return;
        }
    };
    let fds: Vec<tokio::io::unix::AsyncFd<Fd>> = w
        .fds()
        .iter()
        // SAFETY: `w` owns the descriptors, and is declared before `fds`, so it is dropped after
        // them: each descriptor stays open while registered.
        .filter_map(|f| unsafe { tokio::io::unix::AsyncFd::register(Fd(f.as_raw_fd())) }.ok())
        .collect();
    let Some(first) = fds.first() else {
        return;
    };
    let second = fds.get(1).unwrap_or(first);
    loop {
        let mut guard = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            g = first.readable() => g,
            g = second.readable() => g,
        };
        // Let a burst (a container starting: several links and addresses) arrive, then read it
        // all and look once.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let any = w.drain();
        if let Ok(g) = guard.as_mut() {
            g.clear_ready();
        }
        // The other socket may still look ready although `drain` emptied it: the next round
        // then finds nothing and clears it.
        if !any {
            continue;
        }
        match lock(&ctl).links_changed() {
            Ok(true) => tracing::debug!("link event handled"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %chain(&e), "after a link event"),
        }
    }
}

/// Conntrack upkeep: every `UPKEEP_INTERVAL`, or more rarely when a pass is expensive (a very
/// large map): the daemon spends at most a tenth of its time scanning.
async fn upkeep(ctl: Arc<Mutex<Controller>>, mut stop: watch::Receiver<bool>) {
    let mut wait = UPKEEP_INTERVAL;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        let started = std::time::Instant::now();
        let result = ctl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .upkeep();
        wait = UPKEEP_INTERVAL.max(started.elapsed() * 10);
        match result {
            Ok(u) if u.expired > 0 || u.socket_flows_expired > 0 => {
                tracing::debug!(
                    expired = u.expired,
                    socket_flows_expired = u.socket_flows_expired,
                    refreshed = u.refreshed,
                    flows = u.census.flows,
                    new_flows = u.census.new_flows,
                    "conntrack upkeep"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %chain(&e), "conntrack upkeep failed"),
        }
    }
}

async fn reloader(
    ctl: Arc<Mutex<Controller>>,
    mut rx: mpsc::Receiver<&'static str>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let why = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            why = rx.recv() => match why { Some(w) => w, None => return },
        };
        // Editors write a file in several steps: let it settle, and fold bursts into one reload.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while rx.try_recv().is_ok() {}
        let result = ctl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reload();
        match result {
            Ok(a) if a.changed => {
                tracing::info!(trigger = why, revision = a.revision, "config reloaded");
            }
            Ok(_) => tracing::info!(trigger = why, "config reload: nothing changed"),
            Err(e) => {
                tracing::error!(trigger = why, error = %chain(&e), "config reload rejected; the live revision stays in force");
            }
        }
    }
}

/// Watches the config file's directory (editors replace files by rename) for changes to it.
fn watch_config(
    path: &std::path::Path,
    tx: mpsc::Sender<&'static str>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher as _};
    let dir = path.parent()?.to_owned();
    let name = path.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !e.kind.is_access()
            && e.paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = tx.try_send("file change");
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP"))
    .ok()?;
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP");
        return None;
    }
    Some(watcher)
}

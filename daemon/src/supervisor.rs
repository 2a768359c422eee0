//! `veer daemon`'s task wiring (mini-redis shape): the control socket, the metrics listener,
//! conntrack upkeep every second, config reload on SIGHUP and on file change, and a clean stop
//! on SIGINT/SIGTERM that leaves the programs attached and traffic flowing. With an etcd source,
//! the fleet tasks too (`fleet`: follow etcd, write the node's status, drive fleet rollouts).

pub mod fleet;

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
    api::server::{self, Access, Budget, SocketError},
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
                    due.insert(service, next_due(now, interval));
                }
            }
        }
    }
}

/// When a check started at `now` is next due. Validation bounds every interval
/// (`HealthCheck::MAX_INTERVAL`); the addition is checked all the same, since a tokio `Instant`
/// panics on overflow and that would end health checking for every service.
fn next_due(now: tokio::time::Instant, interval: Duration) -> tokio::time::Instant {
    now.checked_add(interval)
        .unwrap_or_else(|| now + crate::model::HealthCheck::MAX_INTERVAL)
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
    /// The fleet's etcd, when the services come from there.
    pub fleet: Option<fleet::FleetOptions>,
}

/// Raises the soft limit of open descriptors to the hard one (systemd's default soft limit is
/// 1024, low for a daemon serving connections); returns the limit in force.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the descriptor limit");
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            tracing::info!(
                from = lim.rlim_cur,
                to = lim.rlim_max,
                "raised the soft limit of open descriptors to the hard limit"
            );
            return lim.rlim_max;
        }
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the soft limit of open descriptors");
    }
    lim.rlim_cur
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    privileges::check()?;
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| DaemonError::Runtime { source })?;
    rt.block_on(run_async(opts, nofile))
}

async fn run_async(opts: DaemonOptions, nofile: u64) -> Result<(), DaemonError> {
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

    let budget = Budget::for_limit(nofile);
    if nofile < 1024 {
        tracing::warn!(
            nofile,
            "the descriptor limit is low; set LimitNOFILE (dist/veer.service sets 65536)"
        );
    }
    tracing::info!(
        nofile,
        control_root = budget.control_root,
        control_others = budget.control_others,
        metrics = budget.metrics,
        "connection budget"
    );

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server::serve(
        listener,
        Arc::clone(&ctl),
        opts.access,
        budget,
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
            budget.metrics,
            stopped(stop_rx.clone()),
        ));
    }
    tasks.spawn(upkeep(Arc::clone(&ctl), stop_rx.clone()));
    tasks.spawn(links_watch(Arc::clone(&ctl), stop_rx.clone()));
    tasks.spawn(health_checks(Arc::clone(&ctl), stop_rx.clone()));
    tasks.spawn(rollouts(Arc::clone(&ctl), stop_rx.clone()));
    let (reload_tx, reload_rx) = mpsc::channel::<&'static str>(8);
    let _watcher = watch_config(&config_path, reload_tx.clone());
    tasks.spawn(reloader(
        Arc::clone(&ctl),
        config_path.clone(),
        reload_rx,
        stop_rx.clone(),
    ));
    let fleet_ready = spawn_fleet(&mut tasks, &ctl, opts.fleet.clone(), &stop_rx);

    tracing::info!(socket = %opts.socket.display(), "veer daemon ready");
    // systemd (Type=notify): the programs are attached and the socket serves. With etcd as the
    // source this does not wait for the first sync: the node serves its last local revision
    // meanwhile, and an etcd that is down at boot must not keep the service from starting (or
    // make systemd restart it). The status line says when the first sync came.
    let waiting = !*fleet_ready.borrow();
    notify_service_manager(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(if waiting {
            "attached; serving the control socket; waiting for the first sync with etcd (the last local revision is in force)"
        } else {
            "attached; serving the control socket"
        }),
    ]);
    if waiting {
        tasks.spawn(report_first_sync(fleet_ready, stop_rx.clone()));
    }
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
    notify_service_manager(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    server::remove(&opts.socket);
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

/// Tells the service manager (systemd's `NOTIFY_SOCKET`, when set) how the daemon is. A
/// service manager that cannot be told is logged, not fatal: traffic does not depend on it.
fn notify_service_manager(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "telling the service manager (NOTIFY_SOCKET) failed");
    }
}

/// Tells the service manager when the node first synced with etcd (`ready` turns true), unless
/// the daemon stops first.
async fn report_first_sync(mut ready: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        synced = ready.wait_for(|r| *r) => {
            if synced.is_ok() {
                notify_service_manager(&[sd_notify::NotifyState::Status(
                    "attached; serving the control socket; in sync with etcd",
                )]);
            }
        }
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// Starts the fleet tasks when the services come from etcd. The receiver turns true once the
/// node synced with etcd (always true without etcd); readiness (`READY=1`) does not wait for it,
/// the status line reports it.
fn spawn_fleet(
    tasks: &mut tokio::task::JoinSet<()>,
    ctl: &Arc<Mutex<Controller>>,
    opts: Option<fleet::FleetOptions>,
    stop: &watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (ready_tx, ready) = watch::channel(opts.is_none());
    if let Some(opts) = opts {
        tracing::info!(
            endpoints = %opts.fleet.endpoints(),
            prefix = opts.fleet.layout().prefix(),
            node = %opts.node,
            "services come from etcd; serving the last local revision until the first sync"
        );
        tasks.spawn(fleet::run(Arc::clone(ctl), opts, stop.clone(), ready_tx));
    }
    ready
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

/// How long the config file must be left alone before a reload reads it, and how far apart
/// the two reads that must agree are: a file rewritten in place (editors, provisioning tools)
/// with a pause mid-write shorter than twice this is never applied torn.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Waits until `SETTLE` passes with no change event; `false` when the daemon stops meanwhile.
async fn quiet(rx: &mut mpsc::Receiver<&'static str>, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return false,
            event = rx.recv() => if event.is_none() { return false },
            () = tokio::time::sleep(SETTLE) => return true,
        }
    }
}

/// Reads the config file once it has settled: no change for `SETTLE`, then two reads `SETTLE`
/// apart that agree, with no change event between them. `None` when the daemon stops first.
async fn settled(
    path: &std::path::Path,
    rx: &mut mpsc::Receiver<&'static str>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Result<String, crate::config::LoadError>> {
    loop {
        if !quiet(rx, stop).await {
            return None;
        }
        let first = crate::config::read(path);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return None,
            event = rx.recv() => {
                event?;
                tracing::debug!("config file changed while settling; waiting again");
                continue;
            }
            () = tokio::time::sleep(SETTLE) => {}
        }
        let second = crate::config::read(path);
        match (&first, &second) {
            (Ok(a), Ok(b)) if a == b => return Some(first),
            (Err(_), Err(_)) => return Some(first),
            _ => tracing::debug!("config file changed between two reads; waiting again"),
        }
    }
}

async fn reloader(
    ctl: Arc<Mutex<Controller>>,
    path: std::path::PathBuf,
    mut rx: mpsc::Receiver<&'static str>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let why = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            why = rx.recv() => match why { Some(w) => w, None => return },
        };
        // Editors and provisioning tools write in several steps, some in place: apply the file
        // only once it settled, folding bursts of events into one reload.
        let Some(read) = settled(&path, &mut rx, &mut stop).await else {
            return;
        };
        let result = ctl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reload_from(read);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_scheduling_never_overflows() {
        let now = tokio::time::Instant::now();
        let eons = humantime::parse_duration("300000000000years").unwrap();
        // What the scheduler used to do: a panic.
        assert!(std::panic::catch_unwind(|| now + eons).is_err());
        assert!(next_due(now, eons) > now);
        assert_eq!(
            next_due(now, Duration::from_secs(2)),
            now + Duration::from_secs(2)
        );
    }
}

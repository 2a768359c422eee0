//! Section 3: how soon a shift takes effect, and what the CLI costs.
//!
//! From a thread inside the client namespace (so no thread or process start sits between the CLI
//! returning and the next connection): run `veer shift web v1=0 v2=100` (or back), note when it
//! returns, then open fresh connections one after another until one answers from the new group.
//! The figure is when the first connection that reached the new group was opened, counted from
//! the CLI's return, and how many connections opened after the return still reached the old
//! group (expected: none; the daemon answers only after the maps are written). Then `veer status`
//! round trips.

use std::{
    net::TcpStream,
    time::{Duration, Instant},
};

use veer_tests::servers::ask_tcp;

use crate::bed::{self, Context as _, Result, VIP, Veer, bail};

/// Shifts measured (alternating `v1` → `v2` and back).
pub(crate) const TRIALS: usize = 40;
/// `veer status` round trips measured.
pub(crate) const STATUS_CALLS: usize = 50;

/// Section 3's figures (microseconds).
#[derive(Clone, Debug, Default)]
pub(crate) struct Results {
    /// Per trial: µs from the CLI's return to the opening of the first connection that reached
    /// the new group.
    pub(crate) effect_us: Vec<f64>,
    /// Connections opened after the CLI returned that reached the old group (all trials).
    pub(crate) stale: u64,
    /// Per trial: how long `veer shift` took, start to exit (µs).
    pub(crate) shift_cli_us: Vec<f64>,
    /// How long one connect + ask + close takes (µs), for scale.
    pub(crate) connection_us: Vec<f64>,
    /// `veer status -o json` round trips (µs).
    pub(crate) status_us: Vec<f64>,
}

impl Results {
    /// Largest shift-to-effect time.
    pub(crate) fn effect_max(&self) -> f64 {
        self.effect_us.iter().copied().fold(f64::NAN, f64::max)
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs section 3.
pub(crate) fn run() -> Result<Results> {
    let topo = bed::two_group_topology()?;
    let _servers = bed::name_servers(&topo)?;
    let veer = Veer::start(
        topo.node(),
        &bed::config(&topo.node_ifnames(), "100", "0", 65536),
    )?;
    let entered = topo
        .client()
        .enter_current_thread()
        .context("entering the client namespace")?;
    let mut r = Results::default();
    let ask = || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&VIP, Duration::from_secs(2)).context("connect")?;
        ask_tcp(&mut s).context("ask")
    };
    // Warm up (and check the starting state).
    for _ in 0..20 {
        if ask()? != "v1" {
            bail!("before any shift, a connection did not reach v1");
        }
    }
    for trial in 0..TRIALS {
        bed::check_interrupted()?;
        let (to, args) = if trial % 2 == 0 {
            ("v2", ["shift", "web", "v1=0", "v2=100"])
        } else {
            ("v1", ["shift", "web", "v1=100", "v2=0"])
        };
        let start = Instant::now();
        veer.ok(&args)?;
        let returned = Instant::now();
        r.shift_cli_us.push(us(returned - start));
        let mut found = false;
        for _ in 0..1000 {
            let opened = Instant::now();
            let name = ask()?;
            r.connection_us.push(us(opened.elapsed()));
            if name == to {
                r.effect_us.push(us(opened - returned));
                found = true;
                break;
            }
            r.stale += 1;
        }
        if !found {
            bail!(
                "1000 connections after `veer {}` none reached {to}",
                args.join(" ")
            );
        }
        // Let the closing flows of this trial settle before the next shift.
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..STATUS_CALLS {
        bed::check_interrupted()?;
        let start = Instant::now();
        veer.json(&["status"])?;
        r.status_us.push(us(start.elapsed()));
    }
    drop(entered);
    Ok(r)
}

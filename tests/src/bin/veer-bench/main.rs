//! `cargo xtask bench`: veer's benchmarks, written to BENCHMARKS.md.
//!
//! 1. per-packet cost through `BPF_PROG_TEST_RUN` beside baseline programs (`prog`);
//! 2. requests per second end to end with wrk, beside plain forwarding and `HAProxy` (`net`);
//! 3. shift-to-effect time and CLI round trip (`shift`);
//! 4. failures under load through a cutover, a crash, an upgrade, beside nginx and `HAProxy`
//!    (`downtime`);
//! 5. daemon and map memory (`memory`);
//! 6. floods against held flows (`flood`);
//! 7. propagation of a change through etcd to 3 real daemons and to 200 simulated nodes, and
//!    what the fleet costs etcd (`fleet`).
//!
//! Usage: `veer-bench [--out FILE] [--quick] [--only 1,3] [fleet]`; `fleet` alone (`cargo
//! xtask bench -- fleet`) measures section 7 only and replaces it in the file, leaving the
//! others as they were. Needs root, `wrk`, `haproxy`,
//! `nginx` and `bpftool` (`cargo xtask bench` installs them) and the `veer` binary beside this
//! one. Everything it creates (namespaces, pins, processes) is removed at the end, also on
//! failure and Ctrl-C. A section that fails is reported as failed in the file; the exit code is
//! then 1.

// This binary links every dependency of `veer-tests`.
use rand as _;
use rcgen as _;

mod bed;
mod downtime;
mod fleet;
mod flood;
#[expect(dead_code, reason = "shared with veer-demo, which uses all of it")]
mod load;
mod memory;
mod net;
mod procs;
mod prog;
mod report;
mod shift;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use crate::bed::{Result, bail};

/// Command-line options.
struct Options {
    out: PathBuf,
    quick: bool,
    only: Vec<u32>,
}

fn options() -> Result<Options> {
    let mut o = Options {
        out: PathBuf::from("BENCHMARKS.md"),
        quick: false,
        only: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => o.out = args.next().ok_or("--out needs a file")?.into(),
            "--quick" => o.quick = true,
            "--only" => {
                o.only = args
                    .next()
                    .ok_or("--only needs section numbers")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--only: {e}"))?;
            }
            "fleet" => o.only = vec![7],
            "-h" | "--help" => {
                println!("veer-bench [--out FILE] [--quick] [--only 1,2,3,4,5,6,7] [fleet]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if bed::interrupted() => {
            eprintln!("veer-bench: interrupted ({e}); everything it created is removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("veer-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one section unless `--only` leaves it out; an error becomes the section's outcome.
fn section<T>(
    opts: &Options,
    number: u32,
    title: &str,
    measure: impl FnOnce() -> Result<T>,
) -> Result<Result<T, String>> {
    if !opts.only.is_empty() && !opts.only.contains(&number) {
        return Ok(Err("not run (--only)".into()));
    }
    println!("\n{number}. {title}");
    let started = Instant::now();
    let outcome = measure().map_err(|e| e.to_string());
    bed::check_interrupted()?;
    match &outcome {
        Ok(_) => println!("   ({:.0} s)", started.elapsed().as_secs_f64()),
        Err(e) => eprintln!("   section {number} failed: {e}"),
    }
    Ok(outcome)
}

fn run() -> Result<bool> {
    let opts = options()?;
    bed::handle_interrupts()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks build network namespaces and load BPF programs: run them as root");
    }
    let fleet_only = opts.only == [7];
    for tool in ["wrk", "haproxy", "nginx", "nft", "bpftool", "nsenter", "ip"] {
        if fleet_only && !["nsenter", "ip"].contains(&tool) {
            continue;
        }
        if !bed::have(tool) {
            bail!("`{tool}` is missing: run `cargo xtask bench`, which installs it");
        }
    }
    bed::sibling_bin("veer")?;
    let start = Instant::now();
    let load_at_start = report::load_average();
    if opts.quick {
        bed::set_quick();
        println!("quick run: shorter, fewer repetitions (not for citing)");
    }
    let prog = section(&opts, 1, "per-packet cost (BPF_PROG_TEST_RUN)", prog::run)?;
    let shift = section(&opts, 3, "shift latency and CLI round trip", shift::run)?;
    let memory = section(&opts, 5, "memory", memory::run)?;
    let flood = section(&opts, 6, "floods against held flows", flood::run)?;
    let downtime = section(&opts, 4, "zero downtime under load", downtime::run)?;
    let net = section(&opts, 2, "requests per second with wrk", net::run)?;
    let fleet = section(&opts, 7, "fleet propagation through etcd", fleet::run)?;
    if fleet_only {
        let old = std::fs::read_to_string(&opts.out).unwrap_or_default();
        std::fs::write(&opts.out, fleet::splice(&old, &fleet::markdown(&fleet)))
            .map_err(|e| format!("writing {}: {e}", opts.out.display()))?;
        println!("\nwrote section 7 of {}", opts.out.display());
        return Ok(fleet.is_ok());
    }
    let report = report::Report {
        prog,
        net,
        shift,
        downtime,
        memory,
        flood,
        fleet,
        secs: start.elapsed().as_secs_f64(),
        load_at_start,
        quick: opts.quick,
    };
    let all_ran = [
        report.prog.is_ok(),
        report.net.is_ok(),
        report.shift.is_ok(),
        report.downtime.is_ok(),
        report.memory.is_ok(),
        report.flood.is_ok(),
        report.fleet.is_ok(),
    ]
    .iter()
    .all(|ok| *ok);
    std::fs::write(&opts.out, report.markdown())
        .map_err(|e| format!("writing {}: {e}", opts.out.display()))?;
    println!(
        "\nwrote {} ({:.0} s)",
        opts.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(all_ran)
}

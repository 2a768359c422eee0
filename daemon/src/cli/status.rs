//! `veer status [SERVICE] [--offline]`.

use std::{fmt::Write as _, path::PathBuf};

use super::{Global, block_on, exit::Failure, output};
use crate::{
    api::protocol::{ConfigFileStatus, DataplaneStatus, SourceStatus, StateFilesStatus, Status},
    control, paths,
};

/// Arguments of `veer status`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Only this service.
    service: Option<String>,
    /// Read the pinned maps directly instead of asking the daemon (it may be down): services,
    /// weights, backends, active flows and counters as the kernel holds them, named from the
    /// last revision in the state directory when it reads, else shown by id.
    #[arg(long)]
    offline: bool,
    /// Pin directory (`--offline`).
    #[arg(long, default_value = paths::PIN_DIR, requires = "offline")]
    pin_dir: PathBuf,
    /// State directory, for names (`--offline`).
    #[arg(long, default_value = paths::STATE_DIR, requires = "offline")]
    state_dir: PathBuf,
}

/// The query string selecting a service.
pub(super) fn service_query(service: Option<&str>) -> String {
    service.map_or_else(String::new, |s| format!("?service={}", encode(s)))
}

/// Percent-encodes a query value.
pub(super) fn encode(s: &str) -> String {
    s.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// Fetches the status.
pub(super) fn fetch(g: &Global, service: Option<&str>) -> Result<Status, Failure> {
    block_on(
        g.client()
            .get(&format!("/v1/status{}", service_query(service))),
    )?
    .map_err(|e| Failure::from(&e))
}

/// Prints the status.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let s = if args.offline {
        let view =
            control::offline::status(&args.pin_dir, &args.state_dir, args.service.as_deref())
                .map_err(|e| Failure::of("offline", &e))?;
        Status::from(&view)
    } else {
        fetch(g, args.service.as_deref())?
    };
    output::print(g.output, &s, || human(&s))
}

/// The columns of a service's table, one per cell of its rows.
pub(super) const TABLE: [&str; 9] = [
    "GROUP", "WEIGHT", "BACKEND", "HEALTH", "ACTIVE", "NEW", "FAILED", "PACKETS", "BYTES",
];

/// The config file's lines: last good reload, a rejection since, settings waiting for a restart.
fn config(out: &mut String, c: &ConfigFileStatus) {
    let last = c.last_reload.as_deref().unwrap_or("never");
    match &c.last_error {
        None => {
            let _ = writeln!(out, "config {}: applied {last}", c.path);
        }
        Some(e) => {
            let at = match (&e.file, e.line, e.column) {
                (Some(f), Some(l), Some(col)) => format!("{f}:{l}:{col}: "),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "config {}: REJECTED at {}: {at}{}; the last good reload ({last}) stays in force",
                c.path, e.time, e.message
            );
        }
    }
    if !c.pending_restart.is_empty() {
        let _ = writeln!(out, "{}", output::pending_restart(&c.pending_restart));
    }
}

/// Revision files that cannot be used: the one holding changes back first.
fn state_files(out: &mut String, f: &StateFilesStatus) {
    if let Some(h) = &f.held {
        let _ = writeln!(
            out,
            "HELD: revision {} ({}) cannot be used: {}; {}",
            h.file.revision, h.file.path, h.file.problem, h.advice
        );
    }
    for u in &f.unusable {
        if f.held
            .as_ref()
            .is_none_or(|h| h.file.revision != u.revision)
        {
            let _ = writeln!(
                out,
                "skipped revision file {} ({}): {}",
                u.revision, u.path, u.problem
            );
        }
    }
}

/// The status for people: what holds changes back, the revision, the config file, conntrack,
/// then a table per service whose every cell sits under its heading.
pub(super) fn human(s: &Status) -> String {
    let mut out = String::new();
    if let Some(o) = &s.offline {
        let _ = writeln!(out, "offline: read from the pinned maps in {}", o.pin_dir);
        let _ = writeln!(out, "{}", o.names);
    }
    state_files(&mut out, &s.state_files);
    match &s.revision {
        Some(r) => {
            let _ = writeln!(
                out,
                "revision {} ({}, {}): {}",
                r.number, r.origin, r.time, r.summary
            );
        }
        None if s.offline.is_none() && s.state_files.held.is_none() => {
            out.push_str("no revision yet: apply a config (veer apply -f FILE)\n");
        }
        None => {}
    }
    if s.offline.is_none() {
        config(&mut out, &s.config);
        if let Some(src) = &s.source {
            source(&mut out, src);
        }
    }
    let _ = writeln!(
        out,
        "conntrack: {} of {} entries, new flows {} of {}",
        s.conntrack.entries,
        s.conntrack.capacity,
        s.conntrack.new_entries,
        s.conntrack.new_capacity
    );
    dataplane(&mut out, &s.dataplane);
    for svc in &s.services {
        let _ = writeln!(
            out,
            "\nservice {} {}/{}",
            svc.name,
            std::net::SocketAddr::new(svc.vip, svc.port),
            svc.protocol
        );
        let mut rows = Vec::new();
        for grp in &svc.groups {
            for (i, b) in grp.backends.iter().enumerate() {
                rows.push(vec![
                    if i == 0 {
                        grp.name.clone()
                    } else {
                        String::new()
                    },
                    if i == 0 {
                        format!("{}%", grp.weight)
                    } else {
                        String::new()
                    },
                    b.address.to_string(),
                    if b.healthy { "up" } else { "DOWN" }.to_owned(),
                    b.active_flows.to_string(),
                    b.new_flows.to_string(),
                    b.failed_flows.to_string(),
                    b.packets.to_string(),
                    b.bytes.to_string(),
                ]);
            }
            if grp.backends.is_empty() {
                rows.push(vec![
                    grp.name.clone(),
                    format!("{}%", grp.weight),
                    "-".into(),
                    "-".into(),
                    "0".into(),
                    "0".into(),
                    "0".into(),
                    "0".into(),
                    "0".into(),
                ]);
            }
        }
        out.push_str(&output::table(&TABLE, &rows));
        out.push('\n');
        for grp in &svc.groups {
            if let Some(d) = &grp.drain {
                let _ = writeln!(out, "drain {}: {}", grp.name, drain_line(grp, d));
            }
        }
        for p in &svc.pins {
            let _ = writeln!(out, "pin {} -> {}", p.prefix, p.group);
        }
    }
    out
}

/// A paced drain in force: how long until its deadline, or how it is ending the flows left.
fn drain_line(
    grp: &crate::api::protocol::GroupStatus,
    d: &crate::api::protocol::DrainStatus,
) -> String {
    match d.phase.as_str() {
        "waiting" => {
            // Whole seconds, rounded up: "in 0s" would say the deadline has passed.
            let left = std::time::Duration::from_secs(d.deadline_left_ms.div_ceil(1000));
            format!(
                "deadline in {} ({}), then flows left ended at {}; {} active",
                humantime::format_duration(left),
                d.ends_at,
                d.pace,
                grp.active_flows
            )
        }
        "ending" => format!(
            "ending flows at {} since {}; {} active left, {} ended",
            d.pace, d.ends_at, grp.active_flows, grp.ended_flows
        ),
        _ => format!(
            "done: no flow left after its deadline ({}); {} ended",
            d.ends_at, grp.ended_flows
        ),
    }
}

/// Interfaces (hook, mode, why), node settings and local clients.
fn dataplane(out: &mut String, d: &DataplaneStatus) {
    if !d.interfaces.is_empty() {
        let rows: Vec<Vec<String>> = d
            .interfaces
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    i.kind.clone(),
                    format!("{} {}", i.hook, i.mode),
                    if i.xdp_redirect_target { "yes" } else { "no" }.to_owned(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&output::table(
            &["INTERFACE", "KIND", "HOOK", "XDP REDIRECT TARGET"],
            &rows,
        ));
        out.push('\n');
        for i in &d.interfaces {
            let _ = writeln!(out, "  {}: {}", i.name, i.why);
            let _ = writeln!(out, "  {}: {}", i.name, i.xdp_redirect_why);
        }
    }
    if !d.node_settings.is_empty() {
        out.push_str("\nnode settings:\n");
        for n in &d.node_settings {
            let how = match &n.was {
                Some(was) => format!("set by veer, was {was}"),
                None => "ok".to_owned(),
            };
            let _ = writeln!(out, "  {} = {} ({how}): {}", n.key, n.value, n.why);
        }
    }
    let _ = writeln!(
        out,
        "\nclients on the node: {}: {}",
        if d.local_clients.steered {
            "steered"
        } else {
            "not steered"
        },
        d.local_clients.why
    );
}

/// The etcd source's lines: where, in sync or stale since when, the document in force, what was
/// refused, local changes over it.
fn source(out: &mut String, s: &SourceStatus) {
    let at = format!("source etcd {} {} (node {})", s.endpoints, s.prefix, s.node);
    let doc = s.config.as_ref().map_or_else(
        || "no config from etcd applied yet".to_owned(),
        |c| format!("{} mod revision {} in force", c.key, c.mod_revision),
    );
    let _ = match (&s.stale_since, s.ready) {
        (Some(since), _) => writeln!(
            out,
            "{at}: STALE since {since}: {}; the last applied state stays in force ({doc})",
            s.error.as_deref().unwrap_or("etcd unreachable")
        ),
        (None, false) => writeln!(
            out,
            "{at}: not synced yet; the last local revision stays in force"
        ),
        (None, true) => writeln!(out, "{at}: in sync at revision {}; {doc}", s.revision),
    };
    if let Some(r) = &s.refused {
        let _ = writeln!(out, "config in etcd REFUSED: {}", r.message);
    }
    for e in &s.errors {
        let _ = writeln!(out, "fleet: {}", e.message);
    }
    if !s.local_changes.is_empty() {
        let _ = writeln!(
            out,
            "local changes in force until the next change of the config in etcd: {}",
            s.local_changes.join("; ")
        );
    }
}

//! A `Config` written as a file: every setting explicit, in the layout `examples/veer.toml`
//! uses. `parse(to_toml(c)) == c` for every valid config, so tools and tests that need a file
//! build the config as data and write it here instead of pasting TOML.

use std::{fmt::Write as _, time::Duration};

use super::Config;
use crate::model::{CheckKind, DesiredState, HealthCheck, OnFailure, Plan, Service, XdpAttachMode};

/// `config` as the text of a config file.
pub fn to_toml(config: &Config) -> String {
    let mut out = String::new();
    let node = &config.node;
    let interfaces: Vec<String> = node.interfaces.iter().map(|i| quote(i)).collect();
    let mode = match node.xdp_mode {
        XdpAttachMode::Auto => "auto",
        XdpAttachMode::Native => "native",
        XdpAttachMode::Generic => "generic",
    };
    let t = &node.timeouts;
    // Infallible: writing into a String cannot fail.
    let _ = write!(
        out,
        "[node]\ninterfaces = [{}]\nxdp_mode = {}\nconntrack_max = {}\nconntrack_new_max = {}\n\n\
         [node.timeouts]\ntcp_syn = {}\ntcp_established = {}\ntcp_closing = {}\nudp = {}\n",
        interfaces.join(", "),
        quote(mode),
        node.conntrack_max,
        node.conntrack_new_max,
        duration(t.tcp_syn),
        duration(t.tcp_established),
        duration(t.tcp_closing),
        duration(t.udp),
    );
    if !node.hooks.is_empty() {
        out.push_str("\n[node.hooks]\n");
        for (name, choice) in &node.hooks {
            let _ = writeln!(out, "{} = {}", quote(name), quote(choice.as_str()));
        }
    }
    for s in &config.state.services {
        service(&mut out, s);
    }
    out
}

/// `state` as a fleet's config document (services only: `[node]` is local to each node).
/// `config::parse_fleet(key, services_to_toml(s)) == s` for every valid state.
pub fn services_to_toml(state: &DesiredState) -> String {
    let mut out = String::new();
    for s in &state.services {
        service(&mut out, s);
    }
    out.trim_start().to_owned()
}

fn service(out: &mut String, s: &Service) {
    let _ = write!(
        out,
        "\n[[service]]\nname = {}\nvip = {}\nport = {}\nprotocol = {}\n",
        quote(&s.name),
        quote(&s.vip.to_string()),
        s.port,
        quote(s.protocol.as_str()),
    );
    if let Some(h) = &s.health {
        health(out, h);
    }
    if let Some(p) = &s.rollout {
        rollout(out, p);
    }
    for g in &s.groups {
        let backends: Vec<String> = g
            .backends
            .iter()
            .map(|b| quote(&b.addr.to_string()))
            .collect();
        let _ = write!(
            out,
            "\n[[service.group]]\nname = {}\nweight = {}\nbackends = [{}]\n",
            quote(&g.name),
            g.weight,
            backends.join(", "),
        );
    }
    for p in &s.pins {
        let _ = write!(
            out,
            "\n[[service.pin]]\nprefix = {}\ngroup = {}\n",
            quote(&format!("{}/{}", p.prefix, p.len)),
            quote(&p.group),
        );
    }
}

fn health(out: &mut String, h: &HealthCheck) {
    out.push_str("\n[service.health]\n");
    match &h.kind {
        CheckKind::Tcp => out.push_str("kind = \"tcp\"\n"),
        CheckKind::Http {
            path,
            expect_status,
        } => {
            let _ = write!(
                out,
                "kind = \"http\"\npath = {}\nexpect_status = {expect_status}\n",
                quote(path)
            );
        }
    }
    let _ = write!(
        out,
        "interval = {}\ntimeout = {}\nrise = {}\nfall = {}\n",
        duration(h.interval),
        duration(h.timeout),
        h.rise,
        h.fall,
    );
}

fn rollout(out: &mut String, p: &Plan) {
    let steps: Vec<String> = p.steps.iter().map(ToString::to_string).collect();
    let gates: Vec<String> = p.gates.iter().map(|g| quote(&g.to_string())).collect();
    let on_failure = match p.on_failure {
        OnFailure::Rollback => "rollback",
        OnFailure::StepBack => "step-back",
    };
    let _ = write!(
        out,
        "\n[service.rollout]\nto = {}\nsteps = [{}]\npause = {}\nmax_failure_rate = {}\n\
         min_flows = {}\ngates = [{}]\ngate_timeout = {}\non_failure = {}\nhold_on_restart = {}\n",
        quote(&p.to),
        steps.join(", "),
        duration(p.pause),
        quote(&format!("{}%", p.max_failure_rate)),
        p.min_flows,
        gates.join(", "),
        duration(p.gate_timeout),
        quote(on_failure),
        p.hold_on_restart,
    );
    if let Some(t) = &p.judge {
        let _ = write!(
            out,
            "judge = true\nmax_latency_increase = {}\nlatency_slack = {}\nmax_failure_increase = {}\n\
             confidence = {}\nmin_sample = {}\n",
            quote(&t.max_latency_increase.to_string()),
            duration(t.latency_slack),
            quote(&t.max_failure_increase.to_string()),
            quote(&t.confidence.to_string()),
            t.min_sample,
        );
    }
    if let Some(d) = &p.drain {
        let _ = write!(
            out,
            "drain_deadline = {}\ndrain_pace = {}\n",
            duration(d.deadline),
            quote(&d.pace.to_string()),
        );
    }
}

fn duration(d: Duration) -> String {
    quote(&humantime::format_duration(d).to_string())
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

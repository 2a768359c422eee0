//! Desired states for unit tests across the crate (model, config, control, store), built as
//! values: one place for the services every test starts from.

use super::{Backend, DesiredState, Group, Protocol, Service, Weight};

/// A weight from a percentage.
pub(crate) fn w(text: &str) -> Weight {
    Weight::from_percent_str(text).unwrap()
}

/// A group.
pub(crate) fn group(name: &str, weight: &str, backends: &[&str]) -> Group {
    Group {
        name: name.into(),
        weight: w(weight),
        backends: backends
            .iter()
            .map(|b| Backend {
                addr: b.parse().unwrap(),
            })
            .collect(),
    }
}

/// A TCP service on port 80.
pub(crate) fn service(name: &str, vip: &str, groups: Vec<Group>) -> Service {
    Service {
        name: name.into(),
        vip: vip.parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
        groups,
        pins: vec![],
        health: None,
        rollout: None,
    }
}

/// `web` at 192.0.2.10:80/tcp: v1 (100) on 198.51.100.11:8080, v2 (0) on 198.51.100.21:8080.
pub(crate) fn web() -> DesiredState {
    DesiredState {
        services: vec![service(
            "web",
            "192.0.2.10",
            vec![
                group("v1", "100", &["198.51.100.11:8080"]),
                group("v2", "0", &["198.51.100.21:8080"]),
            ],
        )],
    }
}

/// `web` (IPv4) and `web6` (IPv6 at `2001:db8::10`), each over v1 (100) and v2 (0).
pub(crate) fn dual_stack() -> DesiredState {
    let mut state = web();
    state.services.push(service(
        "web6",
        "2001:db8::10",
        vec![
            group("v1", "100", &["[2001:db8:b::11]:8080"]),
            group("v2", "0", &["[2001:db8:b::21]:8080"]),
        ],
    ));
    state
}

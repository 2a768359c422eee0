//! The VIPs each backend serves (`VEER_BE_VIPS`): what a reply needs to find its flow. Written
//! from the desired state before any table can send a flow to a backend, and kept for removed
//! services while flows of theirs live, so a live flow's reply always finds its VIP.

use std::collections::BTreeMap;

use veer_common::{
    addr::{addr_words, family_of},
    flow::{BackendKey, RevNatValue},
};

use crate::model::{DesiredState, Ids};

/// VIPs per backend, in the order replies try them, with the service id of each.
pub type Vips = BTreeMap<BackendKey, Vec<(RevNatValue, u32)>>;

/// The VIPs every backend of `state` serves (services in order; one entry per VIP and port,
/// also when a backend is in several groups of a service).
pub fn desired(state: &DesiredState, ids: &Ids) -> Vips {
    let mut out = Vips::new();
    for s in &state.services {
        let vip = RevNatValue {
            vip: addr_words(s.vip),
            port: s.port.to_be(),
            _pad: [0; 2],
        };
        let id = ids.services.get(&s.name).copied().unwrap_or(0);
        for g in &s.groups {
            for b in &g.backends {
                let key = BackendKey {
                    addr: addr_words(b.addr.ip()),
                    port: b.addr.port().to_be(),
                    proto: s.protocol.number(),
                    family: family_of(b.addr.ip()),
                };
                let list = out.entry(key).or_default();
                if !list.iter().any(|(v, _)| *v == vip) {
                    list.push((vip, id));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, Group, Protocol, Service, Weight};

    fn service(name: &str, vip: &str, port: u16, backends: &[&str]) -> Service {
        Service {
            name: name.into(),
            vip: vip.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
            groups: vec![
                Group {
                    name: "v1".into(),
                    weight: Weight::FULL,
                    backends: backends
                        .iter()
                        .map(|a| Backend {
                            addr: a.parse().unwrap(),
                        })
                        .collect(),
                },
                Group {
                    name: "v2".into(),
                    weight: Weight::from_percent_str("0").unwrap(),
                    backends: vec![Backend {
                        addr: backends[0].parse().unwrap(),
                    }],
                },
            ],
            pins: vec![],
            health: None,
            rollout: None,
        }
    }

    #[test]
    fn a_shared_backend_serves_each_of_its_services_once() {
        let state = DesiredState {
            services: vec![
                service("a", "192.0.2.10", 80, &["198.51.100.11:8080"]),
                service(
                    "b",
                    "192.0.2.11",
                    80,
                    &["198.51.100.11:8080", "198.51.100.12:8080"],
                ),
            ],
        };
        let mut ids = Ids::default();
        ids.services.insert("a".into(), 1);
        ids.services.insert("b".into(), 2);
        let v = desired(&state, &ids);
        assert_eq!(v.len(), 2);
        let shared = &v[&BackendKey {
            addr: addr_words("198.51.100.11".parse().unwrap()),
            port: 8080u16.to_be(),
            proto: veer_common::PROTO_TCP,
            family: veer_common::FAMILY_V4,
        }];
        assert_eq!(
            shared.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
            [1, 2],
            "one entry per service, in service order, though a is listed in two groups"
        );
        assert_eq!(shared[1].0.vip, addr_words("192.0.2.11".parse().unwrap()));
    }
}

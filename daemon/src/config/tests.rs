//! The config file's messages, each with its `file:line:column`, over files written by `render`
//! from model values (no TOML pasted here but the examples that must fail to parse).

use std::{path::Path, time::Duration};

use super::{Config, parse, to_toml};
use crate::model::{
    CheckKind, HealthCheck, HookChoice, NodeConfig, Pin, Plan, Protocol, Timeouts, XdpAttachMode,
    drain::{DrainEnd, Pace},
    fixtures::{group, service, w, web},
    tolerance::{Percent, Tolerances},
};

/// `web` at 192.0.2.10:80/tcp: v1 (100) on two backends, v2 (0) on one; attached to eth0.
fn good() -> Config {
    let mut state = web();
    state.services[0].groups[0] = group("v1", "100", &["198.51.100.11:8080", "198.51.100.12:8080"]);
    Config {
        node: NodeConfig {
            interfaces: vec!["eth0".into()],
            ..NodeConfig::default()
        },
        state,
    }
}

fn good_text() -> String {
    to_toml(&good())
}

fn error(text: &str) -> String {
    parse(Path::new("veer.toml"), text).unwrap_err().to_string()
}

#[test]
fn the_shipped_example_is_valid() {
    let c = parse(
        Path::new("examples/veer.toml"),
        include_str!("../../../examples/veer.toml"),
    )
    .unwrap();
    assert_eq!(c.state.services[0].pins.len(), 1);
    // The example writes the defaults out: they must be the model's.
    assert_eq!(c.node.timeouts, Timeouts::default());
    assert_eq!(c.state.services[0].rollout, Some(Plan::to("v2")));
    assert_eq!(
        c.state.services[0].health,
        Some(HealthCheck::new(CheckKind::Http {
            path: "/healthz".into(),
            expect_status: HealthCheck::DEFAULT_EXPECT_STATUS,
        }))
    );
    assert_eq!(parse(Path::new("x"), &to_toml(&c)).unwrap(), c);
}

#[test]
fn a_written_config_reads_back_as_itself() {
    let mut c = good();
    c.node.interfaces.push("veth-\"odd\"".into());
    c.node.xdp_mode = XdpAttachMode::Generic;
    c.node.hooks.insert("veth-\"odd\"".into(), HookChoice::Xdp);
    c.node.hooks.insert("eth0".into(), HookChoice::Tc);
    c.node.conntrack_max = 65_536;
    c.node.timeouts.tcp_closing = Duration::from_hours(1);
    c.node.timeouts.udp = Duration::from_millis(1500);
    let web = &mut c.state.services[0];
    web.groups[0].weight = w("87.5");
    web.groups[1].weight = w("12.5");
    web.pins.push(Pin {
        prefix: "203.0.113.0".parse().unwrap(),
        len: 24,
        group: "v2".into(),
    });
    web.health = Some(HealthCheck::new(CheckKind::Http {
        path: "/healthz".into(),
        expect_status: 204,
    }));
    let mut plan = Plan::to("v2");
    plan.steps = vec![w("10"), w("100")];
    plan.max_failure_rate = w("0.5");
    plan.gates = vec![
        "exec:test -f /run/ok".parse().unwrap(),
        "prometheus:http://127.0.0.1:9090 up >= 1".parse().unwrap(),
    ];
    plan.hold_on_restart = true;
    plan.judge = Some(Tolerances {
        max_latency_increase: Percent::from_basis_points(1_250),
        latency_slack: Duration::from_micros(250),
        max_failure_increase: Percent::from_basis_points(5_000),
        confidence: Percent::from_basis_points(9_990),
        min_sample: 40,
    });
    plan.drain = Some(DrainEnd {
        deadline: Duration::from_secs(90),
        pace: "30/m".parse().unwrap(),
    });
    web.rollout = Some(plan);
    let mut web6 = web.clone();
    web6.name = "web6".into();
    web6.vip = "2001:db8::10".parse().unwrap();
    web6.protocol = Protocol::Udp;
    web6.groups = vec![
        group("v1", "100", &["[2001:db8:b::11]:53"]),
        group("v2", "0", &["[2001:db8:b::21]:53"]),
    ];
    web6.pins = vec![Pin {
        prefix: "2001:db8:c::".parse().unwrap(),
        len: 48,
        group: "v1".into(),
    }];
    web6.health = Some(HealthCheck::new(CheckKind::Tcp));
    web6.rollout = None;
    c.state.services.push(web6);
    assert_eq!(parse(Path::new("x"), &to_toml(&c)), Ok(c));
}

/// (what in the good file, replaced by what, the message).
const MISTAKES: &[(&str, &str, &str)] = &[
    (
        "weight = 100",
        "weight = 120",
        "veer.toml:21:10: service `web`, group `v1`, `weight`: 120 is out of range 0..=100",
    ),
    (
        "weight = 0\n",
        "weight = 0.001\n",
        "veer.toml:26:10: service `web`, group `v2`, `weight`: `0.001` is not a percentage with at most two decimals (e.g. 90, 12.5, 0.01)",
    ),
    (
        "port = 80",
        "port = 80\ncolour = \"red\"",
        "veer.toml:17:1: unknown key `colour` in [[service]]",
    ),
    (
        "vip = \"192.0.2.10\"",
        "vip = \"192.0.2.300\"",
        "veer.toml:15:7: `vip`: `192.0.2.300` is not an IPv4 or IPv6 address",
    ),
    (
        "vip = \"192.0.2.10\"",
        "vip = \"224.0.0.1\"",
        "veer.toml:15:7: service `web`: VIP 224.0.0.1 is not a unicast address",
    ),
    (
        "protocol = \"tcp\"",
        "protocol = \"sctp\"",
        "veer.toml:17:12: `protocol`: `sctp` is not one of tcp, udp",
    ),
    (
        "\"198.51.100.21:8080\"]",
        "\"[2001:db8::21]:8080\"]",
        "veer.toml:27:13: service `web`, group `v2`: backend [2001:db8::21]:8080 is not of the VIP's address family (192.0.2.10); veer does not translate between IPv4 and IPv6",
    ),
    (
        "name = \"v2\"",
        "name = \"v1\"",
        "veer.toml:25:8: service `web`: group `v1` is defined twice (first on line 20)",
    ),
    (
        "name = \"v2\"",
        "name = \"v 2\"",
        "veer.toml:25:8: group name `v 2` is not valid (1 to 64 characters of A-Z a-z 0-9 _ - .)",
    ),
    (
        "\"198.51.100.12:8080\"]",
        "\"198.51.100.11:8080\"]",
        "veer.toml:22:35: service `web`, group `v1`: backend 198.51.100.11:8080 is listed twice (first on line 22)",
    ),
    (
        "backends = [\"198.51.100.11:8080\", \"198.51.100.12:8080\"]",
        "backends = []",
        "veer.toml:21:10: service `web`, group `v1` has weight 100 but no backends; give it backends or weight 0",
    ),
    (
        "xdp_mode = \"auto\"",
        "xdp_mode = \"fast\"",
        "veer.toml:3:12: `xdp_mode`: `fast` is not one of auto, native, generic",
    ),
    (
        "port = 80",
        "port = 0",
        "veer.toml:16:8: service `web`: port 0 is not a valid service port",
    ),
    (
        "port = 80",
        "port = 70000",
        "veer.toml:16:8: `port`: 70000 is out of range 1..=65535",
    ),
    (
        "conntrack_max = 1048576",
        "conntrack_max = 100",
        "veer.toml:4:17: conntrack_max 100 is out of range 1024..=67108864",
    ),
    (
        "conntrack_new_max = 65536",
        "conntrack_new_max = 100",
        "veer.toml:5:21: conntrack_new_max 100 is out of range 1024..=67108864",
    ),
    (
        "tcp_established = \"1h\"",
        "tcp_established = \"21days\"",
        "veer.toml:9:19: [node.timeouts] tcp_established 21days is longer than the 20days maximum (flow entries keep time in 32-bit ticks of about a millisecond)",
    ),
    (
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\", \"eth1\", \"eth0\"]",
        "veer.toml:2:31: interface `eth0` is named twice (first on line 2)",
    ),
    (
        "udp = \"1m\"",
        "udp = \"500ms\"",
        "veer.toml:11:7: [node.timeouts] udp 500ms is shorter than the 1s minimum",
    ),
    (
        "udp = \"1m\"",
        "udp = \"soon\"",
        "veer.toml:11:7: `udp`: `soon` is not a duration (e.g. \"30s\", \"1h\", \"500ms\")",
    ),
];

#[test]
fn each_mistake_names_file_line_field_and_reason() {
    let good = good_text();
    for (from, to, expected) in MISTAKES {
        assert!(good.contains(from), "{from}");
        assert_eq!(
            &error(&good.replacen(from, to, 1)),
            expected,
            "{from} -> {to}"
        );
    }
}

#[test]
fn two_services_on_one_endpoint_or_name_are_refused() {
    let good = good_text();
    let service = &good[good.find("[[service]]").unwrap()..];
    let twice = format!("{good}\n{}", service.replace("\"web\"", "\"web2\""));
    assert_eq!(
        error(&twice),
        "veer.toml:29:1: service `web2` uses 192.0.2.10:80/tcp, already used by service `web` (first on line 13)"
    );
    let same_name = format!("{good}\n{}", service.replace("port = 80", "port = 81"));
    assert_eq!(
        error(&same_name),
        "veer.toml:30:8: service `web` is defined twice (first on line 14)"
    );
}

#[test]
fn pins_are_checked() {
    let pin = |p: &str, g: &str| {
        format!(
            "{}\n[[service.pin]]\nprefix = \"{p}\"\ngroup = \"{g}\"\n",
            good_text()
        )
    };
    assert!(parse(Path::new("veer.toml"), &pin("203.0.113.0/24", "v2")).is_ok());
    assert_eq!(
        error(&pin("203.0.113.1/24", "v2")),
        "veer.toml:30:10: `prefix`: `203.0.113.1/24` is not a network prefix with its host bits zero (e.g. \"203.0.113.0/24\"), or one address"
    );
    assert_eq!(
        error(&pin("203.0.113.0/24", "v9")),
        "veer.toml:31:9: service `web`: pin 203.0.113.0/24 names group `v9`, which the service does not have"
    );
    assert_eq!(
        error(&pin("2001:db8::/32", "v2")),
        "veer.toml:30:10: service `web`: pin prefix 2001:db8::/32 is not of the VIP's address family (192.0.2.10)"
    );
    // A bare address where a prefix is expected is one host.
    let one = parse(Path::new("veer.toml"), &pin("203.0.113.7", "v2")).unwrap();
    assert_eq!(
        (
            one.state.services[0].pins[0].prefix,
            one.state.services[0].pins[0].len
        ),
        ("203.0.113.7".parse().unwrap(), 32)
    );
}

#[test]
fn syntax_errors_are_located() {
    assert!(
        error("[node\n").starts_with("veer.toml:1:"),
        "{}",
        error("[node\n")
    );
    assert_eq!(
        error("[[service]]\nname = \"web\"\n"),
        "veer.toml:1:1: [[service]] has no `vip`\nveer.toml:1:1: [[service]] has no `port`\n\
         veer.toml:1:1: [[service]] has no `protocol`"
    );
}

#[test]
fn a_declared_rollout_and_a_health_check_take_their_defaults_and_are_checked() {
    let with = |extra: &str| {
        good_text().replacen(
            "protocol = \"tcp\"\n",
            &format!("protocol = \"tcp\"\n{extra}"),
            1,
        )
    };
    let c = parse(
        Path::new("veer.toml"),
        &with("[service.rollout]\nto = \"v2\"\nsteps = [10, 50, 100]\npause = \"5s\"\nmax_failure_rate = \"0.5%\"\ngates = [\"exec:true\"]\n[service.health]\nkind = \"http\"\npath = \"/ready\"\n"),
    )
    .unwrap();
    let plan = c.state.services[0].rollout.clone().unwrap();
    assert_eq!(
        plan.steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10", "50", "100"]
    );
    assert_eq!(plan.max_failure_rate.basis_points(), 50);
    assert_eq!(plan.pause, Duration::from_secs(5));
    assert_eq!(
        (plan.min_flows, plan.gate_timeout),
        (Plan::DEFAULT_MIN_FLOWS, Plan::DEFAULT_GATE_TIMEOUT)
    );
    let h = c.state.services[0].health.clone().unwrap();
    assert_eq!((h.rise, h.fall, h.interval), (2, 3, Duration::from_secs(2)));
    let defaults = parse(
        Path::new("veer.toml"),
        &with("[service.rollout]\nto = \"v2\"\n"),
    )
    .unwrap();
    assert_eq!(
        defaults.state.services[0].rollout,
        Some(Plan::to("v2")),
        "the plan's defaults are the CLI's"
    );
    assert_eq!(
        error(&with("[service.rollout]\nto = \"v3\"\n")),
        "veer.toml:19:6: service `web` has no group `v3`"
    );
    assert_eq!(
        error(&with("[service.rollout]\nto = \"v2\"\nsteps = [50, 10]\n")),
        "veer.toml:20:9: rollout steps must increase strictly and end at 100 (got 50,10)"
    );
    assert_eq!(
        error(&with("[service.rollout]\nto = \"v2\"\npause = \"10ms\"\n")),
        "veer.toml:20:9: rollout pause 10ms is shorter than the 1s minimum"
    );
    assert!(
        error(&with("[service.health]\nkind = \"icmp\"\n"))
            .contains("`kind`: `icmp` is not one of tcp, http")
    );
    assert_eq!(
        error(&with(
            "[service.health]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\"\n"
        )),
        "veer.toml:21:11: service `web`, health check: timeout 2s must be at most the interval (1s)"
    );
    // A default breaking a rule is reported at the table that left it out.
    assert_eq!(
        error(&with(
            "[service.health]\nkind = \"tcp\"\ninterval = \"500ms\"\n"
        )),
        "veer.toml:18:1: service `web`, health check: timeout 1s must be at most the interval (500ms)"
    );
}

#[test]
fn timeouts_parse() {
    let mut c = good();
    c.node.timeouts.udp = Duration::from_secs(30);
    c.node.timeouts.tcp_established = Duration::from_hours(2);
    let back = parse(Path::new("veer.toml"), &to_toml(&c)).unwrap();
    assert_eq!(back.node.timeouts.udp, Duration::from_secs(30));
    assert_eq!(back.node.timeouts.tcp_established, Duration::from_hours(2));
}

#[test]
fn a_timeout_of_up_to_twenty_days_is_taken() {
    let mut c = good();
    c.node.timeouts.tcp_established = Duration::from_hours(480);
    let back = parse(Path::new("veer.toml"), &to_toml(&c)).unwrap();
    assert_eq!(
        back.node.timeouts.tcp_established,
        Duration::from_hours(480)
    );
    c.node.timeouts.udp = Duration::from_hours(480) + Duration::from_secs(1);
    assert_eq!(
        error(&to_toml(&c)),
        "veer.toml:11:7: [node.timeouts] udp 20days 1s is longer than the 20days maximum (flow entries keep time in 32-bit ticks of about a millisecond)"
    );
}

#[test]
fn a_backend_in_five_services_is_refused_where_the_fifth_is() {
    let mut c = good();
    c.state.services = (1..=5)
        .map(|i| {
            service(
                &format!("web{i}"),
                &format!("192.0.2.{i}"),
                vec![group("v1", "100", &["198.51.100.11:8080"])],
            )
        })
        .collect();
    let text = to_toml(&c);
    let e = error(&text);
    // The fifth `[[service]]` header is the line before its name (lines count from 1).
    let header = text.lines().position(|l| l == "name = \"web5\"").unwrap();
    assert_eq!(
        e,
        format!(
            "veer.toml:{header}:1: backend 198.51.100.11:8080/tcp serves 5 services (web1, web2, web3, web4, web5); at most 4 services can share a backend address and port"
        ),
        "points at the fifth service (line {header})"
    );
}

#[test]
fn both_flow_tables_are_sized_in_node() {
    let mut c = good();
    c.node.conntrack_max = 4096;
    c.node.conntrack_new_max = 2048;
    let back = parse(Path::new("veer.toml"), &to_toml(&c)).unwrap();
    assert_eq!(
        (back.node.conntrack_max, back.node.conntrack_new_max),
        (4096, 2048)
    );
    let text = good_text().replace("conntrack_new_max = 65536\n", "");
    assert_eq!(
        parse(Path::new("veer.toml"), &text)
            .unwrap()
            .node
            .conntrack_new_max,
        veer_common::maps::DEFAULT_NEWFLOWS_MAX
    );
    assert_eq!(
        error(&good_text().replace("conntrack_new_max = 65536", "conntrack_new_max = -1")),
        "veer.toml:5:21: `conntrack_new_max`: -1 is out of range 1024..=67108864"
    );
}

#[test]
fn node_hooks_override_interfaces_named_in_interfaces() {
    let mut c = good();
    c.node.interfaces.push("eth0.100".into());
    c.node.hooks.insert("eth0.100".into(), HookChoice::Tc);
    let text = to_toml(&c);
    assert!(
        text.contains("\n[node.hooks]\n\"eth0.100\" = \"tc\"\n"),
        "{text}"
    );
    let back = parse(Path::new("veer.toml"), &text).unwrap();
    assert_eq!(back.node.hook_choice("eth0.100"), HookChoice::Tc);
    assert_eq!(back.node.hook_choice("eth0"), HookChoice::Auto);
    assert_eq!(back, c);
    let line = |text: &str, key: &str| text.lines().position(|l| l.starts_with(key)).unwrap() + 1;
    let bad = text.replace("\"eth0.100\" = \"tc\"", "\"eth0.100\" = \"fast\"");
    assert_eq!(
        error(&bad),
        format!(
            "veer.toml:{}:14: `hooks`: `fast` is not one of auto, xdp, tc",
            line(&bad, "\"eth0.100\"")
        )
    );
    let unknown = text.replace("\"eth0.100\" = \"tc\"", "eth9 = \"xdp\"");
    assert_eq!(
        error(&unknown),
        format!(
            "veer.toml:{}:8: `hooks`: interface `eth9` is not in `interfaces`",
            line(&unknown, "eth9")
        )
    );
}

/// Every kind of problem the config layer can report, each as a file that has it; for every
/// message: it names the key and says what the key expects, and no serde or parser internals
/// leak. The match in `kind` lists every variant, so a new one must be added here.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one example file per kind of message, listed where they are checked"
)]
fn every_message_names_its_key_and_what_it_expects() {
    use super::ConfigErrorKind as K;
    use crate::model::StateError as S;

    /// Which kind of problem (`None`: a rule the file cannot break, see below).
    fn kind(k: &K) -> Option<&'static str> {
        Some(match k {
            K::Syntax { .. } => "syntax",
            K::UnknownKey { .. } => "unknown key",
            K::MissingKey { .. } => "missing key",
            K::WrongType { .. } => "wrong type",
            K::OutOfRange { .. } => "out of range",
            K::BadChoice { .. } => "bad choice",
            K::BadValue { .. } => "bad value",
            K::BadWeight { .. } => "bad weight",
            K::BadRollout { .. } => "bad rollout value",
            K::Misplaced { .. } => "misplaced",
            K::Invalid { source, .. } => match source.error {
                S::BadName { .. } => "bad name",
                S::DuplicateService { .. } => "duplicate service",
                S::DuplicateEndpoint { .. } => "duplicate endpoint",
                S::BadVip { .. } => "bad vip",
                S::PortZero { .. } => "port 0",
                S::NoGroups { .. } => "no groups",
                S::TooManyGroups { .. } => "too many groups",
                S::DuplicateGroup { .. } => "duplicate group",
                S::BackendPortZero { .. } => "backend port 0",
                S::FamilyMismatch { .. } => "family mismatch",
                S::DuplicateBackend { .. } => "duplicate backend",
                S::WeightWithoutBackends { .. } => "weight without backends",
                S::PinFamilyMismatch { .. } => "pin family",
                // The file's prefixes are parsed with their host bits checked first
                // (`BadValue`): the model's own check cannot be reached from a file.
                S::BadPin { .. } => return None,
                S::PinUnknownGroup { .. } => "pin unknown group",
                S::DuplicatePin { .. } => "duplicate pin",
                S::BadHealthCheck { .. } => "bad health check",
                S::BadRollout { .. } => "bad rollout",
                S::BadInterface { .. } => "bad interface",
                S::DuplicateInterface { .. } => "duplicate interface",
                S::HookForUnknownInterface { .. } => "hook for unknown interface",
                S::FlowTableSize { .. } => "flow table size",
                S::BackendInTooManyServices { .. } => "backend in too many services",
                S::TimeoutTooShort { .. } => "timeout too short",
                S::TimeoutTooLong { .. } => "timeout too long",
                S::TooMany { .. } => "too many",
            },
        })
    }
    let good = good_text();
    let edit = |from: &str, to: &str| {
        assert!(good.contains(from), "{from}");
        good.replacen(from, to, 1)
    };
    let group9 = (3..=9)
        .map(|i| format!("\n[[service.group]]\nname = \"g{i}\"\nweight = 0\n"))
        .collect::<Vec<_>>()
        .concat();
    let pin =
        |p: &str, g: &str| format!("{good}\n[[service.pin]]\nprefix = \"{p}\"\ngroup = \"{g}\"\n");
    let with = |extra: &str| {
        edit(
            "protocol = \"tcp\"\n",
            &format!("protocol = \"tcp\"\n{extra}"),
        )
    };
    let files: Vec<String> = vec![
        "[node\n".into(),
        edit("port = 80", "port = 80\nwieght = 1"),
        "[[service]]\nname = \"web\"\n".into(),
        edit("weight = 100", "weight = \"100%\""),
        edit("port = 80", "port = 70000"),
        edit("protocol = \"tcp\"", "protocol = \"tpc\""),
        edit("vip = \"192.0.2.10\"", "vip = \"192.0.2.300\""),
        edit("weight = 100", "weight = 100.001"),
        with("[service.rollout]\nto = \"v2\"\nsteps = [10, 250]\n"),
        edit("name = \"v2\"", "name = \"v 2\""),
        format!(
            "{good}\n{}",
            &good[good.find("[[service]]").unwrap()..].replace("port = 80", "port = 81")
        ),
        format!(
            "{good}\n{}",
            &good[good.find("[[service]]").unwrap()..].replace("\"web\"", "\"web2\"")
        ),
        edit("vip = \"192.0.2.10\"", "vip = \"224.0.0.1\""),
        edit("port = 80", "port = 0"),
        good[..good.find("\n[[service.group]]").unwrap()].to_owned(),
        format!("{good}{group9}"),
        edit("name = \"v2\"", "name = \"v1\""),
        edit("\"198.51.100.21:8080\"]", "\"198.51.100.21:0\"]"),
        edit("\"198.51.100.21:8080\"]", "\"[2001:db8::21]:8080\"]"),
        edit("\"198.51.100.12:8080\"]", "\"198.51.100.11:8080\"]"),
        edit(
            "backends = [\"198.51.100.11:8080\", \"198.51.100.12:8080\"]",
            "backends = []",
        ),
        pin("2001:db8::/32", "v2"),
        pin("203.0.113.0/24", "v9"),
        format!(
            "{}\n[[service.pin]]\nprefix = \"203.0.113.0/24\"\ngroup = \"v1\"\n",
            pin("203.0.113.0/24", "v2")
        ),
        with("[service.health]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\"\n"),
        with("[service.rollout]\nto = \"v3\"\n"),
        edit("interfaces = [\"eth0\"]", "interfaces = [\"eth/0\"]"),
        edit(
            "interfaces = [\"eth0\"]",
            "interfaces = [\"eth0\", \"eth0\"]",
        ),
        edit("conntrack_max = 1048576", "conntrack_max = 100"),
        edit("udp = \"1m\"", "udp = \"500ms\""),
        edit("udp = \"1m\"", "udp = \"21d\""),
        format!("{good}\n[node.hooks]\neth9 = \"xdp\"\n"),
        // Five services on the same backends.
        (1..5).fold(good.clone(), |mut text, i| {
            let service = &good[good.find("[[service]]").unwrap()..];
            text.push('\n');
            text.push_str(
                &service
                    .replace("\"web\"", &format!("\"web{i}\""))
                    .replace("port = 80", &format!("port = {}", 1000 + i)),
            );
            text
        }),
        // Services beside an etcd source.
        format!("{good}\n[source]\nkind = \"etcd\"\n"),
        // One service more than VEER_SERVICES holds.
        (1..veer_common::maps::MAX_SERVICES).fold(good.clone(), |mut text, i| {
            let service = &good[good.find("[[service]]").unwrap()..];
            text.push('\n');
            text.push_str(
                &service
                    .replace("\"web\"", &format!("\"web{i}\""))
                    .replace("port = 80", &format!("port = {}", 1000 + i)),
            );
            text
        }),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for text in &files {
        let errors = parse(Path::new("veer.toml"), text).unwrap_err();
        let rendered = errors.render();
        for e in &errors.errors {
            let message = e.to_string();
            for internal in [
                "untagged enum",
                "did not match any variant",
                "invalid type:",
                "serde",
            ] {
                assert!(!message.contains(internal), "serde leaks into {message:?}");
            }
            let key = e.kind.key();
            let expected = e.kind.expected();
            assert!(
                !expected.is_empty(),
                "{message}: says nothing of what is expected"
            );
            assert!(
                rendered.contains(&expected) || message.contains(&expected),
                "{rendered}"
            );
            if matches!(e.kind, K::Syntax { .. }) {
                assert!(
                    expected.starts_with("expected") || expected == "valid TOML",
                    "{message}"
                );
            } else {
                assert!(!key.is_empty(), "{message}: names no key");
                assert!(rendered.contains(&key), "{rendered}: does not show `{key}`");
            }
            assert!(
                rendered.contains(&format!("{} | ", e.location.line)),
                "{rendered}: no source line"
            );
            assert!(rendered.contains('^'), "{rendered}: no caret");
            seen.extend(kind(&e.kind));
        }
    }
    let all = [
        "syntax",
        "unknown key",
        "missing key",
        "wrong type",
        "out of range",
        "bad choice",
        "bad value",
        "bad weight",
        "bad rollout value",
        "misplaced",
        "bad name",
        "duplicate service",
        "duplicate endpoint",
        "bad vip",
        "port 0",
        "no groups",
        "too many groups",
        "duplicate group",
        "backend port 0",
        "family mismatch",
        "duplicate backend",
        "weight without backends",
        "pin family",
        "pin unknown group",
        "duplicate pin",
        "bad health check",
        "bad rollout",
        "bad interface",
        "duplicate interface",
        "hook for unknown interface",
        "flow table size",
        "backend in too many services",
        "timeout too short",
        "timeout too long",
        "too many",
    ];
    let missing: Vec<&&str> = all.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "no example file shows {missing:?}");
}

#[test]
fn every_problem_of_a_file_is_reported_at_once_with_suggestions() {
    let good = good_text();
    let text = good
        .replacen("protocol = \"tcp\"", "protocol = \"tpc\"", 1)
        .replacen("weight = 100", "wieght = 100", 1)
        .replacen("weight = 0\n", "weight = \"0%\"\n", 1)
        .replacen("udp = \"1m\"", "udp = 60", 1);
    let errors = parse(Path::new("veer.toml"), &text).unwrap_err();
    let lines: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "veer.toml:11:7: `udp`: expected a duration in quotes, e.g. \"30s\", \"1h\", \"500ms\", found the integer 60; write `udp = \"60s\"` for 60 seconds",
            "veer.toml:17:12: `protocol`: `tpc` is not one of tcp, udp; did you mean `tcp`?",
            "veer.toml:21:1: unknown key `wieght` in [[service.group]]; did you mean `weight`?",
            "veer.toml:26:10: `weight`: expected a number: the group's share of new flows in percent (e.g. 90, 12.5), found the string \"0%\"; write `weight = 0` (a number, without quotes or %)",
        ]
    );
    let rendered = errors.render();
    assert!(
        rendered.contains(
            "21 | wieght = 100\n   | ^^^^^^ `wieght`: expected one of `name`, `weight`, `backends`"
        ),
        "{rendered}"
    );
    assert!(
        rendered.ends_with("4 errors in veer.toml; nothing was applied"),
        "{rendered}"
    );
}

/// `good_text()` with `[service.rollout]` to v2 and `lines` under it (the first of them on
/// line 20).
fn judged(lines: &str) -> String {
    good_text().replacen(
        "protocol = \"tcp\"\n",
        &format!("protocol = \"tcp\"\n[service.rollout]\nto = \"v2\"\n{lines}"),
        1,
    )
}

#[test]
fn a_declared_rollout_says_the_judge_and_the_drain_as_the_cli_does() {
    let plan = |lines: &str| {
        parse(Path::new("veer.toml"), &judged(lines))
            .unwrap()
            .state
            .services[0]
            .rollout
            .clone()
            .unwrap()
    };
    // No judge and no drain unless asked, as `rollout start` without the options.
    assert_eq!(plan(""), Plan::to("v2"));
    assert_eq!(plan("judge = false\n"), Plan::to("v2"));
    // `judge = true` alone: every tolerance at its default (the CLI's `--judge`).
    assert_eq!(plan("judge = true\n").judge, Some(Tolerances::DEFAULT));
    // Any option turns the judge on, the others at their defaults (as the CLI's options do).
    assert_eq!(
        plan("confidence = \"99%\"\n").judge,
        Some(Tolerances {
            confidence: Percent::from_basis_points(9_900),
            ..Tolerances::DEFAULT
        })
    );
    // Percentages as the file writes them elsewhere: a number, or a string with `%`.
    assert_eq!(
        plan("max_latency_increase = 12.5\nmax_failure_increase = \"50%\"\nmin_sample = 30\n")
            .judge,
        Some(Tolerances {
            max_latency_increase: Percent::from_basis_points(1_250),
            max_failure_increase: Percent::from_basis_points(5_000),
            min_sample: 30,
            ..Tolerances::DEFAULT
        })
    );
    // A slack in time, as durations are written elsewhere; 0s judges by the ratio alone.
    assert_eq!(
        plan("latency_slack = \"0s\"\n").judge,
        Some(Tolerances {
            latency_slack: Duration::ZERO,
            ..Tolerances::DEFAULT
        })
    );
    // A deadline alone drains at the CLI's default pace, 50/s.
    assert_eq!(
        plan("drain_deadline = \"10m\"\n").drain,
        Some(DrainEnd {
            deadline: Duration::from_mins(10),
            pace: Pace::per_second(50),
        })
    );
    assert_eq!(
        plan("drain_deadline = \"2s\"\ndrain_pace = \"600/m\"\n").drain,
        Some(DrainEnd {
            deadline: Duration::from_secs(2),
            pace: Pace::per_second(10),
        })
    );
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one hostile value per line, each with the exact message it gets"
)]
fn a_declared_rollouts_judge_and_drain_refuse_hostile_values_with_their_place() {
    let cases: &[(&str, &str)] = &[
        (
            "max_latency_increase = \"1000.01%\"\n",
            "veer.toml:20:24: rollout judge: max_latency_increase 1000.01% is out of range 0%..=1000%",
        ),
        (
            "max_failure_increase = -5\n",
            "veer.toml:20:24: service `web`, rollout `max_failure_increase`: `-5` is not a percentage with at most two decimals (e.g. 20%, 12.5%, 99.9%)",
        ),
        (
            "max_latency_increase = \"20.001%\"\n",
            "veer.toml:20:24: service `web`, rollout `max_latency_increase`: `20.001%` is not a percentage with at most two decimals (e.g. 20%, 12.5%, 99.9%)",
        ),
        (
            "confidence = 40\n",
            "veer.toml:20:14: rollout judge: confidence 40% is out of range 50%..=99.99%",
        ),
        (
            "confidence = \"100%\"\n",
            "veer.toml:20:14: rollout judge: confidence 100% is out of range 50%..=99.99%",
        ),
        (
            "min_sample = 0\n",
            "veer.toml:20:14: rollout judge: min_sample must be at least 1 (got 0)",
        ),
        (
            "min_sample = -1\n",
            "veer.toml:20:14: `min_sample`: -1 is out of range 1..=9223372036854775807",
        ),
        (
            "min_sample = \"100\"\n",
            "veer.toml:20:14: `min_sample`: expected a number of samples, e.g. 100, found the string \"100\"; write `min_sample = 100` without quotes",
        ),
        (
            "judge = \"yes\"\n",
            "veer.toml:20:9: `judge`: expected true or false, found the string \"yes\"",
        ),
        (
            "judge = false\nconfidence = \"99%\"\n",
            "veer.toml:20:9: service `web`, rollout `judge`: `judge = false` contradicts `confidence`: remove them, or the `judge` line (any of them turns the judge on)",
        ),
        (
            "confidance = \"99%\"\n",
            "veer.toml:20:1: unknown key `confidance` in [service.rollout]; did you mean `confidence`?",
        ),
        (
            "latency_slack = \"61s\"\n",
            "veer.toml:20:17: rollout judge: latency_slack 1m 1s is out of range 0s..=1m",
        ),
        (
            "latency_slack = \"soon\"\n",
            "veer.toml:20:17: `latency_slack`: `soon` is not a duration (e.g. \"30s\", \"1h\", \"500ms\")",
        ),
        (
            "latency_slack = 5\n",
            "veer.toml:20:17: `latency_slack`: expected a duration in quotes, e.g. \"30s\", \"1h\", \"500ms\", found the integer 5; write `latency_slack = \"5s\"` for 5 seconds",
        ),
        (
            "judge = false\nlatency_slack = \"1ms\"\n",
            "veer.toml:20:9: service `web`, rollout `judge`: `judge = false` contradicts `latency_slack`: remove them, or the `judge` line (any of them turns the judge on)",
        ),
        (
            "drain_pace = \"0/s\"\ndrain_deadline = \"1m\"\n",
            "veer.toml:20:14: service `web`, rollout `drain_pace`: pace 0/s is out of range: at least 1/m, at most 100000/s",
        ),
        (
            "drain_pace = \"fast\"\ndrain_deadline = \"1m\"\n",
            "veer.toml:20:14: service `web`, rollout `drain_pace`: `fast` is not a pace: write flows per second or per minute, e.g. 50/s or 600/m",
        ),
        (
            "drain_pace = 50\ndrain_deadline = \"1m\"\n",
            "veer.toml:20:14: `drain_pace`: expected flows per second or per minute in quotes, e.g. \"50/s\" or \"600/m\", found the integer 50; put the value in quotes: `drain_pace = \"...\"`",
        ),
        (
            "drain_pace = \"50/s\"\n",
            "veer.toml:20:14: service `web`, rollout `drain_deadline`: `drain_pace` needs `drain_deadline`: how long the flows are left to end by themselves before they are ended at the pace",
        ),
        (
            "drain_deadline = \"0s\"\n",
            "veer.toml:20:18: drain deadline 0s is shorter than the 1s minimum",
        ),
        (
            "drain_deadline = \"8days\"\n",
            "veer.toml:20:18: drain deadline 8days is longer than the 7days maximum",
        ),
        (
            "drain_deadline = \"99999999999999999999y\"\n",
            "veer.toml:20:18: `drain_deadline`: `99999999999999999999y` is not a duration (e.g. \"30s\", \"1h\", \"500ms\")",
        ),
        (
            "drain_deadline = 600\n",
            "veer.toml:20:18: `drain_deadline`: expected a duration in quotes, e.g. \"30s\", \"1h\", \"500ms\", found the integer 600; write `drain_deadline = \"600s\"` for 600 seconds",
        ),
    ];
    let mut failures = Vec::new();
    for (lines, message) in cases {
        let text = judged(lines);
        let errors = parse(Path::new("veer.toml"), &text).unwrap_err();
        let got: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
        if got != [*message] {
            failures.push(format!(
                "{lines:?}:\n  got      {got:?}\n  expected {message:?}"
            ));
        }
        // Each names its key and what it expects, with the line and a caret.
        let rendered = errors.render();
        for e in &errors.errors {
            assert!(rendered.contains(&e.kind.key()), "{rendered}");
            assert!(rendered.contains(&e.kind.expected()), "{rendered}");
            assert!(rendered.contains("20 | "), "{rendered}");
        }
        // The etcd fleet source reads services with the same rules and messages.
        let fleet = &text[text.find("[[service]]").unwrap()..];
        let e = super::parse_fleet("/veer/config", fleet).unwrap_err();
        assert_eq!(e.errors.len(), 1, "{lines:?}: {e}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_comment_on_a_judged_rollout_changes_nothing_the_daemon_compares() {
    let lines =
        "judge = true\nconfidence = \"99%\"\ndrain_deadline = \"10m\"\ndrain_pace = \"20/s\"\n";
    let a = parse(Path::new("veer.toml"), &judged(lines)).unwrap();
    let commented = judged(&lines.replace(
        "judge = true\n",
        "# canary judged\njudge   =   true # yes\n",
    ));
    let b = parse(Path::new("veer.toml"), &commented).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        crate::control::core::meaning(&a.state),
        crate::control::core::meaning(&b.state)
    );
    // And what the file means is what it renders to.
    assert_eq!(parse(Path::new("x"), &to_toml(&a)).unwrap(), a);
}

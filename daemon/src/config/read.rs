//! From parsed TOML (`toml::de::DeTable`, a span on every key and value) to the file as written
//! (`schema`). Every problem of the file's shape is reported, not only the first: keys veer does
//! not know (with the known key nearest to what was typed), keys a table needs and lacks, and
//! values of the wrong TOML type, each saying what the key expects. A table with a problem is
//! still read as far as it goes, so one file shows all its mistakes at once.

use std::ops::Range;

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{
    ConfigErrorKind,
    schema::{self, File, Number, keys},
    suggest,
};

/// A problem at a span of the text.
pub(super) type Failed = (Range<usize>, ConfigErrorKind);

/// What a value of each key must be, for messages.
mod expect {
    pub(super) const INTERFACES: &str = "a list of interface names, e.g. [\"eth0\"]";
    pub(super) const XDP_MODE: &str = "one of \"auto\", \"native\", \"generic\"";
    pub(super) const CONNTRACK_MAX: &str = "a number of entries, e.g. 1048576";
    pub(super) const CONNTRACK_NEW_MAX: &str = "a number of entries, e.g. 65536";
    pub(super) const HOOKS: &str =
        "a table: [node.hooks], an interface named in `interfaces` = \"auto\", \"xdp\" or \"tc\"";
    pub(super) const HOOK: &str = "one of \"auto\", \"xdp\", \"tc\"";
    pub(super) const DURATION: &str = "a duration in quotes, e.g. \"30s\", \"1h\", \"500ms\"";
    pub(super) const NAME: &str = "a name in quotes (1 to 64 characters of A-Z a-z 0-9 _ - .)";
    pub(super) const VIP: &str = "an IPv4 or IPv6 address in quotes, e.g. \"192.0.2.10\"";
    pub(super) const PORT: &str = "a port number, e.g. 80";
    pub(super) const PROTOCOL: &str = "\"tcp\" or \"udp\"";
    pub(super) const WEIGHT: &str =
        "a number: the group's share of new flows in percent (e.g. 90, 12.5)";
    pub(super) const BACKENDS: &str =
        "a list of addresses with ports, e.g. [\"198.51.100.11:8080\"]";
    pub(super) const PREFIX: &str = "a client prefix in quotes, e.g. \"203.0.113.0/24\"";
    pub(super) const GROUP: &str = "the name of one of the service's groups, in quotes";
    pub(super) const CHECK_KIND: &str = "\"tcp\" or \"http\"";
    pub(super) const PATH: &str = "an HTTP path in quotes, e.g. \"/healthz\"";
    pub(super) const STATUS: &str = "an HTTP status code, e.g. 200";
    pub(super) const COUNT: &str = "a number of checks, e.g. 3";
    pub(super) const STEPS: &str = "a list of percentages ending at 100, e.g. [1, 5, 25, 50, 100]";
    pub(super) const RATE: &str = "a percentage, e.g. \"1%\" or 0.5";
    pub(super) const MIN_FLOWS: &str = "a number of new flows, e.g. 10";
    pub(super) const GATES: &str = "a list of gates in quotes: \"exec:CMD\", \"http://URL\", \"prometheus:BASE_URL QUERY OP NUMBER\"";
    pub(super) const ON_FAILURE: &str = "\"rollback\" or \"step-back\"";
    pub(super) const BOOL: &str = "true or false";
    pub(super) const INCREASE: &str = "a percentage, e.g. \"20%\" or 20";
    pub(super) const CONFIDENCE: &str = "a percentage from 50 to 99.99, e.g. \"95%\"";
    pub(super) const MIN_SAMPLE: &str = "a number of samples, e.g. 100";
    pub(super) const PACE: &str =
        "flows per second or per minute in quotes, e.g. \"50/s\" or \"600/m\"";
    pub(super) const NODE: &str = "a table: [node]";
    pub(super) const TIMEOUTS: &str = "a table: [node.timeouts]";
    pub(super) const SERVICES: &str = "tables: [[service]]";
    pub(super) const GROUPS: &str = "tables: [[service.group]]";
    pub(super) const PINS: &str = "tables: [[service.pin]]";
    pub(super) const HEALTH: &str = "a table: [service.health]";
    pub(super) const ROLLOUT: &str = "a table: [service.rollout]";
    pub(super) const SOURCE: &str = "a table: [source]";
    pub(super) const SOURCE_KIND: &str = "\"file\" or \"etcd\"";
    pub(super) const ENDPOINTS: &str =
        "a list of etcd URLs, e.g. [\"https://etcd1.example.net:2379\"]";
    pub(super) const KEY_PREFIX: &str = "an etcd key prefix in quotes, e.g. \"/veer\"";
    pub(super) const NODE_NAME: &str =
        "this node's name in the fleet, in quotes (1 to 64 characters of A-Z a-z 0-9 _ - .)";
    pub(super) const FILE_PATH: &str = "a file's path in quotes, e.g. \"/etc/veer/etcd-ca.pem\"";
    pub(super) const USER: &str = "an etcd user name in quotes";
}

/// How TOML calls a value's type, with the value where it is short: `the string "100%"`.
fn found(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) if s.len() <= 40 => format!("the string \"{s}\""),
        DeValue::String(_) => "a string".to_owned(),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the number {f}"),
        DeValue::Boolean(b) => format!("`{b}`"),
        DeValue::Datetime(_) => "a date".to_owned(),
        DeValue::Array(_) => "a list".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// One table of the file: its span, its name as the file writes it (`[[service.group]]`), and
/// its keys. Creating it reports every key it does not know.
struct Table<'t, 'i> {
    name: &'static str,
    span: Range<usize>,
    map: &'t DeTable<'i>,
    /// Keys suggested for unknown ones: their absence is already said.
    suggested: Vec<&'static str>,
}

impl<'t, 'i> Table<'t, 'i> {
    fn new(
        name: &'static str,
        span: Range<usize>,
        map: &'t DeTable<'i>,
        known: &'static [&'static str],
        errors: &mut Vec<Failed>,
    ) -> Self {
        let mut suggested = Vec::new();
        for (key, _) in map {
            let k: &str = key.get_ref();
            if !known.contains(&k) {
                let suggestion = suggest::nearest(k, known).filter(|s| !map.contains_key(*s));
                suggested.extend(suggestion);
                errors.push((
                    key.span(),
                    ConfigErrorKind::UnknownKey {
                        table: name,
                        key: k.to_owned(),
                        suggestion,
                        known,
                    },
                ));
            }
        }
        Self {
            name,
            span,
            map,
            suggested,
        }
    }

    fn get(&self, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.map.get(key)
    }

    /// A key the table must have: reported when missing.
    fn need(
        &self,
        key: &'static str,
        expected: &'static str,
        errors: &mut Vec<Failed>,
    ) -> Option<&'t Spanned<DeValue<'i>>> {
        let v = self.get(key);
        if v.is_none() && !self.suggested.contains(&key) {
            errors.push((
                self.span.clone(),
                ConfigErrorKind::MissingKey {
                    table: self.name,
                    key,
                    expected,
                },
            ));
        }
        v
    }

    fn string(
        &self,
        key: &'static str,
        expected: &'static str,
        errors: &mut Vec<Failed>,
    ) -> Option<Spanned<String>> {
        string(key, self.get(key)?, expected, errors)
    }

    fn required_string(
        &self,
        key: &'static str,
        expected: &'static str,
        errors: &mut Vec<Failed>,
    ) -> Option<Spanned<String>> {
        string(key, self.need(key, expected, errors)?, expected, errors)
    }

    fn integer(
        &self,
        key: &'static str,
        expected: &'static str,
        errors: &mut Vec<Failed>,
    ) -> Option<Spanned<i64>> {
        integer(key, self.get(key)?, expected, errors)
    }

    fn strings(
        &self,
        key: &'static str,
        expected: &'static str,
        errors: &mut Vec<Failed>,
    ) -> Option<Spanned<Vec<Spanned<String>>>> {
        let v = self.get(key)?;
        let Some(items) = v.get_ref().as_array() else {
            errors.push(wrong(key, v, expected, None));
            return None;
        };
        let list = items
            .iter()
            .filter_map(|item| string(key, item, expected, errors))
            .collect();
        Some(Spanned::new(v.span(), list))
    }

    fn table(
        &self,
        key: &'static str,
        name: &'static str,
        known: &'static [&'static str],
        expected: &'static str,
        errors: &mut Vec<Failed>,
    ) -> Option<Table<'t, 'i>> {
        let v = self.get(key)?;
        if let DeValue::Table(map) = v.get_ref() {
            Some(Table::new(name, v.span(), map, known, errors))
        } else {
            errors.push(wrong(key, v, expected, None));
            None
        }
    }

    /// `[[key]]` tables (an array of tables).
    fn tables(
        &self,
        key: &'static str,
        name: &'static str,
        known: &'static [&'static str],
        expected: &'static str,
        errors: &mut Vec<Failed>,
    ) -> Vec<Table<'t, 'i>> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let Some(items) = v.get_ref().as_array() else {
            errors.push(wrong(key, v, expected, None));
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| {
                if let DeValue::Table(map) = item.get_ref() {
                    Some(Table::new(name, item.span(), map, known, errors))
                } else {
                    errors.push(wrong(key, item, expected, None));
                    None
                }
            })
            .collect()
    }
}

fn wrong(
    key: &'static str,
    v: &Spanned<DeValue<'_>>,
    expected: &'static str,
    hint: Option<String>,
) -> Failed {
    (
        v.span(),
        ConfigErrorKind::WrongType {
            key,
            expected,
            found: found(v.get_ref()),
            hint,
        },
    )
}

fn string(
    key: &'static str,
    v: &Spanned<DeValue<'_>>,
    expected: &'static str,
    errors: &mut Vec<Failed>,
) -> Option<Spanned<String>> {
    if let Some(s) = v.get_ref().as_str() {
        return Some(Spanned::new(v.span(), s.to_owned()));
    }
    // A number where a duration is expected is a common slip: say how to write it.
    let hint = match v.get_ref() {
        DeValue::Integer(i) if expected == expect::DURATION => {
            Some(format!("write `{key} = \"{i}s\"` for {i} seconds"))
        }
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
            Some(format!("put the value in quotes: `{key} = \"...\"`"))
        }
        _ => None,
    };
    errors.push(wrong(key, v, expected, hint));
    None
}

fn integer(
    key: &'static str,
    v: &Spanned<DeValue<'_>>,
    expected: &'static str,
    errors: &mut Vec<Failed>,
) -> Option<Spanned<i64>> {
    match v.get_ref() {
        DeValue::Integer(i) => {
            if let Ok(n) = i64::from_str_radix(i.as_str(), i.radix()) {
                return Some(Spanned::new(v.span(), n));
            }
            errors.push((
                v.span(),
                ConfigErrorKind::OutOfRange {
                    field: key,
                    value: i.to_string(),
                    range: format!("{}..={}", i64::MIN, i64::MAX),
                },
            ));
            None
        }
        DeValue::String(s) if s.trim().parse::<i64>().is_ok() => {
            errors.push(wrong(
                key,
                v,
                expected,
                Some(format!("write `{key} = {}` without quotes", s.trim())),
            ));
            None
        }
        _ => {
            errors.push(wrong(key, v, expected, None));
            None
        }
    }
}

/// A percentage: an integer or a float, or where `text_ok` a string such as `"1%"`.
fn number(
    key: &'static str,
    v: &Spanned<DeValue<'_>>,
    expected: &'static str,
    text_ok: bool,
    errors: &mut Vec<Failed>,
) -> Option<Spanned<Number>> {
    let n = match v.get_ref() {
        DeValue::Integer(i) if i.radix() == 10 => Number::Int(i.as_str().parse().ok()?),
        DeValue::Float(f) => Number::Float(f.as_str().to_owned()),
        DeValue::String(s) if text_ok => Number::Text(s.to_string()),
        DeValue::String(s) => {
            let bare = s.trim().trim_end_matches('%').trim();
            let hint = (!bare.is_empty() && bare.parse::<f64>().is_ok())
                .then(|| format!("write `{key} = {bare}` (a number, without quotes or %)"));
            errors.push(wrong(key, v, expected, hint));
            return None;
        }
        _ => {
            errors.push(wrong(key, v, expected, None));
            return None;
        }
    };
    Some(Spanned::new(v.span(), n))
}

/// Reads the whole file; every problem found is added to `errors`.
pub(super) fn file(root: &Spanned<DeTable<'_>>, errors: &mut Vec<Failed>) -> File {
    let top = Table::new("the file", root.span(), root.get_ref(), keys::FILE, errors);
    let node = top
        .table("node", "[node]", keys::NODE, expect::NODE, errors)
        .map(|t| {
            let before = errors.len();
            let mut n = node(&t, errors);
            n.clean = errors.len() == before;
            Spanned::new(t.span.clone(), n)
        });
    let source = top
        .table("source", "[source]", keys::SOURCE, expect::SOURCE, errors)
        .and_then(|t| Some(Spanned::new(t.span.clone(), source(&t, errors)?)));
    let service = top
        .tables(
            "service",
            "[[service]]",
            keys::SERVICE,
            expect::SERVICES,
            errors,
        )
        .iter()
        .filter_map(|t| {
            let before = errors.len();
            let mut s = service(t, errors)?;
            s.clean = errors.len() == before;
            Some(Spanned::new(t.span.clone(), s))
        })
        .collect();
    File {
        node,
        service,
        source,
    }
}

fn node(t: &Table<'_, '_>, errors: &mut Vec<Failed>) -> schema::Node {
    schema::Node {
        interfaces: t.strings("interfaces", expect::INTERFACES, errors),
        xdp_mode: t.string("xdp_mode", expect::XDP_MODE, errors),
        hooks: hooks(t, errors),
        conntrack_max: t.integer("conntrack_max", expect::CONNTRACK_MAX, errors),
        conntrack_new_max: t.integer("conntrack_new_max", expect::CONNTRACK_NEW_MAX, errors),
        timeouts: t
            .table(
                "timeouts",
                "[node.timeouts]",
                keys::TIMEOUTS,
                expect::TIMEOUTS,
                errors,
            )
            .map(|t| {
                Spanned::new(
                    t.span.clone(),
                    schema::Timeouts {
                        tcp_syn: t.string("tcp_syn", expect::DURATION, errors),
                        tcp_established: t.string("tcp_established", expect::DURATION, errors),
                        tcp_closing: t.string("tcp_closing", expect::DURATION, errors),
                        udp: t.string("udp", expect::DURATION, errors),
                    },
                )
            }),
        clean: true,
    }
}

/// `[node.hooks]`: any key (an interface; `convert` checks it is in `interfaces`) with a string.
fn hooks(
    t: &Table<'_, '_>,
    errors: &mut Vec<Failed>,
) -> Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>> {
    let v = t.get("hooks")?;
    let DeValue::Table(map) = v.get_ref() else {
        errors.push(wrong("hooks", v, expect::HOOKS, None));
        return None;
    };
    let choices = map
        .iter()
        .filter_map(|(interface, value)| {
            let c = string("hooks", value, expect::HOOK, errors)?;
            Some((interface.get_ref().to_string(), c))
        })
        .collect();
    Some(Spanned::new(v.span(), choices))
}

fn source(t: &Table<'_, '_>, errors: &mut Vec<Failed>) -> Option<schema::Source> {
    let kind = t.required_string("kind", expect::SOURCE_KIND, errors);
    let driver = t.get("driver").and_then(|v| {
        let b = v.get_ref().as_bool();
        if b.is_none() {
            errors.push(wrong("driver", v, expect::BOOL, None));
        }
        b
    });
    let s = schema::Source {
        kind: Spanned::new(0..0, String::new()),
        endpoints: t.strings("endpoints", expect::ENDPOINTS, errors),
        prefix: t.string("prefix", expect::KEY_PREFIX, errors),
        node: t.string("node", expect::NODE_NAME, errors),
        cacert: t.string("cacert", expect::FILE_PATH, errors),
        cert: t.string("cert", expect::FILE_PATH, errors),
        key: t.string("key", expect::FILE_PATH, errors),
        user: t.string("user", expect::USER, errors),
        password_file: t.string("password_file", expect::FILE_PATH, errors),
        lease_ttl: t.string("lease_ttl", expect::DURATION, errors),
        driver,
    };
    Some(schema::Source { kind: kind?, ..s })
}

fn service(t: &Table<'_, '_>, errors: &mut Vec<Failed>) -> Option<schema::Service> {
    let name = t.required_string("name", expect::NAME, errors);
    let vip = t.required_string("vip", expect::VIP, errors);
    let port = t
        .need("port", expect::PORT, errors)
        .and_then(|v| integer("port", v, expect::PORT, errors));
    let protocol = t.required_string("protocol", expect::PROTOCOL, errors);
    let group = t
        .tables(
            "group",
            "[[service.group]]",
            keys::GROUP,
            expect::GROUPS,
            errors,
        )
        .iter()
        .filter_map(|g| Some(Spanned::new(g.span.clone(), group(g, errors)?)))
        .collect();
    let pin = t
        .tables("pin", "[[service.pin]]", keys::PIN, expect::PINS, errors)
        .iter()
        .filter_map(|p| {
            let prefix = p.required_string("prefix", expect::PREFIX, errors);
            let group = p.required_string("group", expect::GROUP, errors);
            Some(Spanned::new(
                p.span.clone(),
                schema::Pin {
                    prefix: prefix?,
                    group: group?,
                },
            ))
        })
        .collect();
    let health = t
        .table(
            "health",
            "[service.health]",
            keys::HEALTH,
            expect::HEALTH,
            errors,
        )
        .and_then(|h| Some(Spanned::new(h.span.clone(), health(&h, errors)?)));
    let rollout = t
        .table(
            "rollout",
            "[service.rollout]",
            keys::ROLLOUT,
            expect::ROLLOUT,
            errors,
        )
        .and_then(|r| Some(Spanned::new(r.span.clone(), rollout(&r, errors)?)));
    Some(schema::Service {
        name: name?,
        vip,
        port,
        protocol,
        group,
        pin,
        health,
        rollout,
        clean: true,
    })
}

fn group(t: &Table<'_, '_>, errors: &mut Vec<Failed>) -> Option<schema::Group> {
    let name = t.required_string("name", expect::NAME, errors);
    let weight = t
        .need("weight", expect::WEIGHT, errors)
        .and_then(|v| number("weight", v, expect::WEIGHT, false, errors));
    let backends = t
        .strings("backends", expect::BACKENDS, errors)
        .map(Spanned::into_inner)
        .unwrap_or_default();
    Some(schema::Group {
        name: name?,
        weight,
        backends,
    })
}

fn health(t: &Table<'_, '_>, errors: &mut Vec<Failed>) -> Option<schema::Health> {
    let kind = t.required_string("kind", expect::CHECK_KIND, errors);
    let h = schema::Health {
        kind: Spanned::new(0..0, String::new()),
        path: t.string("path", expect::PATH, errors),
        expect_status: t.integer("expect_status", expect::STATUS, errors),
        interval: t.string("interval", expect::DURATION, errors),
        timeout: t.string("timeout", expect::DURATION, errors),
        rise: t.integer("rise", expect::COUNT, errors),
        fall: t.integer("fall", expect::COUNT, errors),
    };
    Some(schema::Health { kind: kind?, ..h })
}

fn rollout(t: &Table<'_, '_>, errors: &mut Vec<Failed>) -> Option<schema::Rollout> {
    let to = t.required_string("to", expect::GROUP, errors);
    let steps = t.get("steps").and_then(|v| {
        let Some(items) = v.get_ref().as_array() else {
            errors.push(wrong("steps", v, expect::STEPS, None));
            return None;
        };
        let list: Vec<_> = items
            .iter()
            .filter_map(|i| number("steps", i, expect::STEPS, false, errors))
            .collect();
        (list.len() == items.len()).then(|| Spanned::new(v.span(), list))
    });
    let max_failure_rate = t
        .get("max_failure_rate")
        .and_then(|v| number("max_failure_rate", v, expect::RATE, true, errors));
    let hold_on_restart = t.get("hold_on_restart").and_then(|v| {
        let b = v.get_ref().as_bool();
        if b.is_none() {
            errors.push(wrong("hold_on_restart", v, expect::BOOL, None));
        }
        b
    });
    let judge = t.get("judge").and_then(|v| {
        let b = v.get_ref().as_bool();
        if b.is_none() {
            errors.push(wrong("judge", v, expect::BOOL, None));
        }
        b.map(|b| Spanned::new(v.span(), b))
    });
    let percent = |key: &'static str, expected: &'static str, errors: &mut Vec<Failed>| {
        t.get(key)
            .and_then(|v| number(key, v, expected, true, errors))
    };
    let max_latency_increase = percent("max_latency_increase", expect::INCREASE, errors);
    let max_failure_increase = percent("max_failure_increase", expect::INCREASE, errors);
    let confidence = percent("confidence", expect::CONFIDENCE, errors);
    let r = schema::Rollout {
        to: Spanned::new(0..0, String::new()),
        steps,
        pause: t.string("pause", expect::DURATION, errors),
        max_failure_rate,
        min_flows: t.integer("min_flows", expect::MIN_FLOWS, errors),
        gates: t
            .strings("gates", expect::GATES, errors)
            .map(Spanned::into_inner)
            .unwrap_or_default(),
        gate_timeout: t.string("gate_timeout", expect::DURATION, errors),
        on_failure: t.string("on_failure", expect::ON_FAILURE, errors),
        hold_on_restart,
        judge,
        max_latency_increase,
        latency_slack: t.string("latency_slack", expect::DURATION, errors),
        max_failure_increase,
        confidence,
        min_sample: t.integer("min_sample", expect::MIN_SAMPLE, errors),
        drain_deadline: t.string("drain_deadline", expect::DURATION, errors),
        drain_pace: t.string("drain_pace", expect::PACE, errors),
    };
    Some(schema::Rollout { to: to?, ..r })
}

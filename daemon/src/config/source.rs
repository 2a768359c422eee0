//! `[source]`: where a node's services come from. The file itself by default; or a fleet's etcd
//! (`kind = "etcd"`), with the same settings as `veer daemon --source etcd --etcd-…` (a flag
//! given on the command line wins over the file's value). With etcd, the file keeps `[node]` and
//! `[source]` only: a `[[service]]` beside it is refused, at its line.
//!
//! Only the syntax and what can be checked without the network are checked here (the node name,
//! the prefix, the durations); the endpoints and the TLS files are checked when the daemon
//! starts (`sources::etcd::EtcdOptions::resolve`), with the same messages as the flags.

use std::{path::PathBuf, time::Duration};

use toml::Spanned;

use super::{ConfigErrorKind, read::Failed, schema, suggest};
use crate::fleet::{KeyLayout, NodeName};

/// Where the services come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// The config file (and `veer apply`).
    #[default]
    File,
    /// A fleet's etcd (`[source] kind = "etcd"`, `veer daemon --source etcd`).
    Etcd,
}

/// The `[source]` table; unset fields fall back to the command line's flags, then to defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceConfig {
    /// `kind`.
    pub kind: SourceKind,
    /// `endpoints` (`["https://etcd1.example.net:2379", ...]`).
    pub endpoints: Vec<String>,
    /// `prefix` (`"/veer"`).
    pub prefix: Option<String>,
    /// `node`: this node's name in the fleet.
    pub node: Option<NodeName>,
    /// `cacert`: the CA that signed etcd's certificate.
    pub cacert: Option<PathBuf>,
    /// `cert`: the client certificate.
    pub cert: Option<PathBuf>,
    /// `key`: the client certificate's key.
    pub key: Option<PathBuf>,
    /// `user`: the etcd user.
    pub user: Option<String>,
    /// `password_file`: the file holding the user's password.
    pub password_file: Option<PathBuf>,
    /// `lease_ttl`: TTL of the node's status lease and of its driver-election lease.
    pub lease_ttl: Option<Duration>,
    /// `driver`: whether the daemon campaigns to drive fleet rollouts.
    pub driver: Option<bool>,
}

/// Shortest lease TTL etcd grants (it rounds shorter ones up).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

fn path(raw: Option<&Spanned<String>>) -> Option<PathBuf> {
    raw.map(|r| PathBuf::from(r.get_ref()))
}

/// Converts `[source]`; every value that is wrong is added to `errors` (`None` then).
pub(super) fn convert(
    raw: &Spanned<schema::Source>,
    errors: &mut Vec<Failed>,
) -> Option<SourceConfig> {
    let raw = raw.get_ref();
    let before = errors.len();
    let kind = match raw.kind.get_ref().as_str() {
        "file" => Some(SourceKind::File),
        "etcd" => Some(SourceKind::Etcd),
        other => {
            errors.push((
                raw.kind.span(),
                ConfigErrorKind::BadChoice {
                    field: "kind",
                    value: other.to_owned(),
                    choices: "file, etcd",
                    suggestion: suggest::nearest(other, &["file", "etcd"]),
                },
            ));
            None
        }
    };
    let bad = |r: &Spanned<String>, field, expected| {
        (
            r.span(),
            ConfigErrorKind::BadValue {
                field,
                value: r.get_ref().clone(),
                expected,
            },
        )
    };
    let node = raw.node.as_ref().and_then(|r| {
        let name = NodeName::new(r.get_ref()).ok();
        if name.is_none() {
            errors.push(bad(
                r,
                "node",
                "a node name (1 to 64 characters of A-Z a-z 0-9 _ - .)",
            ));
        }
        name
    });
    if let Some(r) = &raw.prefix
        && KeyLayout::new(r.get_ref()).is_err()
    {
        errors.push(bad(
            r,
            "prefix",
            "an etcd key prefix like \"/veer\" (absolute, no empty segment, printable ASCII)",
        ));
    }
    let lease_ttl =
        raw.lease_ttl
            .as_ref()
            .and_then(|r| match humantime::parse_duration(r.get_ref()) {
                Ok(d) if d >= MIN_LEASE_TTL => Some(d),
                Ok(_) => {
                    errors.push(bad(r, "lease_ttl", "a duration of at least 2s"));
                    None
                }
                Err(_) => {
                    errors.push(bad(r, "lease_ttl", "a duration (e.g. \"10s\")"));
                    None
                }
            });
    if errors.len() > before {
        return None;
    }
    Some(SourceConfig {
        kind: kind?,
        endpoints: raw
            .endpoints
            .as_ref()
            .map(|e| e.get_ref().iter().map(|s| s.get_ref().clone()).collect())
            .unwrap_or_default(),
        prefix: raw.prefix.as_ref().map(|r| r.get_ref().clone()),
        node,
        cacert: path(raw.cacert.as_ref()),
        cert: path(raw.cert.as_ref()),
        key: path(raw.key.as_ref()),
        user: raw.user.as_ref().map(|r| r.get_ref().clone()),
        password_file: path(raw.password_file.as_ref()),
        lease_ttl,
        driver: raw.driver,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        config::{parse, parse_fleet, parse_source, services_to_toml},
        model::fixtures::{dual_stack, web},
    };

    const NODE: &str = "[node]\ninterfaces = [\"eth0\"]\n";

    fn source(text: &str) -> Result<Option<SourceConfig>, String> {
        parse_source(Path::new("veer.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn an_etcd_source_reads_every_setting() {
        let text = format!(
            "{NODE}\n[source]\nkind = \"etcd\"\nendpoints = [\"https://etcd1.example.net:2379\", \"https://etcd2.example.net:2379\"]\n\
             prefix = \"/prod/veer\"\nnode = \"edge-fra-1\"\ncacert = \"/etc/veer/ca.pem\"\ncert = \"/etc/veer/n.pem\"\n\
             key = \"/etc/veer/n-key.pem\"\nuser = \"edge-fra-1\"\npassword_file = \"/etc/veer/pw\"\nlease_ttl = \"5s\"\ndriver = false\n"
        );
        let s = source(&text).unwrap().unwrap();
        assert_eq!(s.kind, SourceKind::Etcd);
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.prefix.as_deref(), Some("/prod/veer"));
        assert_eq!(s.node.unwrap().as_str(), "edge-fra-1");
        assert_eq!(s.password_file, Some(PathBuf::from("/etc/veer/pw")));
        assert_eq!(s.lease_ttl, Some(Duration::from_secs(5)));
        assert_eq!(s.driver, Some(false));
        // The rest of the file is the node's, as before.
        let c = parse(Path::new("veer.toml"), &text).unwrap();
        assert_eq!(c.node.interfaces, ["eth0"]);
        assert!(c.state.services.is_empty());
        assert_eq!(source(NODE).unwrap(), None);
    }

    #[test]
    fn source_mistakes_are_located() {
        let e = source("[source]\nkind = \"nacos\"\n").unwrap_err();
        assert_eq!(e, "veer.toml:2:8: `kind`: `nacos` is not one of file, etcd");
        let e = source("[source]\nkind = \"etcd\"\nnode = \"a/b\"\n").unwrap_err();
        assert!(
            e.starts_with("veer.toml:3:8: `node`: `a/b` is not a node name"),
            "{e}"
        );
        let e = source("[source]\nkind = \"etcd\"\nprefix = \"veer\"\n").unwrap_err();
        assert!(e.starts_with("veer.toml:3:10: `prefix`"), "{e}");
        let e = source("[source]\nkind = \"etcd\"\nlease_ttl = \"1s\"\n").unwrap_err();
        assert!(e.contains("at least 2s"), "{e}");
        // The file's diagnostics: an unknown key names the one meant.
        let e = source("[source]\nkind = \"etcd\"\nendpoint = []\n").unwrap_err();
        assert_eq!(
            e,
            "veer.toml:3:1: unknown key `endpoint` in [source]; did you mean `endpoints`?"
        );
        // Every problem at once, each at its line.
        let e = source(
            "[source]\nkind = \"etdc\"\nnode = \"a/b\"\nlease_ttl = \"1s\"\ndriver = \"yes\"\n",
        )
        .unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert!(
            lines[0].starts_with(
                "veer.toml:2:8: `kind`: `etdc` is not one of file, etcd; did you mean `etcd`?"
            ),
            "{e}"
        );
        assert!(lines[1].starts_with("veer.toml:3:8: `node`"), "{e}");
        assert!(lines[2].starts_with("veer.toml:4:13: `lease_ttl`"), "{e}");
        assert!(
            lines[3].starts_with("veer.toml:5:10: `driver`: expected true or false"),
            "{e}"
        );
    }

    #[test]
    fn with_an_etcd_source_the_file_holds_no_services() {
        let services = services_to_toml(&web());
        let text = format!("{NODE}\n[source]\nkind = \"etcd\"\n\n{services}");
        let e = parse(Path::new("veer.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("veer.toml:7:1: `[[service]]` does not belong here"),
            "{e}"
        );
        // `kind = "file"` is today's behaviour.
        let text = format!("{NODE}\n[source]\nkind = \"file\"\n\n{services}");
        assert_eq!(parse(Path::new("veer.toml"), &text).unwrap().state, web());
    }

    #[test]
    fn a_fleet_document_is_services_only_and_reads_back_as_itself() {
        for state in [web(), dual_stack(), crate::model::DesiredState::default()] {
            let text = services_to_toml(&state);
            assert_eq!(parse_fleet("/veer/config", &text).unwrap(), state, "{text}");
        }
        let text = format!("{NODE}\n{}", services_to_toml(&web()));
        let e = parse_fleet("/veer/config", &text).unwrap_err().to_string();
        assert!(
            e.starts_with("/veer/config:1:1: `[node]` does not belong here: it is local"),
            "{e}"
        );
        let text = format!("[source]\nkind = \"file\"\n\n{}", services_to_toml(&web()));
        let e = parse_fleet("/veer/nodes/a/config", &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/veer/nodes/a/config:1:1: `[source]`"), "{e}");
        // Every problem of a document is reported, with the key as the file: both misplaced
        // tables and a bad weight.
        let text = format!(
            "{NODE}\n[source]\nkind = \"file\"\n\n{}",
            services_to_toml(&web()).replacen("weight = 100", "weight = 120", 1)
        );
        let e = parse_fleet("/veer/config", &text).unwrap_err();
        let lines: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with("/veer/config:1:1: `[node]`"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("/veer/config:4:1: `[source]`"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("/veer/config:") && lines[2].contains("120"),
            "{lines:#?}"
        );
    }
}

//! `veer daemon`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{Global, exit::Failure};
use crate::{
    api::server::Access,
    config::{self, SourceConfig, SourceKind},
    control::{self, EtcdSource},
    error::chain,
    fleet::NodeName,
    paths,
    sources::etcd::{DEFAULT_PREFIX, EtcdOptions, Fleet, WatcherOptions},
    supervisor::{self, fleet::FleetOptions},
};

/// Arguments of `veer daemon`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Config file (TOML). Applied at start and on SIGHUP or change, when its content differs
    /// from the content last applied.
    #[arg(long, short = 'c', default_value = paths::CONFIG)]
    config: PathBuf,
    /// State directory (revisions).
    #[arg(long, default_value = paths::STATE_DIR)]
    state_dir: PathBuf,
    /// Where maps and links are pinned (bpffs is mounted at its parent when missing).
    #[arg(long, default_value = paths::PIN_DIR)]
    pin_dir: PathBuf,
    /// Prometheus metrics address; `off` disables it.
    #[arg(long, default_value = paths::METRICS)]
    metrics: String,
    /// Group (name or gid) whose members may use the control socket besides root: processes
    /// holding it (primary or supplementary) when they connect.
    #[arg(long)]
    socket_group: Option<String>,
    #[command(flatten)]
    fleet: FleetFlags,
}

/// Where the services come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SourceArg {
    /// The config file (and `veer apply`).
    File,
    /// A fleet's etcd: the config file keeps `[node]`, the services come from etcd.
    Etcd,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// `veer daemon`'s fleet flags; each wins over the same setting in the file's `[source]`.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Fleet (services from etcd)")]
struct FleetFlags {
    /// Where the services come from (default: the config file's `[source]`, else `file`).
    #[arg(long, value_enum)]
    source: Option<SourceArg>,
    /// etcd endpoints, comma-separated: `http://HOST:2379` or `https://HOST:2379`.
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    etcd_endpoints: Vec<String>,
    /// The fleet's key prefix in etcd (default `/veer`).
    #[arg(long, value_name = "PREFIX")]
    etcd_prefix: Option<String>,
    /// This node's name in the fleet (1 to 64 of A-Z a-z 0-9 _ - .; the host name is a good
    /// choice).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// CA that signed etcd's certificate (for `https://` endpoints).
    #[arg(long, value_name = "FILE")]
    etcd_cacert: Option<PathBuf>,
    /// Client certificate for etcd's `--client-cert-auth`.
    #[arg(long, value_name = "FILE")]
    etcd_cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, value_name = "FILE")]
    etcd_key: Option<PathBuf>,
    /// etcd user (with --etcd-password-file).
    #[arg(long, value_name = "USER")]
    etcd_user: Option<String>,
    /// File holding the etcd user's password (one line, not readable by other users).
    #[arg(long, value_name = "FILE")]
    etcd_password_file: Option<PathBuf>,
    /// TTL of the node's status lease and of its lease in the driver election: a dead node's
    /// status disappears, and another daemon drives fleet rollouts, within it (default 10s).
    #[arg(long, value_name = "DURATION")]
    fleet_lease_ttl: Option<humantime::Duration>,
    /// Campaign to drive fleet rollouts (default on; a node whose etcd user lacks the
    /// veer-driver role follows rollouts only).
    #[arg(long, value_enum)]
    fleet_driver: Option<OnOff>,
}

/// Default TTL of the status and election leases.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

impl FleetFlags {
    /// Whether any etcd setting is given on the command line.
    fn any_etcd(&self) -> bool {
        !self.etcd_endpoints.is_empty()
            || self.etcd_prefix.is_some()
            || self.node.is_some()
            || self.etcd_cacert.is_some()
            || self.etcd_cert.is_some()
            || self.etcd_key.is_some()
            || self.etcd_user.is_some()
            || self.etcd_password_file.is_some()
            || self.fleet_lease_ttl.is_some()
            || self.fleet_driver.is_some()
    }
}

/// The config file's `[source]`, read leniently enough that a file which is otherwise broken
/// still says whether the node follows etcd (it then cannot start: its settings are unknown).
fn file_source(path: &Path) -> Result<Option<SourceConfig>, Failure> {
    match config::load_source(path) {
        Ok(s) => Ok(s),
        Err(config::LoadError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        // Not readable as a regular file (a FIFO, a device, no permission): the daemon's start
        // reports it as it reports any file it cannot use.
        Err(config::LoadError::Read { .. }) => Ok(None),
        Err(e) => {
            // Read again the way `load_source` reads (a regular file, without blocking): the
            // path may have changed since.
            let etcd = config::read(path)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
                .and_then(|t| t.get("source")?.get("kind")?.as_str().map(str::to_owned))
                .is_some_and(|k| k == "etcd");
            if etcd {
                Err(Failure::error(&e))
            } else {
                // A node of the file: the daemon's start reports the file as it always has.
                Ok(None)
            }
        }
    }
}

/// The etcd source: the flags over the file's `[source]`; `None` when the services come from
/// the file.
fn fleet_options(
    flags: &FleetFlags,
    file: Option<SourceConfig>,
) -> Result<Option<(EtcdSource, FleetOptions)>, Failure> {
    let file = file.unwrap_or_default();
    let kind = match flags.source {
        Some(SourceArg::Etcd) => SourceKind::Etcd,
        Some(SourceArg::File) => SourceKind::File,
        None => file.kind,
    };
    if kind == SourceKind::File {
        if flags.any_etcd() {
            return Err(Failure::usage(
                "the --etcd-*, --node and --fleet-* flags need --source etcd (or `[source] kind = \"etcd\"` in the config file)".to_owned(),
            ));
        }
        return Ok(None);
    }
    let node = match (&flags.node, file.node) {
        (Some(n), _) => NodeName::new(n).map_err(|e| Failure::usage(format!("--node: {e}")))?,
        (None, Some(n)) => n,
        (None, None) => {
            return Err(Failure::usage(
                "--source etcd needs --node NAME (or `node` in the config file's [source])"
                    .to_owned(),
            ));
        }
    };
    let lease_ttl = flags
        .fleet_lease_ttl
        .map(Duration::from)
        .or(file.lease_ttl)
        .unwrap_or(DEFAULT_LEASE_TTL);
    if lease_ttl < config::MIN_LEASE_TTL {
        return Err(Failure::usage(format!(
            "--fleet-lease-ttl {}: etcd grants leases of at least 2s",
            humantime::format_duration(lease_ttl)
        )));
    }
    let etcd = EtcdOptions {
        endpoints: if flags.etcd_endpoints.is_empty() {
            file.endpoints
        } else {
            flags.etcd_endpoints.clone()
        },
        prefix: flags
            .etcd_prefix
            .clone()
            .or(file.prefix)
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
        cacert: flags.etcd_cacert.clone().or(file.cacert),
        cert: flags.etcd_cert.clone().or(file.cert),
        key: flags.etcd_key.clone().or(file.key),
        user: flags.etcd_user.clone().or(file.user),
        password_file: flags.etcd_password_file.clone().or(file.password_file),
        ..EtcdOptions::default()
    };
    let connector = etcd.resolve().map_err(|e| Failure::usage(chain(&e)))?;
    let source = EtcdSource {
        endpoints: connector.endpoints(),
        prefix: connector.layout().prefix().to_owned(),
        node: node.clone(),
    };
    let driver = match flags.fleet_driver {
        Some(OnOff::On) => true,
        Some(OnOff::Off) => false,
        None => file.driver.unwrap_or(true),
    };
    Ok(Some((
        source,
        FleetOptions {
            fleet: Fleet::new(connector),
            node,
            lease_ttl,
            driver,
            watcher: WatcherOptions::default(),
        },
    )))
}

/// Resolves a group name or number to a gid.
fn gid(group: &str) -> Result<u32, Failure> {
    if let Ok(n) = group.parse() {
        return Ok(n);
    }
    let name = std::ffi::CString::new(group)
        .map_err(|_| Failure::usage(format!("--socket-group {group:?}: not a group name")))?;
    // SAFETY: getgrnam reads a NUL-terminated name; the result is read at once, before any
    // other call could reuse its static buffer.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if gr.is_null() {
        return Err(Failure::usage(format!(
            "--socket-group {group}: no such group"
        )));
    }
    // SAFETY: non-null pointer to the group entry getgrnam just returned.
    Ok(unsafe { (*gr).gr_gid })
}

/// Runs the daemon in the foreground.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let metrics = match args.metrics.as_str() {
        "off" => None,
        a => Some(
            a.parse::<SocketAddr>()
                .map_err(|e| Failure::usage(format!("--metrics {a}: {e} (want ip:port or off)")))?,
        ),
    };
    let fleet = fleet_options(&args.fleet, file_source(&args.config)?)?;
    let (etcd, fleet) = fleet.map_or((None, None), |(s, f)| (Some(s), Some(f)));
    supervisor::run(supervisor::DaemonOptions {
        control: control::Options {
            config: args.config.clone(),
            state_dir: args.state_dir.clone(),
            pin_dir: args.pin_dir.clone(),
            etcd,
        },
        socket: g.socket.clone(),
        access: Access {
            gid: args.socket_group.as_deref().map(gid).transpose()?,
        },
        metrics,
        fleet,
    })
    .map_err(|e| Failure::of("daemon", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> FleetFlags {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            f: FleetFlags,
        }
        Wrap::parse_from(std::iter::once("veer").chain(args.iter().copied())).f
    }

    fn file() -> SourceConfig {
        SourceConfig {
            kind: SourceKind::Etcd,
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: Some("/prod/veer".into()),
            node: Some(NodeName::new("edge-file").unwrap()),
            lease_ttl: Some(Duration::from_secs(30)),
            driver: Some(false),
            ..SourceConfig::default()
        }
    }

    #[test]
    fn without_a_source_the_file_is_the_source_and_etcd_flags_are_refused() {
        assert!(fleet_options(&flags(&[]), None).unwrap().is_none());
        let e = fleet_options(&flags(&["--node", "a"]), None).unwrap_err();
        assert_eq!(e.code, crate::cli::exit::USAGE);
        assert!(e.message.contains("--source etcd"), "{}", e.message);
    }

    #[test]
    fn the_file_source_applies_and_each_flag_wins_over_it() {
        let (source, opts) = fleet_options(&flags(&[]), Some(file())).unwrap().unwrap();
        assert_eq!(
            (source.prefix.as_str(), source.node.as_str()),
            ("/prod/veer", "edge-file")
        );
        assert_eq!(
            (opts.lease_ttl, opts.driver),
            (Duration::from_secs(30), false)
        );
        let (source, opts) = fleet_options(
            &flags(&[
                "--node",
                "edge-flag",
                "--etcd-endpoints",
                "http://127.0.0.2:2379",
                "--fleet-driver",
                "on",
            ]),
            Some(file()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(source.node.as_str(), "edge-flag");
        assert_eq!(source.endpoints, "http://127.0.0.2:2379");
        assert_eq!(source.prefix, "/prod/veer", "from the file");
        assert!(opts.driver);
        // --source file on the command line wins over the file's etcd.
        let none = fleet_options(&flags(&["--source", "file"]), Some(file())).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn a_broken_file_that_says_etcd_stops_the_start_and_one_that_does_not_is_left_to_it() {
        /// Removed when dropped, pass or fail.
        struct Dir(PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                drop(std::fs::remove_dir_all(&self.0));
            }
        }
        let dir = Dir(std::env::temp_dir().join(format!("veer-daemon-src-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join("veer.toml");
        std::fs::write(
            &path,
            "[source]\nkind = \"etcd\"\nnode = \"a\"\n[node]\nbogus = 1\n",
        )
        .unwrap();
        let e = file_source(&path).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
        std::fs::write(&path, "[node]\nbogus = 1\n").unwrap();
        assert!(file_source(&path).unwrap().is_none());
        std::fs::write(&path, "[source]\nkind = \"etcd\"\nnode = \"a\"\n").unwrap();
        assert_eq!(file_source(&path).unwrap().unwrap().kind, SourceKind::Etcd);
        assert!(file_source(&dir.0.join("missing.toml")).unwrap().is_none());
    }

    #[test]
    fn an_etcd_source_needs_a_node_and_valid_settings() {
        let usage = |args: &[&str]| {
            let e = fleet_options(&flags(args), None).unwrap_err();
            assert_eq!(e.code, crate::cli::exit::USAGE, "{args:?}: {}", e.message);
            e.message
        };
        assert!(
            usage(&["--source", "etcd", "--etcd-endpoints", "http://e:2379"]).contains("--node")
        );
        assert!(
            usage(&[
                "--source",
                "etcd",
                "--node",
                "a/b",
                "--etcd-endpoints",
                "http://e:2379"
            ])
            .contains("not valid")
        );
        assert!(usage(&["--source", "etcd", "--node", "a"]).contains("endpoint"));
        assert!(
            usage(&[
                "--source",
                "etcd",
                "--node",
                "a",
                "--etcd-endpoints",
                "http://e:2379",
                "--fleet-lease-ttl",
                "1s"
            ])
            .contains("at least 2s")
        );
    }
}

//! `veer fleet ...` and the `--fleet` form of `apply`, `shift`, `drain`, `pin`, `unpin` and
//! `rollback`: the CLI talks to etcd (`--etcd-endpoints`, or `VEER_ETCD_ENDPOINTS`), not to a
//! daemon. One file per subcommand:
//!
//! - `edit`: the six verbs with `--fleet`: the same request, decided by the control core on the
//!   fleet's config document, written back with a compare-and-swap;
//! - `status`: one row per node, from the nodes' status documents;
//! - `history`: the versions of the config document etcd still holds;
//! - `rollout`: fleet rollouts (start, status, pause, resume, abort).

mod edit;
mod history;
mod rollout;
mod status;

use std::path::PathBuf;

pub(super) use edit::{apply, edit, rollback};

use super::{Global, examples, exit::Failure};
use crate::{
    error::chain,
    sources::etcd::{DEFAULT_PREFIX, EtcdOptions, Fleet},
};

/// `veer fleet ...`.
#[derive(Debug, clap::Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per command; boxing would only complicate clap's derive"
)]
pub(in crate::cli) enum Args {
    /// One row per node: config applied, lag, health, errors, rollout step.
    #[command(after_help = examples::FLEET_STATUS)]
    Status(status::Args),
    /// The versions of the fleet's config that etcd still holds, newest first.
    #[command(after_help = examples::FLEET_HISTORY)]
    History(history::Args),
    /// Rollouts across the fleet, in waves of nodes.
    #[command(subcommand, after_help = examples::FLEET_ROLLOUT)]
    Rollout(rollout::Args),
}

/// How to reach the fleet's etcd.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "etcd (fleet)")]
#[expect(
    clippy::struct_field_names,
    reason = "clap names the flags after the fields: --etcd-endpoints ..."
)]
pub(in crate::cli) struct EtcdArgs {
    /// etcd endpoints, comma-separated (`http://HOST:2379` or `https://HOST:2379`).
    #[arg(
        long,
        value_delimiter = ',',
        env = "VEER_ETCD_ENDPOINTS",
        value_name = "URL,..."
    )]
    etcd_endpoints: Vec<String>,
    /// The fleet's key prefix.
    #[arg(long, env = "VEER_ETCD_PREFIX", default_value = DEFAULT_PREFIX, value_name = "PREFIX")]
    etcd_prefix: String,
    /// CA that signed etcd's certificate (for `https://` endpoints).
    #[arg(long, env = "VEER_ETCD_CACERT", value_name = "FILE")]
    etcd_cacert: Option<PathBuf>,
    /// Client certificate for etcd's `--client-cert-auth`.
    #[arg(long, env = "VEER_ETCD_CERT", value_name = "FILE")]
    etcd_cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, env = "VEER_ETCD_KEY", value_name = "FILE")]
    etcd_key: Option<PathBuf>,
    /// etcd user (with --etcd-password-file); an operator holds the veer-operator role.
    #[arg(long, env = "VEER_ETCD_USER", value_name = "USER")]
    etcd_user: Option<String>,
    /// File holding the user's password (one line, not readable by other users).
    #[arg(long, env = "VEER_ETCD_PASSWORD_FILE", value_name = "FILE")]
    etcd_password_file: Option<PathBuf>,
}

/// `--fleet` and how to reach etcd, on the verbs that change the desired state.
#[derive(Debug, clap::Args)]
pub(in crate::cli) struct FleetArgs {
    /// Change the fleet's config in etcd instead of this node (every node follows it).
    #[arg(long)]
    fleet: bool,
    #[command(flatten)]
    etcd: EtcdArgs,
}

impl FleetArgs {
    /// Whether `--fleet` was given.
    pub(in crate::cli) fn on(&self) -> bool {
        self.fleet
    }
}

impl EtcdArgs {
    /// The fleet's keys, connected on first use.
    fn connect(&self) -> Result<Fleet, Failure> {
        if self.etcd_endpoints.is_empty() {
            return Err(Failure::usage(
                "give the fleet's etcd: --etcd-endpoints URL[,URL...] (or VEER_ETCD_ENDPOINTS)"
                    .to_owned(),
            ));
        }
        let options = EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            cacert: self.etcd_cacert.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            user: self.etcd_user.clone(),
            password_file: self.etcd_password_file.clone(),
            ..EtcdOptions::default()
        };
        let connector = options.resolve().map_err(|e| Failure::usage(chain(&e)))?;
        Ok(Fleet::new(connector))
    }
}

/// Runs `veer fleet ...`.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    match args {
        Args::Status(a) => status::run(a, g),
        Args::History(a) => history::run(a, g),
        Args::Rollout(a) => rollout::run(a, g),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use crate::cli::Cli;

    /// Command lines that must parse, as words after `veer`.
    const LINES: &[&str] = &[
        "shift web v2=10 --fleet --etcd-endpoints http://127.0.0.1:2379",
        "apply -f x.toml --fleet --etcd-endpoints https://a:2379,https://b:2379 --etcd-cacert ca.pem",
        "drain web v1 --fleet --etcd-endpoints http://e:2379",
        "pin web 203.0.113.0/24 v2 --fleet --etcd-endpoints http://e:2379",
        "unpin web 203.0.113.0/24 --fleet --etcd-endpoints http://e:2379",
        "rollback web --to 42 --fleet --etcd-endpoints http://e:2379",
        "fleet status --etcd-endpoints http://e:2379 -o json",
        "fleet history --limit 5 --etcd-endpoints http://e:2379",
        "fleet rollout start web --to v2 --waves 1,25%,100% --steps 10,100 --pause 5s \
         --canary edge-2 --on-missing-node skip --etcd-endpoints http://e:2379",
        "fleet rollout abort web --reason bad --etcd-endpoints http://e:2379",
        "daemon --source etcd --etcd-endpoints http://e:2379 --etcd-prefix /veer --node edge-1 \
         --etcd-user edge-1 --etcd-password-file /etc/veer/pw --fleet-lease-ttl 5s \
         --fleet-driver off",
    ];

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fleet_flags_parse_on_the_verbs_and_the_fleet_commands() {
        for line in LINES {
            let args = std::iter::once("veer").chain(line.split_whitespace());
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("veer {line}: {e}");
            }
        }
    }
}

//! How to reach etcd: endpoints, prefix, TLS files, user and password file, timeouts. Checked
//! and read once, at start ([`EtcdOptions::resolve`]), so a typo fails the command at once with
//! the flag it concerns; etcd itself is only contacted later, and may be down then.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use super::error::EtcdError;
use crate::fleet::KeyLayout;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/veer";

/// What the etcd flags say (`--etcd-endpoints`, `--etcd-prefix`, `--etcd-cacert`,
/// `--etcd-cert`, `--etcd-key`, `--etcd-user`, `--etcd-password-file`), or the `[source]`
/// table of the local file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `http://HOST:PORT` or `https://HOST:PORT`, all of one scheme.
    pub endpoints: Vec<String>,
    /// Key prefix of the fleet.
    pub prefix: String,
    /// CA that signed etcd's server certificate (needed for `https://`).
    pub cacert: Option<PathBuf>,
    /// Client certificate (with `key`), for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// Client key.
    pub key: Option<PathBuf>,
    /// etcd user (with `password_file`).
    pub user: Option<String>,
    /// File holding the user's password (one line; a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// How long a connection attempt may take.
    pub dial_timeout: Duration,
    /// How long one request may take (not watches, keep-alives and campaigns, which last).
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive interval: a silent peer is declared gone after twice this.
    pub keepalive: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: Vec::new(),
            prefix: DEFAULT_PREFIX.to_owned(),
            cacert: None,
            cert: None,
            key: None,
            user: None,
            password_file: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(10),
        }
    }
}

/// Checked options with the files read: everything needed to connect, no I/O left but the
/// network.
#[derive(Clone)]
pub struct Connector {
    pub(super) endpoints: Vec<String>,
    pub(super) layout: KeyLayout,
    pub(super) user: Option<String>,
    pub(super) request_timeout: Duration,
    pub(super) connect: ConnectOptions,
}

impl std::fmt::Debug for Connector {
    // Hand-written: `ConnectOptions` holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("endpoints", &self.endpoints)
            .field("layout", &self.layout)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl EtcdOptions {
    /// Checks the options and reads the TLS and password files.
    pub fn resolve(&self) -> Result<Connector, EtcdError> {
        let layout = KeyLayout::new(&self.prefix)?;
        let https = self.check_endpoints()?;
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_keep_alive(self.keepalive, self.keepalive)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = self.tls(https)? {
            connect = connect.with_tls(tls);
        }
        match (&self.user, &self.password_file) {
            (Some(user), Some(path)) => {
                let password = read_password(path)?;
                connect = connect
                    .with_user(user.clone(), password)
                    .with_auto_token_refresh(true);
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(EtcdError::AuthOptions {
                    why: "--etcd-user needs --etcd-password-file (passwords are never given on the command line)",
                });
            }
            (None, Some(_)) => {
                return Err(EtcdError::AuthOptions {
                    why: "--etcd-password-file needs --etcd-user",
                });
            }
        }
        Ok(Connector {
            endpoints: self.endpoints.clone(),
            layout,
            user: self.user.clone(),
            request_timeout: self.request_timeout,
            connect,
        })
    }

    /// Checks every endpoint; returns whether they are `https://`.
    fn check_endpoints(&self) -> Result<bool, EtcdError> {
        let Some(first) = self.endpoints.first() else {
            return Err(EtcdError::BadEndpoint {
                endpoint: String::new(),
                why: "no endpoint given",
            });
        };
        let https = first.starts_with("https://");
        for e in &self.endpoints {
            let bad = |why| EtcdError::BadEndpoint {
                endpoint: e.clone(),
                why,
            };
            let rest = e
                .strip_prefix("https://")
                .or_else(|| e.strip_prefix("http://"))
                .ok_or_else(|| bad("it must start with `http://` or `https://`"))?;
            if e.starts_with("https://") != https {
                return Err(bad("all endpoints must use the same scheme"));
            }
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') || authority.contains('@') {
                return Err(bad(
                    "it must be a host and a port, without a path or credentials",
                ));
            }
            let has_port = authority
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !has_port {
                return Err(bad("it needs a port (etcd's client port is usually 2379)"));
            }
        }
        Ok(https)
    }

    fn tls(&self, https: bool) -> Result<Option<TlsOptions>, EtcdError> {
        let any_file = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        if !https {
            if any_file {
                return Err(EtcdError::TlsOptions {
                    why: "TLS files are given but the endpoints are `http://`; use `https://` endpoints",
                });
            }
            return Ok(None);
        }
        let Some(cacert) = &self.cacert else {
            return Err(EtcdError::TlsOptions {
                why: "`https://` endpoints need --etcd-cacert (the CA that signed etcd's certificate)",
            });
        };
        let mut tls =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read("--etcd-cacert", cacert)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read("--etcd-cert", cert)?,
                    read("--etcd-key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(EtcdError::TlsOptions {
                    why: "--etcd-cert and --etcd-key go together",
                });
            }
        }
        Ok(Some(tls))
    }
}

impl Connector {
    /// The key layout.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// The endpoints, comma-separated (for messages).
    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::TlsFile {
        flag,
        path: path.to_owned(),
        source,
    })
}

fn read_password(path: &Path) -> Result<String, EtcdError> {
    let io = |source| EtcdError::PasswordFile {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o006 != 0 {
        return Err(EtcdError::PasswordFileMode {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let password = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    if password.is_empty() {
        return Err(EtcdError::EmptyPassword {
            path: path.to_owned(),
        });
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn opts(endpoints: &[&str]) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.iter().map(|s| (*s).to_owned()).collect(),
            ..EtcdOptions::default()
        }
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let d =
                std::env::temp_dir().join(format!("veer-etcd-opts-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _removed = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(
            opts(&["http://127.0.0.1:2379", "http://[::1]:2379"])
                .resolve()
                .is_ok()
        );
        for bad in [
            &[][..],
            &["127.0.0.1:2379"],
            &["http://127.0.0.1"],
            &["http://127.0.0.1:2379/v3"],
            &["http://user:pw@127.0.0.1:2379"],
            &["http://127.0.0.1:99999"],
            &["http://127.0.0.1:2379", "https://127.0.0.2:2379"],
        ] {
            assert!(
                matches!(opts(bad).resolve(), Err(EtcdError::BadEndpoint { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tls_flags_must_fit_the_endpoints() {
        let mut o = opts(&["https://127.0.0.1:2379"]);
        assert!(
            matches!(o.resolve(), Err(EtcdError::TlsOptions { .. })),
            "no CA"
        );
        o.cacert = Some("/nonexistent/ca.pem".into());
        let e = o.resolve().unwrap_err();
        assert!(
            matches!(
                &e,
                EtcdError::TlsFile {
                    flag: "--etcd-cacert",
                    ..
                }
            ),
            "{e:?}"
        );
        let mut o = opts(&["http://127.0.0.1:2379"]);
        o.cacert = Some("/etc/hostname".into());
        assert!(
            matches!(o.resolve(), Err(EtcdError::TlsOptions { .. })),
            "TLS on http"
        );
        let dir = TempDir::new("tls");
        let ca = dir.0.join("ca.pem");
        std::fs::write(&ca, "not checked before the handshake").unwrap();
        let mut o = opts(&["https://127.0.0.1:2379"]);
        o.cacert = Some(ca.clone());
        assert!(o.resolve().is_ok());
        o.cert = Some(ca);
        assert!(
            matches!(o.resolve(), Err(EtcdError::TlsOptions { .. })),
            "cert without key"
        );
    }

    #[test]
    fn the_password_comes_from_a_private_file() {
        let dir = TempDir::new("pw");
        let file = dir.0.join("password");
        let mut o = opts(&["http://127.0.0.1:2379"]);
        o.user = Some("veer-node-a".into());
        assert!(matches!(o.resolve(), Err(EtcdError::AuthOptions { .. })));
        o.password_file = Some(file.clone());
        assert!(matches!(o.resolve(), Err(EtcdError::PasswordFile { .. })));

        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            o.resolve(),
            Err(EtcdError::PasswordFileMode { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(o.resolve().is_ok());
        assert_eq!(read_password(&file).unwrap(), "s3cret");
        std::fs::write(&file, "s3cret\r\n").unwrap();
        assert_eq!(read_password(&file).unwrap(), "s3cret");
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(o.resolve(), Err(EtcdError::EmptyPassword { .. })));

        o.user = None;
        assert!(matches!(o.resolve(), Err(EtcdError::AuthOptions { .. })));
    }

    #[test]
    fn the_prefix_is_checked() {
        let mut o = opts(&["http://127.0.0.1:2379"]);
        o.prefix = "veer".into();
        assert!(matches!(o.resolve(), Err(EtcdError::Key(_))));
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let dir = TempDir::new("dbg");
        let file = dir.0.join("password");
        std::fs::write(&file, "hunter2").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut o = opts(&["http://127.0.0.1:2379"]);
        o.user = Some("u".into());
        o.password_file = Some(file);
        let c = o.resolve().unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

//! Who made a revision and why: recorded with every revision, shown by `veer history`.
//!
//! A revision made through the control socket names the peer the kernel reported for the
//! connection (`SO_PEERCRED`: uid, and the user name it had when the revision was made); the
//! daemon's own producers name themselves (`config-file`, `rollout`, `fleet`). Revisions written
//! before veer recorded authors read back as `unknown`.

use serde::{Deserialize, Serialize};

/// Who made a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Author {
    /// A user of the control socket, as `SO_PEERCRED` reported the connection.
    User {
        /// The peer's user id.
        uid: u32,
        /// Its user name when the revision was made (none when the uid has no passwd entry).
        #[serde(default)]
        name: Option<String>,
    },
    /// The config file, read at start, on SIGHUP or when it changed.
    ConfigFile,
    /// The rollout engine: a step, a completion, a rollback, a hold after a restart.
    Rollout,
    /// A fleet's config center or a fleet rollout.
    Fleet,
    /// Not recorded: a revision written before veer recorded authors.
    #[default]
    Unknown,
}

impl Author {
    /// The user with `uid`, named from the passwd database when it has an entry.
    pub fn user(uid: u32) -> Self {
        Self::User {
            uid,
            name: user_name(uid),
        }
    }
}

impl std::fmt::Display for Author {
    /// `alice (uid 1000)`, `uid 1234`, `config-file`, `rollout`, `fleet`, `unknown`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User {
                uid,
                name: Some(name),
            } => write!(f, "{name} (uid {uid})"),
            Self::User { uid, name: None } => write!(f, "uid {uid}"),
            Self::ConfigFile => f.write_str("config-file"),
            Self::Rollout => f.write_str("rollout"),
            Self::Fleet => f.write_str("fleet"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// Who made a change and why: what a revision records about its making.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Audit {
    /// Who.
    pub author: Author,
    /// Why, in the author's words (`--reason`), if given.
    pub reason: Option<String>,
}

impl Audit {
    /// The daemon's own producer `author`, with no reason.
    pub fn by(author: Author) -> Self {
        Self {
            author,
            reason: None,
        }
    }
}

/// Longest reason recorded, in bytes (a reason is a line for a table, not a document).
pub const MAX_REASON: usize = 1024;

/// The user name of `uid` in the passwd database (`getpwuid_r`), if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0_u8; 4096];
    // SAFETY: an all-zero passwd is a valid value to hand to getpwuid_r, which fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to memory we own for the duration of the call, `buf` is as long
    // as we say, and the strings read below point into `buf`, still alive then.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &raw mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &raw mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_read_and_print_as_documented() {
        let json = serde_json::to_string(&Author::User {
            uid: 1000,
            name: Some("alice".into()),
        })
        .unwrap();
        assert_eq!(json, r#"{"kind":"user","uid":1000,"name":"alice"}"#);
        assert_eq!(
            serde_json::to_string(&Author::ConfigFile).unwrap(),
            r#"{"kind":"config-file"}"#
        );
        let back: Author = serde_json::from_str(r#"{"kind":"user","uid":7}"#).unwrap();
        assert_eq!(back, Author::User { uid: 7, name: None });
        assert_eq!(back.to_string(), "uid 7");
        assert_eq!(Author::user(0).to_string(), "root (uid 0)");
    }
}

//! The revision store. One JSON file per revision (`revisions/000042.json`), written to a
//! temporary file, fsynced, linked into place under a name no file has (an existing file is
//! never replaced) and the directory fsynced: a reader sees the old set of files or the new
//! one, never half a file. Stray temporary files (a crash mid-write) are removed at open.
//!
//! A file named like a revision that cannot be used (cut short, another program's, of another
//! shape, from a newer veer, or not a regular file at all) is reported, never used, never
//! overwritten, and its number is never given to another revision. When it is the newest, the
//! store says so (`hold`): the control layer then keeps the maps as pinned and waits for an
//! operator instead of falling back to an older revision.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::model::{DesiredState, Ids, NodeConfig};

/// Revisions kept on disk; older ones are pruned.
pub(super) const KEEP: usize = 1000;

/// Where a revision came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// The config file, at start or on reload.
    Config {
        /// The file.
        path: PathBuf,
    },
    /// `veer apply`.
    Apply {
        /// The file the CLI read.
        path: PathBuf,
    },
    /// `veer shift`.
    Shift,
    /// `veer drain`.
    Drain,
    /// `veer pin`.
    Pin,
    /// `veer unpin`.
    Unpin,
    /// `veer rollback`.
    Rollback {
        /// The revision rolled back to.
        to: u64,
    },
    /// A rollout started, stepped, paused, resumed, completed, rolled back or was aborted.
    Rollout,
    /// A fleet's config document in etcd (`veer daemon --source etcd`).
    Etcd {
        /// Its key (`/veer/config`, `/veer/nodes/<node>/config`).
        key: String,
        /// Its mod revision.
        mod_revision: i64,
    },
}

impl Origin {
    /// One word, for tables.
    pub fn word(&self) -> &'static str {
        match self {
            Origin::Config { .. } => "config",
            Origin::Apply { .. } => "apply",
            Origin::Shift => "shift",
            Origin::Drain => "drain",
            Origin::Pin => "pin",
            Origin::Unpin => "unpin",
            Origin::Rollback { .. } => "rollback",
            Origin::Rollout => "rollout",
            Origin::Etcd { .. } => "etcd",
        }
    }
}

/// One applied desired state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// 1, 2, 3 ...
    pub number: u64,
    /// When it was committed.
    #[serde(with = "crate::model::human::rfc3339")]
    pub time: SystemTime,
    /// Where it came from.
    pub origin: Origin,
    /// One line saying what changed.
    pub summary: String,
    /// The services it names (for `history SERVICE`).
    pub services: Vec<String>,
    /// The state.
    pub state: DesiredState,
    /// The numeric ids the state was applied with, so a restarted daemon keeps them.
    pub ids: Ids,
    /// What the config file meant (`control::core::meaning` of its services) when this
    /// revision or an earlier one last applied it. Revisions written before veer compared
    /// meanings hold the SHA-256 of the file's text instead.
    pub config_digest: Option<String>,
    /// Rollouts and their progress (the finished ones stay for `rollout status`).
    #[serde(default)]
    pub rollouts: Vec<crate::rollout::Rollout>,
    /// Paced drains in force (`veer drain --deadline`, a rollout's `--drain-deadline`): what a
    /// restarted daemon continues. Absent in revisions without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drains: Vec<crate::model::drain::PacedDrain>,
    /// Who made it, and why (`unknown`, no reason, in revisions written before veer recorded
    /// them).
    #[serde(default, flatten)]
    pub audit: super::Audit,
}

/// The version of the revision format this build writes (`"format"` in every file; files
/// written before the field existed are format 1). A file of a higher format comes from a newer
/// veer: it is reported and never used, since this build would misread it.
pub const FORMAT: u32 = 1;

/// Largest revision file read (a state at every map's capacity is a few MiB of JSON).
const MAX_FILE: u64 = 64 << 20;

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {} failed", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding a revision failed.
    #[error("encoding revision {number} failed")]
    Encode {
        /// Revision number.
        number: u64,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A file appeared under the name of the revision being written: it is left as it is.
    #[error(
        "{} appeared while revision {number} was being written; it is left as it is and nothing was committed (restart the daemon to read it)",
        path.display()
    )]
    Exists {
        /// Revision number.
        number: u64,
        /// The file.
        path: PathBuf,
    },
    /// The directory to purge is not one.
    #[error("{}: {why}; nothing was removed", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// What is there instead.
        why: String,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { op, path, source }
}

/// Why a file named like a revision cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Not a regular file (a FIFO, a socket, a device, a directory, a symbolic link).
    #[error("it is a {kind}, not a file veer wrote")]
    NotAFile {
        /// What is there.
        kind: &'static str,
    },
    /// Reading it failed.
    #[error("it cannot be read: {error}")]
    Unreadable {
        /// The error, in words.
        error: String,
    },
    /// Not JSON: cut short or overwritten (disk trouble, a hand edit).
    #[error("it is damaged (not complete JSON: {error})")]
    Damaged {
        /// The parser's words.
        error: String,
    },
    /// JSON, but not a revision of this build's: another program's file, a file of another
    /// shape, a copy under another number, or a revision written by a newer veer.
    #[error("it is not a revision this veer can use ({why})")]
    Foreign {
        /// Why, in words.
        why: String,
    },
}

/// A file in the revision directory named like a revision that cannot be used. It is reported,
/// never used, never overwritten and never removed by veer; its number is never given to
/// another revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unusable {
    /// The number its name says.
    pub number: u64,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: Problem,
}

/// The revisions of a state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    revisions: Vec<Revision>,
    unusable: Vec<Unusable>,
    /// The highest number any file's name claims (usable or not): the next revision is above.
    highest: u64,
    keep: usize,
}

/// The revision number a file name claims (`000042.json`: 42), when it is named like one.
fn claimed_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a temporary file of `write_atomically` (`.000042.json.tmp`).
fn is_temporary(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .is_some_and(|n| claimed_number(n).is_some() || n == NODE_FILE)
}

/// Reads and checks the revision file `path`, which claims `number`.
fn read_revision(path: &Path, number: u64) -> Result<Revision, Problem> {
    let bytes = crate::files::read_regular(path, crate::files::Links::Refuse, MAX_FILE).map_err(
        |e| match e {
            crate::files::ReadError::NotAFile { kind, .. } => Problem::NotAFile { kind },
            other => Problem::Unreadable {
                error: crate::error::chain(&other),
            },
        },
    )?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Problem::Damaged {
            error: e.to_string(),
        })?;
    let foreign = |why: String| Problem::Foreign { why };
    let object = value
        .as_object_mut()
        .ok_or_else(|| foreign("not a JSON object".to_owned()))?;
    let format = match object.remove("format") {
        None => 1,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| foreign(format!("`format` is {v}, not a number")))?,
    };
    if format > u64::from(FORMAT) {
        return Err(foreign(format!(
            "written by a newer veer: revision format {format}, this build reads up to {FORMAT}"
        )));
    }
    let revision: Revision = serde_json::from_value(value).map_err(|e| foreign(e.to_string()))?;
    if revision.number != number {
        return Err(foreign(format!(
            "it holds revision {}, not {number}",
            revision.number
        )));
    }
    if path.file_name().and_then(|n| n.to_str()) != Some(file_name(number).as_str()) {
        return Err(foreign(format!(
            "veer names revision {number} {}",
            file_name(number)
        )));
    }
    Ok(revision)
}

/// What the store writes next to the revisions: the node settings of the daemon's last start.
const NODE_FILE: &str = "node.json";

/// A revision as written: its format, then the revision.
#[derive(Serialize)]
struct OnDisk<'a> {
    format: u32,
    #[serde(flatten)]
    revision: &'a Revision,
}

impl Store {
    /// Opens (creating, mode 0700) `state_dir` and reads its revisions. Only regular files are
    /// read (without blocking, never through a symbolic link); a file named like a revision that
    /// cannot be used is reported (`unusable`) and skipped, never removed.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let dir = state_dir.join("revisions");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating", &dir))?;
        let store = Self::scan(dir, true)?;
        for u in &store.unusable {
            if store.hold().is_some_and(|h| h.number == u.number) {
                tracing::error!(path = %u.path.display(), revision = u.number, problem = %u.problem, "the newest revision file cannot be used; it is kept as it is, and no change is made until an operator chooses the state (veer rollback --to N, or veer apply)");
            } else {
                tracing::warn!(path = %u.path.display(), revision = u.number, problem = %u.problem, "skipping a revision file that cannot be used (it is kept as it is)");
            }
        }
        Ok(store)
    }

    /// Reads the revisions of `state_dir` as `open` does, for a reader that must change nothing
    /// (`veer status --offline`): the directory is not created, unfinished writes stay, nothing
    /// is logged. Not for committing.
    pub fn read_only(state_dir: &Path) -> Result<Self, StoreError> {
        Self::scan(state_dir.join("revisions"), false)
    }

    /// Sorts the files of the revision directory `dir` into usable revisions and unusable ones;
    /// with `tidy`, removes the temporary files of writes that never reached their rename.
    fn scan(dir: PathBuf, tidy: bool) -> Result<Self, StoreError> {
        let mut revisions = Vec::new();
        let mut unusable = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let entry = entry.map_err(io("listing", &dir))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if is_temporary(&name) {
                // A write that never reached its rename (a regular file: anything else is not
                // veer's to remove).
                if tidy && fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file()) {
                    fs::remove_file(&path).map_err(io("removing", &path))?;
                    tracing::warn!(path = %path.display(), "removed an unfinished revision write");
                }
                continue;
            }
            let Some(number) = claimed_number(&name) else {
                continue;
            };
            match read_revision(&path, number) {
                Ok(r) => revisions.push(r),
                Err(problem) => unusable.push(Unusable {
                    number,
                    path,
                    problem,
                }),
            }
        }
        revisions.sort_by_key(|r| r.number);
        unusable.sort_by_key(|u| u.number);
        let highest = revisions
            .iter()
            .map(|r| r.number)
            .chain(unusable.iter().map(|u| u.number))
            .max()
            .unwrap_or(0);
        Ok(Self {
            dir,
            revisions,
            unusable,
            highest,
            keep: KEEP,
        })
    }

    /// The newest usable revision.
    pub fn latest(&self) -> Option<&Revision> {
        self.revisions.last()
    }

    /// Revision `number`.
    pub fn get(&self, number: u64) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.number == number)
    }

    /// Every usable revision kept, oldest first.
    pub fn all(&self) -> &[Revision] {
        &self.revisions
    }

    /// Every file named like a revision that cannot be used, by number.
    pub fn unusable(&self) -> &[Unusable] {
        &self.unusable
    }

    /// The newest file named like a revision when it cannot be used: the state the node was
    /// last given is unknown, and no older revision may silently take its place.
    pub fn hold(&self) -> Option<&Unusable> {
        hold(&self.revisions, &self.unusable)
    }

    /// Writes a new revision durably and returns it. Its number is above every number a file
    /// in the directory claims, usable or not; an existing file is never replaced.
    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one revision, written together"
    )]
    pub fn commit(
        &mut self,
        origin: Origin,
        summary: String,
        state: DesiredState,
        ids: Ids,
        config_digest: Option<String>,
        rollouts: Vec<crate::rollout::Rollout>,
        drains: Vec<crate::model::drain::PacedDrain>,
        audit: super::Audit,
    ) -> Result<&Revision, StoreError> {
        let number = self.highest + 1;
        let revision = Revision {
            number,
            time: SystemTime::now(),
            origin,
            summary,
            services: state.services.iter().map(|s| s.name.clone()).collect(),
            state,
            ids,
            config_digest,
            rollouts,
            drains,
            audit,
        };
        let bytes = serde_json::to_vec_pretty(&OnDisk {
            format: FORMAT,
            revision: &revision,
        })
        .map_err(|source| StoreError::Encode { number, source })?;
        write_new(&self.dir, &file_name(number), &bytes).map_err(|e| match e {
            WriteError::Exists(path) => StoreError::Exists { number, path },
            WriteError::Store(e) => e,
        })?;
        self.highest = number;
        self.revisions.push(revision);
        self.prune();
        // Infallible: pushed just above.
        Ok(self.revisions.last().unwrap_or_else(|| unreachable!()))
    }

    /// Only usable revisions are pruned: a file that cannot be used is not veer's to remove.
    fn prune(&mut self) {
        while self.revisions.len() > self.keep {
            let old = self.revisions.remove(0);
            let path = self.dir.join(file_name(old.number));
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not prune an old revision");
            }
        }
    }

    /// The node settings the daemon recorded at its last start (`None`: none recorded yet).
    pub fn node_settings(&self) -> Result<Option<NodeConfig>, Problem> {
        let path = self.node_file();
        let bytes = match crate::files::read_regular(&path, crate::files::Links::Refuse, MAX_FILE) {
            Ok(b) => b,
            Err(e) if e.is_missing() => return Ok(None),
            Err(crate::files::ReadError::NotAFile { kind, .. }) => {
                return Err(Problem::NotAFile { kind });
            }
            Err(e) => {
                return Err(Problem::Unreadable {
                    error: crate::error::chain(&e),
                });
            }
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Problem::Damaged {
                error: e.to_string(),
            })?;
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| Problem::Foreign { why: e.to_string() })
    }

    /// Records the node settings the daemon runs with, for a start that has no config file
    /// to read them from.
    pub fn record_node_settings(&self, node: &NodeConfig) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(node)
            .map_err(|source| StoreError::Encode { number: 0, source })?;
        let dir = self.dir.parent().unwrap_or(&self.dir);
        write_atomically(dir, NODE_FILE, &bytes)
    }

    fn node_file(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join(NODE_FILE)
    }
}

/// The newest unusable file when it is newer than the newest usable revision.
pub fn hold<'a>(revisions: &[Revision], unusable: &'a [Unusable]) -> Option<&'a Unusable> {
    let newest = revisions.last().map_or(0, |r| r.number);
    unusable
        .iter()
        .filter(|u| u.number > newest)
        .max_by_key(|u| u.number)
}

fn file_name(number: u64) -> String {
    format!("{number:06}.json")
}

/// Writes `bytes` to `dir/name`: temporary file, fsync, rename, fsync of the directory.
pub(super) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = write_temporary(dir, name, bytes)?;
    let dst = dir.join(name);
    fs::rename(&tmp, &dst).map_err(io("renaming into place", &dst))?;
    sync_dir(dir)
}

enum WriteError {
    Exists(PathBuf),
    Store(StoreError),
}

/// Writes `bytes` to the new file `dir/name`, durably, never replacing a file already there:
/// temporary file, fsync, hard link to the name (which fails when the name exists), removal of
/// the temporary name, fsync of the directory.
fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
    let tmp = write_temporary(dir, name, bytes).map_err(WriteError::Store)?;
    let dst = dir.join(name);
    let linked = fs::hard_link(&tmp, &dst);
    let removed = fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(WriteError::Exists(dst));
        }
        Err(e) => return Err(WriteError::Store(io("linking into place", &dst)(e))),
        Ok(()) => {}
    }
    removed.map_err(|e| WriteError::Store(io("removing", &tmp)(e)))?;
    sync_dir(dir).map_err(WriteError::Store)
}

fn write_temporary(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    Ok(tmp)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// What `purge` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Files removed.
    pub removed: Vec<String>,
    /// What was left because veer does not write it.
    pub left: Vec<String>,
}

/// Removes the files the store and the daemon write in `state_dir` (revisions, their temporary
/// files, the node settings, the lock), then the directories if nothing else is in them.
/// Anything else is left where it is, and named.
pub fn purge(state_dir: &Path) -> Result<Purged, StoreError> {
    let mut out = Purged::default();
    match fs::symlink_metadata(state_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("looking at", state_dir)(e)),
        Ok(m) if !m.is_dir() => {
            return Err(StoreError::NotADirectory {
                path: state_dir.to_owned(),
                why: format!("it is a {}", crate::files::kind_of(m.file_type())),
            });
        }
        Ok(_) => {}
    }
    let revisions = state_dir.join("revisions");
    let own = |dir: &Path, name: &str| {
        if dir == revisions {
            claimed_number(name).is_some() || is_temporary(name)
        } else {
            name == "lock" || name == NODE_FILE || is_temporary(name)
        }
    };
    for dir in [&revisions, &state_dir.to_owned()] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if *dir == *state_dir && name == "revisions" {
                continue;
            }
            if !is_dir && own(dir, &name) {
                fs::remove_file(&path).map_err(io("removing", &path))?;
                out.removed.push(path.display().to_string());
            } else {
                out.left.push(path.display().to_string());
            }
        }
        match fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {}
            Err(e) => return Err(io("removing", dir)(e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::web;

    /// A temporary state directory, removed when dropped (even when the test fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("veer-store-{name}-{}", std::process::id()));
            drop(fs::remove_dir_all(&d));
            Self(d)
        }

        fn revisions(&self) -> PathBuf {
            self.0.join("revisions")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            drop(fs::remove_dir_all(&self.0));
        }
    }

    fn commit(s: &mut Store, summary: &str) -> u64 {
        s.commit(
            Origin::Shift,
            summary.into(),
            web(),
            Ids::default(),
            None,
            Vec::new(),
            Vec::new(),
            super::super::Audit::default(),
        )
        .unwrap()
        .number
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn revisions_survive_reopening_in_order() {
        let d = TempDir::new("reopen");
        let mut s = Store::open(&d.0).unwrap();
        assert!(s.latest().is_none());
        commit(&mut s, "first");
        s.commit(
            Origin::Drain,
            "second".into(),
            DesiredState::default(),
            Ids::default(),
            Some("abc".into()),
            Vec::new(),
            Vec::new(),
            super::super::Audit::default(),
        )
        .unwrap();
        let s = Store::open(&d.0).unwrap();
        assert_eq!(s.all().iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(s.latest().unwrap().summary, "second");
        assert_eq!(s.get(1).unwrap().state, web());
        assert!(s.unusable().is_empty() && s.hold().is_none());
        let text = fs::read_to_string(d.revisions().join("000001.json")).unwrap();
        assert!(text.contains("\"format\": 1"), "{text}");
    }

    #[test]
    fn a_revision_written_before_the_format_field_is_read() {
        let d = TempDir::new("format1");
        let mut s = Store::open(&d.0).unwrap();
        commit(&mut s, "old");
        let path = d.revisions().join("000001.json");
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("format");
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let s = Store::open(&d.0).unwrap();
        assert_eq!(s.latest().unwrap().summary, "old");
        assert!(s.unusable().is_empty());
    }

    #[test]
    fn a_revision_whose_paced_drain_does_not_read_holds_and_is_never_guessed() {
        let d = TempDir::new("drain");
        let mut s = Store::open(&d.0).unwrap();
        commit(&mut s, "one");
        let drain = crate::model::drain::PacedDrain {
            service: "web".into(),
            group: "v1".into(),
            ends_from: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            pace: crate::model::drain::Pace::per_second(50),
        };
        s.commit(
            Origin::Drain,
            "drain web/v1".into(),
            web(),
            Ids::default(),
            None,
            Vec::new(),
            vec![drain.clone()],
            super::super::Audit::default(),
        )
        .unwrap();
        let path = d.revisions().join("000002.json");
        let good: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(good["drains"][0]["ends_from"], "2023-11-14T22:13:20.123Z");
        assert_eq!(Store::open(&d.0).unwrap().latest().unwrap().drains, [drain]);
        for (field, value, says) in [
            ("pace", serde_json::json!("0/s"), "pace 0/s is out of range"),
            (
                "ends_from",
                serde_json::json!("tomorrow"),
                "a paced drain's `ends_from` `tomorrow` is not an RFC 3339 time",
            ),
            (
                "ends_from",
                serde_json::json!(1_700_000_000),
                "invalid type",
            ),
            ("sooner", serde_json::json!(true), "unknown field `sooner`"),
        ] {
            let mut bad = good.clone();
            bad["drains"][0][field] = value;
            fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
            let s = Store::open(&d.0).unwrap();
            assert_eq!(s.latest().unwrap().number, 1, "{field}");
            let held = s.hold().unwrap();
            assert_eq!(held.number, 2);
            let text = held.problem.to_string();
            assert!(
                matches!(held.problem, Problem::Foreign { .. }) && text.contains(says),
                "{field}: {text}"
            );
        }
        let bytes = serde_json::to_vec(&good).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
        let s = Store::open(&d.0).unwrap();
        assert!(matches!(s.hold().unwrap().problem, Problem::Damaged { .. }));
    }

    #[test]
    fn a_torn_write_is_never_read_back_as_state() {
        let d = TempDir::new("torn");
        let mut s = Store::open(&d.0).unwrap();
        commit(&mut s, "good");
        let dir = d.revisions();
        // A crash before the rename leaves a temporary file: ignored and removed.
        let good = fs::read(dir.join("000001.json")).unwrap();
        fs::write(dir.join(".000002.json.tmp"), &good[..good.len() / 2]).unwrap();
        let s = Store::open(&d.0).unwrap();
        assert_eq!(s.latest().unwrap().summary, "good");
        assert!(!dir.join(".000002.json.tmp").exists());
        assert!(s.hold().is_none());
    }

    #[test]
    fn a_damaged_newest_revision_holds_and_its_number_is_never_reused() {
        let d = TempDir::new("damaged");
        let mut s = Store::open(&d.0).unwrap();
        commit(&mut s, "one");
        commit(&mut s, "two");
        let dir = d.revisions();
        let path = dir.join("000002.json");
        let bytes = fs::read(&path).unwrap();
        let torn = &bytes[..bytes.len() / 2];
        fs::write(&path, torn).unwrap();
        let mut s = Store::open(&d.0).unwrap();
        // Revision 1 is the newest usable one, but it is not what the node was last given.
        assert_eq!(s.latest().unwrap().number, 1);
        let held = s.hold().unwrap();
        assert_eq!(held.number, 2);
        assert!(
            matches!(held.problem, Problem::Damaged { .. }),
            "{:?}",
            held.problem
        );
        // The next revision is 3: 2 is never written again, and the damaged file stays.
        assert_eq!(commit(&mut s, "decided"), 3);
        assert_eq!(fs::read(&path).unwrap(), torn);
        assert!(s.hold().is_none(), "a newer usable revision ends the hold");
        let s = Store::open(&d.0).unwrap();
        assert_eq!(s.latest().unwrap().number, 3);
        assert_eq!(s.unusable().len(), 1, "still reported");
        assert!(s.hold().is_none());
    }

    #[test]
    fn foreign_files_are_reported_never_used_never_overwritten() {
        let d = TempDir::new("foreign");
        let mut s = Store::open(&d.0).unwrap();
        commit(&mut s, "one");
        let dir = d.revisions();
        let mut newer: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("000001.json")).unwrap()).unwrap();
        newer["format"] = serde_json::json!(FORMAT + 1);
        newer["number"] = serde_json::json!(5);
        let mut copy = newer.clone();
        copy["format"] = serde_json::json!(1);
        let files: [(&str, Vec<u8>); 5] = [
            ("000002.json", br#"{"hello": "world"}"#.to_vec()),
            ("000003.json", b"[1, 2, 3]".to_vec()),
            // A copy of another revision under this number.
            ("000004.json", serde_json::to_vec(&copy).unwrap()),
            ("000005.json", serde_json::to_vec(&newer).unwrap()),
            ("00006.json", b"{}".to_vec()),
        ];
        for (name, bytes) in &files {
            fs::write(dir.join(name), bytes).unwrap();
        }
        let mut s = Store::open(&d.0).unwrap();
        assert_eq!(s.latest().unwrap().number, 1);
        let found: Vec<(u64, bool)> = s
            .unusable()
            .iter()
            .map(|u| (u.number, matches!(u.problem, Problem::Foreign { .. })))
            .collect();
        assert_eq!(
            found,
            [(2, true), (3, true), (4, true), (5, true), (6, true)]
        );
        let newest = s.hold().unwrap();
        assert_eq!(newest.number, 6);
        let text = s.unusable()[3].problem.to_string();
        assert!(text.contains("written by a newer veer"), "{text}");
        assert_eq!(commit(&mut s, "next"), 7);
        for (name, bytes) in &files {
            assert_eq!(&fs::read(dir.join(name)).unwrap(), bytes, "{name}");
        }
    }

    #[test]
    fn anything_but_a_regular_file_is_reported_without_blocking() {
        let d = TempDir::new("kinds");
        let mut s = Store::open(&d.0).unwrap();
        commit(&mut s, "one");
        let dir = d.revisions();
        // A FIFO would block a plain open forever; a link may point anywhere.
        mkfifo(&dir.join("000099.json"));
        std::os::unix::fs::symlink("/etc/passwd", dir.join("000007.json")).unwrap();
        fs::create_dir(dir.join("000008.json")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dir.join("000009.json")).unwrap();
        let mut s = Store::open(&d.0).unwrap();
        let kinds: Vec<(u64, Problem)> = s
            .unusable()
            .iter()
            .map(|u| (u.number, u.problem.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    7,
                    Problem::NotAFile {
                        kind: "symbolic link"
                    }
                ),
                (8, Problem::NotAFile { kind: "directory" }),
                (9, Problem::NotAFile { kind: "socket" }),
                (99, Problem::NotAFile { kind: "FIFO" }),
            ]
        );
        assert_eq!(s.hold().unwrap().number, 99);
        assert_eq!(commit(&mut s, "next"), 100);
    }

    #[test]
    fn a_file_that_appears_under_the_next_name_is_not_replaced() {
        let d = TempDir::new("race");
        let mut s = Store::open(&d.0).unwrap();
        commit(&mut s, "one");
        fs::write(d.revisions().join("000002.json"), b"not mine").unwrap();
        let e = s
            .commit(
                Origin::Shift,
                "two".into(),
                web(),
                Ids::default(),
                None,
                Vec::new(),
                Vec::new(),
                super::super::Audit::default(),
            )
            .unwrap_err();
        assert!(matches!(e, StoreError::Exists { number: 2, .. }), "{e}");
        assert_eq!(
            fs::read(d.revisions().join("000002.json")).unwrap(),
            b"not mine"
        );
        assert!(!d.revisions().join(".000002.json.tmp").exists());
        assert_eq!(s.latest().unwrap().number, 1);
    }

    #[test]
    fn revisions_written_before_authors_were_recorded_still_load() {
        let d = TempDir::new("pre-audit");
        let mut s = Store::open(&d.0).unwrap();
        let audit = super::super::Audit {
            author: super::super::Author::User {
                uid: 1000,
                name: Some("alice".into()),
            },
            reason: Some("ticket 42".into()),
        };
        s.commit(
            Origin::Shift,
            "audited".into(),
            web(),
            Ids::default(),
            None,
            Vec::new(),
            Vec::new(),
            audit.clone(),
        )
        .unwrap();
        let dir = d.revisions();
        let mut old: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("000001.json")).unwrap()).unwrap();
        assert_eq!(old["author"]["name"], "alice");
        assert_eq!(old["reason"], "ticket 42");
        let fields = old.as_object_mut().unwrap();
        fields.remove("author");
        fields.remove("reason");
        fields.insert("number".into(), 2.into());
        fs::write(dir.join("000002.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        let s = Store::open(&d.0).unwrap();
        assert_eq!(s.get(1).unwrap().audit, audit);
        assert_eq!(s.get(2).unwrap().audit, super::super::Audit::default());
        assert_eq!(s.get(2).unwrap().state, web());
        assert!(s.unusable().is_empty() && s.hold().is_none());
    }

    #[test]
    fn old_revisions_are_pruned() {
        let d = TempDir::new("prune");
        let mut s = Store::open(&d.0).unwrap();
        s.keep = 5;
        for i in 0..8 {
            commit(&mut s, &format!("{i}"));
        }
        assert_eq!(s.all().len(), 5);
        assert_eq!(s.all()[0].number, 4);
        assert_eq!(fs::read_dir(d.revisions()).unwrap().count(), 5);
    }

    #[test]
    fn node_settings_are_recorded_and_read_back() {
        let d = TempDir::new("node");
        let s = Store::open(&d.0).unwrap();
        assert_eq!(s.node_settings(), Ok(None));
        let mut node = NodeConfig {
            conntrack_max: 4096,
            ..NodeConfig::default()
        };
        node.timeouts.tcp_established = std::time::Duration::from_hours(2);
        s.record_node_settings(&node).unwrap();
        assert_eq!(Store::open(&d.0).unwrap().node_settings(), Ok(Some(node)));
        fs::write(d.0.join(NODE_FILE), b"{\"conntrack").unwrap();
        assert!(matches!(s.node_settings(), Err(Problem::Damaged { .. })));
    }

    #[test]
    fn a_purge_removes_only_what_veer_writes() {
        let d = TempDir::new("purge");
        let mut s = Store::open(&d.0).unwrap();
        commit(&mut s, "one");
        s.record_node_settings(&NodeConfig::default()).unwrap();
        fs::write(d.0.join("lock"), b"").unwrap();
        fs::write(d.0.join("veer.toml"), b"keep me").unwrap();
        fs::write(d.revisions().join("notes.txt"), b"keep me too").unwrap();
        let p = purge(&d.0).unwrap();
        assert_eq!(p.removed.len(), 3, "{p:?}");
        assert_eq!(p.left.len(), 2, "{p:?}");
        assert_eq!(fs::read(d.0.join("veer.toml")).unwrap(), b"keep me");
        assert!(!d.0.join("lock").exists() && !d.revisions().join("000001.json").exists());
        fs::remove_file(d.0.join("veer.toml")).unwrap();
        fs::remove_file(d.revisions().join("notes.txt")).unwrap();
        assert_eq!(purge(&d.0).unwrap(), Purged::default());
        assert!(!d.0.exists());
        // Not a directory: refused.
        let file =
            std::env::temp_dir().join(format!("veer-store-purge-file-{}", std::process::id()));
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            purge(&file),
            Err(StoreError::NotADirectory { .. })
        ));
        fs::remove_file(&file).unwrap();
    }
}

//! The revision store. One JSON file per revision (`revisions/000042.json`), written to a
//! temporary file, fsynced, renamed into place and the directory fsynced: a reader sees the old
//! set of files or the new one, never half a file. Stray temporary files (a crash mid-write) are
//! removed at open; a file that does not parse is reported and skipped, never used.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::model::{DesiredState, Ids};

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
}

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
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io { op, path, source }
}

/// The revisions of a state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    revisions: Vec<Revision>,
    keep: usize,
}

impl Store {
    /// Opens (creating, mode 0700) `state_dir` and reads its revisions.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let dir = state_dir.join("revisions");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating", &dir))?;
        let mut revisions = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let path = entry.map_err(io("listing", &dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if name.starts_with('.') && ext == "tmp" {
                // A write that never reached its rename.
                fs::remove_file(&path).map_err(io("removing", &path))?;
                tracing::warn!(path = %path.display(), "removed an unfinished revision write");
                continue;
            }
            if ext != "json" {
                continue;
            }
            let parsed = fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Revision>(&bytes).ok());
            match parsed {
                Some(r) if name == file_name(r.number) => revisions.push(r),
                _ => {
                    tracing::error!(path = %path.display(), "ignoring an unreadable revision file");
                }
            }
        }
        revisions.sort_by_key(|r| r.number);
        Ok(Self {
            dir,
            revisions,
            keep: KEEP,
        })
    }

    /// The newest revision: the state in force.
    pub fn latest(&self) -> Option<&Revision> {
        self.revisions.last()
    }

    /// Revision `number`.
    pub fn get(&self, number: u64) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.number == number)
    }

    /// Every revision kept, oldest first.
    pub fn all(&self) -> &[Revision] {
        &self.revisions
    }

    /// Writes a new revision durably and returns it.
    pub fn commit(
        &mut self,
        origin: Origin,
        summary: String,
        state: DesiredState,
        ids: Ids,
        config_digest: Option<String>,
        rollouts: Vec<crate::rollout::Rollout>,
    ) -> Result<&Revision, StoreError> {
        let number = self.latest().map_or(1, |r| r.number + 1);
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
        };
        let bytes = serde_json::to_vec_pretty(&revision)
            .map_err(|source| StoreError::Encode { number, source })?;
        write_atomically(&self.dir, &file_name(number), &bytes)?;
        self.revisions.push(revision);
        self.prune();
        // Infallible: pushed just above.
        Ok(self.revisions.last().unwrap_or_else(|| unreachable!()))
    }

    fn prune(&mut self) {
        while self.revisions.len() > self.keep {
            let old = self.revisions.remove(0);
            let path = self.dir.join(file_name(old.number));
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not prune an old revision");
            }
        }
    }
}

fn file_name(number: u64) -> String {
    format!("{number:06}.json")
}

/// Writes `bytes` to `dir/name`: temporary file, fsync, rename, fsync of the directory.
pub(super) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(io("renaming into place", &dst))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::web;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("veer-store-{name}-{}", std::process::id()));
        drop(fs::remove_dir_all(&d));
        d
    }

    #[test]
    fn revisions_survive_reopening_in_order() {
        let d = tmpdir("reopen");
        let mut s = Store::open(&d).unwrap();
        assert!(s.latest().is_none());
        s.commit(
            Origin::Shift,
            "first".into(),
            web(),
            Ids::default(),
            None,
            Vec::new(),
        )
        .unwrap();
        s.commit(
            Origin::Drain,
            "second".into(),
            DesiredState::default(),
            Ids::default(),
            Some("abc".into()),
            Vec::new(),
        )
        .unwrap();
        let s = Store::open(&d).unwrap();
        assert_eq!(s.all().iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(s.latest().unwrap().summary, "second");
        assert_eq!(s.get(1).unwrap().state, web());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_write_is_never_read_back_as_state() {
        let d = tmpdir("torn");
        let mut s = Store::open(&d).unwrap();
        s.commit(
            Origin::Shift,
            "good".into(),
            web(),
            Ids::default(),
            None,
            Vec::new(),
        )
        .unwrap();
        let dir = d.join("revisions");
        // A crash before the rename leaves a temporary file: ignored and removed.
        let good = fs::read(dir.join("000001.json")).unwrap();
        fs::write(dir.join(".000002.json.tmp"), &good[..good.len() / 2]).unwrap();
        // A file cut short by anything else (disk trouble, a hand edit): reported and skipped.
        fs::write(dir.join("000003.json"), &good[..good.len() / 3]).unwrap();
        let s = Store::open(&d).unwrap();
        assert_eq!(s.latest().unwrap().summary, "good");
        assert_eq!(s.all().len(), 1);
        assert!(!dir.join(".000002.json.tmp").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn old_revisions_are_pruned() {
        let d = tmpdir("prune");
        let mut s = Store::open(&d).unwrap();
        s.keep = 5;
        for i in 0..8 {
            s.commit(
                Origin::Shift,
                format!("{i}"),
                DesiredState::default(),
                Ids::default(),
                None,
                Vec::new(),
            )
            .unwrap();
        }
        assert_eq!(s.all().len(), 5);
        assert_eq!(s.all()[0].number, 4);
        assert_eq!(fs::read_dir(d.join("revisions")).unwrap().count(), 5);
        fs::remove_dir_all(&d).unwrap();
    }
}

//! Exclusive locks on what a daemon owns: its state directory (a `lock` file in it) and its pin
//! directory (the directory itself; bpffs holds no regular files). `veer daemon` takes both
//! before it reads a revision, loads a program or touches a map, so a second daemon pointed at
//! the same node state exits having changed nothing. The kernel drops the locks when the
//! process ends, however it ends (`flock(2)`).
//!
//! `flock` needs no write permission, only an open descriptor: a lock another user could open
//! would let any local user keep the daemon from starting. So the lock file is the daemon's
//! own, mode 0600, and the pin directory is kept at 0700 (others cannot open it), and one that
//! belongs to another user is refused (whoever owns it could replace the pins).

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use crate::dataplane::loader::is_bpffs;

/// The locks a daemon holds; dropping them releases them.
#[derive(Debug)]
pub struct Locks {
    _state: File,
    _pins: Option<File>,
}

/// Why the locks could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds one.
    #[error(
        "{what} {} is locked by another veer daemon{}; stop it first (systemctl stop veer), or give this one its own --state-dir and --pin-dir",
        path.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Held {
        /// `state directory` or `pin directory`.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// The holder's pid, when `/proc/locks` names it.
        holder: Option<u32>,
    },
    /// The lock file or pin directory belongs to another user.
    #[error(
        "{} belongs to uid {owner}, not to this daemon (uid {uid}); anyone who owns it can block or tamper with veer: remove it, then start again"
    , path.display())]
    Foreign {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        uid: u32,
    },
    /// Creating, opening or locking failed for another reason.
    #[error("{op} {} failed", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LockError {
    let path = path.to_owned();
    move |source| LockError::Io { op, path, source }
}

/// Locks `state_dir` (creating it, mode 0700) and `pin_dir`. A pin directory that does not
/// exist yet is created first when bpffs is mounted above it; where bpffs is not mounted yet no
/// pin can exist, and only the state directory is locked.
pub fn acquire(state_dir: &Path, pin_dir: &Path) -> Result<Locks, LockError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(io_error("creating", state_dir))?;
    let path = state_dir.join("lock");
    let state = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_error("opening", &path))?;
    private(&state, &path, 0o600)?;
    exclusive(&state, "state directory", state_dir, &path)?;
    let pins = if pin_dir.is_dir() || pin_dir.parent().is_some_and(is_bpffs) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(pin_dir)
            .map_err(io_error("creating", pin_dir))?;
        let dir = File::open(pin_dir).map_err(io_error("opening", pin_dir))?;
        private(&dir, pin_dir, 0o700)?;
        exclusive(&dir, "pin directory", pin_dir, pin_dir)?;
        Some(dir)
    } else {
        tracing::debug!(pin_dir = %pin_dir.display(), "no bpffs above the pin directory yet: nothing pinned to lock");
        None
    };
    Ok(Locks {
        _state: state,
        _pins: pins,
    })
}

/// Refuses `file` (at `path`) unless this process owns it, and takes its mode down to `mode`
/// when others may open it.
fn private(file: &File, path: &Path, mode: u32) -> Result<(), LockError> {
    let meta = file.metadata().map_err(io_error("reading", path))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(LockError::Foreign {
            path: path.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io_error("restricting the mode of", path))?;
    }
    Ok(())
}

/// `flock(LOCK_EX | LOCK_NB)` on `file` (which is `locked`, standing for `dir`).
fn exclusive(file: &File, what: &'static str, dir: &Path, locked: &Path) -> Result<(), LockError> {
    // SAFETY: flock on a descriptor we own; it only takes or refuses an advisory lock.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(LockError::Held {
            what,
            path: dir.to_owned(),
            holder: holder(locked),
        });
    }
    Err(LockError::Io {
        op: "locking",
        path: locked.to_owned(),
        source,
    })
}

/// The pid `/proc/locks` names for the `flock` on `path` (lines like
/// `1: FLOCK  ADVISORY  WRITE 4242 00:1f:12345 0 EOF`: the device's major and minor numbers in
/// hex, then the inode). The device is compared too: the same inode number on another file
/// system is another file.
fn holder(path: &Path) -> Option<u32> {
    let meta = fs::metadata(path).ok()?;
    let (major, minor, inode) = (libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino());
    let locks = fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, file) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        let mut parts = file.split(':');
        let maj = u32::from_str_radix(parts.next()?, 16).ok()?;
        let min = u32::from_str_radix(parts.next()?, 16).ok()?;
        let ino: u64 = parts.next()?.parse().ok()?;
        (*kind == "FLOCK" && (maj, min, ino) == (major, minor, inode))
            .then(|| pid.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed when dropped, pass or fail.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            drop(fs::remove_dir_all(&self.0));
        }
    }

    #[test]
    fn a_second_holder_is_refused_and_named_until_the_first_lets_go() {
        let base = std::env::temp_dir().join(format!("veer-lock-{}", std::process::id()));
        drop(fs::remove_dir_all(&base));
        let _cleanup = TempDir(base.clone());
        let (state, pins) = (base.join("state"), base.join("pins"));
        fs::create_dir_all(&pins).unwrap();
        let first = acquire(&state, &pins).unwrap();
        let e = acquire(&state, &pins).unwrap_err();
        assert!(
            matches!(&e, LockError::Held { what: "state directory", holder: Some(pid), .. } if *pid == std::process::id()),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains(&format!("(pid {})", std::process::id()))
        );
        // Another state directory, the same pins: refused too.
        let e = acquire(&base.join("other"), &pins).unwrap_err();
        assert!(
            matches!(
                e,
                LockError::Held {
                    what: "pin directory",
                    ..
                }
            ),
            "{e:?}"
        );
        drop(first);
        acquire(&state, &pins).unwrap();
        // Nobody else may open what is locked.
        for (path, mode) in [(state.join("lock"), 0o600), (pins.clone(), 0o700)] {
            assert_eq!(
                fs::metadata(&path).unwrap().mode() & 0o777,
                mode,
                "{}",
                path.display()
            );
        }
        fs::remove_dir_all(&base).unwrap();
    }
}

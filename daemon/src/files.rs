//! Reading files veer does not control the writing of (revisions in the state directory, the
//! config file) without being stalled or tricked by what is at the path: only a regular file is
//! read. Every open is non-blocking (a FIFO never hangs the reader), may refuse to follow a
//! symbolic link, and the opened file is checked with `fstat`, so what is read is what was
//! checked. Like `error.rs`, it imports nothing of veer.

use std::{
    fs::{File, OpenOptions},
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

/// Whether a symbolic link at the path itself is followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Follow it (the config file may be a link managed by a deployment tool).
    Follow,
    /// Refuse it (veer's own files are never links).
    Refuse,
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// There is no file.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// Something that is not a regular file is at the path.
    #[error("{} is a {kind}, not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What is there (`FIFO`, `socket`, `directory`, `symbolic link` ...).
        kind: &'static str,
    },
    /// The file is larger than anything veer writes or reads there.
    #[error("{} is {size} bytes, more than the {max} bytes veer reads there", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A system call failed.
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
}

impl ReadError {
    /// Whether there was simply no file.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing { .. })
    }
}

/// What a file type is, in words.
pub fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "file of unknown type"
    }
}

/// Reads the regular file at `path`, at most `max` bytes. Anything else (a FIFO, a socket, a
/// device, a directory; a symbolic link with `Links::Refuse`) is refused without being opened
/// for reading in a way that could block: it is looked at first, then opened with
/// `O_NONBLOCK` (and `O_NOFOLLOW`), and the open file is checked again with `fstat`, in case
/// the path was swapped in between.
pub fn read_regular(path: &Path, links: Links, max: u64) -> Result<Vec<u8>, ReadError> {
    let io = |op| {
        let path = path.to_owned();
        move |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ReadError::Missing { path }
            } else {
                ReadError::Io { op, path, source }
            }
        }
    };
    let not_a_file = |kind| ReadError::NotAFile {
        path: path.to_owned(),
        kind,
    };
    let meta = match links {
        Links::Follow => std::fs::metadata(path),
        Links::Refuse => std::fs::symlink_metadata(path),
    }
    .map_err(io("looking at"))?;
    if !meta.file_type().is_file() {
        return Err(not_a_file(kind_of(meta.file_type())));
    }
    let mut flags = libc::O_NONBLOCK;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                not_a_file("symbolic link")
            } else {
                io("opening")(e)
            }
        })?;
    let meta = file.metadata().map_err(io("looking at"))?;
    if !meta.file_type().is_file() {
        return Err(not_a_file(kind_of(meta.file_type())));
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            max,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One byte more than the limit tells a file that grew while being read.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io("reading"))?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory, removed when dropped (even when the test fails).
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("veer-files-{name}-{}", std::process::id()));
            drop(std::fs::remove_dir_all(&d));
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            drop(std::fs::remove_dir_all(&self.0));
        }
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn only_regular_files_are_read_and_nothing_blocks() {
        let d = Dir::new("kinds");
        let file = d.0.join("a.json");
        std::fs::write(&file, b"{}").unwrap();
        assert_eq!(read_regular(&file, Links::Refuse, 10).unwrap(), b"{}");
        let fifo = d.0.join("fifo.json");
        mkfifo(&fifo);
        // A blocking open of a FIFO with no writer would never return.
        assert!(matches!(
            read_regular(&fifo, Links::Follow, 10),
            Err(ReadError::NotAFile { kind: "FIFO", .. })
        ));
        let link = d.0.join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(
            read_regular(&link, Links::Refuse, 10),
            Err(ReadError::NotAFile {
                kind: "symbolic link",
                ..
            })
        ));
        assert_eq!(read_regular(&link, Links::Follow, 10).unwrap(), b"{}");
        let to_fifo = d.0.join("to-fifo.json");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        assert!(matches!(
            read_regular(&to_fifo, Links::Follow, 10),
            Err(ReadError::NotAFile { kind: "FIFO", .. })
        ));
        assert!(matches!(
            read_regular(&d.0, Links::Refuse, 10),
            Err(ReadError::NotAFile {
                kind: "directory",
                ..
            })
        ));
        assert!(matches!(
            read_regular(Path::new("/dev/null"), Links::Follow, 10),
            Err(ReadError::NotAFile {
                kind: "character device",
                ..
            })
        ));
        assert!(
            read_regular(&d.0.join("none"), Links::Refuse, 10)
                .unwrap_err()
                .is_missing()
        );
        assert!(matches!(
            read_regular(&file, Links::Refuse, 1),
            Err(ReadError::TooLarge { size: 2, .. })
        ));
    }
}

//! Errors of the hasher. Every error that concerns an input names its path.

use std::io;
use std::path::PathBuf;

/// What can go wrong while hashing a tree or writing a CAR.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Reading an input (file, directory listing, symlink target) failed.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The input path that could not be read.
        path: PathBuf,
        /// The cause. It is part of the message and deliberately not `source()`, so that
        /// a chain printer (anyhow's `{:#}`) shows it once.
        cause: io::Error,
    },
    /// The input is of a kind UnixFS cannot store (FIFO, socket, device).
    #[error("cannot hash {path}: it is a {kind}, and UnixFS stores only files, directories and symlinks")]
    Unsupported {
        /// The offending path.
        path: PathBuf,
        /// What it is (`"FIFO"`, `"socket"`, `"character device"`, `"block device"`).
        kind: &'static str,
    },
    /// A name that is not valid UTF-8: dag-pb link names are UTF-8 strings.
    #[error(
        "cannot hash {path}: its name is not valid UTF-8 (dag-pb link names are UTF-8 strings)"
    )]
    NonUtf8Name {
        /// The offending path.
        path: PathBuf,
    },
    /// An in-memory tree has an invalid entry name (empty, `.`, `..`, or containing `/`).
    #[error("invalid entry name {name:?} in directory {dir}: names must be non-empty, not `.` or `..`, and contain no `/`")]
    InvalidName {
        /// The directory holding the name.
        dir: PathBuf,
        /// The bad name.
        name: String,
    },
    /// Two names with the same 64-bit murmur3 hash in one HAMT: the hash bits run out.
    #[error(
        "HAMT hash bits exhausted in directory {dir}: names {a:?} and {b:?} share all 64 hash bits"
    )]
    HamtExhausted {
        /// The sharded directory.
        dir: PathBuf,
        /// One colliding name.
        a: String,
        /// The other colliding name.
        b: String,
    },
    /// Options that cannot produce a valid DAG.
    #[error("invalid options: {0}")]
    Options(String),
    /// The deadline given to [`crate::Hasher::deadline`] passed before the import ended.
    #[error("hashing did not finish before its deadline")]
    Deadline,
    /// The tree has more entries than [`crate::Hasher::max_entries`] allows: the walk
    /// stopped in `path`, at the entry over the cap, without listing the rest.
    #[error("{}: the tree has more than {limit} entries, the most this hash may walk", path.display())]
    TooManyEntries {
        /// The folder being listed when the cap was reached.
        path: PathBuf,
        /// The cap.
        limit: usize,
    },
    /// Writing the CAR (or its spool file) failed.
    #[error("cannot write the CAR: {0}")]
    Car(io::Error),
}

/// Result alias of this crate.
pub type Result<T, E = HashError> = std::result::Result<T, E>;

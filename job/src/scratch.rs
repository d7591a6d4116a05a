//! Scratch folders in the temporary directory that a killed detwasm does not leave
//! behind for good: snapshots unpacked from a CAR (gigabytes each), the snapshots a
//! `resume` makes of the rest of a run only to name them in its trace, and a `fuzz`
//! campaign's runs (and their input copies in `/dev/shm`, which is RAM).
//!
//! Each folder holds a lock file, `flock`ed from creation until the [`Scratch`] is
//! dropped (or its process dies: a kill releases the lock). Making a scratch folder of a
//! prefix first removes the folders of that prefix that are this user's, a minute old
//! and unlocked. Found by review: every `resume` of a CAR killed while unpacking left its
//! folder behind. Rejected: a signal handler (a library does not own the process's
//! signals, and SIGKILL has none); removing by age alone (a resumed job can run for
//! hours).

use std::path::Path;
use std::time::Duration;

use crate::error::RunError;

/// The lock file in each scratch folder, held while its detwasm runs.
const LOCK: &str = ".lock";

/// A locked scratch folder, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    _lock: std::fs::File,
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Makes a new scratch folder named `prefix`… in the temporary directory, after
    /// removing the stale ones of that prefix. `what` says what it is for, in errors.
    pub fn new(prefix: &str, what: &str) -> Result<Scratch, RunError> {
        Self::new_in(&std::env::temp_dir(), prefix, what)
    }

    /// [`Self::new`] in the folder `tmp` (e.g. `/dev/shm`).
    pub fn new_in(tmp: &Path, prefix: &str, what: &str) -> Result<Scratch, RunError> {
        remove_stale(tmp, prefix);
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(tmp)
            .map_err(|e| RunError::io(format!("creating a folder for {what}"), e))?;
        let lock = std::fs::File::create(dir.path().join(LOCK))
            .map_err(|e| RunError::io(format!("creating the lock of {what}"), e))?;
        // SAFETY: flock on a descriptor this function owns; the result is checked.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(RunError::io(
                format!("locking the folder for {what}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Scratch { _lock: lock, dir })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the folders named `prefix`… in `tmp` that are this user's, a minute old, and
/// whose lock nobody holds.
fn remove_stale(tmp: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let dir = e.path();
        // Ours only: as root, another user's folder of that name is theirs to remove.
        // `DirEntry::metadata` does not follow a link of the prefix's name.
        let old = e
            .metadata()
            .ok()
            .filter(|m| m.is_dir() && std::os::unix::fs::MetadataExt::uid(m) == me)
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= Duration::from_secs(60));
        if !old {
            continue;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(dir.join(LOCK));
        let free = match &lock {
            // SAFETY: flock on a descriptor owned here; the result is checked.
            Ok(f) => unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(f),
                    libc::LOCK_EX | libc::LOCK_NB,
                ) == 0
            },
            Err(_) => true,
        };
        if free {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a killed detwasm left (a folder a minute old, unlocked) is removed; a folder
    /// whose lock is held (a detwasm still running from it), a new folder, a folder of
    /// another name and a link of the prefix's name are left alone.
    #[test]
    fn stale_scratch_folders_are_removed_unless_locked_or_new() {
        let t = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        let make = |name: &str, aged: bool| {
            let d = t.path().join(name);
            std::fs::create_dir_all(d.join("car/snapshot")).unwrap();
            std::fs::write(d.join("car/snapshot/stdout"), "x").unwrap();
            let lock = std::fs::File::create(d.join(LOCK)).unwrap();
            if aged {
                std::fs::File::open(&d).unwrap().set_modified(old).unwrap();
            }
            (d, lock)
        };
        let prefix = "detwasm-snapshot-";
        let (stale, _) = make("detwasm-snapshot-stale", true);
        let (held, lock) = make("detwasm-snapshot-held", true);
        // SAFETY: flock on a descriptor the test owns.
        assert_eq!(
            unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
            0
        );
        let (new, _) = make("detwasm-snapshot-new", false);
        let (other, _) = make("detwasm-resume-stale", true);
        std::os::unix::fs::symlink(&other, t.path().join("detwasm-snapshot-link")).unwrap();
        remove_stale(t.path(), prefix);
        assert!(!stale.exists());
        assert!(held.join("car/snapshot/stdout").exists());
        assert!(new.exists());
        assert!(other.join("car/snapshot/stdout").exists());
        assert!(t.path().join("detwasm-snapshot-link").exists());
        drop(lock);
        remove_stale(t.path(), prefix);
        assert!(!held.exists());
        remove_stale(t.path(), "detwasm-resume-");
        assert!(!other.exists());
        // A fuzz campaign's folders (in /dev/shm too, hence `new_in`) are made the same
        // way: a killed campaign's is removed by the next.
        let (killed, _) = make("detwasm-fuzz-killed", true);
        let ours = Scratch::new_in(t.path(), "detwasm-fuzz-", "a campaign").unwrap();
        assert!(!killed.exists());
        assert!(ours.path().join(LOCK).exists());
    }
}

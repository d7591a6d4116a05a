//! Writing an output volume's tree to the results folder when the run ends.

use super::*;

impl Vfs {
    /// Writes `data` as the new file `path` (never over an existing one).
    fn export_bytes(&self, data: &[u8], path: &Path) -> io::Result<()> {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?
            .write_all(data)
    }

    /// Writes mount `mount`'s tree under host directory `dest` (which exists and is
    /// empty). Entries are created with `create_new`/`create_dir`, never over an existing
    /// one: two names that one host filesystem takes for the same (`A` and `a` on a
    /// case-insensitive one) are an error, not a silent overwrite.
    pub fn export(&self, mount: usize, dest: &Path) -> io::Result<()> {
        self.export_dir(self.mounts[mount].root, dest)
    }

    pub(super) fn export_dir(&self, dir: NodeId, dest: &Path) -> io::Result<()> {
        let Kind::Dir(entries) = &self.node(dir).kind else {
            return Ok(());
        };
        for (name, &child) in entries {
            let path = dest.join(std::ffi::OsStr::from_bytes(name));
            let exists = |e: io::Error| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{} already exists: the results folder's filesystem takes two output names for one (case-insensitive?)",
                            path.display()
                        ),
                    )
                } else {
                    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                }
            };
            match &self.node(child).kind {
                Kind::Dir(_) => {
                    std::fs::create_dir(&path).map_err(exists)?;
                    self.export_dir(child, &path)?;
                }
                Kind::File(Content::Mem(data)) => {
                    self.export_bytes(data, &path).map_err(exists)?;
                }
                // Another name of a file: a full copy of it (results have no hard links).
                Kind::Link(primary) => match &self.node(*primary).kind {
                    Kind::File(Content::Mem(data)) => {
                        self.export_bytes(data, &path).map_err(exists)?
                    }
                    Kind::Symlink(target) => {
                        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                            .map_err(exists)?
                    }
                    _ => {}
                },
                Kind::File(Content::Host { size }) => {
                    // A writable folder's file the guest left unchanged: copied from the
                    // host, through the mount's handle, only if it is still the file
                    // scanned, and no more than its scanned size. Found by review: a
                    // file swapped after the end-of-run check for a FIFO blocked the
                    // delivery for good, and for a 4 GiB sparse file was delivered past
                    // the output quota as a verifiable result. Opened without blocking;
                    // its identity checked on the handle before and after the copy.
                    let n = self.node(child);
                    let (Some((rel, stamp)), Some((dir, _))) =
                        (&n.host, &self.mounts[n.mount].host)
                    else {
                        continue;
                    };
                    let changed = || {
                        io::Error::other(format!(
                            "{}: the writable folder's file changed before it was delivered \
                             (inputs must not change during a run)",
                            path.display()
                        ))
                    };
                    let from = {
                        use cap_std::fs::OpenOptionsExt;
                        let mut o = cap_std::fs::OpenOptions::new();
                        o.read(true).custom_flags(libc::O_NONBLOCK);
                        dir.open_with(rel, &o)?.into_std()
                    };
                    let same = |f: &std::fs::File| {
                        f.metadata()
                            .is_ok_and(|m| m.is_file() && HostStamp::of(&m) == *stamp)
                    };
                    if !same(&from) {
                        return Err(changed());
                    }
                    let mut to = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(exists)?;
                    use std::io::Read;
                    let copied = std::io::copy(&mut (&from).take(*size), &mut to)?;
                    if copied != *size || !same(&from) {
                        return Err(changed());
                    }
                }
                Kind::Symlink(target) => {
                    // Checked when created (or scanned) and when moved: it leads nowhere
                    // outside the volume.
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                        .map_err(exists)?;
                }
            }
        }
        Ok(())
    }
}

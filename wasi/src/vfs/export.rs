//! Writing an output volume's tree to the results folder when the run ends.

use super::*;

impl Vfs {
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
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(exists)?;
                    f.write_all(data)?;
                }
                Kind::File(Content::Host { .. }) => {
                    // A writable folder's file the guest left unchanged: copied from the
                    // host, through the mount's handle.
                    let n = self.node(child);
                    let (Some((rel, _)), Some((dir, _))) = (&n.host, &self.mounts[n.mount].host)
                    else {
                        continue;
                    };
                    let mut from = dir.open(rel)?.into_std();
                    let mut to = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(exists)?;
                    std::io::copy(&mut from, &mut to)?;
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

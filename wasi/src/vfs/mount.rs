//! Mounting: the input scans, which read a host folder's names, sizes and link targets
//! once into nodes (within the job's entry, byte and time budgets for all inputs
//! together), the check at the end of a run that no input changed under the guest, and
//! the empty in-memory output volumes.

use super::*;

impl Vfs {
    /// Input scans from now on give up at `deadline` (the job's wall-clock deadline):
    /// the clock is read at every entry, and a scan past it fails, with
    /// [`Vfs::scan_timed_out`] true. Rejected: relying on the entry caps alone (one
    /// folder of [`MAX_INPUT_ENTRIES`] files took 3.9 s to scan on a 2-core machine,
    /// past a `--timeout 1`).
    ///
    /// The same deadline bounds the reopens of input files ([`Vfs::host_file`]), the one
    /// other host work of the filesystem that fuel does not pay for in full.
    pub fn scan_until(&mut self, deadline: Option<std::time::Instant>) {
        self.scan_deadline = deadline;
    }

    /// Whether a scan stopped at [`Vfs::scan_until`]'s deadline (the failed mount's
    /// error is then that, not something wrong with the input).
    pub fn scan_timed_out(&self) -> bool {
        self.scan_timed_out
    }

    /// Mounts a host directory read-only at `guest`: scans its names in sorted order.
    /// Every node's times are `time` (the job epoch). The host path is canonicalized
    /// first, so an input given as a symlink mounts (and is hashed as) the tree it
    /// points to.
    pub fn mount_input(&mut self, host: &Path, guest: &str, time: u64) -> Result<(), String> {
        self.mount_host(host, guest, time, false)
    }

    /// Mounts a host directory writable at `guest`, copy-on-write: the scan is an input's,
    /// files are read from the host until the guest changes them (then they are copied
    /// into memory, charged to the quota, [`Vfs::materialize`]); the host folder is never
    /// written. Delivered by [`Vfs::export`] like an output volume.
    pub fn mount_writable(&mut self, host: &Path, guest: &str, time: u64) -> Result<(), String> {
        self.mount_host(host, guest, time, true)
    }

    pub(super) fn mount_host(
        &mut self,
        host: &Path,
        guest: &str,
        time: u64,
        writable: bool,
    ) -> Result<(), String> {
        let host = std::fs::canonicalize(host).map_err(|e| e.to_string())?;
        let meta = std::fs::symlink_metadata(&host).map_err(|e| e.to_string())?;
        if !meta.is_dir() {
            return Err("an input must be a directory".into());
        }
        let dir = cap_std::fs::Dir::open_ambient_dir(&host, cap_std::ambient_authority())
            .map_err(|e| e.to_string())?;
        let mount = self.mounts.len();
        let root = self.alloc(Kind::Dir(BTreeMap::new()), None, mount, time);
        self.node_mut(root).host = Some((PathBuf::new(), HostStamp::of(&meta)));
        self.mounts.push(Mount {
            guest: guest.to_string(),
            root,
            writable,
            host: Some((dir, host.clone())),
        });
        self.scan(&host, Path::new(""), root, mount, time)
    }

    /// Scans host directory `base/rel` into directory node `at`, recursively.
    ///
    /// Every entry is charged to the job's scan budget ([`MAX_INPUT_ENTRIES`],
    /// [`MAX_INPUT_BYTES`]) as the listing yields it, before anything of it is kept: a
    /// folder of ten million entries stops the scan at the entry over the cap, having
    /// held at most that many names. Rejected: collecting a directory's listing and
    /// counting it afterwards (what this did before: one huge directory is held whole
    /// before any check).
    ///
    /// The clock is read at every entry listed and every entry stepped through, so a
    /// scan past [`Vfs::scan_until`]'s deadline stops within one entry of it.
    ///
    /// The recursion is one frame per level, and its depth is bounded by the host: each
    /// level adds at least two bytes (`x/`) to the path every call here passes whole to
    /// the kernel, which refuses one over `PATH_MAX` (4,096 bytes), so a tree at most
    /// about 2,048 levels deep is scanned and a deeper one fails with `ENAMETOOLONG`
    /// (`a_tree_as_deep_as_the_host_allows_is_scanned_without_exhausting_the_stack`).
    pub(super) fn scan(
        &mut self,
        base: &Path,
        rel: &Path,
        at: NodeId,
        mount: usize,
        time: u64,
    ) -> Result<(), String> {
        let here = base.join(rel);
        let rel_len = rel.as_os_str().len() as u64;
        let mut names: Vec<Vec<u8>> = Vec::new();
        for e in std::fs::read_dir(&here).map_err(|e| format!("{}: {e}", here.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", here.display()))?;
            let name = e.file_name().as_bytes().to_vec();
            // The name is held twice (the directory's key, the end of the entry's host
            // path) and the host path's leading part once more.
            let bytes = 2 * name.len() as u64 + rel_len + u64::from(rel_len > 0);
            self.charge_scan(mount, 1, bytes, &here.join(e.file_name()))?;
            names.push(name);
        }
        names.sort();
        for name in names {
            let child_rel = rel.join(std::ffi::OsStr::from_bytes(&name));
            let path = base.join(&child_rel);
            // Listing was checked entry by entry; stepping through the entries (a
            // `stat` each) takes longer, and is checked the same way.
            self.check_scan_deadline(&path)?;
            // symlink_metadata does not follow symlinks.
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir(BTreeMap::new())
            } else if ft.is_file() {
                Kind::File(Content::Host { size: meta.len() })
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let target = file_name_bytes(&target).to_vec();
                self.charge_scan(mount, 0, target.len() as u64, &path)?;
                Kind::Symlink(target)
            } else {
                return Err(format!(
                    "{} is a special file (only files, directories and symlinks can be inputs)",
                    path.display()
                ));
            };
            let is_dir = ft.is_dir();
            if let (Kind::Symlink(target), true) = (&kind, self.mounts[mount].writable) {
                // A writable folder is delivered: a link in it leading out of it would point
                // out of the results folder.
                if escapes(target, self.node(at).depth) {
                    return Err(format!(
                        "{} is a symlink leading out of the writable folder (to {}): detwasm cannot deliver it",
                        path.display(),
                        String::from_utf8_lossy(target)
                    ));
                }
            }
            let (depth, path_len) = self.child_place(at, name.len());
            let id = self.alloc(kind, Some(at), mount, time);
            let n = self.node_mut(id);
            n.host = Some((child_rel.clone(), HostStamp::of(&meta)));
            n.name_len = name.len() as u32;
            n.depth = depth;
            n.path_len = path_len;
            self.insert(at, name, id);
            if is_dir {
                self.scan(base, &child_rel, id, mount, time)?;
            }
        }
        Ok(())
    }

    /// Charges `entries` entries and `bytes` bytes found at host path `at` by the scan of
    /// `mount` to the job's scan budget; over [`MAX_INPUT_ENTRIES`] or
    /// [`MAX_INPUT_BYTES`], an error naming the limit, the mount's guest path and where
    /// it was reached (the caller names the input's host folder, which several mounts
    /// may share). Past [`Vfs::scan_until`]'s deadline, an error too, and
    /// [`Vfs::scan_timed_out`] says so.
    pub(super) fn charge_scan(
        &mut self,
        mount: usize,
        entries: u64,
        bytes: u64,
        at: &Path,
    ) -> Result<(), String> {
        self.check_scan_deadline(at)?;
        let guest = &self.mounts[mount].guest;
        let (e, b) = &mut self.scanned;
        *e = e.saturating_add(entries);
        *b = b.saturating_add(bytes);
        let (max_e, max_b) = self.scan_limit;
        if *e > max_e {
            return Err(format!(
                "the job's inputs hold more than {max_e} entries, the most detwasm scans for \
                 one job (MAX_INPUT_ENTRIES, counted over all input mounts together, a folder \
                 once per mount; reached mounting it at {guest}, at {}): mount fewer or \
                 smaller folders",
                at.display()
            ));
        }
        if *b > max_b {
            return Err(format!(
                "the job's inputs hold more than {max_b} bytes of names, paths and link \
                 targets, the most detwasm scans for one job (MAX_INPUT_BYTES, counted over \
                 all input mounts together, a folder once per mount; reached mounting it at \
                 {guest}, at {}): mount fewer or smaller folders, or shallower ones",
                at.display()
            ));
        }
        Ok(())
    }

    /// An error once [`Vfs::scan_until`]'s deadline has passed (read at host path `at`),
    /// and [`Vfs::scan_timed_out`] then says so.
    pub(super) fn check_scan_deadline(&mut self, at: &Path) -> Result<(), String> {
        if self
            .scan_deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
        {
            self.scan_timed_out = true;
            return Err(format!(
                "the scan passed the job's deadline at {}",
                at.display()
            ));
        }
        Ok(())
    }

    /// Checks that no input changed since it was scanned (every entry's device, inode,
    /// size, mode and times as then). Called after the guest has run; an `Err` names the
    /// first changed path.
    pub fn inputs_unchanged(&self) -> Result<(), String> {
        for n in self.nodes.iter().flatten() {
            let (Some((rel, stamp)), Some((_, base))) = (&n.host, &self.mounts[n.mount].host)
            else {
                continue;
            };
            let path = base.join(rel);
            let now = std::fs::symlink_metadata(&path).map(|m| HostStamp::of(&m));
            if now.as_ref().ok() != Some(stamp) {
                return Err(format!(
                    "input {} changed while the job ran (inputs must not change during a run)",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// The bytes of host files in each mount (by mount index) that the guest has not
    /// copied into memory: a writable folder's files are delivered with the results as
    /// they are, so their sizes count against the output quota (the runtime
    /// checks them before the run).
    pub fn host_file_bytes(&self) -> Vec<u64> {
        let mut bytes = vec![0u64; self.mounts.len()];
        for n in self.nodes.iter().flatten() {
            if let Kind::File(Content::Host { size }) = n.kind {
                bytes[n.mount] = bytes[n.mount].saturating_add(size);
            }
        }
        bytes
    }

    /// Mounts an empty, writable, in-memory volume at `guest`.
    pub fn mount_output(&mut self, guest: &str, time: u64) {
        let mount = self.mounts.len();
        let root = self.alloc(Kind::Dir(BTreeMap::new()), None, mount, time);
        self.mounts.push(Mount {
            guest: guest.to_string(),
            root,
            writable: true,
            host: None,
        });
    }
}

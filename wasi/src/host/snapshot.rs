//! The host's state as a snapshot saves it (everything of [`WasiHost`] a guest's calls
//! change: stdin's position, stdout and stderr so far, the fd table with offsets and
//! listing cursors, the virtual clocks, the random stream's position and the
//! filesystem), and its restore into a fresh host built from the same job. The job's own
//! parts (args, env, stdin, the quota, the seed) come from the job, never from the
//! snapshot. See [`crate::vfs::snapshot`] for why a snapshot is checked before use.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{Fd, WasiHost, MAX_FDS};
use crate::vfs::snapshot::SavedVfs;
use crate::vfs::NodeId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedHost {
    pub stdin_pos: u64,
    /// Bytes of stdout and stderr so far (their contents are kept beside the state).
    pub stdout_len: u64,
    pub stderr_len: u64,
    pub clock_wall: u64,
    pub clock_mono: u64,
    /// The random stream's position in 32-bit words (ChaCha20's counter), as decimal
    /// text: JSON numbers are not exact past 2^53 in every reader.
    pub random_words: String,
    pub fds: Vec<(u32, SavedFd)>,
    pub vfs: SavedVfs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SavedFd {
    Stdin,
    Stdout,
    Stderr,
    Dir {
        node: NodeId,
        preopen: Option<usize>,
        cursor: Option<(u64, Vec<u8>)>,
    },
    File {
        node: NodeId,
        pos: u64,
        read: bool,
        write: bool,
        append: bool,
        sync: u16,
        rights: u64,
    },
}

/// The bytes a snapshot keeps beside [`SavedHost`]: stdout, stderr and the contents of
/// the files in memory by node.
pub struct HostBytes<'a> {
    pub stdout: &'a [u8],
    pub stderr: &'a [u8],
    pub files: Vec<(NodeId, &'a [u8])>,
}

impl WasiHost {
    /// The state to save and the bytes to keep beside it.
    pub fn save(&self) -> (SavedHost, HostBytes<'_>) {
        let (vfs, files) = self.vfs.save();
        let fds = self
            .fds
            .iter()
            .map(|(&n, f)| {
                let f = match f {
                    Fd::Stdin => SavedFd::Stdin,
                    Fd::Stdout => SavedFd::Stdout,
                    Fd::Stderr => SavedFd::Stderr,
                    Fd::Dir {
                        node,
                        preopen,
                        cursor,
                    } => SavedFd::Dir {
                        node: *node,
                        preopen: *preopen,
                        cursor: cursor.clone(),
                    },
                    Fd::File {
                        node,
                        pos,
                        read,
                        write,
                        append,
                        sync,
                        rights,
                    } => SavedFd::File {
                        node: *node,
                        pos: *pos,
                        read: *read,
                        write: *write,
                        append: *append,
                        sync: *sync,
                        rights: *rights,
                    },
                };
                (n, f)
            })
            .collect();
        (
            SavedHost {
                stdin_pos: self.stdin_pos as u64,
                stdout_len: self.stdout.len() as u64,
                stderr_len: self.stderr.len() as u64,
                clock_wall: self.clock.wall,
                clock_mono: self.clock.mono,
                random_words: self.rng.get_word_pos().to_string(),
                fds,
                vfs,
            },
            HostBytes {
                stdout: &self.stdout,
                stderr: &self.stderr,
                files,
            },
        )
    }

    /// Puts `saved` into this host, which must be fresh from the same job. `stdout` and
    /// `stderr` are the bytes kept beside the state; `file` gives a file's bytes by node
    /// and length. On `Err` (the reason a snapshot is refused) this host must not be
    /// used.
    pub fn restore(
        &mut self,
        saved: &SavedHost,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        file: impl FnMut(NodeId, u64) -> Result<Vec<u8>, String>,
    ) -> Result<(), String> {
        if saved.stdin_pos > self.stdin.len() as u64 {
            return Err("stdin is read past its end".into());
        }
        if (stdout.len() as u64, stderr.len() as u64) != (saved.stdout_len, saved.stderr_len) {
            return Err("stdout or stderr is not of the length saved".into());
        }
        let printed = saved.stdout_len.saturating_add(saved.stderr_len);
        if printed > self.max_output {
            return Err("stdout and stderr are over the output quota".into());
        }
        let words: u128 = saved
            .random_words
            .parse()
            .map_err(|_| "the random stream's position is not a number")?;
        // ChaCha20's counter is 64 bits of 16-word blocks: 68 bits of words.
        if words >> 68 != 0 {
            return Err("the random stream's position is past its end".into());
        }
        if saved.fds.len() > MAX_FDS as usize {
            return Err(format!("more than {MAX_FDS} fds"));
        }
        let mut fds = BTreeMap::new();
        let mut open: HashMap<NodeId, u32> = HashMap::new();
        for (n, f) in &saved.fds {
            if *n >= MAX_FDS {
                return Err(format!("fd {n} is past the most a guest may have"));
            }
            let fd = match f {
                SavedFd::Stdin => Fd::Stdin,
                SavedFd::Stdout => Fd::Stdout,
                SavedFd::Stderr => Fd::Stderr,
                SavedFd::Dir {
                    node,
                    preopen,
                    cursor,
                } => {
                    if preopen.is_some_and(|p| p >= self.vfs.mounts.len()) {
                        return Err(format!("fd {n} is the preopen of no mount"));
                    }
                    Fd::Dir {
                        node: *node,
                        preopen: *preopen,
                        cursor: cursor.clone(),
                    }
                }
                SavedFd::File {
                    node,
                    pos,
                    read,
                    write,
                    append,
                    sync,
                    rights,
                } => Fd::File {
                    node: *node,
                    pos: *pos,
                    read: *read,
                    write: *write,
                    append: *append,
                    sync: *sync,
                    rights: *rights,
                },
            };
            if let Fd::Dir { node, .. } | Fd::File { node, .. } = &fd {
                *open.entry(*node).or_default() += 1;
            }
            if fds.insert(*n, fd).is_some() {
                return Err(format!("fd {n} is saved twice"));
            }
        }
        self.vfs
            .restore(&saved.vfs, &open, file, self.max_output - printed)?;
        // Each fd refers to a node of its kind, and a directory fd's listing cursor is one
        // its directory's listing could have left.
        for (n, f) in &fds {
            let ok = match f {
                Fd::Dir { node, cursor, .. } => {
                    if let Some((pos, name)) = cursor.as_ref().filter(|c| !cursor_ok(c.0, &c.1)) {
                        return Err(format!(
                            "fd {n}'s listing cursor (position {pos}, a name of {} bytes) is not one a listing leaves",
                            name.len()
                        ));
                    }
                    self.vfs.live(*node) && self.vfs.is_dir(*node)
                }
                Fd::File { node, .. } => {
                    self.vfs.live(*node)
                        && matches!(self.vfs.node(*node).kind, crate::vfs::Kind::File(_))
                }
                _ => true,
            };
            if !ok {
                return Err(format!("fd {n} refers to no node of its kind"));
            }
        }
        self.fds = fds;
        self.stdin_pos = saved.stdin_pos as usize;
        self.stdout = stdout;
        self.stderr = stderr;
        self.clock.wall = saved.clock_wall;
        self.clock.mono = saved.clock_mono;
        // The position is the generator's whole state: rand_chacha counts the words it
        // buffered but did not serve, and `random_get` consumes whole words.
        self.rng.set_word_pos(words);
        Ok(())
    }
}

/// Whether `(pos, name)` is a cursor a directory's listing can leave (`fd_readdir`
/// saves the position and name of the entry it stopped at): `.` at 0, `..` at 1, and
/// past them a name a directory can hold (1 to `MAX_NAME` bytes, no `/` or NUL, not a
/// dot entry) at a position below `u64::MAX` (every position `list_from` yields). A
/// forged cursor could otherwise start a listing where positions overflow.
///
/// Not checked: that the directory holds the name now, or at that position. A cursor
/// outlives its entry honestly: a guest that stops listing at `b`, then removes `b` (or
/// an entry before it) and lists on resumes after where `b` was, at the position it
/// stopped at, so a restored cursor may name what the directory no longer has, at a
/// position past its entries. Refusing those would refuse snapshots an honest run
/// takes; what such a cursor changes is only what the guest is shown, as any forged
/// guest state does, and each entry shown is charged as fuel.
fn cursor_ok(pos: u64, name: &[u8]) -> bool {
    match pos {
        0 => name == b".",
        1 => name == b"..",
        u64::MAX => false,
        _ => {
            !name.is_empty()
                && name.len() <= crate::vfs::MAX_NAME
                && name != b"."
                && name != b".."
                && !name.contains(&b'/')
                && !name.contains(&0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::Vfs;

    /// A job's host: an output volume at /out (fd 3), 4 bytes of stdin, a 1 MiB quota.
    fn host() -> WasiHost {
        let mut vfs = Vfs::new();
        vfs.mount_output("/out", 0);
        WasiHost::new(
            vec![b"module.wasm".to_vec()],
            Vec::new(),
            b"abcd".to_vec(),
            vfs,
            0,
            7,
            1 << 20,
        )
    }

    fn restore(saved: &SavedHost, stdout: Vec<u8>) -> Result<WasiHost, String> {
        let mut h = host();
        h.restore(saved, stdout, Vec::new(), |_, len| {
            Ok(vec![0; len as usize])
        })
        .map(|()| h)
    }

    #[test]
    fn a_saved_host_is_restored_as_it_was() {
        let mut h = host();
        h.stdout.extend_from_slice(b"printed");
        h.stdin_pos = 2;
        h.clock.advance(5_000);
        let mut buf = [0u8; 13];
        rand_core::RngCore::fill_bytes(&mut h.rng, &mut buf);
        let (saved, bytes) = h.save();
        let back = restore(&saved, bytes.stdout.to_vec()).unwrap();
        assert_eq!(back.save().0, saved);
        // The random stream goes on where it was.
        let (mut a, mut b) = (h, back);
        let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
        rand_core::RngCore::fill_bytes(&mut a.rng, &mut x);
        rand_core::RngCore::fill_bytes(&mut b.rng, &mut y);
        assert_eq!(x, y);
    }

    /// A directory fd on the node of the state's first one (/out's root) with listing
    /// cursor `(pos, name)`.
    fn dir_at(s: &SavedHost, pos: u64, name: &[u8]) -> SavedFd {
        let node = s
            .fds
            .iter()
            .find_map(|(_, f)| match f {
                SavedFd::Dir { node, .. } => Some(*node),
                _ => None,
            })
            .expect("a preopen");
        SavedFd::Dir {
            node,
            preopen: None,
            cursor: Some((pos, name.to_vec())),
        }
    }

    /// A cursor an honest listing can leave is restored, whether or not the directory
    /// still holds its name at its position (the guest may have removed it since).
    #[test]
    fn listing_cursors_an_honest_run_can_leave_are_restored() {
        for (pos, name) in [(0, &b"."[..]), (1, b".."), (2, b"gone"), (1 << 40, b"x")] {
            let (mut s, _) = host().save();
            let fd = dir_at(&s, pos, name);
            s.fds.push((9, fd));
            let back = restore(&s, Vec::new()).unwrap();
            assert_eq!(back.save().0, s);
        }
    }

    #[test]
    fn forged_host_states_are_refused_with_the_reason() {
        let (saved, _) = host().save();
        type Forge = fn(&mut SavedHost, &mut Vec<u8>);
        let cases: [(&str, Forge); 13] = [
            ("stdin read past its end", |s, _| s.stdin_pos = 5),
            ("stdout of another length", |s, _| s.stdout_len = 3),
            ("stdout over the quota", |s, o| {
                *o = vec![0; (1 << 20) + 1];
                s.stdout_len = o.len() as u64;
            }),
            ("a random position past the stream", |s, _| {
                s.random_words = (1u128 << 70).to_string()
            }),
            ("a random position that is no number", |s, _| {
                s.random_words = "-1".into()
            }),
            ("an fd of a free node", |s, _| {
                s.fds.push((
                    9,
                    SavedFd::File {
                        node: 40,
                        pos: 0,
                        read: true,
                        write: true,
                        append: false,
                        sync: 0,
                        rights: 0,
                    },
                ))
            }),
            ("a directory fd that is the preopen of no mount", |s, _| {
                s.fds.push((
                    9,
                    SavedFd::Dir {
                        node: 0,
                        preopen: Some(7),
                        cursor: None,
                    },
                ))
            }),
            ("an fd past the most a guest may have", |s, _| {
                s.fds.push((MAX_FDS, SavedFd::Stdin))
            }),
            ("a listing cursor at u64::MAX", |s, _| {
                let fd = dir_at(s, u64::MAX, b"a");
                s.fds.push((9, fd))
            }),
            (
                "a listing cursor naming a dot entry past the dots",
                |s, _| {
                    let fd = dir_at(s, 5, b"..");
                    s.fds.push((9, fd))
                },
            ),
            ("a listing cursor at `.` that is not `.`", |s, _| {
                let fd = dir_at(s, 0, b"a");
                s.fds.push((9, fd))
            }),
            ("a listing cursor naming a path", |s, _| {
                let fd = dir_at(s, 3, b"a/b");
                s.fds.push((9, fd))
            }),
            ("a listing cursor of an overlong name", |s, _| {
                let fd = dir_at(s, 3, &[b'a'; crate::vfs::MAX_NAME + 1]);
                s.fds.push((9, fd))
            }),
        ];
        for (what, forge) in cases {
            let (mut s, mut out) = (saved.clone(), Vec::new());
            forge(&mut s, &mut out);
            let r = restore(&s, out);
            assert!(r.is_err(), "{what}: accepted");
            eprintln!("{what}: {}", r.err().unwrap());
        }
    }
}

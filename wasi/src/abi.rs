//! The `wasi_snapshot_preview1` ABI: errno, rights, layouts, and bounds-checked access to
//! guest memory. Values are from the witx of WASI snapshot 1.

/// A preview1 errno. `Result<_, Errno>` is what every host function returns internally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub u16);

impl Errno {
    pub const ACCES: Errno = Errno(2);
    pub const BADF: Errno = Errno(8);
    pub const EXIST: Errno = Errno(20);
    pub const FAULT: Errno = Errno(21);
    pub const FBIG: Errno = Errno(22);
    pub const ILSEQ: Errno = Errno(25);
    pub const INVAL: Errno = Errno(28);
    pub const IO: Errno = Errno(29);
    pub const ISDIR: Errno = Errno(31);
    pub const LOOP: Errno = Errno(32);
    pub const MFILE: Errno = Errno(33);
    pub const NAMETOOLONG: Errno = Errno(37);
    pub const NOENT: Errno = Errno(44);
    pub const NOSPC: Errno = Errno(51);
    pub const NOSYS: Errno = Errno(52);
    pub const NOTDIR: Errno = Errno(54);
    pub const NOTEMPTY: Errno = Errno(55);
    pub const NOTSOCK: Errno = Errno(57);
    pub const NOTSUP: Errno = Errno(58);
    pub const OVERFLOW: Errno = Errno(61);
    pub const PERM: Errno = Errno(63);
    pub const ROFS: Errno = Errno(69);
    pub const SPIPE: Errno = Errno(70);
    pub const XDEV: Errno = Errno(75);
    pub const NOTCAPABLE: Errno = Errno(76);
}

pub const FILETYPE_UNKNOWN: u8 = 0;
pub const FILETYPE_DIRECTORY: u8 = 3;
pub const FILETYPE_REGULAR_FILE: u8 = 4;
pub const FILETYPE_SYMBOLIC_LINK: u8 = 7;

pub const RIGHT_FD_READ: u64 = 1 << 1;
pub const RIGHT_FD_SEEK: u64 = 1 << 2;
pub const RIGHT_FD_TELL: u64 = 1 << 5;
pub const RIGHT_FD_WRITE: u64 = 1 << 6;
/// Every right preview1 defines (bits 0..=29).
pub const RIGHTS_ALL: u64 = (1 << 30) - 1;
/// Rights that modify something: withheld on read-only mounts.
pub const RIGHTS_WRITE: u64 = (1 << 0) // fd_datasync
    | (1 << 3) // fd_fdstat_set_flags
    | (1 << 4) // fd_sync
    | RIGHT_FD_WRITE
    | (1 << 8) // fd_allocate
    | (1 << 9) // path_create_directory
    | (1 << 10) // path_create_file
    | (1 << 11) // path_link_source
    | (1 << 12) // path_link_target
    | (1 << 16) // path_rename_source
    | (1 << 17) // path_rename_target
    | (1 << 19) // path_filestat_set_size
    | (1 << 20) // path_filestat_set_times
    | (1 << 22) // fd_filestat_set_size
    | (1 << 23) // fd_filestat_set_times
    | (1 << 24) // path_symlink
    | (1 << 25) // path_remove_directory
    | (1 << 26); // path_unlink_file
/// The rights a directory fd reports as its base, exactly the set wasmtime reports: the
/// `path_*` rights but `path_filestat_set_size`, and `fd_readdir`, `fd_filestat_get`,
/// `fd_filestat_set_times`. Rejected: every right (a directory then seemed seekable and
/// truncatable, and reopening it with its own rights asked to write it: EISDIR).
pub const RIGHTS_DIRECTORY: u64 = (1 << 9) // path_create_directory
    | (1 << 10) // path_create_file
    | (1 << 11) // path_link_source
    | (1 << 12) // path_link_target
    | (1 << 13) // path_open
    | (1 << 14) // fd_readdir
    | (1 << 15) // path_readlink
    | (1 << 16) // path_rename_source
    | (1 << 17) // path_rename_target
    | (1 << 18) // path_filestat_get
    | (1 << 20) // path_filestat_set_times
    | (1 << 21) // fd_filestat_get
    | (1 << 23) // fd_filestat_set_times
    | (1 << 24) // path_symlink
    | (1 << 25) // path_remove_directory
    | (1 << 26); // path_unlink_file
/// The rights a directory fd reports as inheriting (what files opened through it may
/// get): the directory's own and the file rights, as wasmtime reports them.
pub const RIGHTS_DIRECTORY_INHERITING: u64 = RIGHTS_DIRECTORY
    | (1 << 0) // fd_datasync
    | RIGHT_FD_READ
    | RIGHT_FD_SEEK
    | (1 << 3) // fd_fdstat_set_flags
    | (1 << 4) // fd_sync
    | RIGHT_FD_TELL
    | RIGHT_FD_WRITE
    | (1 << 7) // fd_advise
    | (1 << 8) // fd_allocate
    | (1 << 22) // fd_filestat_set_size
    | (1 << 27); // poll_fd_readwrite
pub const RIGHTS_STDIO: u64 = RIGHT_FD_READ | RIGHT_FD_WRITE | (1 << 27); // poll_fd_readwrite

pub const OFLAGS_CREAT: u16 = 1;
pub const OFLAGS_DIRECTORY: u16 = 2;
pub const OFLAGS_EXCL: u16 = 4;
pub const OFLAGS_TRUNC: u16 = 8;
pub const FDFLAGS_APPEND: u16 = 1;
/// `FDFLAGS_DSYNC | FDFLAGS_RSYNC | FDFLAGS_SYNC`.
pub const FDFLAGS_SYNCS: u16 = 2 | 8 | 16;
pub const LOOKUP_SYMLINK_FOLLOW: u32 = 1;

pub const FSTFLAGS_ATIM: u16 = 1;
pub const FSTFLAGS_ATIM_NOW: u16 = 2;
pub const FSTFLAGS_MTIM: u16 = 4;
pub const FSTFLAGS_MTIM_NOW: u16 = 8;

pub const CLOCK_REALTIME: u32 = 0;
pub const CLOCK_MONOTONIC: u32 = 1;
pub const CLOCK_PROCESS_CPUTIME: u32 = 2;
pub const CLOCK_THREAD_CPUTIME: u32 = 3;
pub const SUBCLOCKFLAGS_ABSTIME: u16 = 1;

pub const EVENTTYPE_CLOCK: u8 = 0;
pub const EVENTTYPE_FD_READ: u8 = 1;
pub const EVENTTYPE_FD_WRITE: u8 = 2;

pub const WHENCE_SET: u8 = 0;
pub const WHENCE_CUR: u8 = 1;
pub const WHENCE_END: u8 = 2;

pub const SIZE_FILESTAT: usize = 64;
pub const SIZE_FDSTAT: usize = 24;
pub const SIZE_DIRENT: usize = 24;
pub const SIZE_SUBSCRIPTION: usize = 48;
pub const SIZE_EVENT: usize = 32;

/// Bounds-checked view of guest linear memory. Every out-of-range access is `EFAULT`.
pub struct Mem<'a>(pub &'a mut [u8]);

impl Mem<'_> {
    pub fn slice(&self, ptr: u32, len: u32) -> Result<&[u8], Errno> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Errno::FAULT)?;
        self.0.get(start..end).ok_or(Errno::FAULT)
    }
    pub fn slice_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Errno> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Errno::FAULT)?;
        self.0.get_mut(start..end).ok_or(Errno::FAULT)
    }
    pub fn read_u16(&self, ptr: u32) -> Result<u16, Errno> {
        Ok(u16::from_le_bytes(self.slice(ptr, 2)?.try_into().unwrap()))
    }
    pub fn read_u32(&self, ptr: u32) -> Result<u32, Errno> {
        Ok(u32::from_le_bytes(self.slice(ptr, 4)?.try_into().unwrap()))
    }
    pub fn read_u64(&self, ptr: u32) -> Result<u64, Errno> {
        Ok(u64::from_le_bytes(self.slice(ptr, 8)?.try_into().unwrap()))
    }
    pub fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), Errno> {
        self.slice_mut(ptr, u32::try_from(bytes.len()).map_err(|_| Errno::FAULT)?)?
            .copy_from_slice(bytes);
        Ok(())
    }
    pub fn write_u8(&mut self, ptr: u32, v: u8) -> Result<(), Errno> {
        self.write(ptr, &[v])
    }
    pub fn write_u16(&mut self, ptr: u32, v: u16) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }
    pub fn write_u32(&mut self, ptr: u32, v: u32) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }
    pub fn write_u64(&mut self, ptr: u32, v: u64) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }
    /// Checks that an array of `count` elements of `size` bytes at `ptr` lies inside
    /// memory (`EFAULT` otherwise), so that a loop over it is bounded by memory's size.
    pub fn check_array(&self, ptr: u32, count: u32, size: u32) -> Result<(), Errno> {
        let bytes = u64::from(count) * u64::from(size);
        let len = u32::try_from(bytes).map_err(|_| Errno::FAULT)?;
        self.slice(ptr, len).map(|_| ())
    }
    /// The `i`th (ptr, len) pair of the iovec/ciovec array at `iovs`, its buffer checked
    /// to lie inside memory. Read one at a time, never copied out as a whole: the array
    /// is guest-sized, and a host copy of it would be host memory the guest controls.
    pub fn iovec(&self, iovs: u32, i: u32) -> Result<(u32, u32), Errno> {
        let at = offset(iovs, i.checked_mul(8).ok_or(Errno::FAULT)?)?;
        let buf = self.read_u32(at)?;
        let len = self.read_u32(offset(at, 4)?)?;
        self.slice(buf, len)?;
        Ok((buf, len))
    }
    /// Total bytes of an iovec array (its buffers may overlap, so this can exceed the
    /// memory's size; it cannot overflow a u64: at most 2^29 entries of < 2^32 bytes).
    pub fn iovecs_total(&self, iovs: u32, count: u32) -> Result<u64, Errno> {
        let mut total = 0u64;
        for i in 0..count {
            total += u64::from(self.iovec(iovs, i)?.1);
        }
        Ok(total)
    }
}

/// `ptr + off` as a guest address, `EFAULT` when it overflows: guest pointer arithmetic is
/// always checked, so debug and release builds behave the same (rejected: `wrapping_add`,
/// which would silently read another address).
pub fn offset(ptr: u32, off: u32) -> Result<u32, Errno> {
    ptr.checked_add(off).ok_or(Errno::FAULT)
}

/// A `filestat` record.
pub struct Filestat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: u8,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

impl Filestat {
    pub fn encode(&self) -> [u8; SIZE_FILESTAT] {
        let mut b = [0u8; SIZE_FILESTAT];
        b[0..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16] = self.filetype;
        b[24..32].copy_from_slice(&self.nlink.to_le_bytes());
        b[32..40].copy_from_slice(&self.size.to_le_bytes());
        b[40..48].copy_from_slice(&self.atim.to_le_bytes());
        b[48..56].copy_from_slice(&self.mtim.to_le_bytes());
        b[56..64].copy_from_slice(&self.ctim.to_le_bytes());
        b
    }
}

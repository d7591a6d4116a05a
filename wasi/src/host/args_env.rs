//! `args_*` and `environ_*`: the job's arguments (argv[0] fixed) and environment, nothing else.

use super::*;

impl WasiHost {
    /// Entries and bytes (each string with its NUL) of `list`, as the `*_sizes_get` calls
    /// report them. The job's cap on args + env (`detwasm_job::job::MAX_ARGS_ENV_BYTES`,
    /// 2 MiB) keeps both far inside `u32`.
    pub(super) fn sizes(list: &[Vec<u8>]) -> (u32, u32) {
        let bytes: usize = list.iter().map(|a| a.len() + 1).sum();
        (list.len() as u32, bytes as u32)
    }

    pub(super) fn put_list(list: &[Vec<u8>], m: &mut Mem, ptrs: u32, buf: u32) -> R {
        let mut at = buf;
        for (i, a) in list.iter().enumerate() {
            let len = u32::try_from(a.len()).map_err(|_| Errno::FAULT)?;
            m.write_u32(
                offset(ptrs, 4u32.checked_mul(i as u32).ok_or(Errno::FAULT)?)?,
                at,
            )?;
            m.write(at, a)?;
            m.write_u8(offset(at, len)?, 0)?;
            at = offset(at, len)?;
            at = offset(at, 1)?;
        }
        Ok(())
    }

    /// Charges copying a whole list of `sizes` (entries, bytes): one unit per entry (its
    /// pointer and its string) and one per [`HOST_BYTES_PER_FUEL`] bytes, NULs included.
    /// Charged in full before a byte is written, whether the copy then succeeds or not
    /// (as `fd_write` charges its iovecs), so the charge is a function of the job alone,
    /// not of where the guest's pointers fail. Why charge at all: each call copies every
    /// argument or variable, and a guest can repeat the call at will for a few
    /// instructions; uncharged, a loop of `args_get` over one 9 MiB argument ran 74 s of
    /// CPU on 2 M instructions, and ignored the timeout (read only between fuel slices).
    fn charge_list(&mut self, (entries, bytes): (u32, u32)) -> R {
        self.charge(u64::from(entries))?;
        self.charge_bytes(u64::from(bytes))
    }

    /// Decision: the counts are computed once, in [`WasiHost::new`] (the lists never
    /// change), so the `*_sizes_get` calls are constant work and, like the other calls of
    /// constant work (`clock_time_get`, `fd_seek`), charge nothing beyond the guest's own
    /// instructions. Rejected: summing the list at each call and charging one unit per
    /// entry (it bounds wall time as well, but makes honest guests pay for work the host
    /// need not repeat, and changes the instruction count of every guest that asks).
    pub fn args_sizes_get(&mut self, m: &mut Mem, argc: u32, size: u32) -> R {
        let (n, b) = self.argv_sizes;
        m.write_u32(argc, n)?;
        m.write_u32(size, b)?;
        Ok(())
    }
    /// Charged as `charge_list` (above) says.
    pub fn args_get(&mut self, m: &mut Mem, argv: u32, buf: u32) -> R {
        self.charge_list(self.argv_sizes)?;
        Self::put_list(&self.argv, m, argv, buf)
    }
    /// As [`WasiHost::args_sizes_get`].
    pub fn environ_sizes_get(&mut self, m: &mut Mem, count: u32, size: u32) -> R {
        let (n, b) = self.env_sizes;
        m.write_u32(count, n)?;
        m.write_u32(size, b)?;
        Ok(())
    }
    /// Charged as `charge_list` (above) says.
    pub fn environ_get(&mut self, m: &mut Mem, env: u32, buf: u32) -> R {
        self.charge_list(self.env_sizes)?;
        Self::put_list(&self.env, m, env, buf)
    }
}

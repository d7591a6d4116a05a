//! `args_*` and `environ_*`: the job's arguments (argv[0] fixed) and environment, nothing else.

use super::*;

impl WasiHost {
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

    pub fn args_sizes_get(&mut self, m: &mut Mem, argc: u32, size: u32) -> R {
        let (n, b) = Self::sizes(&self.argv);
        m.write_u32(argc, n)?;
        m.write_u32(size, b)?;
        Ok(())
    }
    pub fn args_get(&mut self, m: &mut Mem, argv: u32, buf: u32) -> R {
        Self::put_list(&self.argv, m, argv, buf)
    }
    pub fn environ_sizes_get(&mut self, m: &mut Mem, count: u32, size: u32) -> R {
        let (n, b) = Self::sizes(&self.env);
        m.write_u32(count, n)?;
        m.write_u32(size, b)?;
        Ok(())
    }
    pub fn environ_get(&mut self, m: &mut Mem, env: u32, buf: u32) -> R {
        Self::put_list(&self.env, m, env, buf)
    }
}

//! Clocks, randomness and scheduling: virtual clocks that start at the job's epoch and
//! advance per read, the seeded ChaCha20 stream, `poll_oneoff` that returns at once and
//! advances virtual time, `sched_yield`, `proc_exit`.

use super::*;

impl WasiHost {
    pub fn clock_res_get(&mut self, m: &mut Mem, id: u32, out: u32) -> R {
        self.clock.peek(id)?;
        m.write_u64(out, CLOCK_TICK_NS)?;
        Ok(())
    }
    pub fn clock_time_get(&mut self, m: &mut Mem, id: u32, _precision: u64, out: u32) -> R {
        let v = self.clock.read(id)?;
        if id == CLOCK_REALTIME {
            self.asked.wall_clock += 1;
        } else {
            self.asked.monotonic_clock += 1;
        }
        m.write_u64(out, v)?;
        Ok(())
    }
    pub fn random_get(&mut self, m: &mut Mem, buf: u32, len: u32) -> R {
        m.slice(buf, len)?;
        self.charge_bytes(u64::from(len))?;
        let out = m.slice_mut(buf, len)?;
        self.rng.fill_bytes(out);
        self.asked.random_calls += 1;
        self.asked.random_bytes += u64::from(len);
        Ok(())
    }
    pub fn sched_yield(&mut self, _m: &mut Mem) -> R {
        Ok(())
    }

    /// Decision: file and stdio subscriptions are always ready (everything is in memory
    /// or a regular file), so they are reported at once without touching the clock; when
    /// only clock subscriptions are given, both clocks jump to the earliest deadline and
    /// the subscriptions due then fire, in subscription order. No real waiting, ever.
    pub fn poll_oneoff(&mut self, m: &mut Mem, inp: u32, out: u32, n: u32, nevents: u32) -> R {
        if n == 0 {
            return Err(Errno::INVAL.into());
        }
        // Both arrays are checked to lie in memory before any work, so the loop and the
        // host's event list are bounded by the guest's memory; the work is charged.
        m.check_array(inp, n, SIZE_SUBSCRIPTION as u32)?;
        m.check_array(out, n, SIZE_EVENT as u32)?;
        self.charge(u64::from(n))?;
        let mut events: Vec<[u8; SIZE_EVENT]> = Vec::new();
        let mut clocks: Vec<(u64, u64, u16)> = Vec::new(); // (userdata, delta, error)
        for i in 0..n {
            let s = offset(inp, i * SIZE_SUBSCRIPTION as u32)?;
            let userdata = m.read_u64(s)?;
            let tag = m.slice(offset(s, 8)?, 1)?[0];
            let mut ev = [0u8; SIZE_EVENT];
            ev[0..8].copy_from_slice(&userdata.to_le_bytes());
            match tag {
                EVENTTYPE_CLOCK => {
                    let id = m.read_u32(offset(s, 16)?)?;
                    let timeout = m.read_u64(offset(s, 24)?)?;
                    let flags = m.read_u16(offset(s, 40)?)?;
                    match self.clock.peek(id) {
                        Ok(now) => {
                            let delta = if flags & SUBCLOCKFLAGS_ABSTIME != 0 {
                                timeout.saturating_sub(now)
                            } else {
                                timeout
                            };
                            clocks.push((userdata, delta, 0));
                        }
                        Err(e) => clocks.push((userdata, 0, e.0)),
                    }
                }
                EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => {
                    let fd = m.read_u32(offset(s, 16)?)?;
                    ev[10] = tag;
                    let nbytes: Result<u64, Errno> = match (self.fds.get(&fd), tag) {
                        (None, _) => Err(Errno::BADF),
                        (Some(Fd::Stdin), EVENTTYPE_FD_READ) => {
                            Ok((self.stdin.len() - self.stdin_pos) as u64)
                        }
                        (Some(Fd::File { node, pos, .. }), EVENTTYPE_FD_READ) => {
                            Ok(self.vfs.size(*node).saturating_sub(*pos))
                        }
                        (Some(Fd::Stdout | Fd::Stderr | Fd::File { .. }), EVENTTYPE_FD_WRITE) => {
                            Ok(self.quota_left())
                        }
                        _ => Err(Errno::BADF),
                    };
                    match nbytes {
                        Ok(nb) => ev[16..24].copy_from_slice(&nb.to_le_bytes()),
                        Err(e) => ev[8..10].copy_from_slice(&e.0.to_le_bytes()),
                    }
                    events.push(ev);
                }
                _ => return Err(Errno::INVAL.into()),
            }
        }
        if events.is_empty() {
            self.asked.clock_waits += 1;
            let min = clocks.iter().map(|c| c.1).min().unwrap_or(0);
            self.clock.advance(min);
            for (userdata, delta, err) in clocks {
                if delta == min {
                    let mut ev = [0u8; SIZE_EVENT];
                    ev[0..8].copy_from_slice(&userdata.to_le_bytes());
                    ev[8..10].copy_from_slice(&err.to_le_bytes());
                    ev[10] = EVENTTYPE_CLOCK;
                    events.push(ev);
                }
            }
        }
        for (i, ev) in events.iter().enumerate() {
            m.write(offset(out, (i * SIZE_EVENT) as u32)?, ev)?;
        }
        m.write_u32(nevents, events.len() as u32)?;
        Ok(())
    }

    pub fn proc_exit(&mut self, code: u32) -> Fatal {
        Fatal::Exit(code as i32)
    }
}

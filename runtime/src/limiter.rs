//! The memory limit of a job, over everything the guest can grow.
//!
//! Decision: one budget, [`crate::Limits::memory`], for all linear memories and all tables
//! of the instance together. Tables are charged [`TABLE_ELEMENT_BYTES`] per element (the
//! host size of a table slot on a 64-bit host, a constant so the limit is the same on
//! every host). Rejected: wasmtime's `StoreLimits`, whose memory limit applies to each
//! memory on its own: a module with 100 memories (multi-memory is on) could hold 100
//! times the limit, and tables were only limited by element count.
//!
//! A growth the limiter allowed but the host could not provide (`mmap` refused, the host
//! out of memory) is a host failure: it is recorded here and the run ends as a run error,
//! never as a `memory.grow` returning -1 that the guest would observe and a verifier on a
//! roomier host would not.

use wasmtime::ResourceLimiter;

/// Bytes one table element is charged against the memory limit.
pub const TABLE_ELEMENT_BYTES: u64 = 8;
/// Most linear memories of one instance.
pub const MAX_MEMORIES: usize = 100;
/// Most tables of one instance.
pub const MAX_TABLES: usize = 100;

/// A `ResourceLimiter` that sums every memory and table of the store.
#[derive(Debug)]
pub struct JobLimiter {
    limit: u64,
    /// Bytes of memories and tables currently allowed.
    used: u64,
    /// The most of `used` so far (for the receipt's host statistics).
    pub peak: u64,
    /// Set when the host failed to provide a growth the limit allowed.
    pub host_failure: Option<String>,
    /// Set when the limit refused a growth (a deterministic event: the same job is refused
    /// the same way everywhere).
    pub denied: bool,
    /// Set while the guest unwinds for a checkpoint ([`crate::meter::Metered::unwinding`]):
    /// the only memory that grows then is the unwind memory the unwind pass adds
    /// (only the pass's save code runs), which holds the host's copy of the stack, not
    /// the job's data. It is not charged, so that a run with checkpoints is refused
    /// memory exactly where one without is; the pass caps it
    /// ([`crate::passes::unwind::MAX_PAGES`]). Rejected: charging it (a job near its
    /// limit would fail only because it was checkpointed).
    pub unwinding: bool,
    /// Memories and tables the passes added (not the job's), allowed on top of
    /// [`MAX_MEMORIES`] and [`MAX_TABLES`] ([`Self::with_pass_resources`]).
    pass_memories: usize,
    pass_tables: usize,
}

impl JobLimiter {
    pub fn new(limit: u64) -> Self {
        JobLimiter {
            limit,
            used: 0,
            peak: 0,
            host_failure: None,
            denied: false,
            unwinding: false,
            pass_memories: 0,
            pass_tables: 0,
        }
    }

    /// Allows, on top of the job's limits, what the unwind pass adds to a module
    /// ([`crate::passes::unwind`]): its memory (empty at instantiation, grown only while
    /// unwinding, which is not charged) and its forwarding table of `table_bytes`, so
    /// that a run that takes checkpoints is refused memory, tables and memories exactly
    /// where one without is. Rejected: charging them to the job (found by review: a job
    /// near its limit, or with 100 memories, failed only because it took checkpoints).
    pub fn with_pass_resources(mut self, table_bytes: u64, tables: usize, memories: usize) -> Self {
        self.limit = self.limit.saturating_add(table_bytes);
        self.pass_tables = tables;
        self.pass_memories = memories;
        self
    }

    /// [`Self::with_pass_resources`] for what the unwind pass added to `module` (its
    /// memory and forwarding table, found by their export names). Only for a module
    /// compiled with the pass: another module may export those names itself.
    pub fn with_pass_resources_of(self, module: &wasmtime::Module) -> Self {
        let mut table_bytes = 0;
        let (mut tables, mut memories) = (0, 0);
        for e in module.exports() {
            match (e.name(), e.ty()) {
                (crate::passes::unwind::EXPORT_MEMORY, _) => memories += 1,
                (crate::passes::unwind::EXPORT_TABLE, wasmtime::ExternType::Table(t)) => {
                    tables += 1;
                    table_bytes = t.minimum().saturating_mul(TABLE_ELEMENT_BYTES);
                }
                _ => {}
            }
        }
        self.with_pass_resources(table_bytes, tables, memories)
    }

    /// Allows growing a resource from `current` to `desired` bytes if the total stays
    /// within the limit (and within the resource's own `maximum`).
    fn grow(&mut self, current: u64, desired: u64, maximum: Option<u64>) -> bool {
        if maximum.is_some_and(|m| desired > m) || desired < current {
            self.denied = true;
            return false;
        }
        if self.unwinding {
            return true;
        }
        let total = self.used.saturating_add(desired - current);
        if total > self.limit {
            self.denied = true;
            return false;
        }
        self.used = total;
        self.peak = self.peak.max(total);
        true
    }
}

impl ResourceLimiter for JobLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current as u64, desired as u64, maximum.map(|m| m as u64)))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.host_failure = Some(format!("the host could not grow a linear memory: {error}"));
        Err(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let bytes = |n: usize| (n as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.grow(bytes(current), bytes(desired), maximum.map(bytes)))
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.host_failure = Some(format!("the host could not grow a table: {error}"));
        Err(error)
    }

    fn instances(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        MAX_TABLES + self.pass_tables
    }
    fn memories(&self) -> usize {
        MAX_MEMORIES + self.pass_memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut l = JobLimiter::new(1000);
        assert!(l.memory_growing(0, 600, None).unwrap());
        // A second memory: only what is left of the same budget.
        assert!(!l.memory_growing(0, 500, None).unwrap());
        assert!(l.memory_growing(0, 400, None).unwrap());
        // Tables are charged per element.
        assert!(!l.table_growing(0, 1, None).unwrap());
        let mut l = JobLimiter::new(100);
        assert!(l.table_growing(0, 12, None).unwrap());
        assert!(!l.table_growing(12, 13, None).unwrap());
        assert!(!l.memory_growing(0, 10, Some(5)).unwrap());
        assert!(!l.memory_growing(0, usize::MAX, None).unwrap());
    }
}

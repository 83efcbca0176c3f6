//! The store for many threads: one lock around the [`Durable`] store.
//!
//! Every store operation is short (map look-ups, a log write, no embedding), so a single
//! mutex keeps the code simple; sharding by namespace can replace it behind the same
//! interface. Disk flushes, which can take milliseconds, run outside it (group commit):
//! a lookup never waits for a Store's flush, and one flush acknowledges every change
//! logged before it began.

use std::sync::{Mutex, MutexGuard};

use crate::durable::{Durable, Error, Fsync};

/// Entries encoded per hold of the lock while snapshotting: short enough that requests
/// waiting on the lock see a sub-millisecond pause, not a stall of the whole snapshot.
const SNAPSHOT_CHUNK: usize = 1024;

pub struct SharedStore {
    inner: Mutex<Durable>,
    snapshotting: Mutex<()>,
    /// Held while flushing (lock order: this one, then `inner`), so that one flush runs
    /// at a time and the writers queued behind it find their changes already covered.
    flushed: Mutex<Flushed>,
    /// Flush after every change (`Fsync::Always` with a data directory).
    flush_each: bool,
}

#[derive(Default)]
struct Flushed {
    /// Position ([`Durable::written`]) that the last successful flush covered.
    upto: u64,
    /// A flush failed: the log is closed to writes until a restart.
    failed: Option<Error>,
}

impl SharedStore {
    pub fn new(mut durable: Durable) -> Self {
        durable.defer_flushes();
        let flush_each = durable.fsync() == Some(Fsync::Always);
        SharedStore {
            inner: Mutex::new(durable),
            snapshotting: Mutex::new(()),
            flushed: Mutex::new(Flushed::default()),
            flush_each,
        }
    }

    /// Runs a change with the store locked; under `Fsync::Always`, returns once it is on
    /// the disk. A failed flush fails the change (the caller must not count on it) and
    /// closes the log; the change stays visible in memory until a restart. A change that
    /// logged nothing waits too: what it saw (an entry already removed) may not be on
    /// the disk yet.
    pub fn write<R>(&self, change: impl FnOnce(&mut Durable) -> Result<R, Error>) -> Result<R, Error> {
        let (result, written) = self.with(|d| (change(d), d.written()));
        if self.flush_each {
            self.flush_to(written)?;
        }
        result
    }

    /// Flushes every change logged so far (the interval policy's flush).
    pub fn flush(&self) -> Result<(), Error> {
        let target = self.with(|d| d.written());
        self.flush_to(target)
    }

    fn flush_to(&self, target: u64) -> Result<(), Error> {
        let mut flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
        if flushed.upto >= target {
            return Ok(()); // a flush that began after this change was logged covered it
        }
        if let Some(error) = &flushed.failed {
            return Err(error.clone());
        }
        let Some((file, upto, path)) = self.with(|d| d.flush_target()) else { return Ok(()) };
        if let Err(e) = file.sync_data() {
            let error = Error::Io(format!(
                "could not flush {}: {e}; the log is closed to writes, restart the server to recover it",
                path.display()
            ));
            self.with(|d| d.close_log());
            flushed.failed = Some(error.clone());
            return Err(error);
        }
        flushed.upto = upto;
        Ok(())
    }

    /// Snapshots without holding the store for the whole write (see
    /// [`crate::durable::SnapshotWriter`]); one snapshot at a time.
    pub fn snapshot(&self, now_ms: u64) -> Result<usize, Error> {
        let _one_at_a_time = self.snapshotting.lock().unwrap_or_else(|p| p.into_inner());
        let begun = {
            // The snapshot's start flushes the log: under `flushed`, so that writers are
            // acknowledged by it, and a failure there fails every later flush too.
            let mut flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
            let (begun, written, closed) = self.with(|d| (d.begin_snapshot(), d.written(), d.log_closed()));
            match &begun {
                Ok(_) => flushed.upto = flushed.upto.max(written),
                Err(e) if closed && flushed.failed.is_none() => flushed.failed = Some(e.clone()),
                Err(_) => {}
            }
            begun
        };
        let Some(mut writer) = begun? else { return Ok(0) };
        let ids = std::mem::take(&mut writer.ids);
        let mut records = Vec::new();
        for chunk in ids.chunks(SNAPSHOT_CHUNK) {
            records.clear();
            let count = self.with(|d| d.encode_entries(chunk, now_ms, &mut records));
            writer.write(&records, count)?;
        }
        writer.finish()
    }

    /// Runs `f` with the store locked.
    pub fn with<R>(&self, f: impl FnOnce(&mut Durable) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Durable> {
        // A panic inside `f` cannot leave a half-made change: every Store method either
        // completes its bookkeeping or panics before touching the maps, so keep going.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEntry;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn many_threads_keep_the_store_consistent() {
        let mut config = crate::store::Config::default();
        config.limits.max_entries = 500;
        config.namespace_limits.max_bytes = 60_000;
        let shared = Arc::new(SharedStore::new(Durable::in_memory(config)));
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                let shared = shared.clone();
                thread::spawn(move || {
                    for i in 0..2_000u64 {
                        let prompt = format!("question {}", (i * 7 + t) % 900);
                        let now = i;
                        match i % 5 {
                            0 | 1 => {
                                let new = NewEntry {
                                    namespace: format!("ns{}", t % 3),
                                    prompt,
                                    ttl_ms: (i % 3 == 0).then_some(50),
                                    ..NewEntry::default()
                                };
                                shared.with(|s| s.insert(new, now)).unwrap();
                            }
                            2 => {
                                shared.with(|s| s.store_mut().get_exact(&format!("ns{}", t % 3), &prompt, now));
                            }
                            3 => {
                                shared.with(|s| s.store_mut().expire(now));
                            }
                            _ => {
                                shared.with(|s| s.remove_prompt("ns1", &prompt)).unwrap();
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        shared.with(|d| {
            let s = d.store_mut();
            s.check_invariants().unwrap();
            let c = s.counters();
            let removed = s.take_removed().len() as u64;
            assert_eq!(c.inserts, 8 * 2_000 * 2 / 5);
            // Every insert is either still here or was logged as removed exactly once.
            assert_eq!(c.inserts, s.len() as u64 + removed);
            assert_eq!(removed, c.evictions + c.expirations + c.invalidations + c.replaced);
        });
    }

    #[test]
    fn lookups_do_not_wait_for_a_flush_and_writers_are_acknowledged_after_it() {
        let dir = std::env::temp_dir().join(format!("semcached-sync-flush-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = crate::store::Config::default();
        let (durable, _) = Durable::open(&dir, config, Fsync::Always, 0).unwrap();
        let shared = Arc::new(SharedStore::new(durable));
        let entry = |i: u64| NewEntry { namespace: "ns".into(), prompt: format!("question {i}"), ..NewEntry::default() };
        // A flush in progress (as a slow disk would hold it) ...
        let flushing = shared.flushed.lock().unwrap();
        let writers: Vec<_> = (0..4u64)
            .map(|i| {
                let shared = shared.clone();
                thread::spawn(move || shared.write(|d| d.insert(entry(i), 0)).unwrap())
            })
            .collect();
        // ... does not keep lookups from the store: the changes are applied and readable
        // while their writers still wait for the disk.
        // (try_lock: a store held through the flush fails the test instead of hanging it.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(mut d) = shared.inner.try_lock() {
                if d.store().len() == 4 {
                    assert!(d.store_mut().get_exact("ns", "question 2", 0).is_some());
                    break;
                }
            }
            assert!(std::time::Instant::now() < deadline, "the store stayed locked or the changes were not applied");
            thread::yield_now();
        }
        assert!(writers.iter().all(|w| !w.is_finished()), "a write was acknowledged before its flush");
        drop(flushing);
        let ids: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        let written = shared.with(|d| d.written());
        assert_eq!(shared.flushed.lock().unwrap().upto, written, "the flushes covered every change");
        drop(shared);
        let (recovered, _) = Durable::open(&dir, config, Fsync::Always, 0).unwrap();
        for id in ids {
            assert!(recovered.store().contains(id));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_snapshot_taken_under_load_recovers_exactly_what_was_live() {
        use crate::store::Config;

        let dir = std::env::temp_dir().join(format!("semcached-sync-snapshot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let entry = |i: u64| NewEntry {
            namespace: format!("ns{}", i % 3),
            prompt: format!("question {}", i % 4000),
            response: format!("answer {i}"),
            vector: vec![i as f32; 4],
            model: "m".into(),
            ..NewEntry::default()
        };
        // A cap below the number of prompts, so evictions (Remove records) race the chunks.
        let mut config = Config::default();
        config.limits.max_entries = 3_000;
        let (durable, _) = Durable::open(&dir, config, Fsync::Interval, 0).unwrap();
        let shared = Arc::new(SharedStore::new(durable));
        for i in 0..5_000 {
            shared.with(|d| d.insert(entry(i), 0)).unwrap();
        }
        let writer = {
            let shared = shared.clone();
            thread::spawn(move || {
                for i in 5_000..12_000u64 {
                    if i % 3 == 0 {
                        shared.with(|d| d.remove_prompt(&format!("ns{}", i % 3), &format!("question {}", i % 4000))).unwrap();
                    } else {
                        shared.with(|d| d.insert(entry(i), 0)).unwrap();
                    }
                }
            })
        };
        let mut snapshots = 0;
        while snapshots == 0 || !writer.is_finished() {
            shared.snapshot(0).unwrap();
            snapshots += 1;
        }
        writer.join().unwrap();
        assert!(snapshots >= 1);
        let live = |d: &Durable| {
            let mut all: Vec<(u64, String, String)> =
                d.store().entries().map(|(e, _)| (e.id, e.prompt.clone(), e.response.clone())).collect();
            all.sort();
            all
        };
        let before = shared.with(|d| {
            d.sync().unwrap();
            live(d)
        });
        drop(shared);
        let (recovered, _) = Durable::open(&dir, config, Fsync::Interval, 0).unwrap();
        assert_eq!(live(&recovered), before);
        recovered.store().check_invariants().unwrap();
    }
}

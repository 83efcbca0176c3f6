//! The store for many threads: one lock around the [`Durable`] store.
//!
//! Every store operation is short (map look-ups, no I/O, no embedding), so a single mutex
//! keeps the code simple; sharding by namespace can replace it behind the same interface.

use std::sync::{Mutex, MutexGuard};

use crate::durable::Durable;

pub struct SharedStore {
    inner: Mutex<Durable>,
}

impl SharedStore {
    pub fn new(durable: Durable) -> Self {
        SharedStore { inner: Mutex::new(durable) }
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
}

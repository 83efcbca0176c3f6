//! Eviction policies: which entry of a group goes when a bound is reached.
//!
//! * LRU: one queue; a hit moves the entry to the head; the tail goes.
//! * S3-FIFO (Juncheng Yang et al., "FIFO queues are all you need for cache eviction",
//!   SOSP 2023): a small FIFO takes new entries (about 10% of the bytes), a main FIFO the
//!   entries that proved themselves, and a ghost FIFO remembers keys recently evicted from
//!   the small queue. A hit only bumps a 2-bit counter (no reordering). An entry leaving the
//!   small queue moves to main if it was hit, else it is evicted and its key becomes a
//!   ghost; a new entry whose key is a ghost goes straight to main. Main gives entries with
//!   a nonzero counter another round (counter minus one). One-off scans pass through the
//!   small queue without displacing the hot set in main.
//!
//! Both are single-threaded and know nothing but ids, sizes and ghost keys; the store
//! keeps one [`Queues`] per namespace.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::store::EntryId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Lru,
    S3Fifo,
}

const MAX_FREQ: u8 = 3;
/// The small queue's share of the bytes, in tenths.
const SMALL_SHARE_TENTHS: usize = 1;
const MIN_GHOSTS: usize = 64;

struct Place {
    seq: u64,
    small: bool,
    freq: u8,
    bytes: usize,
    ghost_key: u64,
}

pub struct Queues {
    policy: Policy,
    small: BTreeMap<u64, EntryId>,
    main: BTreeMap<u64, EntryId>,
    places: HashMap<EntryId, Place>,
    small_bytes: usize,
    bytes: usize,
    ghosts: VecDeque<u64>,
    ghost_set: HashSet<u64>,
    next_seq: u64,
}

impl Queues {
    pub fn new(policy: Policy) -> Self {
        Queues {
            policy,
            small: BTreeMap::new(),
            main: BTreeMap::new(),
            places: HashMap::new(),
            small_bytes: 0,
            bytes: 0,
            ghosts: VecDeque::new(),
            ghost_set: HashSet::new(),
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, id: EntryId) -> bool {
        self.places.contains_key(&id)
    }

    /// A new entry; `ghost_key` identifies its content (namespace + normalized prompt).
    pub fn insert(&mut self, id: EntryId, bytes: usize, ghost_key: u64) {
        let seq = self.seq();
        let small = self.policy == Policy::S3Fifo && !self.ghost_set.remove(&ghost_key);
        if small {
            self.small.insert(seq, id);
            self.small_bytes += bytes;
        } else {
            self.main.insert(seq, id);
        }
        self.bytes += bytes;
        self.places.insert(id, Place { seq, small, freq: 0, bytes, ghost_key });
    }

    pub fn hit(&mut self, id: EntryId) {
        let seq = self.seq();
        let Some(place) = self.places.get_mut(&id) else { return };
        match self.policy {
            Policy::Lru => {
                self.main.remove(&place.seq);
                place.seq = seq;
                self.main.insert(seq, id);
            }
            Policy::S3Fifo => place.freq = (place.freq + 1).min(MAX_FREQ),
        }
    }

    /// Forgets an entry removed for another reason (expired, invalidated, replaced).
    pub fn remove(&mut self, id: EntryId) -> bool {
        let Some(place) = self.places.remove(&id) else { return false };
        if place.small {
            self.small.remove(&place.seq);
            self.small_bytes -= place.bytes;
        } else {
            self.main.remove(&place.seq);
        }
        self.bytes -= place.bytes;
        true
    }

    /// Chooses the entry to evict and forgets it; None when nothing but `keep` (the entry
    /// being inserted, which must not pay for its own room) is left.
    pub fn evict(&mut self, keep: Option<EntryId>) -> Option<EntryId> {
        loop {
            let only_keep_in_small = self.small.len() == 1 && self.small.values().next().copied() == keep;
            let from_small = !self.small.is_empty()
                && !(only_keep_in_small && !self.main.is_empty())
                && (self.main.is_empty() || self.small_bytes * 10 > self.bytes * SMALL_SHARE_TENTHS);
            let queue = if from_small { &mut self.small } else { &mut self.main };
            let (&seq, &id) = queue.first_key_value()?;
            if Some(id) == keep {
                return None; // only the new entry is left in the queue to evict from
            }
            queue.remove(&seq);
            let place = self.places.get_mut(&id).expect("queued entries have a place");
            if place.freq > 0 {
                // Hit while queued: promoted from small to main, or another round in main.
                if from_small {
                    self.small_bytes -= place.bytes;
                    place.small = false;
                    place.freq = 0;
                } else {
                    place.freq -= 1;
                }
                self.next_seq += 1;
                place.seq = self.next_seq;
                self.main.insert(place.seq, id);
                continue;
            }
            let place = self.places.remove(&id).expect("checked above");
            self.bytes -= place.bytes;
            if from_small {
                self.small_bytes -= place.bytes;
                self.remember(place.ghost_key);
            }
            return Some(id);
        }
    }

    /// Ids in eviction order, next to go first (for snapshots and invariant checks).
    pub fn order(&self) -> impl Iterator<Item = EntryId> + '_ {
        self.small.values().chain(self.main.values()).copied()
    }

    fn remember(&mut self, key: u64) {
        if self.ghost_set.insert(key) {
            self.ghosts.push_back(key);
        }
        while self.ghosts.len() > self.main.len().max(MIN_GHOSTS) {
            if let Some(old) = self.ghosts.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(policy: Policy, n: u64) -> Queues {
        let mut q = Queues::new(policy);
        for id in 1..=n {
            q.insert(id, 10, id);
        }
        q
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut q = filled(Policy::Lru, 3);
        q.hit(1);
        assert_eq!(q.evict(None), Some(2));
        assert_eq!(q.evict(Some(1)), Some(3));
        assert_eq!(q.evict(Some(1)), None);
        assert_eq!(q.evict(None), Some(1));
        assert_eq!(q.evict(None), None);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn s3fifo_keeps_hit_entries_and_lets_a_scan_pass() {
        let mut q = filled(Policy::S3Fifo, 10);
        for id in [1, 2] {
            q.hit(id);
        }
        // Evicting the unhit newcomers first; the hit ones move to main.
        let evicted: Vec<EntryId> = (0..8).map(|_| q.evict(None).unwrap()).collect();
        assert_eq!(evicted, [3, 4, 5, 6, 7, 8, 9, 10]);
        assert!(q.contains(1) && q.contains(2));
        // A scan of one-off entries is evicted before the hot pair.
        for id in 100..110 {
            q.insert(id, 10, id);
        }
        for _ in 0..10 {
            let id = q.evict(None).unwrap();
            assert!(id >= 100, "the scan displaced hot entry {id}");
        }
        // A key evicted from small comes back into main (its ghost is remembered).
        q.insert(200, 10, 105);
        assert!(q.main.values().any(|&id| id == 200));
    }

    #[test]
    fn the_entry_being_inserted_is_never_its_own_victim() {
        let mut q = filled(Policy::S3Fifo, 3);
        for id in 1..=3 {
            q.hit(id);
        }
        q.insert(4, 10, 4);
        // 1-3 move to main with their hits; then main, not the newcomer, gives one up.
        let victim = q.evict(Some(4)).unwrap();
        assert_ne!(victim, 4);
        assert!(q.contains(4));
    }

    #[test]
    fn removal_keeps_the_byte_counts() {
        let mut q = filled(Policy::S3Fifo, 4);
        q.hit(2);
        assert!(q.remove(2) && !q.remove(2));
        assert_eq!((q.len(), q.bytes()), (3, 30));
        while q.evict(None).is_some() {}
        assert_eq!((q.bytes(), q.small_bytes), (0, 0));
    }
}

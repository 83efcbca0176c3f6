//! The entry store: a single-threaded algorithm, wrapped for threads in [`crate::sync`].
//!
//! Indexes kept in step on every change:
//! * `slots`: id -> entry, its normalized prompt and its size in bytes;
//! * `namespaces`: namespace -> (normalized prompt -> id), the exact tier; a namespace
//!   holds each normalized prompt once, so its map also lists all of its entries;
//! * `vectors`: namespace -> model -> contiguous vectors (see [`crate::vectors`]);
//! * `groups`: the eviction queues and bounds of each namespace group. A namespace
//!   `name#partition` (how the engine keys conversations) belongs to the group `name`, so
//!   bounds set for a namespace cover all of its partitions;
//! * `expiry`: (expires_ms, id), soonest first, so expiring is a walk from the front.
//!
//! Bounds: entries and bytes for the whole store and per group. A group over its own bound
//! evicts by its policy; a store over its bound evicts from the group holding the most
//! bytes, so one busy namespace cannot push everyone else's hot entries out.
//!
//! Every removal is logged in `removed` until the owner takes the log, so that structures
//! outside the store (the vector indexes) can drop the same entries.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::normalize::normalize;
use crate::policy::{Policy, Queues};
use crate::vectors::VectorSet;

pub type EntryId = u64;

/// Default cap on entries when none is given.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

/// What an entry costs beyond its strings and its vector: its record, its places in the
/// maps and queues, and allocator rounding. `benchmarks/core.py` compares the accounted
/// bytes with the process's resident memory.
pub const ENTRY_OVERHEAD_BYTES: usize = 800;

/// Bounds on entries and bytes; `usize::MAX` means none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Limits {
    pub const NONE: Limits = Limits { max_entries: usize::MAX, max_bytes: usize::MAX };

    fn exceeded(&self, entries: usize, bytes: usize) -> bool {
        entries > self.max_entries || bytes > self.max_bytes
    }
}

/// How a store is bounded and evicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub limits: Limits,
    /// Bounds of every namespace group without bounds of its own.
    pub namespace_limits: Limits,
    pub policy: Policy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits { max_entries: DEFAULT_MAX_ENTRIES, max_bytes: usize::MAX },
            namespace_limits: Limits::NONE,
            policy: Policy::S3Fifo,
        }
    }
}

/// The eviction group of a namespace: the part before `#`.
pub fn group_of(namespace: &str) -> &str {
    namespace.split('#').next().unwrap_or(namespace)
}

struct Group {
    queues: Queues,
    limits: Limits,
}

/// One cached answer, as the store hands it out (the vector stays inside: see [`Store::vector`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub id: EntryId,
    pub namespace: Arc<str>,
    pub prompt: String,
    pub response: String,
    /// The embedding model the vector came from; vectors of different models never meet.
    pub model: String,
    pub metadata: Vec<(String, String)>,
    pub created_ms: u64,
    /// `None`: never expires.
    pub expires_ms: Option<u64>,
    pub hits: u64,
}

/// What [`Store::insert`] takes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewEntry {
    pub namespace: String,
    pub prompt: String,
    pub response: String,
    pub vector: Vec<f32>,
    pub model: String,
    pub metadata: Vec<(String, String)>,
    /// Time to live from now in milliseconds; `None`: never expires.
    pub ttl_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalReason {
    Evicted,
    Expired,
    Invalidated,
    /// A newer store of the same normalized prompt in the same namespace took its place.
    Replaced,
}

/// A removal, kept until [`Store::take_removed`] so vector indexes can follow.
#[derive(Clone, Debug, PartialEq)]
pub struct Removed {
    pub namespace: Arc<str>,
    pub id: EntryId,
    pub model: String,
    pub reason: RemovalReason,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub inserts: u64,
    pub exact_hits: u64,
    pub exact_misses: u64,
    /// Hits recorded on entries found by id (the semantic tier).
    pub id_hits: u64,
    pub replaced: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub invalidations: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    EmptyPrompt,
    /// A vector whose length differs from the others of its namespace and model.
    Dimension { expected: usize, got: usize },
    /// One entry larger than the bound of its namespace or of the store.
    TooLarge { bytes: usize, limit: usize },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::EmptyPrompt => write!(f, "prompt is empty after normalization"),
            StoreError::Dimension { expected, got } => write!(
                f,
                "vector has {got} dimensions, but this namespace and model hold {expected}-dimensional vectors"
            ),
            StoreError::TooLarge { bytes, limit } => {
                write!(f, "entry takes {bytes} bytes, more than the {limit}-byte bound of its namespace or store")
            }
        }
    }
}

impl std::error::Error for StoreError {}

struct Slot {
    entry: Entry,
    key: String,
    bytes: usize,
}

/// Vector sets by namespace, then embedding model.
type Vectors = HashMap<Arc<str>, HashMap<String, VectorSet>>;

pub struct Store {
    slots: HashMap<EntryId, Slot>,
    namespaces: HashMap<Arc<str>, HashMap<String, EntryId>>,
    vectors: Vectors,
    groups: HashMap<Arc<str>, Group>,
    /// Bounds set for particular namespace groups.
    group_limits: HashMap<String, Limits>,
    expiry: BTreeSet<(u64, EntryId)>,
    removed: Vec<Removed>,
    next_id: EntryId,
    config: Config,
    bytes: usize,
    counters: Counters,
}

impl Store {
    /// A store holding at most `max_entries` entries (at least one), other settings default.
    pub fn new(max_entries: usize) -> Self {
        let mut config = Config::default();
        config.limits.max_entries = max_entries;
        Store::with_config(config)
    }

    pub fn with_config(mut config: Config) -> Self {
        config.limits.max_entries = config.limits.max_entries.max(1);
        Store {
            slots: HashMap::new(),
            namespaces: HashMap::new(),
            vectors: HashMap::new(),
            groups: HashMap::new(),
            group_limits: HashMap::new(),
            expiry: BTreeSet::new(),
            removed: Vec::new(),
            next_id: 1,
            config,
            bytes: 0,
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> Config {
        self.config
    }

    pub fn max_entries(&self) -> usize {
        self.config.limits.max_entries
    }

    /// Bytes accounted to live entries (see [`ENTRY_OVERHEAD_BYTES`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Changes the store's bounds, evicting down to them.
    pub fn set_limits(&mut self, limits: Limits, namespace_limits: Limits) {
        self.config.limits = Limits { max_entries: limits.max_entries.max(1), ..limits };
        self.config.namespace_limits = namespace_limits;
        let names: Vec<Arc<str>> = self.groups.keys().cloned().collect();
        for name in names {
            let limits = self.limits_of(&name);
            if let Some(group) = self.groups.get_mut(&name) {
                group.limits = limits;
            }
            self.enforce(&name, None);
        }
    }

    /// Bounds one namespace group (and all of its partitions), evicting down to them.
    pub fn set_namespace_limits(&mut self, namespace: &str, limits: Limits) {
        let name = group_of(namespace);
        self.group_limits.insert(name.to_string(), limits);
        if let Some(group) = self.groups.get_mut(name) {
            group.limits = limits;
        }
        self.enforce(name, None);
    }

    fn limits_of(&self, group: &str) -> Limits {
        self.group_limits.get(group).copied().unwrap_or(self.config.namespace_limits)
    }

    /// Evicts until the group and then the store are within their bounds, never `keep`
    /// (the entry being inserted).
    fn enforce(&mut self, group: &str, keep: Option<EntryId>) {
        while let Some(g) = self.groups.get_mut(group) {
            if !g.limits.exceeded(g.queues.len(), g.queues.bytes()) {
                break;
            }
            match g.queues.evict(keep) {
                Some(id) => self.remove_slot(id, RemovalReason::Evicted),
                None => break,
            };
        }
        while self.config.limits.exceeded(self.slots.len(), self.bytes) {
            // The group holding the most bytes gives up an entry; if it has nothing but
            // `keep` to give, the next largest does.
            let mut order: Vec<(usize, Arc<str>)> =
                self.groups.iter().map(|(name, g)| (g.queues.bytes(), name.clone())).collect();
            order.sort_unstable_by(|a, b| b.cmp(a));
            let victim = order.iter().find_map(|(_, name)| self.groups.get_mut(name)?.queues.evict(keep));
            match victim {
                Some(id) => self.remove_slot(id, RemovalReason::Evicted),
                None => break,
            };
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// (namespace group, entries, bytes) for every group that holds any.
    pub fn group_usage(&self) -> Vec<(String, usize, usize)> {
        let mut usage: Vec<(String, usize, usize)> = self
            .groups
            .iter()
            .map(|(name, g)| (name.to_string(), g.queues.len(), g.queues.bytes()))
            .collect();
        usage.sort();
        usage
    }

    /// Entries per namespace, for namespaces that hold any.
    pub fn namespace_sizes(&self) -> Vec<(String, usize)> {
        let mut sizes: Vec<(String, usize)> = self
            .namespaces
            .iter()
            .map(|(name, exact)| (name.to_string(), exact.len()))
            .collect();
        sizes.sort();
        sizes
    }

    /// Stores an entry and returns its id. An entry with the same normalized prompt in the
    /// same namespace is replaced; past a bound, the eviction policy chooses what goes.
    pub fn insert(&mut self, new: NewEntry, now_ms: u64) -> Result<EntryId, StoreError> {
        let id = self.next_id;
        let expires_ms = new.ttl_ms.map(|ttl| now_ms.saturating_add(ttl));
        self.insert_at(id, new, now_ms, expires_ms)?;
        Ok(id)
    }

    /// Refuses what `insert` would refuse, without changing anything.
    pub fn check(&self, new: &NewEntry) -> Result<(), StoreError> {
        let key = normalize(&new.prompt);
        if key.is_empty() {
            return Err(StoreError::EmptyPrompt);
        }
        self.check_dimension(new)?;
        self.check_size(new, &key).map(|_| ())
    }

    /// The entry's accounted bytes, refused when one entry alone would break a bound.
    fn check_size(&self, new: &NewEntry, key: &str) -> Result<usize, StoreError> {
        let bytes = entry_bytes(new, key);
        let limit = self.config.limits.max_bytes.min(self.limits_of(group_of(&new.namespace)).max_bytes);
        if bytes > limit {
            return Err(StoreError::TooLarge { bytes, limit });
        }
        Ok(bytes)
    }

    fn check_dimension(&self, new: &NewEntry) -> Result<(), StoreError> {
        let set = self.vectors.get(new.namespace.as_str()).and_then(|m| m.get(&new.model));
        match set {
            Some(set) if !new.vector.is_empty() && set.dim() != new.vector.len() => {
                Err(StoreError::Dimension { expected: set.dim(), got: new.vector.len() })
            }
            _ => Ok(()),
        }
    }

    /// The id the next `insert` will use.
    pub fn next_id(&self) -> EntryId {
        self.next_id
    }

    /// Inserts with a given id and times: the primitive under `insert`, and the replay of
    /// a logged insert. Ids only move forward.
    pub fn insert_at(
        &mut self,
        id: EntryId,
        new: NewEntry,
        created_ms: u64,
        expires_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        let key = normalize(&new.prompt);
        if key.is_empty() {
            return Err(StoreError::EmptyPrompt);
        }
        self.check_dimension(&new)?;
        let bytes = self.check_size(&new, &key)?;
        let namespace: Arc<str> = match self.namespaces.get_key_value(new.namespace.as_str()) {
            Some((name, _)) => name.clone(),
            None => Arc::from(new.namespace.as_str()),
        };
        if let Some(old) = self.namespaces.get(&namespace).and_then(|m| m.get(&key)).copied() {
            self.remove_slot(old, RemovalReason::Replaced);
        }
        self.next_id = self.next_id.max(id + 1);
        if let Some(at) = expires_ms {
            self.expiry.insert((at, id));
        }
        let group_name = group_of(&namespace);
        if !self.groups.contains_key(group_name) {
            let group = Group { queues: Queues::new(self.config.policy), limits: self.limits_of(group_name) };
            self.groups.insert(Arc::from(group_name), group);
        }
        let group = self.groups.get_mut(group_name).expect("made above");
        group.queues.insert(id, bytes, ghost_key(&namespace, &key));
        self.bytes += bytes;
        self.namespaces.entry(namespace.clone()).or_default().insert(key.clone(), id);
        if !new.vector.is_empty() {
            self.vectors
                .entry(namespace.clone())
                .or_default()
                .entry(new.model.clone())
                .or_insert_with(|| VectorSet::new(new.vector.len()))
                .push(id, &new.vector, expires_ms);
        }
        let entry = Entry {
            id,
            namespace,
            prompt: new.prompt,
            response: new.response,
            model: new.model,
            metadata: new.metadata,
            created_ms,
            expires_ms,
            hits: 0,
        };
        let group_name: Arc<str> = Arc::from(group_of(&entry.namespace));
        self.slots.insert(id, Slot { entry, key, bytes });
        self.counters.inserts += 1;
        self.enforce(&group_name, Some(id));
        Ok(())
    }

    /// Every entry with its vector, group by group, next to be evicted first (so a replay
    /// in this order starts close to the same eviction order).
    pub fn entries(&self) -> impl Iterator<Item = (&Entry, &[f32])> {
        self.groups.values().flat_map(|g| g.queues.order()).map(|id| {
            let entry = &self.slots[&id].entry;
            (entry, self.vector_of(entry).unwrap_or(&[]))
        })
    }

    /// Every vector set: (namespace, model, set).
    pub fn vector_sets(&self) -> impl Iterator<Item = (&str, &str, &VectorSet)> {
        self.vectors.iter().flat_map(|(ns, models)| {
            models.iter().map(move |(model, set)| (&**ns, model.as_str(), set))
        })
    }

    /// The vectors one namespace holds for one model.
    pub fn vector_set(&self, namespace: &str, model: &str) -> Option<&VectorSet> {
        self.vectors.get(namespace)?.get(model)
    }

    /// Exact nearest neighbours among the live vectors of one namespace and model.
    pub fn search(&self, namespace: &str, model: &str, query: &[f32], k: usize, now_ms: u64) -> Vec<(EntryId, f32)> {
        self.vector_set(namespace, model).map_or_else(Vec::new, |set| set.search(query, k, now_ms))
    }

    fn vector_of(&self, entry: &Entry) -> Option<&[f32]> {
        self.vectors.get(&entry.namespace)?.get(&entry.model)?.get(entry.id)
    }

    /// An entry and its vector (empty when it has none), live or not.
    pub fn entry_with_vector(&self, id: EntryId) -> Option<(&Entry, &[f32])> {
        let entry = &self.slots.get(&id)?.entry;
        Some((entry, self.vector_of(entry).unwrap_or(&[])))
    }

    pub fn contains(&self, id: EntryId) -> bool {
        self.slots.contains_key(&id)
    }

    /// The id stored under this prompt's normal form, live or not; counts nothing.
    pub fn find_exact(&self, namespace: &str, prompt: &str) -> Option<EntryId> {
        self.namespaces.get(namespace)?.get(&normalize(prompt)).copied()
    }

    pub fn namespace_ids(&self, namespace: &str) -> Vec<EntryId> {
        self.namespaces.get(namespace).map_or_else(Vec::new, |m| m.values().copied().collect())
    }

    /// Makes later ids start at `id` at least (ids are never reused).
    pub fn bump_next_id(&mut self, id: EntryId) {
        self.next_id = self.next_id.max(id);
    }

    /// Removals logged and not yet taken, oldest first.
    pub fn pending_removals(&self) -> &[Removed] {
        &self.removed
    }

    /// Forgets counters and the removal log (after a recovery replayed history).
    pub fn reset_history(&mut self) {
        self.counters = Counters::default();
        self.removed.clear();
    }

    /// The exact tier: the live entry whose normalized prompt equals `prompt`'s, counted
    /// as a hit (or a miss) and moved to the front of the LRU order.
    pub fn get_exact(&mut self, namespace: &str, prompt: &str, now_ms: u64) -> Option<Entry> {
        let found = self.find_exact(namespace, prompt).and_then(|id| self.live(id, now_ms, true));
        if found.is_some() {
            self.counters.exact_hits += 1;
        } else {
            self.counters.exact_misses += 1;
        }
        found
    }

    /// The live entry with this id. `count_hit` records a served hit (hit count, LRU).
    pub fn get(&mut self, id: EntryId, now_ms: u64, count_hit: bool) -> Option<Entry> {
        let found = self.live(id, now_ms, count_hit);
        if found.is_some() && count_hit {
            self.counters.id_hits += 1;
        }
        found
    }

    /// The vector stored with a live entry.
    pub fn vector(&self, id: EntryId, now_ms: u64) -> Option<&[f32]> {
        let slot = self.slots.get(&id)?;
        if is_expired(&slot.entry, now_ms) {
            return None;
        }
        self.vector_of(&slot.entry)
    }

    /// Removes one entry by id; false when there was none.
    pub fn remove(&mut self, id: EntryId) -> bool {
        self.remove_slot(id, RemovalReason::Invalidated)
    }

    /// Removes the entry stored under this prompt's normal form in `namespace`.
    pub fn remove_prompt(&mut self, namespace: &str, prompt: &str) -> Option<EntryId> {
        let id = self.find_exact(namespace, prompt)?;
        self.remove_slot(id, RemovalReason::Invalidated);
        Some(id)
    }

    /// Removes every entry of a namespace; returns how many.
    pub fn clear_namespace(&mut self, namespace: &str) -> usize {
        let ids = self.namespace_ids(namespace);
        for &id in &ids {
            self.remove_slot(id, RemovalReason::Invalidated);
        }
        ids.len()
    }

    /// Removes every entry whose time is up at `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut count = 0;
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now_ms {
                break;
            }
            self.remove_slot(id, RemovalReason::Expired);
            count += 1;
        }
        count
    }

    /// Hands over the removals logged since the last call.
    pub fn take_removed(&mut self) -> Vec<Removed> {
        std::mem::take(&mut self.removed)
    }

    /// Checks that every index agrees with `slots`; for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let exact_total: usize = self.namespaces.values().map(HashMap::len).sum();
        let queued: usize = self.groups.values().map(|g| g.queues.len()).sum();
        if exact_total != self.slots.len() || queued != self.slots.len() {
            return Err(format!(
                "sizes differ: slots {}, exact {}, queued {}",
                self.slots.len(),
                exact_total,
                queued
            ));
        }
        let accounted: usize = self.slots.values().map(|s| s.bytes).sum();
        let grouped: usize = self.groups.values().map(|g| g.queues.bytes()).sum();
        if accounted != self.bytes || grouped != self.bytes {
            return Err(format!("bytes differ: store {}, slots {accounted}, groups {grouped}", self.bytes));
        }
        if self.config.limits.exceeded(self.slots.len(), self.bytes) {
            return Err(format!("{} entries, {} bytes: over the store's bounds", self.slots.len(), self.bytes));
        }
        for (name, g) in &self.groups {
            if g.limits.exceeded(g.queues.len(), g.queues.bytes()) || g.queues.is_empty() {
                return Err(format!("group {name} is empty or over its bounds"));
            }
        }
        for (id, slot) in &self.slots {
            let queued = self.groups.get(group_of(&slot.entry.namespace)).is_some_and(|g| g.queues.contains(*id));
            if !queued {
                return Err(format!("entry {id} missing from its eviction queues"));
            }
            let exact = self.namespaces.get(&slot.entry.namespace).and_then(|m| m.get(&slot.key));
            if exact != Some(id) {
                return Err(format!("entry {id} missing from the exact map"));
            }
            if let Some(at) = slot.entry.expires_ms {
                if !self.expiry.contains(&(at, *id)) {
                    return Err(format!("entry {id} missing from the expiry order"));
                }
            }
        }
        let vectors: usize = self.vector_sets().map(|(_, _, set)| set.len()).sum();
        let with_vectors = self.slots.values().filter(|s| self.vector_of(&s.entry).is_some()).count();
        if vectors != with_vectors {
            return Err(format!("{vectors} vectors for {with_vectors} entries that have one"));
        }
        if self.namespaces.values().any(HashMap::is_empty) {
            return Err("an empty namespace was kept".into());
        }
        Ok(())
    }

    fn live(&mut self, id: EntryId, now_ms: u64, touch: bool) -> Option<Entry> {
        let expired = is_expired(&self.slots.get(&id)?.entry, now_ms);
        if expired {
            self.remove_slot(id, RemovalReason::Expired);
            return None;
        }
        if touch {
            let slot = self.slots.get_mut(&id).expect("checked above");
            slot.entry.hits += 1;
            if let Some(group) = self.groups.get_mut(group_of(&slot.entry.namespace)) {
                group.queues.hit(id);
            }
        }
        Some(self.slots[&id].entry.clone())
    }

    fn remove_slot(&mut self, id: EntryId, reason: RemovalReason) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        self.bytes -= slot.bytes;
        let group_name = group_of(&slot.entry.namespace);
        if let Some(group) = self.groups.get_mut(group_name) {
            group.queues.remove(id);
            if group.queues.is_empty() {
                self.groups.remove(group_name);
            }
        }
        if let Some(at) = slot.entry.expires_ms {
            self.expiry.remove(&(at, id));
        }
        let namespace = slot.entry.namespace;
        if let Some(exact) = self.namespaces.get_mut(&namespace) {
            exact.remove(&slot.key);
            if exact.is_empty() {
                self.namespaces.remove(&namespace);
            }
        }
        if let Some(models) = self.vectors.get_mut(&namespace) {
            if let Some(set) = models.get_mut(&slot.entry.model) {
                set.remove(id);
                if set.is_empty() {
                    models.remove(&slot.entry.model);
                }
            }
            if models.is_empty() {
                self.vectors.remove(&namespace);
            }
        }
        match reason {
            RemovalReason::Evicted => self.counters.evictions += 1,
            RemovalReason::Expired => self.counters.expirations += 1,
            RemovalReason::Invalidated => self.counters.invalidations += 1,
            RemovalReason::Replaced => self.counters.replaced += 1,
        }
        self.removed.push(Removed { namespace, id, model: slot.entry.model, reason });
        true
    }
}

fn entry_bytes(new: &NewEntry, key: &str) -> usize {
    let metadata: usize = new.metadata.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
    new.prompt.len() + new.response.len() + key.len() + new.model.len() + metadata + new.vector.len() * 4
        + ENTRY_OVERHEAD_BYTES
}

fn ghost_key(namespace: &str, key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (namespace, key).hash(&mut h);
    h.finish()
}

fn is_expired(entry: &Entry, now_ms: u64) -> bool {
    entry.expires_ms.is_some_and(|at| at <= now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(namespace: &str, prompt: &str, ttl_ms: Option<u64>) -> NewEntry {
        NewEntry {
            namespace: namespace.into(),
            prompt: prompt.into(),
            response: format!("answer to {prompt}"),
            vector: vec![0.5; 4],
            model: "m".into(),
            metadata: vec![("k".into(), "v".into())],
            ttl_ms,
        }
    }

    #[test]
    fn exact_hit_uses_the_normal_form() {
        let mut s = Store::new(10);
        let id = s.insert(new("ns", "How do I reset my password?", None), 0).unwrap();
        let hit = s.get_exact("ns", "  how do I RESET my   password?", 1).unwrap();
        assert_eq!(hit.id, id);
        assert_eq!(hit.hits, 1);
        assert_eq!(hit.metadata, vec![("k".to_string(), "v".to_string())]);
        assert!(s.get_exact("ns", "How do I reset my password", 1).is_none());
        assert_eq!(s.counters().exact_hits, 1);
        assert_eq!(s.counters().exact_misses, 1);
        assert_eq!(s.vector(id, 1), Some(&[0.5f32; 4][..]));
    }

    #[test]
    fn namespaces_are_isolated() {
        let mut s = Store::new(10);
        s.insert(new("a", "q", None), 0).unwrap();
        assert!(s.get_exact("b", "q", 0).is_none());
        assert!(s.get_exact("a", "q", 0).is_some());
        assert_eq!(s.clear_namespace("b"), 0);
        assert_eq!(s.clear_namespace("a"), 1);
        assert!(s.is_empty());
        s.check_invariants().unwrap();
    }

    #[test]
    fn same_prompt_replaces_and_logs_the_old_entry() {
        let mut s = Store::new(10);
        let first = s.insert(new("ns", "Q", None), 0).unwrap();
        let second = s.insert(new("ns", "q", None), 0).unwrap();
        assert_ne!(first, second);
        assert_eq!(s.len(), 1);
        assert!(s.get(first, 0, false).is_none());
        let removed = s.take_removed();
        assert_eq!(removed.len(), 1);
        assert_eq!((removed[0].id, removed[0].reason), (first, RemovalReason::Replaced));
        assert!(s.take_removed().is_empty());
        s.check_invariants().unwrap();
    }

    #[test]
    fn expired_entries_are_never_served_and_are_reclaimed() {
        let mut s = Store::new(10);
        let short = s.insert(new("ns", "short", Some(1_000)), 0).unwrap();
        let long = s.insert(new("ns", "long", Some(5_000)), 0).unwrap();
        let forever = s.insert(new("ns", "forever", None), 0).unwrap();
        assert!(s.get(short, 999, false).is_some());
        // Served never at or past its expiry, even before a sweep ran.
        assert!(s.get(short, 1_000, false).is_none());
        assert!(s.vector(long, 5_000).is_none());
        assert_eq!(s.expire(10_000), 1);
        assert!(s.get(long, 10_000, false).is_none());
        assert!(s.get(forever, u64::MAX, false).is_some());
        assert_eq!(s.len(), 1);
        assert_eq!(s.counters().expirations, 2);
        s.check_invariants().unwrap();
    }

    #[test]
    fn lru_eviction_keeps_recently_used() {
        let mut s = Store::new(2);
        let a = s.insert(new("ns", "a", None), 0).unwrap();
        let b = s.insert(new("ns", "b", None), 0).unwrap();
        s.get_exact("ns", "a", 0).unwrap(); // a is now newer than b
        let c = s.insert(new("ns", "c", None), 0).unwrap();
        assert!(s.get(a, 0, false).is_some());
        assert!(s.get(b, 0, false).is_none());
        assert!(s.get(c, 0, false).is_some());
        assert_eq!(s.counters().evictions, 1);
        let removed = s.take_removed();
        assert_eq!((removed[0].id, removed[0].reason), (b, RemovalReason::Evicted));
        s.check_invariants().unwrap();
    }

    #[test]
    fn remove_by_id_and_prompt() {
        let mut s = Store::new(10);
        let a = s.insert(new("ns", "a", None), 0).unwrap();
        s.insert(new("ns", "b", None), 0).unwrap();
        assert!(s.remove(a));
        assert!(!s.remove(a));
        assert!(s.remove_prompt("ns", "B ").is_some());
        assert!(s.remove_prompt("ns", "b").is_none());
        assert!(s.is_empty());
        assert_eq!(s.counters().invalidations, 2);
        s.check_invariants().unwrap();
    }

    #[test]
    fn bytes_are_bounded_for_the_store_and_per_namespace_group() {
        let mut config = Config::default();
        config.limits.max_bytes = 20 * 1024;
        let mut s = Store::with_config(config);
        s.set_namespace_limits("small", Limits { max_entries: 3, max_bytes: usize::MAX });
        for i in 0..200 {
            s.insert(new("big", &format!("q{i}"), None), 0).unwrap();
            // Partitions of "small" share its bound of three entries.
            s.insert(new(&format!("small#p{}", i % 4), &format!("q{i}"), None), 0).unwrap();
            assert!(s.bytes() <= 20 * 1024);
            s.check_invariants().unwrap();
        }
        let usage = s.group_usage();
        assert_eq!(usage.iter().find(|u| u.0 == "small").map(|u| u.1), Some(3));
        // The store's bound evicted from the largest group, not from the small one.
        assert!(usage.iter().find(|u| u.0 == "big").unwrap().1 > 3);
        let mut huge = new("big", "huge", None);
        huge.response = "x".repeat(30 * 1024);
        assert!(matches!(s.insert(huge, 0), Err(StoreError::TooLarge { .. })));
        s.check_invariants().unwrap();
    }

    #[test]
    fn empty_prompt_is_refused() {
        let mut s = Store::new(10);
        assert_eq!(s.insert(new("ns", " \n", None), 0), Err(StoreError::EmptyPrompt));
        assert!(s.is_empty());
    }
}

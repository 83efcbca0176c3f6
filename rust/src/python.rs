//! The PyO3 module `semcached._core`: converts arguments, then calls the store, releasing
//! the GIL unless the call is a read of one entry (see [`PyStore`]). No cache logic lives
//! here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::durable::{self, Durable, Fsync, Recovery};
use crate::normalize;
use crate::policy::Policy;
use crate::store::{self, Config, EntryId, Limits, NewEntry, DEFAULT_MAX_ENTRIES};
use crate::sync::SharedStore;

create_exception!(
    _core,
    CorruptDataError,
    PyException,
    "Data on disk failed its checksum and will not be served."
);

/// The one bridge from core errors to Python exceptions.
fn to_py(e: durable::Error) -> PyErr {
    match e {
        durable::Error::Store(e) => PyValueError::new_err(e.to_string()),
        durable::Error::Io(m) => PyOSError::new_err(m),
        durable::Error::Corrupt(m) => CorruptDataError::new_err(m),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn limits(max_entries: Option<usize>, max_bytes: Option<usize>) -> Limits {
    Limits { max_entries: max_entries.unwrap_or(usize::MAX), max_bytes: max_bytes.unwrap_or(usize::MAX) }
}

fn floats(bytes: &[u8]) -> PyResult<Vec<f32>> {
    if bytes.len() % 4 != 0 {
        return Err(PyValueError::new_err("a vector must be float32 bytes (a length divisible by 4)"));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
}

/// One cached entry, as read from the store (a copy: later changes do not show here).
#[pyclass(frozen, get_all, module = "semcached._core")]
pub struct Entry {
    id: u64,
    namespace: String,
    prompt: String,
    response: String,
    model: String,
    metadata: HashMap<String, String>,
    created_ms: u64,
    expires_ms: Option<u64>,
    hits: u64,
}

#[pymethods]
impl Entry {
    fn __repr__(&self) -> String {
        format!("Entry(id={}, namespace={:?}, prompt={:?})", self.id, self.namespace, self.prompt)
    }
}

impl From<store::Entry> for Entry {
    fn from(e: store::Entry) -> Self {
        Entry {
            id: e.id,
            namespace: e.namespace.to_string(),
            prompt: e.prompt,
            response: e.response,
            model: e.model,
            metadata: e.metadata.into_iter().collect(),
            created_ms: e.created_ms,
            expires_ms: e.expires_ms,
            hits: e.hits,
        }
    }
}

/// The thread-safe entry store. Every method releases the GIL while it works, except the
/// reads of one entry (`get_exact`, `get`, `vector`, `vector_count`): they take a
/// microsecond or two, and the event loop makes them on every lookup. Releasing the GIL
/// there let an embedding worker take it, and the loop then waited for the worker's
/// next release (semantic lookups at c16, six alternating runs: 531 -> 575 req/s median,
/// p99 47-62 -> 45-52 ms). Keeping it is safe: the store's lock is held only by Rust code
/// that never needs the GIL, and not for a request's disk flush (see `sync`). The cost:
/// a lookup that arrives during one of the store's longer holds (a snapshot's start,
/// which flushes the log; copying a scope's vectors for a graph build; a large expiry or
/// clear) waits for it holding the GIL, so the workers' Python steps wait too (the event
/// loop waited for those holds before as well).
#[pyclass(frozen, name = "Store", module = "semcached._core")]
pub struct PyStore {
    inner: SharedStore,
    recovery: Recovery,
}

#[pymethods]
impl PyStore {
    /// An in-memory store, or with `data_dir` one that logs every change there and
    /// recovers from it when opened again.
    /// Bounds given as None are unbounded (`max_entries` defaults to a million).
    #[new]
    #[pyo3(signature = (
        max_entries = DEFAULT_MAX_ENTRIES, data_dir = None, fsync = "always", max_bytes = None,
        namespace_max_entries = None, namespace_max_bytes = None, policy = "s3fifo"
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        max_entries: usize,
        data_dir: Option<PathBuf>,
        fsync: &str,
        max_bytes: Option<usize>,
        namespace_max_entries: Option<usize>,
        namespace_max_bytes: Option<usize>,
        policy: &str,
    ) -> PyResult<Self> {
        if max_entries == 0 {
            return Err(PyValueError::new_err("max_entries must be at least 1"));
        }
        let fsync = match fsync {
            "always" => Fsync::Always,
            "interval" => Fsync::Interval,
            other => return Err(PyValueError::new_err(format!("fsync must be 'always' or 'interval', not {other:?}"))),
        };
        let policy = match policy {
            "s3fifo" => Policy::S3Fifo,
            "lru" => Policy::Lru,
            other => return Err(PyValueError::new_err(format!("policy must be 's3fifo' or 'lru', not {other:?}"))),
        };
        let config = Config {
            limits: Limits { max_entries, max_bytes: max_bytes.unwrap_or(usize::MAX) },
            namespace_limits: limits(namespace_max_entries, namespace_max_bytes),
            policy,
        };
        let (durable, recovery) = match data_dir {
            None => (Durable::in_memory(config), Recovery::default()),
            Some(dir) => py.detach(|| Durable::open(&dir, config, fsync, now_ms())).map_err(to_py)?,
        };
        Ok(PyStore { inner: SharedStore::new(durable), recovery })
    }

    /// What opening the data directory found: entries from the snapshot, records replayed
    /// from the log, and warnings (a torn record dropped, ...).
    #[getter]
    fn recovery(&self) -> (usize, usize, Vec<String>) {
        let r = &self.recovery;
        (r.snapshot_entries, r.replayed_records, r.warnings.clone())
    }

    #[getter]
    fn max_entries(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.with(|d| d.store().max_entries()))
    }

    /// Bytes accounted to live entries (strings, vector and a fixed overhead each).
    #[getter]
    fn bytes(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.with(|d| d.store().bytes()))
    }

    /// Bounds one namespace (with every `namespace#partition` of it); None: unbounded.
    #[pyo3(signature = (namespace, max_entries = None, max_bytes = None))]
    fn set_namespace_limits(
        &self,
        py: Python<'_>,
        namespace: &str,
        max_entries: Option<usize>,
        max_bytes: Option<usize>,
    ) -> PyResult<()> {
        let bounds = limits(max_entries, max_bytes);
        py.detach(|| self.inner.write(|d| d.set_namespace_limits(namespace, bounds))).map_err(to_py)
    }

    /// (namespace, entries, bytes) per namespace group (partitions counted in their namespace).
    fn group_usage(&self, py: Python<'_>) -> Vec<(String, usize, usize)> {
        py.detach(|| self.inner.with(|d| d.store().group_usage()))
    }

    /// Stores an entry; returns its id. Replaces an entry with the same normalized prompt.
    /// `vector` is the embedding as little-endian float32 bytes (`ndarray.tobytes()`).
    #[pyo3(signature = (namespace, prompt, response, vector, model, metadata = None, ttl_ms = None))]
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        py: Python<'_>,
        namespace: String,
        prompt: String,
        response: String,
        vector: &[u8],
        model: String,
        metadata: Option<HashMap<String, String>>,
        ttl_ms: Option<u64>,
    ) -> PyResult<u64> {
        let vector = floats(vector)?;
        let mut metadata: Vec<(String, String)> = metadata.unwrap_or_default().into_iter().collect();
        metadata.sort();
        let new = NewEntry { namespace, prompt, response, vector, model, metadata, ttl_ms };
        py.detach(|| self.inner.write(|d| d.insert(new, now_ms()))).map_err(to_py)
    }

    /// The exact tier: the live entry stored under this prompt's normal form, or None.
    fn get_exact(&self, namespace: &str, prompt: &str) -> Option<Entry> {
        self.inner.with(|d| d.store_mut().get_exact(namespace, prompt, now_ms())).map(Entry::from)
    }

    /// The live entry with this id, or None. `count_hit` records a served hit.
    #[pyo3(signature = (entry_id, count_hit = false))]
    fn get(&self, entry_id: EntryId, count_hit: bool) -> Option<Entry> {
        self.inner.with(|d| d.store_mut().get(entry_id, now_ms(), count_hit)).map(Entry::from)
    }

    /// The vector stored with a live entry, or None.
    fn vector(&self, entry_id: EntryId) -> Option<Vec<f32>> {
        self.inner.with(|d| d.store().vector(entry_id, now_ms()).map(<[f32]>::to_vec))
    }

    fn remove(&self, py: Python<'_>, entry_id: EntryId) -> PyResult<bool> {
        py.detach(|| self.inner.write(|d| d.remove(entry_id))).map_err(to_py)
    }

    /// Removes the entry stored under this prompt's normal form; returns its id or None.
    fn remove_prompt(&self, py: Python<'_>, namespace: String, prompt: String) -> PyResult<Option<u64>> {
        py.detach(|| self.inner.write(|d| d.remove_prompt(&namespace, &prompt))).map_err(to_py)
    }

    fn clear_namespace(&self, py: Python<'_>, namespace: String) -> PyResult<usize> {
        py.detach(|| self.inner.write(|d| d.clear_namespace(&namespace))).map_err(to_py)
    }

    /// Flushes logged changes to the disk (for fsync = "interval"), without holding the store.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.flush()).map_err(to_py)
    }

    /// Writes a snapshot and drops the log it covers; returns the entries written.
    fn snapshot(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.inner.snapshot(now_ms())).map_err(to_py)
    }

    /// Bytes in the current log segment.
    fn log_bytes(&self, py: Python<'_>) -> u64 {
        py.detach(|| self.inner.with(|d| d.log_bytes()))
    }

    /// Every vector set as (namespace, model, count), to rebuild indexes after a restart.
    fn vector_sets(&self, py: Python<'_>) -> Vec<(String, String, usize)> {
        py.detach(|| {
            self.inner.with(|d| {
                d.store().vector_sets().map(|(ns, model, set)| (ns.to_string(), model.to_string(), set.len())).collect()
            })
        })
    }

    /// One namespace's vectors of one model: (ids, rows as little-endian float32 bytes).
    fn scope_vectors<'py>(&self, py: Python<'py>, namespace: String, model: String) -> (Vec<u64>, Bound<'py, PyBytes>) {
        let (ids, bytes) = py.detach(|| {
            self.inner.with(|d| {
                let (mut ids, mut bytes) = (Vec::new(), Vec::new());
                if let Some(set) = d.store().vector_set(&namespace, &model) {
                    for (id, row) in set.iter() {
                        ids.push(id);
                        bytes.extend(row.iter().flat_map(|x| x.to_le_bytes()));
                    }
                }
                (ids, bytes)
            })
        });
        (ids, PyBytes::new(py, &bytes))
    }

    /// Exact search: the k live entries of (namespace, model) most similar to `query`
    /// (little-endian float32 bytes), as (entry id, inner product), best first.
    fn search(&self, py: Python<'_>, namespace: &str, model: &str, query: &[u8], k: usize) -> PyResult<Vec<(u64, f32)>> {
        let query = floats(query)?;
        Ok(py.detach(|| self.inner.with(|d| d.store().search(namespace, model, &query, k, now_ms()))))
    }

    fn vector_count(&self, namespace: &str, model: &str) -> usize {
        self.inner.with(|d| d.store().vector_set(namespace, model).map_or(0, |set| set.len()))
    }

    /// Removes entries whose time is up; returns how many.
    fn expire(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.with(|d| d.store_mut().expire(now_ms())))
    }

    /// Removals since the last call, as (namespace, entry id, model, reason).
    fn take_removed(&self, py: Python<'_>) -> Vec<(String, u64, String, &'static str)> {
        let removed = py.detach(|| self.inner.with(|d| d.store_mut().take_removed()));
        removed
            .into_iter()
            .map(|r| {
                let reason = match r.reason {
                    store::RemovalReason::Evicted => "evicted",
                    store::RemovalReason::Expired => "expired",
                    store::RemovalReason::Invalidated => "invalidated",
                    store::RemovalReason::Replaced => "replaced",
                };
                (r.namespace.to_string(), r.id, r.model, reason)
            })
            .collect()
    }

    fn namespace_sizes(&self, py: Python<'_>) -> HashMap<String, usize> {
        py.detach(|| self.inner.with(|d| d.store().namespace_sizes())).into_iter().collect()
    }

    fn counters(&self, py: Python<'_>) -> HashMap<&'static str, u64> {
        let c = py.detach(|| self.inner.with(|d| d.store().counters()));
        HashMap::from([
            ("inserts", c.inserts),
            ("exact_hits", c.exact_hits),
            ("exact_misses", c.exact_misses),
            ("id_hits", c.id_hits),
            ("replaced", c.replaced),
            ("evictions", c.evictions),
            ("expirations", c.expirations),
            ("invalidations", c.invalidations),
        ])
    }

    /// Raises ValueError if the store's internal indexes disagree; for tests.
    fn check_invariants(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.with(|d| d.store().check_invariants())).map_err(PyValueError::new_err)
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.with(|d| d.store().len()))
    }
}

/// The normal form the exact tier compares (NFKC, lower case, whitespace collapsed).
#[pyfunction(name = "normalize")]
fn py_normalize(prompt: &str) -> String {
    normalize::normalize(prompt)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStore>()?;
    m.add_class::<Entry>()?;
    m.add("CorruptDataError", m.py().get_type::<CorruptDataError>())?;
    m.add_function(wrap_pyfunction!(py_normalize, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

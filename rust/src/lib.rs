//! The core of semcached: the entry store behind the cache.
//!
//! * [`normalize`]: the normal form of a prompt used by the exact tier (Unicode NFKC,
//!   lower case, whitespace collapsed), so identical questions never need an embedding.
//! * [`store::Store`]: single-threaded algorithm. Namespaced entries (prompt, response,
//!   embedding model, metadata, created/expires, hit count), an exact-match map per
//!   namespace, per-entry TTL, bounds on entries and bytes per store and per namespace,
//!   counters.
//! * [`policy`]: which entry goes at a bound (S3-FIFO by default, LRU).
//! * [`vectors`]: each namespace's vectors per model, contiguous, with an exact scan.
//! * [`codec`] and [`durable`]: the write-ahead log, snapshots and recovery.
//! * [`sync::SharedStore`]: the store behind one lock, the form every caller uses from
//!   many threads. Concurrency lives there and nowhere else.
//! * `python` (feature `python`): the PyO3 module `semcached._core`, a thin binding that
//!   converts arguments and releases the GIL around every call into the store that can
//!   take more than microseconds.
//!
//! Memory per entry: prompt + normalized prompt + response + model + metadata bytes,
//! 4 bytes per vector dimension, and [`store::ENTRY_OVERHEAD_BYTES`] (800) for maps,
//! queues and the record. At 1M entries with 384-d vectors and 500-byte responses the
//! process held 2,935 bytes per entry against 2,931 accounted (`benchmarks/core.py`).

pub mod codec;
pub mod durable;
pub mod normalize;
pub mod policy;
pub mod store;
pub mod sync;
pub mod vectors;

#[cfg(feature = "python")]
mod python;

//! The core of semcached: the entry store behind the cache.
//!
//! * [`normalize`]: the normal form of a prompt used by the exact tier (Unicode NFKC,
//!   lower case, whitespace collapsed), so identical questions never need an embedding.
//! * [`store::Store`]: single-threaded algorithm. Namespaced entries (prompt, response,
//!   vector, embedding model, metadata, created/expires, hit count), an exact-match map per
//!   namespace, per-entry TTL, a cap on entries with LRU eviction, counters.
//! * [`sync::SharedStore`]: the store behind one lock, the form every caller uses from
//!   many threads. Concurrency lives there and nowhere else.
//! * `python` (feature `python`): the PyO3 module `semcached._core`, a thin binding that
//!   converts arguments and releases the GIL around every call into the store.
//!
//! Memory per entry (before the later byte-bounded issue): prompt + response + metadata
//! bytes, 4 bytes per vector dimension, the normalized prompt once more (exact-map key),
//! and about 200 bytes of map and bookkeeping overhead.

pub mod codec;
pub mod durable;
pub mod normalize;
pub mod policy;
pub mod store;
pub mod sync;
pub mod vectors;

#[cfg(feature = "python")]
mod python;

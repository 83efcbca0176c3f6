//! Vectors of one scope (namespace + embedding model), kept contiguous for an exact scan.
//!
//! Rows are packed in one `Vec<f32>`; a removal moves the last row into the hole, so the
//! matrix never has gaps and a scan touches only live rows. For small scopes this scan is
//! both exact and faster than a graph index: it is a straight pass over memory that the
//! compiler vectorizes (see [`dot`]).

use std::collections::HashMap;

use crate::store::EntryId;

#[derive(Default)]
pub struct VectorSet {
    dim: usize,
    data: Vec<f32>,
    ids: Vec<EntryId>,
    /// Expiry per row (`u64::MAX`: never), so a scan skips what may no longer be served.
    expires: Vec<u64>,
    rows: HashMap<EntryId, usize>,
}

impl VectorSet {
    pub fn new(dim: usize) -> Self {
        VectorSet { dim, ..VectorSet::default() }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes held, for memory accounting.
    pub fn bytes_per_row(&self) -> usize {
        self.dim * 4 + 8 + 8 + 16
    }

    pub fn push(&mut self, id: EntryId, vector: &[f32], expires_ms: Option<u64>) {
        debug_assert_eq!(vector.len(), self.dim);
        self.rows.insert(id, self.ids.len());
        self.ids.push(id);
        self.expires.push(expires_ms.unwrap_or(u64::MAX));
        self.data.extend_from_slice(vector);
    }

    pub fn get(&self, id: EntryId) -> Option<&[f32]> {
        let row = *self.rows.get(&id)?;
        Some(&self.data[row * self.dim..(row + 1) * self.dim])
    }

    pub fn remove(&mut self, id: EntryId) -> bool {
        let Some(row) = self.rows.remove(&id) else { return false };
        let last = self.ids.len() - 1;
        if row != last {
            let moved = self.ids[last];
            self.ids[row] = moved;
            self.expires[row] = self.expires[last];
            let (head, tail) = self.data.split_at_mut(last * self.dim);
            head[row * self.dim..(row + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.rows.insert(moved, row);
        }
        self.ids.pop();
        self.expires.pop();
        self.data.truncate(last * self.dim);
        true
    }

    /// Ids and rows, in storage order.
    pub fn iter(&self) -> impl Iterator<Item = (EntryId, &[f32])> {
        self.ids.iter().copied().zip(self.data.chunks_exact(self.dim.max(1)))
    }

    /// The `k` rows most similar to `query` (inner product; cosine for unit vectors) that
    /// are live at `now_ms`, most similar first.
    pub fn search(&self, query: &[f32], k: usize, now_ms: u64) -> Vec<(EntryId, f32)> {
        let mut best: Vec<(EntryId, f32)> = Vec::with_capacity(k + 1);
        if k == 0 || query.len() != self.dim {
            return best;
        }
        for (row, chunk) in self.data.chunks_exact(self.dim).enumerate() {
            let score = dot(query, chunk);
            if best.len() == k && score <= best[k - 1].1 {
                continue;
            }
            if self.expires[row] <= now_ms {
                continue;
            }
            let at = best.partition_point(|&(_, s)| s >= score);
            best.insert(at, (self.ids[row], score));
            best.truncate(k);
        }
        best
    }
}

/// Inner product with eight independent accumulators, so the loop has no serial
/// dependency and LLVM turns it into SIMD adds and multiplies.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_is_exact_and_skips_expired_rows() {
        let mut set = VectorSet::new(3);
        set.push(1, &[1.0, 0.0, 0.0], None);
        set.push(2, &[0.0, 1.0, 0.0], Some(100));
        set.push(3, &[0.6, 0.8, 0.0], None);
        assert_eq!(set.search(&[0.0, 1.0, 0.0], 2, 0), vec![(2, 1.0), (3, 0.8)]);
        assert_eq!(set.search(&[0.0, 1.0, 0.0], 2, 100), vec![(3, 0.8), (1, 0.0)]);
        assert!(set.search(&[1.0, 0.0], 2, 0).is_empty(), "a query of another dimension");
    }

    #[test]
    fn removal_keeps_rows_packed() {
        let mut set = VectorSet::new(2);
        for id in 1..=4 {
            set.push(id, &[id as f32, 0.0], None);
        }
        assert!(set.remove(2));
        assert!(!set.remove(2));
        assert_eq!(set.len(), 3);
        assert_eq!(set.get(4), Some(&[4.0, 0.0][..]));
        assert_eq!(set.get(2), None);
        let ids: Vec<EntryId> = set.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [1, 4, 3]);
        assert!(set.remove(3) && set.remove(1) && set.remove(4) && set.is_empty());
    }

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}

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
        let dot = dot_for_this_cpu();
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

/// The fastest inner product this CPU runs. The portable build targets baseline x86-64
/// (4-wide SSE); with AVX2 and FMA the scan of a small scope, which runs on the event
/// loop for every semantic lookup, takes about half the time.
fn dot_for_this_cpu() -> fn(&[f32], &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has just been seen to support the features dot_avx2 is built for.
        return |a, b| unsafe { dot_avx2(a, b) };
    }
    dot
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four accumulators: a fused multiply-add waits ~4 cycles for its previous result.
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, lane) in acc.iter_mut().enumerate() {
            let at = i + 8 * k;
            *lane = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(at)), _mm256_loadu_ps(pb.add(at)), *lane);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    lanes.iter().sum::<f32>() + a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum::<f32>()
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
        for len in [0, 7, 8, 19, 32, 40, 384] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot_for_this_cpu()(&a, &b) - naive).abs() < 1e-3, "length {len}");
        }
    }
}

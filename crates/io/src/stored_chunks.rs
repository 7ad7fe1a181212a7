//! Re-gridding a stored Zarr array to a finer stream grid: each stored
//! chunk is decoded once per pass and every stream chunk that falls in it
//! is cut from the decoded buffer.
//!
//! The stream walks its chunks in row-major order. A stored chunk is
//! decoded when the first stream chunk that overlaps it comes up and
//! dropped once the last one has been cut, so at most
//! [`held_stored_chunks`] are alive at once (about one row of stored
//! chunks: along the first axis where the grids are not aligned, the few
//! stored chunks one stream chunk overlaps; along every later axis, all
//! of them).

use std::collections::HashMap;

use blockflow_core::{ArrayData, ArrayKind, ChunkGrid, DType, Region};
use ndarray::{ArrayD, Slice};

use crate::zarr::ZarrInfo;
use crate::IoError;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Geometry of one axis: array length, stored chunk, stream chunk.
#[derive(Debug, Clone, Copy)]
struct Axis {
    n: u64,
    stored: u64,
    stream: u64,
}

impl Axis {
    /// Stored chunks along the axis.
    fn stored_count(&self) -> u64 {
        self.n.div_ceil(self.stored).max(1)
    }
    /// Every stored chunk overlaps exactly one stream chunk along the axis.
    fn aligned(&self) -> bool {
        self.stream.is_multiple_of(self.stored) || self.stream >= self.n
    }
    /// Most stored chunks one stream chunk overlaps along the axis. Stream
    /// chunks start at multiples of `stream`, so their offsets within a
    /// stored chunk are multiples of gcd(stream, stored); the worst starts
    /// `stored - gcd` into one.
    fn stored_per_stream(&self) -> u64 {
        let g = gcd(self.stream, self.stored);
        ((self.stored - g + self.stream - 1) / self.stored + 1).min(self.stored_count())
    }
}

fn axes(shape: &[u64], stored: &[u64], stream: &[u64]) -> Vec<Axis> {
    shape
        .iter()
        .zip(stored)
        .zip(stream)
        .map(|((&n, &s), &c)| Axis {
            n,
            stored: s.max(1),
            stream: c.min(n).max(1),
        })
        .collect()
}

/// Whether reading `stream` chunks one by one would decode some stored
/// chunk more than once because the stream is finer than the stored grid
/// along some axis. Then [`StoredChunks`] is worth its row of held chunks;
/// where the stream is coarser than or aligned with the stored grid, a
/// stored chunk falls in one stream chunk (or, coarser but not aligned,
/// in at most two along an axis) and is best decoded straight into it.
pub fn stream_is_finer(shape: &[u64], stored: &[u64], stream: &[u64]) -> bool {
    axes(shape, stored, stream)
        .iter()
        .any(|a| a.stream < a.stored && a.stream < a.n)
}

/// The most stored chunks [`StoredChunks`] holds at once while the stream
/// is walked in row-major order, `parallel` stream chunks at a time (the
/// chunks being decoded for the current batch included).
pub fn held_stored_chunks(shape: &[u64], stored: &[u64], stream: &[u64], parallel: u64) -> u64 {
    let ax = axes(shape, stored, stream);
    let total: u64 = ax.iter().map(Axis::stored_count).product();
    let Some(d) = ax.iter().position(|a| !a.aligned()) else {
        // Every stored chunk is needed by one stream chunk only.
        let per: u64 = ax.iter().map(Axis::stored_per_stream).product();
        return (parallel.max(1) * per).min(total);
    };
    // Live at a position: the stored chunks one stream chunk overlaps
    // along the axes up to `d` (along aligned axes before it, a stored
    // chunk is needed by one stream index only), all along later axes.
    let live: u64 = ax
        .iter()
        .enumerate()
        .map(|(j, a)| {
            if j <= d {
                a.stored_per_stream()
            } else {
                a.stored_count()
            }
        })
        .product();
    // Each further stream chunk of a batch starts at most this many.
    let per: u64 = ax.iter().map(Axis::stored_per_stream).product();
    (live + parallel.max(1).saturating_sub(1) * per).min(total)
}

/// The decoded stored chunks a re-gridded read holds, keyed by stored grid index.
#[derive(Debug)]
pub struct StoredChunks {
    dtype: DType,
    stored: Vec<u64>,
    stream: ChunkGrid,
    held: HashMap<Vec<u64>, ArrayData>,
}

impl StoredChunks {
    pub fn new(info: &ZarrInfo, stream: &ChunkGrid) -> Self {
        StoredChunks {
            dtype: info.dtype,
            stored: info.chunks.iter().map(|&c| c.max(1)).collect(),
            stream: stream.clone(),
            held: HashMap::new(),
        }
    }

    /// First and last (inclusive) stored grid index along each axis that
    /// `region` overlaps.
    fn stored_box(&self, region: &Region) -> (Vec<u64>, Vec<u64>) {
        let lo = region
            .origin
            .iter()
            .zip(&self.stored)
            .map(|(&o, &s)| o / s)
            .collect();
        let hi = region
            .origin
            .iter()
            .zip(&region.shape)
            .zip(&self.stored)
            .map(|((&o, &n), &s)| (o + n.max(1) - 1) / s)
            .collect();
        (lo, hi)
    }

    /// Whether `region` overlaps the stored chunk `s`.
    pub fn needs(&self, region: &Region, s: &[u64]) -> bool {
        let (lo, hi) = self.stored_box(region);
        s.iter()
            .zip(lo.iter().zip(&hi))
            .all(|(&k, (&a, &b))| a <= k && k <= b)
    }

    /// Row-major position of the last stream chunk that overlaps the stored chunk `s`.
    fn last_stream_position(&self, s: &[u64]) -> u64 {
        let shape = self.stream.shape();
        let c = self.stream.chunk_shape();
        let last: Vec<u64> = s
            .iter()
            .enumerate()
            .map(|(ax, &k)| {
                let end = ((k + 1) * self.stored[ax]).min(shape[ax]).max(1);
                (end - 1) / c[ax]
            })
            .collect();
        self.stream.ravel(&last)
    }

    /// The stored chunks the stream chunks at `positions` need that are
    /// not held, each once, in row-major order of first need.
    pub fn missing(&self, positions: &[u64]) -> Vec<Vec<u64>> {
        let mut out: Vec<Vec<u64>> = Vec::new();
        for &k in positions {
            let region = self.stream.region(&self.stream.unravel(k));
            let (lo, hi) = self.stored_box(&region);
            for s in box_indices(&lo, &hi) {
                if !self.held.contains_key(&s) && !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Keeps a decoded stored chunk (as [`ZarrReader::read_stored`](crate::zarr::ZarrReader::read_stored) returns it).
    pub fn insert(&mut self, stored: Vec<u64>, data: ArrayData) {
        self.held.insert(stored, data);
    }

    /// Drops the stored chunks that no stream chunk from position `next` on needs.
    pub fn release_before(&mut self, next: u64) {
        let keep: Vec<Vec<u64>> = self
            .held
            .keys()
            .filter(|s| self.last_stream_position(s) >= next)
            .cloned()
            .collect();
        self.held.retain(|s, _| keep.contains(s));
    }

    /// Stored chunks held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Bytes of the stored chunks held now.
    pub fn held_bytes(&self) -> u64 {
        self.held.values().map(ArrayData::nbytes).sum()
    }

    /// The stream chunk at `region`, cut from the held stored chunks.
    /// `path` names the array in the error if one it needs is not held.
    pub fn cut(&self, region: &Region, path: &std::path::Path) -> Result<ArrayData, IoError> {
        let (lo, hi) = self.stored_box(region);
        let parts = box_indices(&lo, &hi);
        let mut pieces = Vec::with_capacity(parts.len());
        for s in parts {
            let data = self.held.get(&s).ok_or_else(|| IoError::Chunk {
                path: path.to_path_buf(),
                chunk: s.clone(),
                region: region.to_string(),
                why: "the stored chunk was not decoded before it was cut (an internal error)"
                    .into(),
            })?;
            pieces.push((s, data));
        }
        Ok(blockflow_core::with_dtype!(self.dtype, T => {
            T::wrap(self.cut_typed::<T>(region, &pieces))
        }))
    }

    fn cut_typed<T: ArrayKind + Clone>(
        &self,
        region: &Region,
        pieces: &[(Vec<u64>, &ArrayData)],
    ) -> ArrayD<T> {
        let shape = region.shape_usize();
        // The part of `region` in stored chunk `s`: (range in the chunk,
        // range in the region) per axis.
        let overlap = |s: &[u64], ax: usize| {
            let start = s[ax] * self.stored[ax];
            let a = region.origin[ax].max(start);
            let b = (region.origin[ax] + region.shape[ax]).min(start + self.stored[ax]);
            (
                (a - start) as usize..(b - start) as usize,
                (a - region.origin[ax]) as usize..(b - region.origin[ax]) as usize,
            )
        };
        if let [(s, data)] = pieces {
            if let Some(src) = T::unwrap_ref(data) {
                return src
                    .slice_each_axis(|a| Slice::from(overlap(s, a.axis.index()).0))
                    .to_owned();
            }
        }
        let mut out = ArrayD::<T>::default(ndarray::IxDyn(&shape));
        for (s, data) in pieces {
            let Some(src) = T::unwrap_ref(data) else {
                continue;
            };
            let from = src.slice_each_axis(|a| Slice::from(overlap(s, a.axis.index()).0));
            out.slice_each_axis_mut(|a| Slice::from(overlap(s, a.axis.index()).1))
                .assign(&from);
        }
        out
    }
}

/// Every index in the box `lo..=hi`, in row-major order.
pub(crate) fn box_indices(lo: &[u64], hi: &[u64]) -> Vec<Vec<u64>> {
    let mut out = vec![lo.to_vec()];
    for ax in 0..lo.len() {
        out = out
            .into_iter()
            .flat_map(|i| {
                (lo[ax]..=hi[ax]).map(move |k| {
                    let mut j = i.clone();
                    j[ax] = k;
                    j
                })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the stream as the reader does and returns the most stored
    /// chunks held at once and how often each was decoded.
    fn simulate(shape: &[u64], stored: &[u64], stream: &[u64], p: u64) -> (u64, u64) {
        let info = ZarrInfo {
            path: "x".into(),
            zarr_format: 3,
            dtype: DType::U8,
            shape: shape.to_vec(),
            chunks: stored.to_vec(),
            shards: None,
            dimension_names: None,
            codecs: String::new(),
            fill_value: "0".into(),
        };
        let grid = ChunkGrid::new(shape.to_vec(), stream.to_vec()).expect("grid");
        let mut c = StoredChunks::new(&info, &grid);
        let mut decodes: HashMap<Vec<u64>, u64> = HashMap::new();
        let (mut peak, total) = (0, grid.num_chunks());
        let mut n = 0;
        while n < total {
            let batch: Vec<u64> = (n..(n + p).min(total)).collect();
            for s in c.missing(&batch) {
                *decodes.entry(s.clone()).or_default() += 1;
                c.insert(s, ArrayData::zeros(DType::U8, &[1]));
            }
            peak = peak.max(c.held() as u64);
            n += batch.len() as u64;
            c.release_before(n);
        }
        assert_eq!(c.held(), 0, "every stored chunk is released at the end");
        (peak, decodes.values().copied().max().unwrap_or(0))
    }

    #[test]
    fn each_stored_chunk_is_decoded_once_and_the_bound_holds() {
        let mut cases = 0;
        for shape in [[13u64, 11], [24, 24], [7, 30]] {
            for stored in [[5u64, 4], [24, 24], [3, 7], [8, 1]] {
                for stream in [[2u64, 3], [5, 4], [7, 6], [1, 11], [24, 24]] {
                    for p in [1, 2, 3] {
                        let (peak, decodes) = simulate(&shape, &stored, &stream, p);
                        let bound = held_stored_chunks(&shape, &stored, &stream, p);
                        assert_eq!(decodes, 1, "{shape:?} {stored:?} {stream:?} p={p}");
                        assert!(
                            peak <= bound,
                            "{shape:?} stored {stored:?} stream {stream:?} p={p}: held {peak} > bound {bound}"
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 180);
        // 3-D, finer along the middle axis only.
        let (peak, decodes) = simulate(&[4, 20, 9], &[1, 10, 9], &[1, 3, 9], 2);
        assert_eq!(decodes, 1);
        assert!(peak <= held_stored_chunks(&[4, 20, 9], &[1, 10, 9], &[1, 3, 9], 2));
        // One stored chunk of 6000 x 6000 in 500 x 500 stream chunks: one held.
        assert_eq!(
            held_stored_chunks(&[6000, 6000], &[6000, 6000], &[500, 500], 2),
            1
        );
        // A row of six stored chunks, and one more started by the batch's second chunk.
        assert_eq!(
            held_stored_chunks(&[6000, 6000], &[1000, 1000], &[500, 500], 2),
            7
        );
    }

    #[test]
    fn finer_means_some_stored_chunk_spans_two_stream_chunks() {
        assert!(stream_is_finer(&[6000, 6000], &[6000, 6000], &[500, 500]));
        assert!(!stream_is_finer(&[6000, 6000], &[500, 500], &[1000, 1000]));
        assert!(!stream_is_finer(&[6000, 6000], &[500, 500], &[700, 700]));
        // A stream chunk larger than the array along an axis is the whole axis.
        assert!(!stream_is_finer(&[300, 6000], &[500, 500], &[300, 500]));
    }

    #[test]
    fn cut_assembles_a_region_across_stored_chunks() {
        let info = ZarrInfo {
            path: "x".into(),
            zarr_format: 3,
            dtype: DType::I32,
            shape: vec![5, 7],
            chunks: vec![2, 3],
            shards: None,
            dimension_names: None,
            codecs: String::new(),
            fill_value: "0".into(),
        };
        let grid = ChunkGrid::new(vec![5, 7], vec![5, 7]).expect("grid");
        let mut c = StoredChunks::new(&info, &grid);
        // Stored chunks padded to full size, as zarrs decodes them.
        for i in 0..3u64 {
            for j in 0..3u64 {
                let a = ArrayD::from_shape_fn(ndarray::IxDyn(&[2, 3]), |ix| {
                    ((i as usize * 2 + ix[0]) * 100 + j as usize * 3 + ix[1]) as i32
                });
                c.insert(vec![i, j], ArrayData::I32(a));
            }
        }
        let r = Region::new(vec![1, 2], vec![4, 5]);
        let ArrayData::I32(got) = c.cut(&r, std::path::Path::new("x")).expect("cut") else {
            panic!("i32")
        };
        let want = ArrayD::from_shape_fn(ndarray::IxDyn(&[4, 5]), |ix| {
            ((1 + ix[0]) * 100 + 2 + ix[1]) as i32
        });
        assert_eq!(got, want);
        c.release_before(1);
        assert_eq!(c.held(), 0);
    }
}

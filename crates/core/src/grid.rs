use std::fmt;

/// A box of an array in global coordinates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Region {
    pub origin: Vec<u64>,
    pub shape: Vec<u64>,
}

impl Region {
    pub fn new(origin: Vec<u64>, shape: Vec<u64>) -> Self {
        debug_assert_eq!(origin.len(), shape.len());
        Region { origin, shape }
    }
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
    /// Exclusive end per axis.
    pub fn end(&self) -> Vec<u64> {
        self.origin
            .iter()
            .zip(&self.shape)
            .map(|(o, s)| o + s)
            .collect()
    }
    /// Ranges per axis, for slicing stores.
    pub fn ranges(&self) -> Vec<std::ops::Range<u64>> {
        self.origin
            .iter()
            .zip(&self.shape)
            .map(|(o, s)| *o..o + s)
            .collect()
    }
    pub fn shape_usize(&self) -> Vec<usize> {
        self.shape.iter().map(|&s| s as usize).collect()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, (o, s)) in self.origin.iter().zip(&self.shape).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}..{}", o, o + s)?;
        }
        write!(f, "]")
    }
}

/// Errors in building a chunk grid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GridError {
    #[error("chunk shape {chunk:?} has {got} axes but the array shape {shape:?} has {want}")]
    Rank {
        shape: Vec<u64>,
        chunk: Vec<u64>,
        got: usize,
        want: usize,
    },
    #[error("chunk shape {0:?} has a zero extent; every chunk extent must be at least 1")]
    ZeroChunk(Vec<u64>),
    #[error("shape {shape:?} in chunks of {chunk:?} is too large: {what}; at most 2^{} elements (counting the chunks' padding at the edges)", MAX_ELEMENTS.trailing_zeros())]
    TooLarge {
        shape: Vec<u64>,
        chunk: Vec<u64>,
        what: String,
    },
}

/// The most elements an array may have, counted as whole chunks (its chunk
/// count times the elements of a full chunk). At 8 bytes an element this
/// keeps every byte count of a grid, a chunk or a halo block well inside
/// `u64`, so sizes computed from it cannot overflow; the memory budget
/// refuses what would not fit long before.
pub const MAX_ELEMENTS: u64 = 1 << 52;

/// The product of `v`, or None past [`MAX_ELEMENTS`].
fn bounded_product(v: &[u64]) -> Option<u64> {
    v.iter()
        .try_fold(1u64, |acc, &x| acc.checked_mul(x))
        .filter(|&p| p <= MAX_ELEMENTS)
}

/// A regular chunk grid over an array: the array shape and the chunk shape.
/// Chunks at the upper edge of an axis may be short.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ChunkGrid {
    shape: Vec<u64>,
    chunk: Vec<u64>,
}

impl ChunkGrid {
    /// A grid; chunk extents larger than the array are clipped to it.
    pub fn new(shape: Vec<u64>, chunk: Vec<u64>) -> Result<Self, GridError> {
        if shape.len() != chunk.len() {
            return Err(GridError::Rank {
                got: chunk.len(),
                want: shape.len(),
                shape,
                chunk,
            });
        }
        if chunk.contains(&0) {
            return Err(GridError::ZeroChunk(chunk));
        }
        let chunk: Vec<u64> = chunk
            .iter()
            .zip(&shape)
            .map(|(&c, &s)| c.min(s.max(1)))
            .collect();
        let too_large = |what: String| GridError::TooLarge {
            shape: shape.clone(),
            chunk: chunk.clone(),
            what,
        };
        let grid: Vec<u64> = shape
            .iter()
            .zip(&chunk)
            .map(|(&s, &c)| s.div_ceil(c))
            .collect();
        let Some(chunks) = bounded_product(&grid) else {
            return Err(too_large(format!("{grid:?} chunks")));
        };
        let padded = bounded_product(&chunk).and_then(|e| e.checked_mul(chunks));
        if padded.is_none_or(|p| p > MAX_ELEMENTS) {
            return Err(too_large(format!(
                "{chunks} chunks of {} elements",
                chunk
                    .iter()
                    .try_fold(1u64, |a, &c| a.checked_mul(c))
                    .map_or_else(|| "more than 2^64".to_string(), |e| e.to_string())
            )));
        }
        Ok(ChunkGrid { shape, chunk })
    }

    /// One chunk covering the whole array.
    pub fn whole(shape: Vec<u64>) -> Self {
        let chunk = shape.iter().map(|&s| s.max(1)).collect();
        ChunkGrid { shape, chunk }
    }

    pub fn shape(&self) -> &[u64] {
        &self.shape
    }
    pub fn chunk_shape(&self) -> &[u64] {
        &self.chunk
    }
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    /// Number of chunks along each axis.
    pub fn grid_shape(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunk)
            .map(|(&s, &c)| s.div_ceil(c))
            .collect()
    }
    /// Total number of chunks.
    pub fn num_chunks(&self) -> u64 {
        self.grid_shape().iter().product()
    }
    /// Elements of a full (not edge) chunk.
    pub fn chunk_elements(&self) -> u64 {
        self.chunk.iter().product()
    }
    pub fn total_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The region of the chunk at grid `index`, clipped at the array's edge.
    pub fn region(&self, index: &[u64]) -> Region {
        let origin: Vec<u64> = index.iter().zip(&self.chunk).map(|(i, c)| i * c).collect();
        let shape = origin
            .iter()
            .zip(&self.chunk)
            .zip(&self.shape)
            .map(|((&o, &c), &s)| c.min(s - o))
            .collect();
        Region::new(origin, shape)
    }

    /// Grid index of the `n`-th chunk in row-major order.
    pub fn unravel(&self, mut n: u64) -> Vec<u64> {
        let g = self.grid_shape();
        let mut idx = vec![0; g.len()];
        for ax in (0..g.len()).rev() {
            idx[ax] = n % g[ax];
            n /= g[ax];
        }
        idx
    }

    /// Row-major position of the chunk at grid `index`.
    pub fn ravel(&self, index: &[u64]) -> u64 {
        let g = self.grid_shape();
        index.iter().zip(&g).fold(0, |acc, (&i, &n)| acc * n + i)
    }

    /// Grid indices of every chunk in row-major order.
    pub fn indices(&self) -> impl Iterator<Item = Vec<u64>> + '_ {
        (0..self.num_chunks()).map(|n| self.unravel(n))
    }
}

impl fmt::Display for ChunkGrid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shape {:?}, chunks {:?} ({} chunks in a {:?} grid)",
            self.shape,
            self.chunk,
            self.num_chunks(),
            self.grid_shape()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts that overflowed u64 (and wrapped to a "0 B" chunk in release
    /// builds) are refused when the grid is made.
    #[test]
    fn grids_whose_counts_overflow_are_refused() {
        for (shape, chunk) in [
            (vec![1u64 << 32, 1 << 32], vec![1u64 << 32, 1 << 32]),
            (vec![i64::MAX as u64, 13500, 3], vec![500, 500, 3]),
            (vec![u64::MAX], vec![1]),
            (vec![1 << 40, 1 << 40], vec![1, 1]),
            (vec![1 << 53], vec![1 << 53]),
        ] {
            let e = ChunkGrid::new(shape.clone(), chunk.clone()).expect_err("too large");
            assert!(matches!(e, GridError::TooLarge { .. }), "{e}");
            assert!(e.to_string().contains("too large"), "{e}");
        }
        // The largest accepted grid's byte counts fit with room to spare.
        let g = ChunkGrid::new(vec![1 << 25, 1 << 26], vec![1000, 1000]).expect("grid");
        assert!(g
            .num_chunks()
            .checked_mul(g.chunk_elements())
            .is_some_and(|e| e.checked_mul(1 << 11).is_some()));
    }

    #[test]
    fn edge_chunks_are_short_and_order_is_row_major() {
        let g = ChunkGrid::new(vec![10, 7], vec![4, 3]).expect("grid");
        assert_eq!(g.grid_shape(), vec![3, 3]);
        assert_eq!(g.num_chunks(), 9);
        assert_eq!(g.region(&[2, 2]), Region::new(vec![8, 6], vec![2, 1]));
        for (n, idx) in g.indices().enumerate() {
            assert_eq!(g.ravel(&idx), n as u64);
        }
        assert_eq!(g.unravel(5), vec![1, 2]);
        assert!(ChunkGrid::new(vec![3], vec![0]).is_err());
        assert!(ChunkGrid::new(vec![1 << 26, 1 << 26], vec![1 << 26, 1 << 26]).is_ok());
        assert!(ChunkGrid::new(vec![3], vec![1, 1]).is_err());
        // Chunks larger than the array are clipped.
        assert_eq!(
            ChunkGrid::new(vec![3], vec![10])
                .expect("grid")
                .chunk_shape(),
            &[3]
        );
    }
}

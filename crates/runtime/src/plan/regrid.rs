//! Streaming from one chunk grid into another: which source chunks a
//! destination chunk needs, when a source chunk can be let go, and how many
//! are held at once (the window a stage's memory projection counts).

use blockflow_core::ChunkGrid;

/// Greatest common divisor.
pub(crate) fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// How many chunks, in row-major order, a halo reaches back and ahead.
pub fn halo_reach(grid: &ChunkGrid, halo: &[(usize, usize)]) -> (u64, u64) {
    let g = grid.grid_shape();
    let c = grid.chunk_shape();
    let mut stride = 1u64;
    let (mut back, mut ahead) = (0u64, 0u64);
    for ax in (0..g.len()).rev() {
        let reach = |h: usize| (h as u64).div_ceil(c[ax]).min(g[ax] - 1);
        back += reach(halo[ax].0) * stride;
        ahead += reach(halo[ax].1) * stride;
        stride *= g[ax];
    }
    (back, ahead)
}

/// Streams the chunks of `src` (arriving in row-major order) into the
/// chunks of `dst`, each with `halo`, in row-major order: the overlap
/// assembler (same grids), the in-memory rechunker (no halo) and the slicer
/// (`map`: destination position j along an axis is source position
/// `start + j * step`).
#[derive(Debug, Clone, PartialEq)]
pub struct Regrid {
    pub src: ChunkGrid,
    pub dst: ChunkGrid,
    pub halo: Vec<(usize, usize)>,
    /// Per axis (start, step); empty: the identity.
    pub map: Vec<(u64, u64)>,
}

impl Regrid {
    /// Same positions in both grids (no slicing).
    pub fn new(src: ChunkGrid, dst: ChunkGrid, halo: Vec<(usize, usize)>) -> Regrid {
        Regrid {
            src,
            dst,
            halo,
            map: Vec::new(),
        }
    }

    fn affine(&self, ax: usize) -> (u64, u64) {
        self.map.get(ax).copied().unwrap_or((0, 1))
    }

    /// Row-major position (in `src`) of the last source chunk that
    /// destination chunk `o` needs.
    pub fn need_last(&self, o: &[u64]) -> u64 {
        let (sc, dc, n, g, nd) = (
            self.src.chunk_shape(),
            self.dst.chunk_shape(),
            self.src.shape(),
            self.src.grid_shape(),
            self.dst.shape(),
        );
        let last: Vec<u64> = (0..n.len())
            .map(|ax| {
                let (start, step) = self.affine(ax);
                let j = ((o[ax] + 1) * dc[ax]).min(nd[ax]).max(1) - 1;
                let pos = start + j * step + self.halo[ax].1 as u64;
                (pos.min(n[ax] - 1) / sc[ax]).min(g[ax] - 1)
            })
            .collect();
        self.src.ravel(&last)
    }

    /// Row-major position (in `dst`) of the last destination chunk that
    /// needs source chunk `a`; None when none does (a slice skips it).
    pub fn last_user(&self, a: &[u64]) -> Option<u64> {
        let (sc, dc, n, nd) = (
            self.src.chunk_shape(),
            self.dst.chunk_shape(),
            self.src.shape(),
            self.dst.shape(),
        );
        let mut last = Vec::with_capacity(n.len());
        for ax in 0..n.len() {
            let (start, step) = self.affine(ax);
            let (h0, h1) = (self.halo[ax].0 as i64, self.halo[ax].1 as i64);
            let a0 = (a[ax] * sc[ax]) as i64;
            let a1 = ((a[ax] + 1) * sc[ax]).min(n[ax]) as i64;
            // Destination positions j whose source span
            // [start + j step - h0, start + j step + h1] meets [a0, a1).
            let (s0, st) = (start as i64, step as i64);
            let lo = (a0 - h1 - s0).max(0);
            let j_lo = (lo + st - 1) / st;
            let hi = a1 - 1 + h0 - s0;
            if hi < 0 {
                return None;
            }
            let j_hi = (hi / st).min(nd[ax] as i64 - 1);
            if j_lo > j_hi {
                return None;
            }
            last.push(j_hi as u64 / dc[ax]);
        }
        Some(self.dst.ravel(&last))
    }

    /// The most source chunks held at once. The stream is simulated on a
    /// grid cut short along axis 0 (see [`Regrid::shortened`]), so the
    /// cost does not grow with the array; past [`SIMULATED_CHUNKS`] it is
    /// bounded instead (see [`Regrid::window_bound`]).
    pub fn window(&self) -> u64 {
        let short = self.shortened();
        let r = short.as_ref().unwrap_or(self);
        if r.dst.num_chunks() <= SIMULATED_CHUNKS && r.src.num_chunks() <= SIMULATED_CHUNKS {
            r.simulate()
        } else {
            self.window_bound()
        }
    }

    /// The same regrid with whole periods of axis 0 removed from the
    /// middle: without slicing, the stream's pattern along axis 0 repeats
    /// every `lcm(source chunk, destination chunk)` elements, and only the
    /// rows within reach of a halo and a chunk of either end differ, so the
    /// most chunks held is the same. None when there is nothing to cut.
    pub fn shortened(&self) -> Option<Regrid> {
        if !self.map.is_empty() || self.src.ndim() == 0 || self.src.shape() != self.dst.shape() {
            return None;
        }
        let (sc, dc) = (self.src.chunk_shape()[0], self.dst.chunk_shape()[0]);
        let period = (sc / gcd(sc, dc)).checked_mul(dc)?;
        let (h0, h1) = (self.halo[0].0 as u64, self.halo[0].1 as u64);
        let reach = h0.saturating_add(h1).saturating_add(2 * period);
        let keep = reach.div_ceil(period).saturating_mul(2).saturating_add(2);
        let n0 = self.src.shape()[0];
        let periods = n0 / period;
        if periods <= keep {
            return None;
        }
        let mut shape = self.src.shape().to_vec();
        shape[0] = n0 - (periods - keep) * period;
        let src = ChunkGrid::new(shape.clone(), self.src.chunk_shape().to_vec()).ok()?;
        let dst = ChunkGrid::new(shape, self.dst.chunk_shape().to_vec()).ok()?;
        Some(Regrid::new(src, dst, self.halo.clone()))
    }

    /// An upper bound on the chunks held, for grids too large to simulate:
    /// while a destination chunk is assembled, the chunks held lie in the
    /// source rows (along axis 0) from its start less the halo before to
    /// its end plus the halo after. With slicing: every source chunk.
    pub fn window_bound(&self) -> u64 {
        let g = self.src.grid_shape();
        if !self.map.is_empty() || g.is_empty() {
            return self.src.num_chunks();
        }
        let (sc, dc) = (self.src.chunk_shape()[0], self.dst.chunk_shape()[0]);
        let span = dc
            .saturating_add(self.halo[0].0 as u64)
            .saturating_add(self.halo[0].1 as u64);
        let rows = (span.div_ceil(sc) + 2).min(g[0]);
        rows.saturating_mul(g[1..].iter().product())
    }

    /// The most source chunks held at once, by simulating the stream.
    pub fn simulate(&self) -> u64 {
        let nd = self.dst.num_chunks() as usize;
        let mut evict_at = vec![0u64; nd + 1];
        let (mut arrived, mut held, mut most) = (0u64, 0u64, 0u64);
        for o in 0..nd as u64 {
            let need = self.need_last(&self.dst.unravel(o)) + 1;
            while arrived < need {
                if let Some(u) = self.last_user(&self.src.unravel(arrived)) {
                    evict_at[(u as usize).min(nd)] += 1;
                    held += 1;
                }
                arrived += 1;
            }
            most = most.max(held);
            held -= evict_at[o as usize];
        }
        most
    }
}

/// The most chunks the planner simulates a stream over (about 0.2 s and
/// 8 MiB); larger grids, after [`Regrid::shortened`], get
/// [`Regrid::window_bound`].
pub const SIMULATED_CHUNKS: u64 = 1 << 20;

/// The most chunks a sliding window keeps to give `grid`'s chunks a halo.
pub fn window_chunks(grid: &ChunkGrid, halo: &[(usize, usize)]) -> u64 {
    Regrid::new(grid.clone(), grid.clone(), halo.to_vec()).window()
}

/// Elements of a chunk with its halo (saturating: a projection this large
/// is refused by any budget).
pub fn block_elements(grid: &ChunkGrid, halo: &[(usize, usize)]) -> u64 {
    grid.chunk_shape()
        .iter()
        .zip(halo)
        .map(|(&c, &(b, a))| c.saturating_add(b as u64).saturating_add(a as u64))
        .fold(1u64, |acc, x| acc.saturating_mul(x))
}

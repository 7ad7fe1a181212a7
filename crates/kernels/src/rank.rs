//! scipy.ndimage's rank filters: `median_filter`, `rank_filter` and
//! `percentile_filter` with a box footprint (`size` per axis, origin 0) and
//! scipy's boundary modes, in the input's dtype.
//!
//! # What scipy does, and what this module does
//!
//! scipy turns every request into a rank `r` of the `n = Π size` values in
//! the window (median: `n / 2`; percentile `p`: `int(n·p/100)`, `n − 1` for
//! 100, `p + 100` for negative `p`; a negative rank counts from the end).
//! Rank 0 and rank `n − 1` go to `minimum_filter`/`maximum_filter`, which
//! for a box run one 1-D pass per axis of size above 1 (Richard Harter's
//! ascending-minima deque, `NI_MinOrMaxFilter1D`); every other rank gathers
//! the window in C order and selects with a Hoare-partition quickselect
//! (`NI_Select`, pivot = first element) on a buffer of doubles.
//!
//! Without NaN every element of the window is comparable, the `r`-th order
//! statistic is unique, and any exact selection gives scipy's value. Here
//! the common case runs a *selection network*: each window is split into
//! "columns" (all axes but the last) that are sorted once and shared by the
//! `size[last]` outputs that read them, then a network pruned to the one
//! output rank merges the sorted columns. Both networks are min/max
//! exchanges over whole rows of outputs at once, which the compiler
//! vectorises; large windows (more than [`NETWORK_MAX`] values) use a
//! per-output `select_nth_unstable` instead.
//!
//! **NaN.** scipy's comparisons are plain `<`/`>` on doubles, so a NaN is
//! never moved by a comparison: the result depends on where the NaN sits in
//! the window and on the pivots the quickselect meets. It is neither "NaN
//! propagates" nor "NaN sorts last". This module reproduces it exactly: a
//! window that holds a NaN is gathered in scipy's order and run through a
//! replica of `NI_Select` (and ranks 0 / `n − 1` run a replica of the
//! Harter pass). Two differences remain:
//!
//! * for ranks 0 and `n − 1`, scipy's deque carries state from earlier in
//!   the line, so with a NaN near a chunk edge a chunk can differ from the
//!   whole-array result (whole arrays match exactly; chunks match wherever
//!   the scan from the chunk's halo sees the same values, i.e. always
//!   without NaN);
//! * for 1-D inputs scipy ≥ 1.13 uses another algorithm
//!   (`_rank_filter_1d`) whose NaN results differ from `NI_Select`'s; this
//!   module always follows `NI_Select` (1-D results without NaN agree).
//!
//! `-0.0` and `0.0` compare equal, so either may be returned where scipy
//! returns the other.
//!
//! **cval.** scipy casts `cval` to the input's dtype before ranking (the
//! Harter passes compare it as a double and cast the result, which gives
//! the same value because the cast is monotone); here it is converted once
//! with [`Element::from_f64`]. For integer inputs choose a `cval` the
//! dtype can hold: C's out-of-range casts are not reproduced.
//!
//! # Blocks with a halo
//!
//! [`RankFilter::filter_block`] takes a block that holds the halo
//! ([`RankFilter::halo`]) and its [`Geometry`]; positions outside the array
//! are first replaced by the mode's extension (so what the halo held there
//! does not matter), then the block's interior is computed exactly as the
//! whole array would give it. [`RankFilter::prepare`] +
//! [`RankFilter::filter_rows`] split that work by output rows (all axes but
//! the last) so a caller can spread one block over threads.

use std::cmp::Ordering;
use std::ops::Range;

use ndarray::{ArrayD, ArrayViewD, IxDyn, Slice};

use blockflow_core::Element;

use crate::filters::{self, Boundary, Geometry};

/// Windows with more values than this use a per-output selection instead
/// of a selection network.
pub const NETWORK_MAX: usize = 125;

/// What went wrong building or running a rank filter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RankError {
    #[error("rank filter: size must name every axis of the {ndim}-D array, got {got} sizes")]
    SizeAxes { got: usize, ndim: usize },
    #[error("rank filter: size must be at least 1 along every axis, got {0:?}")]
    ZeroSize(Vec<usize>),
    #[error("rank filter: percentile {0} is outside [-100, 100]")]
    Percentile(f64),
    #[error("rank filter: rank {rank} is outside a footprint of {n} values")]
    Rank { rank: i64, n: usize },
    #[error("rank filter: the block's shape {block:?} is smaller than the footprint {size:?} along some axis")]
    BlockTooSmall { block: Vec<usize>, size: Vec<usize> },
    #[error("rank filter: the geometry has {got} axes, the block {ndim}")]
    GeometryAxes { got: usize, ndim: usize },
    #[error("rank filter: {0}")]
    Boundary(String),
    #[error("rank filter: rows {start}..{end} with {row_len} values each do not fit an output slice of {len}")]
    Rows {
        start: usize,
        end: usize,
        row_len: usize,
        len: usize,
    },
}

/// Which order statistic of the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    /// scipy's `median_filter`: rank `n / 2` (the upper median for even `n`).
    Median,
    /// scipy's `rank_filter`: a rank, negative counting from the end.
    Rank(i64),
    /// scipy's `percentile_filter`: `p` in `[-100, 100]`.
    Percentile(f64),
}

/// The element types a rank filter runs on: every [`Element`], with NaN
/// known for the floats.
pub trait RankValue: Element {
    /// `true` only for a floating-point NaN.
    fn is_nan_value(self) -> bool;
}

macro_rules! rank_value_never_nan {
    ($($t:ty),*) => {$(
        impl RankValue for $t {
            #[inline(always)]
            fn is_nan_value(self) -> bool {
                false
            }
        }
    )*};
}
rank_value_never_nan!(bool, u8, u16, u32, i16, i32, i64);

impl RankValue for f32 {
    #[inline(always)]
    fn is_nan_value(self) -> bool {
        self.is_nan()
    }
}

impl RankValue for f64 {
    #[inline(always)]
    fn is_nan_value(self) -> bool {
        self.is_nan()
    }
}

/// How the filter computes its rank.
#[derive(Debug, Clone)]
enum Method {
    /// Rank 0 or n − 1: separable Harter passes (scipy's min/max filters).
    Extreme { minimum: bool },
    /// Column sort and merge networks.
    Network(Box<Networks>),
    /// A selection per output.
    Scalar,
}

/// A rank filter with a box footprint, ready to run on arrays or blocks.
#[derive(Debug, Clone)]
pub struct RankFilter {
    size: Vec<usize>,
    n: usize,
    rank: usize,
    mode: Boundary,
    method: Method,
}

impl RankFilter {
    /// A filter over a box of `size` (one entry per axis of the data; 1
    /// leaves an axis alone) selecting `stat`, with scipy's `mode`
    /// ([`Boundary::Zero`] gives 0 wherever the window leaves the array).
    pub fn new(size: &[usize], stat: Statistic, mode: Boundary) -> Result<RankFilter, RankError> {
        if size.is_empty() || size.contains(&0) {
            return Err(RankError::ZeroSize(size.to_vec()));
        }
        let n: usize = size.iter().product();
        let rank = resolve_rank(n, stat)?;
        let method = if rank == 0 {
            Method::Extreme { minimum: true }
        } else if rank == n - 1 {
            Method::Extreme { minimum: false }
        } else if n <= NETWORK_MAX {
            Method::Network(Box::new(Networks::build(size, rank)))
        } else {
            Method::Scalar
        };
        Ok(RankFilter {
            size: size.to_vec(),
            n,
            rank,
            mode,
            method,
        })
    }

    /// scipy's `median_filter(size=...)`.
    pub fn median(size: &[usize], mode: Boundary) -> Result<RankFilter, RankError> {
        RankFilter::new(size, Statistic::Median, mode)
    }

    /// The rank selected, in `0..n`, after scipy's conversions.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Values in the window.
    pub fn window_len(&self) -> usize {
        self.n
    }

    /// The footprint's size per axis.
    pub fn size(&self) -> &[usize] {
        &self.size
    }

    /// The boundary mode.
    pub fn mode(&self) -> Boundary {
        self.mode
    }

    /// The halo (before, after) the filter reads along each axis:
    /// `(size / 2, size − 1 − size / 2)`, scipy's placement for origin 0.
    pub fn halo(&self) -> Vec<(usize, usize)> {
        self.size.iter().map(|&s| (s / 2, s - 1 - s / 2)).collect()
    }

    fn check_ndim(&self, ndim: usize) -> Result<(), RankError> {
        if self.size.len() != ndim {
            return Err(RankError::SizeAxes {
                got: self.size.len(),
                ndim,
            });
        }
        Ok(())
    }

    /// The filter over a whole array (scipy's result, same shape and dtype).
    pub fn apply<T: RankValue>(&self, a: ArrayViewD<'_, T>) -> Result<ArrayD<T>, RankError> {
        self.check_ndim(a.ndim())?;
        if a.is_empty() {
            return Ok(a.to_owned());
        }
        let halo = self.halo();
        let pshape: Vec<usize> = a
            .shape()
            .iter()
            .zip(&halo)
            .map(|(&n, &(b, f))| n + b + f)
            .collect();
        let mut padded = ArrayD::<T>::default(IxDyn(&pshape));
        padded
            .slice_each_axis_mut(|ax| {
                let b = halo[ax.axis.index()].0;
                Slice::from(b..b + a.shape()[ax.axis.index()])
            })
            .assign(&a);
        let geom = Geometry {
            origin: halo.iter().map(|&(b, _)| -(b as isize)).collect(),
            array: a.shape().to_vec(),
        };
        let data = padded.into_raw_vec_and_offset().0;
        let prep = self.prepare_vec(data, pshape, &geom)?;
        self.finish(&prep)
    }

    /// The interior of a block that holds the halo ([`RankFilter::halo`]):
    /// the block's shape less `size − 1` along each axis, equal to the
    /// whole-array result at those positions.
    pub fn filter_block<T: RankValue>(
        &self,
        block: ArrayViewD<'_, T>,
        geom: &Geometry,
    ) -> Result<ArrayD<T>, RankError> {
        let prep = self.prepare(block, geom)?;
        self.finish(&prep)
    }

    fn finish<T: RankValue>(&self, prep: &Prepared<T>) -> Result<ArrayD<T>, RankError> {
        let mut out = vec![T::default(); prep.out_len()];
        self.filter_rows(prep, 0..prep.rows(), &mut out)?;
        ArrayD::from_shape_vec(IxDyn(&prep.out_shape), out)
            .map_err(|e| RankError::Boundary(e.to_string()))
    }

    /// Copies a block with its halo and re-extends it at the array's true
    /// edges by the mode; the result is split into output rows by
    /// [`RankFilter::filter_rows`].
    pub fn prepare<T: RankValue>(
        &self,
        block: ArrayViewD<'_, T>,
        geom: &Geometry,
    ) -> Result<Prepared<T>, RankError> {
        let shape = block.shape().to_vec();
        let data: Vec<T> = match block.as_slice() {
            Some(s) => s.to_vec(),
            None => block.iter().copied().collect(),
        };
        self.prepare_vec(data, shape, geom)
    }

    fn prepare_vec<T: RankValue>(
        &self,
        mut data: Vec<T>,
        shape: Vec<usize>,
        geom: &Geometry,
    ) -> Result<Prepared<T>, RankError> {
        let ndim = shape.len();
        self.check_ndim(ndim)?;
        if geom.origin.len() != ndim || geom.array.len() != ndim {
            return Err(RankError::GeometryAxes {
                got: geom.origin.len().min(geom.array.len()),
                ndim,
            });
        }
        if shape.iter().zip(&self.size).any(|(&n, &s)| n < s) {
            return Err(RankError::BlockTooSmall {
                block: shape,
                size: self.size.clone(),
            });
        }
        let fill = match self.mode {
            Boundary::Constant(c) => T::from_f64(c),
            _ => T::default(),
        };
        for axis in 0..ndim {
            filters::reextend_with(&mut data, &shape, axis, geom, self.mode, fill)
                .map_err(RankError::Boundary)?;
        }
        let out_shape: Vec<usize> = shape
            .iter()
            .zip(&self.size)
            .map(|(&n, &s)| n + 1 - s)
            .collect();
        let out_origin: Vec<isize> = geom
            .origin
            .iter()
            .zip(self.halo())
            .map(|(&o, (b, _))| o + b as isize)
            .collect();
        let extreme = match self.method {
            Method::Extreme { minimum } => {
                Some(separable_extreme(data.clone(), &shape, &self.size, minimum))
            }
            _ => None,
        };
        Ok(Prepared {
            data,
            shape,
            out_shape,
            out_origin,
            array: geom.array.clone(),
            extreme,
        })
    }

    /// Computes output rows `rows` (row = one line along the last axis; rows
    /// are numbered in C order over the other output axes) into `out`,
    /// which holds `rows.len() · row_len` values. Rows are independent: a
    /// caller may give disjoint ranges to different threads.
    pub fn filter_rows<T: RankValue>(
        &self,
        prep: &Prepared<T>,
        rows: Range<usize>,
        out: &mut [T],
    ) -> Result<(), RankError> {
        let row_len = prep.row_len();
        if rows.end > prep.rows() || out.len() != rows.len() * row_len {
            return Err(RankError::Rows {
                start: rows.start,
                end: rows.end,
                row_len,
                len: out.len(),
            });
        }
        if row_len == 0 || rows.is_empty() {
            return Ok(());
        }
        match (&self.method, &prep.extreme) {
            (Method::Extreme { .. }, Some(ext)) => {
                out.copy_from_slice(&ext[rows.start * row_len..rows.end * row_len]);
            }
            (Method::Network(nets), _) => {
                let mut scratch = Scratch::default();
                for (k, r) in rows.clone().enumerate() {
                    let dst = &mut out[k * row_len..(k + 1) * row_len];
                    self.network_row(nets, prep, r, dst, &mut scratch);
                }
            }
            _ => {
                let mut buf = Vec::with_capacity(self.n);
                for (k, r) in rows.clone().enumerate() {
                    let dst = &mut out[k * row_len..(k + 1) * row_len];
                    self.scalar_row(prep, r, dst, &mut buf);
                }
            }
        }
        if self.mode == Boundary::Zero {
            self.zero_outside(prep, rows, out);
        }
        Ok(())
    }

    /// Offset in the prepared data of the first window element of row `r`,
    /// and the offsets of the window's columns (all axes but the last) from
    /// it, in C order.
    fn row_base<T: RankValue>(&self, prep: &Prepared<T>, r: usize) -> usize {
        let ndim = prep.shape.len();
        let strides = c_strides(&prep.shape);
        let mut rem = r;
        let mut base = 0;
        for ax in (0..ndim - 1).rev() {
            let n = prep.out_shape[ax];
            base += (rem % n) * strides[ax];
            rem /= n;
        }
        base
    }

    fn column_offsets(&self, shape: &[usize]) -> Vec<usize> {
        let ndim = shape.len();
        let strides = c_strides(shape);
        let mut offs = vec![0usize];
        for (&size, &stride) in self.size.iter().zip(&strides).take(ndim - 1) {
            let mut next = Vec::with_capacity(offs.len() * size);
            for &o in &offs {
                for j in 0..size {
                    next.push(o + j * stride);
                }
            }
            offs = next;
        }
        offs
    }

    fn network_row<T: RankValue>(
        &self,
        nets: &Networks,
        prep: &Prepared<T>,
        r: usize,
        dst: &mut [T],
        s: &mut Scratch<T>,
    ) {
        let row_len = dst.len();
        let sl = nets.sl;
        let base = self.row_base(prep, r);
        if s.cols.is_empty() {
            s.cols = self.column_offsets(&prep.shape);
        }
        let tile = nets.tile::<T>();
        let wa_cap = tile + sl - 1;
        if s.a.len() < nets.a.slots * wa_cap {
            s.a = vec![T::default(); nets.a.slots * wa_cap];
        }
        if s.b.len() < nets.b.slots * tile {
            s.b = vec![T::default(); nets.b.slots * tile];
        }
        let data = &prep.data;
        let mut x0 = 0;
        while x0 < row_len {
            let w = tile.min(row_len - x0);
            let wa = w + sl - 1;
            let mut nan = false;
            for &(slot, c) in nets.a.inputs.iter() {
                let src = &data[base + s.cols[c] + x0..base + s.cols[c] + x0 + wa];
                let d = &mut s.a[slot * wa_cap..slot * wa_cap + wa];
                d.copy_from_slice(src);
                nan |= src.iter().fold(false, |acc, v| acc | v.is_nan_value());
            }
            run_ops(&mut s.a, wa_cap, wa, &nets.a.ops);
            let seg = &mut dst[x0..x0 + w];
            if sl == 1 {
                let o = nets.a.out * wa_cap;
                seg.copy_from_slice(&s.a[o..o + w]);
            } else {
                for &(slot, (k, dx)) in nets.b.inputs.iter() {
                    let from = nets.a.rank_slot[k] * wa_cap + dx;
                    s.b[slot * tile..slot * tile + w].copy_from_slice(&s.a[from..from + w]);
                }
                run_ops(&mut s.b, tile, w, &nets.b.ops);
                let o = nets.b.out * tile;
                seg.copy_from_slice(&s.b[o..o + w]);
            }
            if nan {
                // Windows holding a NaN: scipy's quickselect, in its order.
                let mut buf = Vec::with_capacity(self.n);
                for (x, v) in seg.iter_mut().enumerate() {
                    buf.clear();
                    let start = base + x0 + x;
                    for &c in &s.cols {
                        buf.extend_from_slice(&data[start + c..start + c + sl]);
                    }
                    if buf.iter().any(|v| v.is_nan_value()) {
                        *v = scipy_select(&buf, self.rank);
                    }
                }
            }
            x0 += w;
        }
    }

    fn scalar_row<T: RankValue>(
        &self,
        prep: &Prepared<T>,
        r: usize,
        dst: &mut [T],
        buf: &mut Vec<T>,
    ) {
        let sl = *self.size.last().unwrap_or(&1);
        let base = self.row_base(prep, r);
        let cols = self.column_offsets(&prep.shape);
        let data = &prep.data;
        for (x, v) in dst.iter_mut().enumerate() {
            buf.clear();
            let start = base + x;
            for &c in &cols {
                buf.extend_from_slice(&data[start + c..start + c + sl]);
            }
            *v = if buf.iter().any(|v| v.is_nan_value()) {
                scipy_select(buf, self.rank)
            } else {
                let (_, nth, _) = buf.select_nth_unstable_by(self.rank, |a, b| {
                    a.partial_cmp(b).unwrap_or(Ordering::Equal)
                });
                *nth
            };
        }
    }

    /// `none`: 0 wherever the window leaves the array.
    fn zero_outside<T: RankValue>(&self, prep: &Prepared<T>, rows: Range<usize>, out: &mut [T]) {
        let ndim = prep.shape.len();
        let halo = self.halo();
        let inside = |ax: usize, i: usize| -> bool {
            let g = prep.out_origin[ax] + i as isize;
            g - (halo[ax].0 as isize) >= 0 && g + (halo[ax].1 as isize) < prep.array[ax] as isize
        };
        let row_len = prep.row_len();
        for (k, r) in rows.enumerate() {
            let mut rem = r;
            let mut row_ok = true;
            for ax in (0..ndim - 1).rev() {
                let n = prep.out_shape[ax];
                row_ok &= inside(ax, rem % n);
                rem /= n;
            }
            let dst = &mut out[k * row_len..(k + 1) * row_len];
            for (x, v) in dst.iter_mut().enumerate() {
                if !row_ok || !inside(ndim - 1, x) {
                    *v = T::default();
                }
            }
        }
    }
}

/// A block copied and re-extended for [`RankFilter::filter_rows`].
#[derive(Debug, Clone)]
pub struct Prepared<T> {
    data: Vec<T>,
    shape: Vec<usize>,
    out_shape: Vec<usize>,
    out_origin: Vec<isize>,
    array: Vec<usize>,
    extreme: Option<Vec<T>>,
}

impl<T> Prepared<T> {
    /// Shape of the result (the block's interior).
    pub fn out_shape(&self) -> &[usize] {
        &self.out_shape
    }

    /// Output rows: the product of the output's shape over all axes but the last.
    pub fn rows(&self) -> usize {
        self.out_shape[..self.out_shape.len() - 1].iter().product()
    }

    /// Values per output row (the output's last axis).
    pub fn row_len(&self) -> usize {
        self.out_shape[self.out_shape.len() - 1]
    }

    /// Values in the whole result.
    pub fn out_len(&self) -> usize {
        self.out_shape.iter().product()
    }
}

/// Per-thread buffers of the network path.
struct Scratch<T> {
    cols: Vec<usize>,
    a: Vec<T>,
    b: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch {
            cols: Vec::new(),
            a: Vec::new(),
            b: Vec::new(),
        }
    }
}

/// scipy's conversion of median / rank / percentile to a rank in `0..n`.
fn resolve_rank(n: usize, stat: Statistic) -> Result<usize, RankError> {
    let rank: i64 = match stat {
        Statistic::Median => (n / 2) as i64,
        Statistic::Percentile(p) => {
            let mut p = p;
            if p < 0.0 {
                p += 100.0;
            }
            if !(0.0..=100.0).contains(&p) {
                return Err(RankError::Percentile(p));
            }
            if p == 100.0 {
                n as i64 - 1
            } else {
                (n as f64 * p / 100.0) as i64
            }
        }
        Statistic::Rank(r) => r,
    };
    let r = if rank < 0 { rank + n as i64 } else { rank };
    if r < 0 || r >= n as i64 {
        return Err(RankError::Rank { rank, n });
    }
    Ok(r as usize)
}

fn c_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for ax in (0..shape.len().saturating_sub(1)).rev() {
        s[ax] = s[ax + 1] * shape[ax + 1];
    }
    s
}

/// scipy's `NI_Select` on a copy of the window as doubles: Hoare partition
/// around the first element, recursing into the side that holds `rank`.
fn scipy_select<T: RankValue>(window: &[T], rank: usize) -> T {
    let mut b: Vec<f64> = window.iter().map(|v| v.to_f64()).collect();
    let (mut min, mut max, mut rank) = (0usize, b.len() - 1, rank);
    loop {
        if min == max {
            return T::from_f64(b[min]);
        }
        let x = b[min];
        let mut ii = min as isize - 1;
        let mut jj = max as isize + 1;
        loop {
            loop {
                jj -= 1;
                // `while (buffer[jj] > x)`: a NaN on either side stops.
                if b[jj as usize].partial_cmp(&x) != Some(Ordering::Greater) {
                    break;
                }
            }
            loop {
                ii += 1;
                if b[ii as usize].partial_cmp(&x) != Some(Ordering::Less) {
                    break;
                }
            }
            if ii < jj {
                b.swap(ii as usize, jj as usize);
            } else {
                break;
            }
        }
        let jj = jj as usize;
        let left = jj - min + 1;
        if rank < left {
            max = jj;
        } else {
            min = jj + 1;
            rank -= left;
        }
    }
}

/// scipy's minimum/maximum filter for a box: one Harter pass per axis whose
/// size is above 1, in axis order, over the re-extended block. Returns the
/// valid region (the block less `size − 1` along each axis), C order.
fn separable_extreme<T: RankValue>(
    mut a: Vec<T>,
    shape: &[usize],
    size: &[usize],
    minimum: bool,
) -> Vec<T> {
    let mut shape = shape.to_vec();
    let mut ring: Vec<(T, usize)> = Vec::new();
    let mut line: Vec<T> = Vec::new();
    let mut res: Vec<T> = Vec::new();
    for (axis, &s) in size.iter().enumerate() {
        let n = shape[axis];
        let m = n + 1 - s;
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        if s == 1 {
            continue;
        }
        let mut out = vec![T::default(); outer * m * inner];
        for o in 0..outer {
            for i in 0..inner {
                line.clear();
                line.extend((0..n).map(|k| a[(o * n + k) * inner + i]));
                res.clear();
                res.resize(m, T::default());
                harter(&line, s, minimum, &mut res, &mut ring);
                for (k, &v) in res.iter().enumerate() {
                    out[(o * m + k) * inner + i] = v;
                }
            }
        }
        a = out;
        shape[axis] = m;
    }
    a
}

/// scipy's `NI_MinOrMaxFilter1D` inner loop (Richard Harter's ascending
/// minima over a ring of (value, death)), on an already extended line of
/// `out.len() + s − 1` values.
fn harter<T: RankValue>(
    line: &[T],
    s: usize,
    minimum: bool,
    out: &mut [T],
    ring: &mut Vec<(T, usize)>,
) {
    ring.clear();
    ring.resize(s, (line[0], s));
    let end = s;
    let mut minpair = 0usize;
    let mut last = 0usize;
    let mut o = 0usize;
    for (ll, &val) in line.iter().enumerate().skip(1) {
        if ring[minpair].1 == ll {
            minpair += 1;
            if minpair >= end {
                minpair = 0;
            }
        }
        let front = ring[minpair].0;
        let take = if minimum { val <= front } else { val >= front };
        if take {
            ring[minpair] = (val, ll + s);
            last = minpair;
        } else {
            while if minimum {
                ring[last].0 >= val
            } else {
                ring[last].0 <= val
            } {
                if last == 0 {
                    last = end;
                }
                last -= 1;
            }
            last += 1;
            if last >= end {
                last = 0;
            }
            ring[last] = (val, ll + s);
        }
        if ll + 1 >= s {
            out[o] = ring[minpair].0;
            o += 1;
        }
    }
}

// ---------------------------------------------------------------------------
// Selection networks.

/// One compare-exchange on two rows of lanes: `Both(p, q)` leaves the
/// minimum in `p` and the maximum in `q`; `Min`/`Max` write only the side
/// that is read later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Both(u16, u16),
    Min(u16, u16),
    Max(u16, u16),
}

/// A compiled network over `slots` rows of lanes.
#[derive(Debug, Clone, Default)]
struct Net {
    ops: Vec<Op>,
    slots: usize,
    /// Slot of the selected rank (stage A with one column per window, stage B).
    out: usize,
}

/// Stage A: sort the columns (or select the rank when the last axis has
/// size 1). Stage B: select the rank from `sl` sorted columns.
#[derive(Debug, Clone)]
struct Networks {
    sl: usize,
    a: StageA,
    b: StageB,
}

#[derive(Debug, Clone, Default)]
struct StageA {
    ops: Vec<Op>,
    slots: usize,
    out: usize,
    /// (slot, column element) loaded before the ops.
    inputs: Vec<(usize, usize)>,
    /// Slot of each column rank after the ops (usize::MAX when unused).
    rank_slot: Vec<usize>,
}

#[derive(Debug, Clone, Default)]
struct StageB {
    ops: Vec<Op>,
    slots: usize,
    out: usize,
    /// (slot, (column rank, offset along the last axis)) loaded before the ops.
    inputs: Vec<(usize, (usize, usize))>,
}

impl Networks {
    fn build(size: &[usize], rank: usize) -> Networks {
        let sl = *size.last().unwrap_or(&1);
        let k: usize = size[..size.len() - 1].iter().product();
        if sl == 1 {
            let (net, init, fin) = compile(k, rank, &[rank]);
            let a = StageA {
                ops: net.ops,
                slots: net.slots,
                out: net.out,
                inputs: init,
                rank_slot: fin,
            };
            return Networks {
                sl,
                a,
                b: StageB::default(),
            };
        }
        // Stage B: sl sorted groups of k, each padded with +inf to a power
        // of two, groups padded to a power of two, interleaved (wire
        // `rank·groups + group`) so the merge exchange's first passes,
        // which sort strided subsequences, are already decided.
        let kp = k.next_power_of_two();
        let groups = sl.next_power_of_two();
        let nb = kp * groups;
        let real = |w: usize| w % groups < sl && w / groups < k;
        let mut known = Known::new(nb);
        for wi in 0..nb {
            for wj in 0..nb {
                let le = match (real(wi), real(wj)) {
                    (true, true) => wi % groups == wj % groups && wi / groups <= wj / groups,
                    (true, false) => true,
                    (false, true) => false,
                    (false, false) => true,
                };
                known.set(wi, wj, le);
            }
        }
        let (bnet, binit, _) = compile_with(nb, known, rank, &[rank]);
        let b_inputs: Vec<(usize, (usize, usize))> = binit
            .iter()
            .map(|&(slot, wire)| (slot, (wire / groups, wire % groups)))
            .collect();
        let mut needed: Vec<usize> = b_inputs.iter().map(|&(_, (kk, _))| kk).collect();
        needed.sort_unstable();
        needed.dedup();
        let (anet, ainit, afin) = compile(k, usize::MAX, &needed);
        Networks {
            sl,
            a: StageA {
                ops: anet.ops,
                slots: anet.slots,
                out: anet.out,
                inputs: ainit,
                rank_slot: afin,
            },
            b: StageB {
                ops: bnet.ops,
                slots: bnet.slots,
                out: bnet.out,
                inputs: b_inputs,
            },
        }
    }

    /// Lanes per tile: the stage buffers stay within about 24 KiB.
    fn tile<T>(&self) -> usize {
        let slots = self.a.slots.max(self.b.slots).max(1);
        let lanes = 24 * 1024 / (slots * std::mem::size_of::<T>().max(1));
        (lanes / 8 * 8).clamp(16, 1024)
    }
}

/// Known order relations between the wires of a network under
/// construction: `le[a·n + b]` = value(a) ≤ value(b) is proven.
#[derive(Debug, Clone)]
struct Known {
    n: usize,
    le: Vec<bool>,
}

impl Known {
    fn new(n: usize) -> Known {
        let mut le = vec![false; n * n];
        for i in 0..n {
            le[i * n + i] = true;
        }
        Known { n, le }
    }
    fn get(&self, a: usize, b: usize) -> bool {
        self.le[a * self.n + b]
    }
    fn set(&mut self, a: usize, b: usize, v: bool) {
        self.le[a * self.n + b] = v;
    }
    fn swap(&mut self, i: usize, j: usize) {
        let n = self.n;
        for w in 0..n {
            self.le.swap(i * n + w, j * n + w);
        }
        for w in 0..n {
            self.le.swap(w * n + i, w * n + j);
        }
    }
}

/// Knuth's merge exchange (Batcher's sort, TAOCP 5.2.2 Algorithm M) for
/// `n` wires: a list of (i, j), i < j, minimum to i.
fn merge_exchange(n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if n < 2 {
        return out;
    }
    let t = usize::BITS - (n - 1).leading_zeros();
    let top = 1usize << (t - 1);
    let mut p = top;
    while p > 0 {
        let (mut q, mut r, mut d) = (top, 0usize, p);
        loop {
            for i in 0..n - d {
                if i & p == r {
                    out.push((i, i + d));
                }
            }
            if q == p {
                break;
            }
            d = q - p;
            q >>= 1;
            r = p;
        }
        p >>= 1;
    }
    out
}

/// A network for `n` wires with no known order, pruned to the wires in
/// `keep` (their final ranks). Returns the network, the slots to load
/// (slot, wire) and the slot of every rank (usize::MAX when not kept).
fn compile(n: usize, out_rank: usize, keep: &[usize]) -> (Net, Vec<(usize, usize)>, Vec<usize>) {
    compile_with(n, Known::new(n), out_rank, keep)
}

/// Runs the merge-exchange sort symbolically over wires whose known order
/// is `known`: comparisons already decided are dropped (or become a
/// relabelling), then everything that does not reach a kept rank is pruned.
fn compile_with(
    n: usize,
    mut known: Known,
    out_rank: usize,
    keep: &[usize],
) -> (Net, Vec<(usize, usize)>, Vec<usize>) {
    // phys[w] = the physical slot holding logical wire w's value.
    let mut phys: Vec<usize> = (0..n).collect();
    let mut ops: Vec<(usize, usize)> = Vec::new();
    for (i, j) in merge_exchange(n) {
        if known.get(i, j) {
            continue;
        }
        if known.get(j, i) {
            phys.swap(i, j);
            known.swap(i, j);
            continue;
        }
        ops.push((phys[i], phys[j]));
        for w in 0..n {
            if w == i || w == j {
                continue;
            }
            let (wi, wj) = (known.get(w, i), known.get(w, j));
            let (iw, jw) = (known.get(i, w), known.get(j, w));
            known.set(w, i, wi && wj);
            known.set(i, w, iw || jw);
            known.set(w, j, wi || wj);
            known.set(j, w, iw && jw);
        }
        known.set(i, j, true);
        known.set(j, i, false);
    }
    // Backward pruning from the kept ranks.
    let mut needed = vec![false; n];
    for &r in keep {
        needed[phys[r]] = true;
    }
    let mut kept: Vec<Op> = Vec::new();
    for &(p, q) in ops.iter().rev() {
        let (np, nq) = (needed[p], needed[q]);
        if !np && !nq {
            continue;
        }
        kept.push(match (np, nq) {
            (true, true) => Op::Both(p as u16, q as u16),
            (true, false) => Op::Min(p as u16, q as u16),
            _ => Op::Max(p as u16, q as u16),
        });
        needed[p] = true;
        needed[q] = true;
    }
    kept.reverse();
    // Compact the slots that are used.
    let mut compact = vec![usize::MAX; n];
    let mut slots = 0;
    let mut use_slot = |s: usize, compact: &mut Vec<usize>| -> usize {
        if compact[s] == usize::MAX {
            compact[s] = slots;
            slots += 1;
        }
        compact[s]
    };
    let mut init = Vec::new();
    for (s, &nd) in needed.iter().enumerate() {
        if nd {
            let c = use_slot(s, &mut compact);
            init.push((c, s));
        }
    }
    let ops: Vec<Op> = kept
        .into_iter()
        .map(|op| match op {
            Op::Both(p, q) => Op::Both(compact[p as usize] as u16, compact[q as usize] as u16),
            Op::Min(p, q) => Op::Min(compact[p as usize] as u16, compact[q as usize] as u16),
            Op::Max(p, q) => Op::Max(compact[p as usize] as u16, compact[q as usize] as u16),
        })
        .collect();
    let mut rank_slot = vec![usize::MAX; n];
    for &r in keep {
        rank_slot[r] = compact[phys[r]];
    }
    let out = if out_rank < n {
        compact[phys[out_rank]]
    } else {
        0
    };
    (Net { ops, slots, out }, init, rank_slot)
}

#[inline(always)]
fn two_rows<T>(buf: &mut [T], stride: usize, w: usize, p: usize, q: usize) -> (&mut [T], &mut [T]) {
    if p < q {
        let (lo, hi) = buf.split_at_mut(q * stride);
        (&mut lo[p * stride..p * stride + w], &mut hi[..w])
    } else {
        let (lo, hi) = buf.split_at_mut(p * stride);
        (&mut hi[..w], &mut lo[q * stride..q * stride + w])
    }
}

/// Runs `ops` over the first `w` lanes of rows `stride` apart. The loops
/// are plain zips of two rows: the compiler turns each into packed min/max.
fn run_ops<T: RankValue>(buf: &mut [T], stride: usize, w: usize, ops: &[Op]) {
    for op in ops {
        match *op {
            Op::Both(p, q) => {
                let (a, b) = two_rows(buf, stride, w, p as usize, q as usize);
                for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                    let (u, v) = (*x, *y);
                    let lt = v < u;
                    *x = if lt { v } else { u };
                    *y = if lt { u } else { v };
                }
            }
            Op::Min(p, q) => {
                let (a, b) = two_rows(buf, stride, w, p as usize, q as usize);
                for (x, y) in a.iter_mut().zip(b.iter()) {
                    let (u, v) = (*x, *y);
                    *x = if v < u { v } else { u };
                }
            }
            Op::Max(p, q) => {
                let (a, b) = two_rows(buf, stride, w, p as usize, q as usize);
                for (x, y) in a.iter().zip(b.iter_mut()) {
                    let (u, v) = (*x, *y);
                    *y = if v < u { u } else { v };
                }
            }
        }
    }
}

/// scipy.ndimage.median_filter(a, size, mode=..., cval=...) (origin 0).
pub fn median_filter<T: RankValue>(
    a: ArrayViewD<'_, T>,
    size: &[usize],
    mode: Boundary,
) -> Result<ArrayD<T>, RankError> {
    RankFilter::new(size, Statistic::Median, mode)?.apply(a)
}

/// scipy.ndimage.rank_filter(a, rank, size, mode=..., cval=...) (origin 0).
pub fn rank_filter<T: RankValue>(
    a: ArrayViewD<'_, T>,
    rank: i64,
    size: &[usize],
    mode: Boundary,
) -> Result<ArrayD<T>, RankError> {
    RankFilter::new(size, Statistic::Rank(rank), mode)?.apply(a)
}

/// scipy.ndimage.percentile_filter(a, percentile, size, mode=..., cval=...) (origin 0).
pub fn percentile_filter<T: RankValue>(
    a: ArrayViewD<'_, T>,
    percentile: f64,
    size: &[usize],
    mode: Boundary,
) -> Result<ArrayD<T>, RankError> {
    RankFilter::new(size, Statistic::Percentile(percentile), mode)?.apply(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn small(&mut self, k: u64) -> f64 {
            (self.next() % k) as f64
        }
    }

    /// Direct definition: every window gathered through the mode's index
    /// map and sorted.
    fn brute<T: RankValue>(
        a: &ArrayD<T>,
        size: &[usize],
        rank: usize,
        mode: Boundary,
    ) -> ArrayD<T> {
        let shape = a.shape().to_vec();
        let fill = match mode {
            Boundary::Constant(c) => T::from_f64(c),
            _ => T::default(),
        };
        ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
            let n: usize = size.iter().product();
            let mut w = Vec::with_capacity(n);
            for f in 0..n {
                let mut rem = f;
                let mut pos = vec![0usize; shape.len()];
                let mut outside = false;
                for ax in (0..shape.len()).rev() {
                    let k = rem % size[ax];
                    rem /= size[ax];
                    let g = idx[ax] as isize + k as isize - (size[ax] / 2) as isize;
                    match mode.index(g, shape[ax]) {
                        Some(i) => pos[ax] = i,
                        None => outside = true,
                    }
                }
                w.push(if outside { fill } else { a[IxDyn(&pos)] });
            }
            w.sort_by(|x, y| x.partial_cmp(y).unwrap_or(Ordering::Equal));
            w[rank]
        })
    }

    fn random(shape: &[usize], levels: u64, seed: u64) -> ArrayD<f64> {
        let mut r = Rng(seed);
        ArrayD::from_shape_fn(IxDyn(shape), |_| r.small(levels) - (levels / 2) as f64)
    }

    #[test]
    fn merge_exchange_sorts_every_zero_one_input() {
        for n in 1..=12usize {
            let net = merge_exchange(n);
            for bits in 0u32..(1 << n) {
                let mut v: Vec<u32> = (0..n).map(|i| (bits >> i) & 1).collect();
                for &(i, j) in &net {
                    if v[j] < v[i] {
                        v.swap(i, j);
                    }
                }
                assert!(v.windows(2).all(|w| w[0] <= w[1]), "n={n} bits={bits:b}");
            }
        }
    }

    #[test]
    fn networks_select_every_rank() {
        let sizes: &[&[usize]] = &[
            &[3],
            &[5],
            &[2, 2],
            &[3, 3],
            &[1, 4],
            &[4, 1],
            &[3, 2],
            &[2, 5],
            &[3, 3, 3],
            &[1, 3, 3],
            &[2, 2, 3],
            &[5, 1, 1],
            &[1, 1, 7],
        ];
        for (si, size) in sizes.iter().enumerate() {
            let shape: Vec<usize> = size.iter().map(|&s| s + 5).collect();
            let a = random(&shape, 7, 99 + si as u64);
            let n: usize = size.iter().product();
            for rank in 0..n {
                let f = RankFilter::new(size, Statistic::Rank(rank as i64), Boundary::Reflect)
                    .expect("filter");
                let got = f.apply(a.view()).expect("apply");
                let want = brute(&a, size, rank, Boundary::Reflect);
                assert_eq!(got, want, "size {size:?} rank {rank}");
                let ai = a.mapv(|v| v as i16);
                assert_eq!(
                    f.apply(ai.view()).expect("i16"),
                    want.mapv(|v| v as i16),
                    "i16 size {size:?} rank {rank}"
                );
            }
        }
    }

    #[test]
    fn the_largest_networks_select_correctly() {
        for (si, size) in [[5usize, 5, 5], [1, 5, 24], [4, 1, 31]].iter().enumerate() {
            let n: usize = size.iter().product();
            assert!(n <= NETWORK_MAX);
            let shape: Vec<usize> = size.iter().map(|&s| s + 3).collect();
            let a = random(&shape, 9, 7 + si as u64);
            for rank in [1, n / 3, n / 2, n - 2] {
                let f = RankFilter::new(size, Statistic::Rank(rank as i64), Boundary::Mirror)
                    .expect("filter");
                assert!(matches!(f.method, Method::Network(_)));
                let want = brute(&a, size, rank, Boundary::Mirror);
                assert_eq!(
                    f.apply(a.view()).expect("apply"),
                    want,
                    "{size:?} rank {rank}"
                );
            }
        }
    }

    #[test]
    fn every_mode_and_the_scalar_path() {
        let a = random(&[7, 9], 50, 5);
        for mode in [
            Boundary::Reflect,
            Boundary::Mirror,
            Boundary::Nearest,
            Boundary::Wrap,
            Boundary::Constant(3.5),
        ] {
            for size in [[3usize, 3], [5, 4], [12, 11], [1, 20]] {
                let f = RankFilter::median(&size, mode).expect("median");
                let want = brute(&a, &size, f.rank(), mode);
                assert_eq!(f.apply(a.view()).expect("apply"), want, "{mode:?} {size:?}");
            }
        }
    }

    #[test]
    fn scipy_select_replica_without_nan_is_the_order_statistic() {
        let mut r = Rng(3);
        for n in 1..40 {
            let v: Vec<f64> = (0..n).map(|_| r.small(9)).collect();
            let mut s = v.clone();
            s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
            for (k, &want) in s.iter().enumerate() {
                assert_eq!(scipy_select(&v, k), want);
            }
        }
        // A NaN stops both scans: traced by hand through NI_Select.
        assert_eq!(scipy_select(&[2.0, f64::NAN, 1.0], 1), 1.0);
    }

    #[test]
    fn percentile_and_rank_conversions_follow_scipy() {
        assert_eq!(resolve_rank(27, Statistic::Median), Ok(13));
        assert_eq!(resolve_rank(4, Statistic::Median), Ok(2));
        assert_eq!(resolve_rank(27, Statistic::Percentile(50.0)), Ok(13));
        assert_eq!(resolve_rank(27, Statistic::Percentile(100.0)), Ok(26));
        assert_eq!(resolve_rank(27, Statistic::Percentile(-25.0)), Ok(20));
        assert_eq!(resolve_rank(10, Statistic::Rank(-1)), Ok(9));
        assert!(resolve_rank(10, Statistic::Rank(10)).is_err());
        assert!(resolve_rank(10, Statistic::Percentile(101.0)).is_err());
    }

    /// A block cut from `a` with garbage outside the array.
    fn cut(a: &ArrayD<f64>, lo: &[isize], hi: &[isize]) -> ArrayD<f64> {
        let shape: Vec<usize> = lo.iter().zip(hi).map(|(l, h)| (h - l) as usize).collect();
        ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
            let g: Vec<isize> = (0..shape.len())
                .map(|ax| idx[ax] as isize + lo[ax])
                .collect();
            if g.iter()
                .zip(a.shape())
                .all(|(&x, &n)| x >= 0 && (x as usize) < n)
            {
                let gi: Vec<usize> = g.iter().map(|&x| x as usize).collect();
                a[IxDyn(&gi)]
            } else {
                f64::NAN
            }
        })
    }

    #[test]
    fn blocks_with_halo_tile_the_whole_array_result() {
        let clean = random(&[9, 10, 11], 1000, 11);
        let mut with_nan = clean.clone();
        with_nan[[4, 4, 4]] = f64::NAN;
        with_nan[[0, 9, 3]] = f64::NAN;
        let shape = clean.shape().to_vec();
        for mode in [
            Boundary::Reflect,
            Boundary::Mirror,
            Boundary::Nearest,
            Boundary::Constant(-2.0),
            Boundary::Zero,
        ] {
            for (size, stat) in [
                (vec![3usize, 3, 3], Statistic::Median),
                (vec![1, 3, 2], Statistic::Percentile(30.0)),
                (vec![2, 3, 3], Statistic::Rank(0)),
                (vec![3, 1, 3], Statistic::Rank(-1)),
            ] {
                let f = RankFilter::new(&size, stat, mode).expect("filter");
                // With a NaN, scipy's min/max scan carries state along the
                // line, so chunks match only without NaN (see the module doc).
                let a = if matches!(f.method, Method::Extreme { .. }) {
                    &clean
                } else {
                    &with_nan
                };
                let whole = f.apply(a.view()).expect("whole");
                let h = f.halo();
                for z0 in (0..9).step_by(4) {
                    for y0 in (0..10).step_by(3) {
                        for x0 in (0..11).step_by(5) {
                            let c0 = [z0, y0, x0];
                            let c1: Vec<usize> = (0..3)
                                .map(|ax| (c0[ax] + [4, 3, 5][ax]).min(shape[ax]))
                                .collect();
                            let lo: Vec<isize> = (0..3)
                                .map(|ax| c0[ax] as isize - h[ax].0 as isize)
                                .collect();
                            let hi: Vec<isize> =
                                (0..3).map(|ax| (c1[ax] + h[ax].1) as isize).collect();
                            let blk = cut(a, &lo, &hi);
                            let geom = Geometry {
                                origin: lo.clone(),
                                array: shape.clone(),
                            };
                            let got = f.filter_block(blk.view(), &geom).expect("block");
                            let want = whole.slice_each_axis(|ax| {
                                let i = ax.axis.index();
                                Slice::from(c0[i]..c1[i])
                            });
                            for (g, w) in got.iter().zip(want.iter()) {
                                assert!(
                                    g == w || (g.is_nan() && w.is_nan()),
                                    "{mode:?} {size:?} {stat:?} at {c0:?}: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn wrap_on_a_split_axis_is_an_error_and_rows_split_freely() {
        let a = random(&[6, 8], 100, 2);
        let f = RankFilter::median(&[3, 3], Boundary::Wrap).expect("f");
        let blk = cut(&a, &[-1, -1], &[4, 9]);
        let geom = Geometry {
            origin: vec![-1, -1],
            array: vec![6, 8],
        };
        assert!(matches!(
            f.filter_block(blk.view(), &geom),
            Err(RankError::Boundary(_))
        ));
        let f = RankFilter::median(&[3, 3], Boundary::Reflect).expect("f");
        let whole = f.apply(a.view()).expect("whole");
        let blk = cut(&a, &[-1, -1], &[7, 9]);
        let prep = f.prepare(blk.view(), &geom).expect("prep");
        let mut out = vec![0.0; prep.out_len()];
        let (top, bottom) = out.split_at_mut(2 * prep.row_len());
        f.filter_rows(&prep, 0..2, top).expect("top");
        f.filter_rows(&prep, 2..6, bottom).expect("bottom");
        assert_eq!(out, whole.into_raw_vec_and_offset().0);
        assert!(f.filter_rows(&prep, 0..7, &mut [0.0; 56]).is_err());
        let empty = ArrayD::<f64>::zeros(IxDyn(&[0, 4]));
        assert_eq!(f.apply(empty.view()).expect("empty").shape(), &[0, 4]);
        assert!(matches!(
            f.apply(ArrayD::<f64>::zeros(IxDyn(&[4])).view()),
            Err(RankError::SizeAxes { got: 2, ndim: 1 })
        ));
    }
}

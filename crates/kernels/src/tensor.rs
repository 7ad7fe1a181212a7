//! Symmetric eigen-decomposition and the structure tensor.

use std::cell::RefCell;

use blockflow_core::Element;

use crate::filters::{gaussian_kernel1d, pad_axis, Boundary, Geometry};
use crate::simd::{self, Isa};

/// Eigenvalues of `[[a, b], [b, c]]`, ascending (as `numpy.linalg.eigh`):
/// `m ∓ sqrt(((a - c)/2)² + b²)` with `m = (a + c)/2`.
#[inline]
pub fn eigh2(a: f64, b: f64, c: f64) -> [f64; 2] {
    let m = 0.5 * (a + c);
    let d = (0.25 * (a - c) * (a - c) + b * b).sqrt();
    [m - d, m + d]
}

/// Eigenvalues (ascending) and unit eigenvectors (columns, `v[i][k]` is
/// component `i` of the vector for value `k`) of `[[a, b], [b, c]]`.
pub fn eigh2_vectors(a: f64, b: f64, c: f64) -> ([f64; 2], [[f64; 2]; 2]) {
    let l = eigh2(a, b, c);
    if b == 0.0 {
        // Already diagonal: the axes, in the order of the values.
        return if a <= c {
            (l, [[1.0, 0.0], [0.0, 1.0]])
        } else {
            (l, [[0.0, 1.0], [1.0, 0.0]])
        };
    }
    // For the larger value, (b, l1 - a) or (l1 - c, b): take the longer.
    let (x1, y1) = if (l[1] - a).abs() >= (l[1] - c).abs() {
        (b, l[1] - a)
    } else {
        (l[1] - c, b)
    };
    let n = x1.hypot(y1);
    let (x1, y1) = (x1 / n, y1 / n);
    // The smaller value's vector is orthogonal.
    (l, [[-y1, x1], [x1, y1]])
}

/// Eigenvalues (ascending) and unit eigenvectors (columns) of a symmetric
/// 3×3 matrix, by cyclic Jacobi rotations (accurate to rounding, also for
/// repeated eigenvalues).
pub fn eigh3(m: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut a = m;
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..50 {
        let off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2];
        let scale = a[0][0] * a[0][0] + a[1][1] * a[1][1] + a[2][2] * a[2][2] + off;
        if off <= 1e-36 * scale || off == 0.0 {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            for row in a.iter_mut() {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (rp, rq) = (a[p], a[q]);
            for k in 0..3 {
                a[p][k] = c * rp[k] - s * rq[k];
                a[q][k] = s * rp[k] + c * rq[k];
            }
            for row in v.iter_mut() {
                let (vkp, vkq) = (row[p], row[q]);
                row[p] = c * vkp - s * vkq;
                row[q] = s * vkp + c * vkq;
            }
        }
    }
    let mut order = [0usize, 1, 2];
    order.sort_by(|&i, &j| a[i][i].total_cmp(&a[j][j]));
    let vals = order.map(|i| a[i][i]);
    let mut vecs = [[0.0; 3]; 3];
    for (k, &i) in order.iter().enumerate() {
        for r in 0..3 {
            vecs[r][k] = v[r][i];
        }
    }
    (vals, vecs)
}

/// How the gradient is taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gradient {
    /// `x[i+1] - x[i]`, computed in the input's precision as the seed does.
    FiniteDifference,
    /// Correlation with `_gaussian_kernel1d(sigma, 1, radius)` (the seed's
    /// numba stencil: minus scipy's `gaussian_filter1d(order=1)`).
    GaussianDerivative { sigma: f64, radius: usize },
}

/// Parameters of the structure tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorParams {
    pub gradient: Gradient,
    /// Gaussian window (`_gaussian_kernel1d(sigma, 0, radius)`).
    pub window_sigma: f64,
    pub window_radius: usize,
    pub mode: Boundary,
}

impl TensorParams {
    /// The seed's parameters: Gaussian derivative σ 1.5, radius 10; window σ 2, radius 10.
    pub fn seed(mode: Boundary) -> Self {
        TensorParams {
            gradient: Gradient::GaussianDerivative {
                sigma: 1.5,
                radius: 10,
            },
            window_sigma: 2.0,
            window_radius: 10,
            mode,
        }
    }

    /// The gradient's weights and (before, after) reach.
    pub fn gradient_weights(&self) -> (Vec<f64>, usize, usize) {
        match self.gradient {
            Gradient::FiniteDifference => (vec![-1.0, 1.0], 0, 1),
            Gradient::GaussianDerivative { sigma, radius } => {
                (gaussian_kernel1d(sigma, 1, radius), radius, radius)
            }
        }
    }

    /// Halo the whole computation needs on each side of each image axis.
    pub fn halo(&self) -> (usize, usize) {
        let (_, gb, ga) = self.gradient_weights();
        (gb + self.window_radius, ga + self.window_radius)
    }
}

/// The smoothed structure tensor `(Sxx, Sxy, Syy)` of an image of shape
/// `(H, W, C)` (row-major float64), one tensor per channel, computed as the
/// seed does it step by step: gradient along x (axis 1) and y (axis 0),
/// the three products, smoothing by the window along x then y. Every step
/// extends its own input by the boundary mode (scipy's behaviour when the
/// filters are called one after the other); with [`Boundary::Zero`] each
/// step writes 0 where its window leaves the image (the seed under dask's
/// `boundary='none'`, which leaves a zero frame of gradient + window radius).
pub fn structure_tensor(img: &[f64], shape: &[usize], p: &TensorParams) -> [Vec<f64>; 3] {
    // The whole image is one block whose halo lies entirely outside the
    // image: placeholders that every step re-extends by its mode.
    let (hb, ha) = p.halo();
    let (a, s0) = pad_axis(img, shape, 0, hb, ha, Boundary::Zero);
    let (a, s1) = pad_axis(&a, &s0, 1, hb, ha, Boundary::Zero);
    let geom = Geometry {
        origin: vec![-(hb as isize), -(hb as isize), 0],
        array: shape.to_vec(),
    };
    structure_tensor_block(&a, &s1, &geom, p)
        .expect("the padded image holds every position the modes read")
        .0
}

/// The smoothed structure tensor of the core of a block of an `(H, W, C)`
/// image that holds its halo ([`TensorParams::halo`] on axes 0 and 1):
/// the same numbers as [`structure_tensor`] on the whole image, for the
/// block's core, as three `(h, w, C)` arrays and the core's shape.
pub fn structure_tensor_block(
    block: &[f64],
    shape: &[usize],
    geom: &Geometry,
    p: &TensorParams,
) -> Result<([Vec<f64>; 3], Vec<usize>), String> {
    let (hb, wb) = (shape.first().copied(), shape.get(1).copied());
    let c = shape.get(2).copied().unwrap_or(1);
    let (gb, ga) = p.halo();
    let core_len = |n: Option<usize>| n.map_or(0, |n| n.saturating_sub(gb + ga));
    let n = core_len(hb) * core_len(wb) * c;
    let mut s = [vec![0.0; n], vec![0.0; n], vec![0.0; n]];
    let core = structure_tensor_rows(
        block,
        shape,
        geom,
        p,
        Isa::Avx512Fma,
        false,
        |ch, y, rows| {
            for (k, row) in rows.iter().enumerate() {
                let w = row.len();
                for (x, v) in row.iter().enumerate() {
                    s[k][(y * w + x) * c + ch] = *v;
                }
            }
        },
    )?;
    Ok((s, core))
}

/// What [`feature_map_block`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureMap {
    /// The seed's feature map, `(h, w)` (see [`features`]).
    Features,
    /// `l0 + l1` per pixel and channel, `(h, w, C)`.
    Energy,
    /// `(l1 - l0) / (l0 + l1)` per pixel and channel, `(h, w, C)`.
    Anisotropy,
}

thread_local! {
    /// Per-thread buffers of the fused kernel, kept between chunks.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// Per-pixel sums over channels of [`feature_map_block`].
    static SUMS: RefCell<[Vec<f64>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// The seed's feature map (or energy, or anisotropy) of the core of a
/// block with its halo, straight from the fused kernel's rows: the numbers
/// of [`features`] / [`energy_anisotropy`] on [`structure_tensor_block`].
/// Returns the values and their shape. `isa` caps the instruction set
/// (`Isa::Avx512Fma`: the best this CPU has).
pub fn feature_map_block<T: Element>(
    block: &[T],
    shape: &[usize],
    geom: &Geometry,
    p: &TensorParams,
    map: FeatureMap,
    isa: Isa,
) -> Result<(Vec<f64>, Vec<usize>), String> {
    SUMS.with(|sums| {
        let mut fresh = [Vec::new(), Vec::new()];
        let mut guard = sums.try_borrow_mut();
        let [asum, esum] = match guard.as_deref_mut() {
            Ok(s) => s,
            Err(_) => &mut fresh,
        };
        let c = shape.get(2).copied().unwrap_or(1);
        let (gb, ga) = p.halo();
        let core_len = |ax: usize| shape.get(ax).map_or(0, |n| n.saturating_sub(gb + ga));
        let (h, w) = (core_len(0), core_len(1));
        let per_px = if map == FeatureMap::Features { 1 } else { c };
        let mut out = vec![0.0; h * w * per_px];
        if map == FeatureMap::Features {
            for v in [&mut *asum, &mut *esum] {
                v.clear();
                v.resize(h * w, 0.0);
            }
        }
        let last = c - 1;
        let cf = c as f64;
        let core = structure_tensor_rows(block, shape, geom, p, isa, true, |ch, y, [e, an, _]| {
            let n = e.len();
            let at = y * n;
            let pixels = e.iter().copied().zip(an.iter().copied());
            match map {
                FeatureMap::Energy | FeatureMap::Anisotropy => {
                    let o = &mut out[at * c..(at + n) * c];
                    for (px, (e, an)) in o.chunks_exact_mut(c).zip(pixels) {
                        px[ch] = if map == FeatureMap::Energy { e } else { an };
                    }
                }
                FeatureMap::Features => {
                    let o = &mut out[at..at + n];
                    let (asum, esum) = (&mut asum[at..at + n], &mut esum[at..at + n]);
                    // One loop per case, without branches, so that it vectorises.
                    if ch == 0 {
                        for (((f, s_a), s_e), (e, an)) in
                            o.iter_mut().zip(&mut *asum).zip(&mut *esum).zip(pixels)
                        {
                            (*f, *s_a, *s_e) = (e, an, e);
                        }
                    } else {
                        for ((s_a, s_e), (e, an)) in
                            asum.iter_mut().zip(esum.iter_mut()).zip(pixels)
                        {
                            (*s_a, *s_e) = (*s_a + an, *s_e + e);
                        }
                    }
                    if ch == last {
                        // `f` holds channel 0's energy.
                        for ((f, s_a), s_e) in o.iter_mut().zip(asum.iter()).zip(esum.iter()) {
                            *f = (1.0 - *s_a / cf) * (*f * *f / *s_e);
                        }
                    }
                }
            }
        })?;
        let dims = if map == FeatureMap::Features {
            core[..2].to_vec()
        } else {
            core
        };
        Ok((out, dims))
    })
}

/// The fused structure-tensor kernel on a block of an `(H, W, C)` image
/// (row-major, any element type) that holds its halo: calls `emit(channel,
/// row, [sxx, sxy, syy])` with each row of the core's smoothed tensor, for
/// each channel in turn, and returns the core's shape `(h, w, C)`. With
/// `eigen`, the rows are `[energy, anisotropy, syy]` instead: `l0 + l1` and
/// `(l1 - l0) / (l0 + l1)` of the eigenvalues ([`eigh2`]).
///
/// The numbers are the seed's step by step (gradient along x and y, the
/// products, the window along x then y, each step extending its own input
/// by the boundary mode at the array's true edges, `none` zeroing the
/// outputs whose window leaves the array, the finite-difference path
/// rounding gradients and products to float32), computed row by row in
/// per-thread buffers: the gradient rows, their products and the window
/// along x for one row of the block at a time, the window along y as soon
/// as the rows it reads are done. Both correlations fold their taps about
/// the centre (`w[j]·(x[j] ± x[k-1-j])`, the Gaussian derivative being
/// antisymmetric and the window symmetric) and accumulate a strip of
/// `4 × W` outputs in registers over all taps, with fused multiply-adds
/// where `isa` (capped by the CPU) has them: the order of operations
/// differs from scipy's, so results agree to rounding (1e-15 relative
/// against the tap-by-tap order), not bit for bit. Every output element is
/// computed by the same operations wherever it lies in the block, so
/// chunking does not change a bit.
pub fn structure_tensor_rows<T: Element>(
    block: &[T],
    shape: &[usize],
    geom: &Geometry,
    p: &TensorParams,
    isa: Isa,
    eigen: bool,
    emit: impl FnMut(usize, usize, [&[f64]; 3]),
) -> Result<Vec<usize>, String> {
    let &[hb, wb, c] = shape else {
        return Err(format!(
            "the structure tensor takes an (H, W, C) block, not {shape:?}"
        ));
    };
    if block.len() != hb * wb * c || geom.origin.len() < 2 || geom.array.len() < 2 {
        return Err(format!(
            "a block of {} values does not have the shape {shape:?} of {geom:?}",
            block.len()
        ));
    }
    let (gb, ga) = p.halo();
    if hb <= gb + ga || wb <= gb + ga {
        return Err(format!(
            "a block of {hb} x {wb} is no larger than the halo {gb} + {ga} the structure tensor needs"
        ));
    }
    SCRATCH.with(|cell| {
        let mut fresh = Scratch::default();
        let mut guard = cell.try_borrow_mut();
        let scratch = match guard.as_deref_mut() {
            Ok(s) => s,
            Err(_) => &mut fresh,
        };
        scratch.prepare(p);
        let job = Job {
            block,
            dims: Dims::new(hb, wb, c, geom, p),
            mode: p.mode,
            fd: p.gradient == Gradient::FiniteDifference,
            eigen,
            s: scratch,
            emit,
        };
        simd::run(isa, job).1
    })?;
    let (h, w) = (hb - gb - ga, wb - gb - ga);
    Ok(vec![h, w, c])
}

/// Per-thread buffers of the fused kernel (grown, never shrunk).
#[derive(Default)]
struct Scratch {
    /// The parameters the weights below are for.
    key: Option<TensorParams>,
    /// The gradient's folded weights (unused for finite differences).
    grad: Folded,
    /// The window's folded weights.
    win: Folded,
    /// One channel of the block, `(hb + 1) × wb`: the last row holds the
    /// constant mode's value.
    plane: Vec<f64>,
    /// The products smoothed along x, `(hp + 1) × wc` each (the last row
    /// the constant's value).
    sx: [Vec<f64>; 3],
    gx: Vec<f64>,
    gy: Vec<f64>,
    prod: [Vec<f64>; 3],
    out: [Vec<f64>; 3],
    /// The row each row of the block (and of the products) reads after
    /// the boundary extension along y.
    gmap: Vec<usize>,
    smap: Vec<usize>,
    /// `ready[t]`: rows of `sx` that must be done before rows reading up
    /// to `t` are smoothed along y.
    ready: Vec<usize>,
    offs: Vec<usize>,
}

/// Odd-length correlation weights folded about their centre:
/// `w[j] = half[j]`, `w[k-1-j] = ±half[j]` (`-` when `anti`), `w[r] = center`.
#[derive(Debug, Clone, Default)]
struct Folded {
    half: Vec<f64>,
    center: f64,
    anti: bool,
}

impl Folded {
    fn new(w: &[f64]) -> Folded {
        let r = w.len() / 2;
        let anti = r > 0 && (0..r).all(|j| w[j] == -w[w.len() - 1 - j]);
        debug_assert!(
            w.len() % 2 == 1 && (anti || (0..r).all(|j| w[j] == w[w.len() - 1 - j])),
            "Gaussian weights are symmetric or antisymmetric"
        );
        Folded {
            half: w[..r].to_vec(),
            center: w[r],
            anti,
        }
    }
}

impl Scratch {
    fn prepare(&mut self, p: &TensorParams) {
        if self.key == Some(*p) {
            return;
        }
        self.grad = match p.gradient {
            Gradient::FiniteDifference => Folded::default(),
            Gradient::GaussianDerivative { sigma, radius } => {
                Folded::new(&gaussian_kernel1d(sigma, 1, radius))
            }
        };
        self.win = Folded::new(&gaussian_kernel1d(p.window_sigma, 0, p.window_radius));
        self.key = Some(*p);
    }
}

/// Sizes and positions of one block.
#[derive(Debug, Clone, Copy)]
struct Dims {
    hb: usize,
    wb: usize,
    c: usize,
    /// Gradient halo before and after, window radius.
    gb: usize,
    ga: usize,
    wr: usize,
    /// The gradients' and products' extent, the core's.
    hp: usize,
    wp: usize,
    hc: usize,
    wc: usize,
    /// Global position of the block's first element, the array's extent.
    oy: isize,
    ox: isize,
    h: usize,
    w: usize,
}

impl Dims {
    fn new(hb: usize, wb: usize, c: usize, geom: &Geometry, p: &TensorParams) -> Dims {
        let (_, gb, ga) = match p.gradient {
            Gradient::FiniteDifference => ((), 0, 1),
            Gradient::GaussianDerivative { radius, .. } => ((), radius, radius),
        };
        let wr = p.window_radius;
        let (hp, wp) = (hb - gb - ga, wb - gb - ga);
        Dims {
            hb,
            wb,
            c,
            gb,
            ga,
            wr,
            hp,
            wp,
            hc: hp - 2 * wr,
            wc: wp - 2 * wr,
            oy: geom.origin[0],
            ox: geom.origin[1],
            h: geom.array[0],
            w: geom.array[1],
        }
    }
}

/// The outputs `lo..hi` of `n` whose window of `k` values, starting at
/// global position `start + i` for output `i`, lies inside `0..len`.
fn inside(n: usize, start: isize, k: usize, len: usize) -> (usize, usize) {
    let lo = (-start).clamp(0, n as isize) as usize;
    let hi = (len as isize - start - k as isize + 1).clamp(lo as isize, n as isize) as usize;
    (lo, hi)
}

/// For each of `n` rows starting at global `origin` along an axis of
/// `len`, the row the mode reads there: itself inside the array, the
/// mode's extension outside it (`fill` for a constant value; itself for
/// `none`, whose outputs reading there are zeroed).
fn row_map(
    map: &mut Vec<usize>,
    n: usize,
    origin: isize,
    len: usize,
    mode: Boundary,
    fill: usize,
) -> Result<(), String> {
    map.clear();
    for i in 0..n {
        let g = origin + i as isize;
        if mode == Boundary::Zero || (g >= 0 && (g as usize) < len) {
            map.push(i);
            continue;
        }
        match (len > 0).then(|| mode.index(g, len)).flatten() {
            None => map.push(fill),
            Some(src) => map.push(local(src, origin, n, mode, 0)?),
        }
    }
    Ok(())
}

/// The block's index of array position `src`, or the error `reextend` gives.
fn local(
    src: usize,
    origin: isize,
    n: usize,
    mode: Boundary,
    axis: usize,
) -> Result<usize, String> {
    let l = src as isize - origin;
    if l < 0 || l as usize >= n {
        return Err(format!(
            "the {mode:?} boundary along axis {axis} reads position {src}, outside this chunk and its halo; give axis {axis} one chunk"
        ));
    }
    Ok(l as usize)
}

/// Replaces the values of `row` (global `origin` along an axis of `len`)
/// outside the array by the mode's extension, as `reextend` along axis 1.
fn extend_row(row: &mut [f64], origin: isize, len: usize, mode: Boundary) -> Result<(), String> {
    if mode == Boundary::Zero {
        return Ok(());
    }
    let n = row.len();
    let (lo, hi) = inside(n, origin, 1, len);
    for i in (0..lo).chain(hi..n) {
        let g = origin + i as isize;
        row[i] = match (len > 0).then(|| mode.index(g, len)).flatten() {
            None => mode_fill(mode),
            Some(src) => row[local(src, origin, n, mode, 1)?],
        };
    }
    Ok(())
}

fn mode_fill(mode: Boundary) -> f64 {
    match mode {
        Boundary::Constant(c) => c,
        _ => 0.0,
    }
}

/// One run of the fused kernel (see [`structure_tensor_rows`]).
struct Job<'a, T, E> {
    block: &'a [T],
    dims: Dims,
    mode: Boundary,
    fd: bool,
    /// Emit energy and anisotropy rather than `sxx`, `sxy`.
    eigen: bool,
    s: &'a mut Scratch,
    emit: E,
}

impl<T: Element, E: FnMut(usize, usize, [&[f64]; 3])> simd::Body for Job<'_, T, E> {
    type Output = Result<(), String>;
    #[inline(always)]
    fn run<const FMA: bool, const W: usize>(self) -> Self::Output {
        fused::<FMA, W, T, E>(self)
    }
}

/// Rows of gradients and products done per strip: the passes along y read
/// `STRIP + k - 1` rows of each column tile once from L2, not `k` per row.
const STRIP: usize = 16;
/// Columns per tile of the passes along y: `(STRIP + 20)` rows of 64
/// doubles stay in L1.
const TILE: usize = 64;

/// The body of the fused kernel, compiled once per instruction set.
#[inline(always)]
fn fused<const FMA: bool, const W: usize, T: Element, E: FnMut(usize, usize, [&[f64]; 3])>(
    job: Job<'_, T, E>,
) -> Result<(), String> {
    let Job {
        block,
        dims: d,
        mode,
        fd,
        eigen,
        s,
        mut emit,
    } = job;
    let Scratch {
        grad,
        win,
        plane,
        sx,
        gx,
        gy,
        prod,
        out,
        gmap,
        smap,
        ready,
        offs,
        ..
    } = s;
    let zero = mode == Boundary::Zero;
    let kg = d.gb + d.ga + 1;
    let kw = 2 * d.wr + 1;
    size_buffers(d, mode, plane, sx, gx, gy, prod)?;
    row_maps(d, mode, gmap, smap, ready)?;
    let [gx_in, sx_in] =
        [(d.wp, d.ox, kg), (d.wc, d.ox + d.gb as isize, kw)].map(|(n, s, k)| inside(n, s, k, d.w));
    let [gy_in, out_in] =
        [(d.hp, d.oy, kg), (d.hc, d.oy + d.gb as isize, kw)].map(|(n, s, k)| inside(n, s, k, d.h));
    let zero_outside = |v: &mut [f64], (lo, hi): (usize, usize)| {
        if zero {
            let n = v.len();
            v[..lo].fill(0.0);
            v[hi.max(lo)..n].fill(0.0);
        }
    };
    for ch in 0..d.c {
        load_channel(&mut plane[..d.hb * d.wb], block, d, ch, mode)?;
        let mut next = 0;
        for r0 in (0..d.hp).step_by(STRIP) {
            let r1 = (r0 + STRIP).min(d.hp);
            // The gradient along y of rows r0..r1, down the columns from
            // row r0 of the block.
            offs.clear();
            offs.extend((r0..r1 + kg - 1).map(|t| gmap[t] * d.wb + d.gb));
            along_y::<FMA, W>(&mut gy[..(r1 - r0) * d.wp], d.wp, plane, offs, kg, grad, fd);
            for r in r0..r1 {
                let gy = &mut gy[(r - r0) * d.wp..(r - r0 + 1) * d.wp];
                // The gradient along x on the block's row gb + r.
                offs.clear();
                offs.extend((0..kg).map(|t| (d.gb + r) * d.wb + t));
                correlate::<FMA, W>(gx, plane, offs, 0, grad, fd);
                zero_outside(gx, gx_in);
                if zero && !(gy_in.0..gy_in.1).contains(&r) {
                    gy.fill(0.0);
                }
                products(prod, gx, gy, fd);
                // The window along x, into row r of sx.
                offs.clear();
                offs.extend(0..kw);
                for (pk, sk) in prod.iter_mut().zip(sx.iter_mut()) {
                    extend_row(pk, d.ox + d.gb as isize, d.w, mode)?;
                    let row = &mut sk[r * d.wc..(r + 1) * d.wc];
                    correlate::<FMA, W>(row, pk, offs, 0, win, false);
                    zero_outside(row, sx_in);
                }
            }
            // The window along y for the output rows whose rows are done.
            let mut end = next;
            while end < d.hc && ready[end + kw - 1] <= r1 {
                end += 1;
            }
            if end == next {
                continue;
            }
            offs.clear();
            offs.extend((0..end - next + kw - 1).map(|t| smap[next + t] * d.wc));
            for (ok, sk) in out.iter_mut().zip(sx.iter()) {
                ok.resize((end - next) * d.wc, 0.0);
                along_y::<FMA, W>(ok, d.wc, sk, offs, kw, win, false);
            }
            for y in next..end {
                let at = (y - next) * d.wc..(y - next + 1) * d.wc;
                let [o0, o1, o2] = out;
                let (a, b, c) = (&mut o0[at.clone()], &mut o1[at.clone()], &mut o2[at]);
                if zero && !(out_in.0..out_in.1).contains(&y) {
                    for v in [&mut *a, &mut *b, &mut *c] {
                        v.fill(0.0);
                    }
                }
                if eigen {
                    energy_anisotropy_rows(a, b, c);
                }
                emit(ch, y, [a, b, c]);
            }
            next = end;
        }
    }
    Ok(())
}

/// The rows the passes along y read (`gmap` in the block, `smap` in the
/// products), and `ready[t]`: the rows of the products smoothed along x
/// that must be done before the output rows reading up to row `t`.
fn row_maps(
    d: Dims,
    mode: Boundary,
    gmap: &mut Vec<usize>,
    smap: &mut Vec<usize>,
    ready: &mut Vec<usize>,
) -> Result<(), String> {
    row_map(gmap, d.hb, d.oy, d.h, mode, d.hb)?;
    row_map(smap, d.hp, d.oy + d.gb as isize, d.h, mode, d.hp)?;
    ready.clear();
    ready.extend(smap.iter().scan(0, |m, &r| {
        if r < d.hp {
            *m = (*m).max(r + 1);
        }
        Some(*m)
    }));
    Ok(())
}

/// Channel `ch` of the block as float64, extended along x by the mode.
fn load_channel<T: Element>(
    plane: &mut [f64],
    block: &[T],
    d: Dims,
    ch: usize,
    mode: Boundary,
) -> Result<(), String> {
    for (dst, px) in plane.iter_mut().zip(block.chunks_exact(d.c)) {
        *dst = px[ch].to_f64();
    }
    for row in plane.chunks_exact_mut(d.wb) {
        extend_row(row, d.ox, d.w, mode)?;
    }
    Ok(())
}

/// The products of the gradient rows; all rounded to float32 for finite
/// differences, as the seed computes them in the input's precision.
#[inline(always)]
fn products(prod: &mut [Vec<f64>; 3], gx: &mut [f64], gy: &mut [f64], fd: bool) {
    let round = |v: &mut [f64]| {
        if fd {
            v.iter_mut().for_each(|x| *x = *x as f32 as f64);
        }
    };
    round(gx);
    round(gy);
    let [pxx, pxy, pyy] = prod;
    for (((a, b), c), (g, h)) in pxx
        .iter_mut()
        .zip(pxy.iter_mut())
        .zip(pyy.iter_mut())
        .zip(gx.iter().zip(gy.iter()))
    {
        (*a, *b, *c) = (g * g, g * h, h * h);
    }
    for v in prod.iter_mut() {
        round(v);
    }
}

/// `(sxx, sxy, syy)` rows to energy `l0 + l1` and anisotropy
/// `(l1 - l0) / (l0 + l1)` in place of the first two.
#[inline(always)]
fn energy_anisotropy_rows(a: &mut [f64], b: &mut [f64], c: &[f64]) {
    for ((a, b), c) in a.iter_mut().zip(b.iter_mut()).zip(c) {
        let [l0, l1] = eigh2(*a, *b, *c);
        let e = l0 + l1;
        (*a, *b) = (e, (l1 - l0) / e);
    }
}

/// Sizes the buffers for a block; the last rows of `plane` and `sx` hold
/// the constant mode's value, for the rows the mode fills along y.
fn size_buffers(
    d: Dims,
    mode: Boundary,
    plane: &mut Vec<f64>,
    sx: &mut [Vec<f64>; 3],
    gx: &mut Vec<f64>,
    gy: &mut Vec<f64>,
    prod: &mut [Vec<f64>; 3],
) -> Result<(), String> {
    let fill = mode_fill(mode);
    plane.resize((d.hb + 1) * d.wb, 0.0);
    plane[d.hb * d.wb..].fill(fill);
    for v in sx.iter_mut() {
        v.resize((d.hp + 1) * d.wc, 0.0);
        v[d.hp * d.wc..].fill(fill);
    }
    gx.resize(d.wp, 0.0);
    gy.resize(STRIP * d.wp, 0.0);
    for v in prod.iter_mut() {
        v.resize(d.wp, 0.0);
    }
    Ok(())
}

/// A correlation down the columns: output row `i` (of `out`, rows of
/// `width`) is `Σ_t w[t]·base[offs[i + t] + x]`. Column tiles of about
/// [`TILE`] outside, rows inside, so each tile's input rows are read from
/// L2 once for all the output rows.
#[inline(always)]
fn along_y<const FMA: bool, const W: usize>(
    out: &mut [f64],
    width: usize,
    base: &[f64],
    offs: &[usize],
    k: usize,
    w: &Folded,
    diff: bool,
) {
    let rows = out.len() / width;
    let tiles = (width / TILE).max(1);
    for ti in 0..tiles {
        let (c0, c1) = (ti * width / tiles, (ti + 1) * width / tiles);
        for i in 0..rows {
            let o = &mut out[i * width + c0..i * width + c1];
            correlate::<FMA, W>(o, base, &offs[i..i + k], c0, w, diff);
        }
    }
}

/// `out[i] = Σ_t w[t]·base[offs[t] + col + i]`: folded taps, or the forward
/// difference `base[offs[1] + col + i] - base[offs[0] + col + i]` when `diff`.
#[inline(always)]
fn correlate<const FMA: bool, const W: usize>(
    out: &mut [f64],
    base: &[f64],
    offs: &[usize],
    col: usize,
    w: &Folded,
    diff: bool,
) {
    let n = out.len();
    if diff {
        let (o0, o1) = (offs[0] + col, offs[1] + col);
        let (a, b) = (&base[o0..o0 + n], &base[o1..o1 + n]);
        for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
            *o = b - a;
        }
    } else if w.anti {
        folded::<FMA, true, W>(out, base, offs, col, &w.half, w.center);
    } else {
        folded::<FMA, false, W>(out, base, offs, col, &w.half, w.center);
    }
}

/// Strips of `4 × W` outputs of a folded correlation, each accumulated in
/// registers over every tap and stored once: `acc = center·x[r]`, then
/// `acc += half[j]·(x[j] ± x[2r - j])` for `j` in `0..r` (a fused
/// multiply-add when `FMA`). The last strip overlaps the one before (its
/// outputs come out the same); rows shorter than a strip take the same
/// operations one element at a time.
#[inline(always)]
fn folded<const FMA: bool, const ANTI: bool, const W: usize>(
    out: &mut [f64],
    base: &[f64],
    offs: &[usize],
    col: usize,
    half: &[f64],
    center: f64,
) {
    let n = out.len();
    let r = half.len();
    let strip = 4 * W;
    let pair = |a: f64, b: f64| if ANTI { a - b } else { a + b };
    if n < strip {
        for (i, o) in out.iter_mut().enumerate() {
            let at = |t: usize| base[offs[t] + col + i];
            let mut acc = if center != 0.0 { center * at(r) } else { 0.0 };
            for (j, &h) in half.iter().enumerate() {
                acc = simd::mul_add::<FMA>(h, pair(at(j), at(2 * r - j)), acc);
            }
            *o = acc;
        }
        return;
    }
    let mut i = 0;
    loop {
        let i0 = i.min(n - strip);
        let at = |t: usize| {
            let o = offs[t] + col + i0;
            base[o..o + strip].as_chunks::<W>().0
        };
        let mut acc = [[0.0f64; W]; 4];
        if center != 0.0 {
            for (av, xv) in acc.iter_mut().zip(at(r)) {
                for (a, x) in av.iter_mut().zip(xv) {
                    *a = center * x;
                }
            }
        }
        for (j, &h) in half.iter().enumerate() {
            for ((av, xv), yv) in acc.iter_mut().zip(at(j)).zip(at(2 * r - j)) {
                for ((a, &x), &y) in av.iter_mut().zip(xv).zip(yv) {
                    *a = simd::mul_add::<FMA>(h, pair(x, y), *a);
                }
            }
        }
        let (o, _) = out[i0..i0 + strip].as_chunks_mut::<W>();
        for (ov, av) in o.iter_mut().zip(&acc) {
            *ov = *av;
        }
        if i0 + strip == n {
            break;
        }
        i = i0 + strip;
    }
}

/// Flops of the seed's algorithm on a block of `(hb, wb, C)` with its halo,
/// as the seed writes it (every non-zero tap a multiply and an add, the
/// three products, the eigenvalues and features: 13 flops per pixel and
/// channel plus 9 per pixel, a square root or a division counting one),
/// and the flops the fused kernel executes (folded taps: per pair one add
/// and one multiply-add, plus the centre's multiply where it is not 0).
pub fn flops(p: &TensorParams, hb: usize, wb: usize, c: usize) -> (u64, u64) {
    let (gw, gb, ga) = p.gradient_weights();
    let win = gaussian_kernel1d(p.window_sigma, 0, p.window_radius);
    let (hp, wp) = ((hb - gb - ga) as u64, (wb - gb - ga) as u64);
    let kw = 2 * p.window_radius as u64;
    let (hc, wc) = (hp - kw, wp - kw);
    let nz = |w: &[f64]| w.iter().filter(|v| **v != 0.0).count() as u64;
    let folded = |w: &[f64]| {
        let r = (w.len() / 2) as u64;
        3 * r + u64::from(w[w.len() / 2] != 0.0)
    };
    let grad_exec = if p.gradient == Gradient::FiniteDifference {
        1
    } else {
        folded(&gw)
    };
    let c = c as u64;
    let tail = hp * wp * 3 + hc * wc * 13;
    let nominal = c * (2 * hp * wp * 2 * nz(&gw) + 3 * (hp * wc + hc * wc) * 2 * nz(&win) + tail);
    let executed = c * (2 * hp * wp * grad_exec + 3 * (hp * wc + hc * wc) * folded(&win) + tail);
    (nominal + 9 * hc * wc, executed + 9 * hc * wc)
}

/// The seed's feature map from the smoothed tensor of an `(H, W, C)` image:
/// per channel `energy = l0 + l1` and `anisotropy = (l1 - l0)/energy`;
/// `feature1 = 1 - mean over channels of anisotropy`, `feature2 =
/// energy_0² / Σ_c energy_c`, result `feature1 · feature2`, shape (H, W).
/// Where the energy is 0 the result is NaN, as numpy's 0/0.
pub fn features(s: &[Vec<f64>; 3], h: usize, w: usize, c: usize) -> Vec<f64> {
    let (energy, anisotropy) = energy_anisotropy(s);
    features_from(&energy, &anisotropy, h * w, c)
}

/// Per pixel and channel, from the tensor's eigenvalues: `energy = l0 + l1`
/// and `anisotropy = (l1 - l0) / energy` (NaN where the energy is 0).
pub fn energy_anisotropy(s: &[Vec<f64>; 3]) -> (Vec<f64>, Vec<f64>) {
    s[0].iter()
        .zip(&s[1])
        .zip(&s[2])
        .map(|((&a, &b), &c)| {
            let [l0, l1] = eigh2(a, b, c);
            let e = l0 + l1;
            (e, (l1 - l0) / e)
        })
        .unzip()
}

/// The seed's feature map from energy and anisotropy of `pixels` pixels of `c` channels.
pub fn features_from(energy: &[f64], anisotropy: &[f64], pixels: usize, c: usize) -> Vec<f64> {
    (0..pixels)
        .map(|px| {
            let e = &energy[px * c..(px + 1) * c];
            let a = &anisotropy[px * c..(px + 1) * c];
            let f1 = 1.0 - a.iter().sum::<f64>() / c as f64;
            let total: f64 = e.iter().sum();
            f1 * (e[0] * e[0] / total)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::filters::{crop_axis, run_passes, Pass};

    /// The seed's steps one pass at a time through `run_passes`, tap by tap
    /// without FMA (the implementation before the fused kernel).
    fn reference_block(
        block: &[f64],
        shape: &[usize],
        geom: &Geometry,
        p: &TensorParams,
    ) -> Result<([Vec<f64>; 3], Vec<usize>), String> {
        let (gw, gb, ga) = p.gradient_weights();
        let origin = match p.gradient {
            Gradient::FiniteDifference => -1,
            Gradient::GaussianDerivative { .. } => 0,
        };
        let fd = p.gradient == Gradient::FiniteDifference;
        let round = |mut v: Vec<f64>| {
            if fd {
                v.iter_mut().for_each(|x| *x = *x as f32 as f64);
            }
            v
        };
        let grad = |axis: usize| -> Result<(Vec<f64>, Vec<usize>, Geometry), String> {
            // The other image axis needs no gradient halo: crop it away first.
            let other = 1 - axis;
            let (c, cs) = crop_axis(block, shape, other, gb, shape[other] - gb - ga);
            let mut g = geom.clone();
            g.origin[other] += gb as isize;
            let pass = Pass {
                axis,
                weights: gw.clone(),
                origin,
                mode: p.mode,
            };
            let (out, os) = run_passes(c, &cs, &g, &[pass], false)?;
            g.origin[axis] += gb as isize;
            Ok((round(out), os, g))
        };
        let (gx, gshape, ggeom) = grad(1)?;
        let (gy, _, _) = grad(0)?;
        let win = gaussian_kernel1d(p.window_sigma, 0, p.window_radius);
        let passes = [
            Pass {
                axis: 1,
                weights: win.clone(),
                origin: 0,
                mode: p.mode,
            },
            Pass {
                axis: 0,
                weights: win,
                origin: 0,
                mode: p.mode,
            },
        ];
        let smooth = |prod: Vec<f64>| run_passes(prod, &gshape, &ggeom, &passes, false);
        let (xx, core) = smooth(round(gx.iter().map(|v| v * v).collect()))?;
        let (xy, _) = smooth(round(gx.iter().zip(&gy).map(|(a, b)| a * b).collect()))?;
        let (yy, _) = smooth(round(gy.iter().map(|v| v * v).collect()))?;
        Ok(([xx, xy, yy], core))
    }

    /// A block of an `(h, w, 3)` image cut at `lo` with `shape`, holding
    /// garbage outside the image (which no output may use).
    fn cut(img: &[f64], h: usize, w: usize, lo: [isize; 2], shape: [usize; 2]) -> Vec<f64> {
        let mut b = vec![f64::NAN; shape[0] * shape[1] * 3];
        for y in 0..shape[0] {
            for x in 0..shape[1] {
                let (gy, gx) = (lo[0] + y as isize, lo[1] + x as isize);
                if gy >= 0 && gx >= 0 && (gy as usize) < h && (gx as usize) < w {
                    for k in 0..3 {
                        b[(y * shape[1] + x) * 3 + k] =
                            img[((gy as usize) * w + gx as usize) * 3 + k];
                    }
                }
            }
        }
        b
    }

    #[test]
    fn fused_kernel_matches_the_pass_by_pass_steps_in_every_mode() {
        let (h, w) = (61usize, 83usize);
        let img: Vec<f64> = (0..h * w * 3)
            .map(|i| {
                let (px, k) = (i / 3, i % 3);
                let (y, x) = ((px / w) as f64, (px % w) as f64);
                (0.37 * x + 0.11 * y * (k as f64 + 1.0)).sin() * 100.0
                    + ((i * 7919) % 97) as f64 * 0.01
            })
            .collect();
        let mut worst = [0.0f64; 2];
        for mode in [
            Boundary::Reflect,
            Boundary::Mirror,
            Boundary::Nearest,
            Boundary::Wrap,
            Boundary::Constant(0.0),
            Boundary::Constant(1.5),
            Boundary::Zero,
        ] {
            for gradient in [
                Gradient::GaussianDerivative {
                    sigma: 1.5,
                    radius: 10,
                },
                Gradient::GaussianDerivative {
                    sigma: 1.0,
                    radius: 3,
                },
                Gradient::FiniteDifference,
            ] {
                let p = TensorParams {
                    gradient,
                    window_sigma: 2.0,
                    window_radius: 4,
                    mode,
                };
                let (hb, ha) = p.halo();
                // Whole image, corners, edges, the interior, blocks narrower than a strip.
                let mut cores: Vec<([usize; 2], [usize; 2])> = vec![
                    ([0, 0], [h, w]),
                    ([0, 0], [20, 37]),
                    ([h - 17, w - 40], [17, 40]),
                    ([22, 30], [11, 5]),
                    ([5, 50], [30, 33]),
                ];
                if mode == Boundary::Wrap {
                    cores.retain(|(o, s)| o[0] == 0 && s[0] == h && o[1] == 0 && s[1] == w);
                }
                for (o, sh) in cores {
                    let lo = [o[0] as isize - hb as isize, o[1] as isize - hb as isize];
                    let shape = [sh[0] + hb + ha, sh[1] + hb + ha, 3];
                    let block = cut(&img, h, w, lo, [shape[0], shape[1]]);
                    let geom = Geometry {
                        origin: vec![lo[0], lo[1], 0],
                        array: vec![h, w, 3],
                    };
                    let (want, wc) = reference_block(&block, &shape, &geom, &p).expect("reference");
                    let what = format!("{mode:?} {gradient:?} core {o:?} {sh:?}");
                    compare_with(&want, &wc, &block, &shape, &geom, &p, &what, &mut worst);
                }
            }
        }
        eprintln!(
            "fused vs pass by pass: worst error {:.2e} of the largest value, {:.2e} relative",
            worst[0], worst[1]
        );
    }

    /// The fused kernel on every instruction set against `want`.
    #[allow(clippy::too_many_arguments)]
    fn compare_with(
        want: &[Vec<f64>; 3],
        wc: &[usize],
        block: &[f64],
        shape: &[usize],
        geom: &Geometry,
        p: &TensorParams,
        what: &str,
        worst: &mut [f64; 2],
    ) {
        for isa in [Isa::Portable, Isa::Avx2Fma, Isa::Avx512Fma] {
            let mut got = [
                vec![f64::NAN; want[0].len()],
                vec![f64::NAN; want[0].len()],
                vec![f64::NAN; want[0].len()],
            ];
            let gc = structure_tensor_rows(block, shape, geom, p, isa, false, |ch, y, rows| {
                for (k, row) in rows.iter().enumerate() {
                    for (x, v) in row.iter().enumerate() {
                        got[k][(y * row.len() + x) * 3 + ch] = *v;
                    }
                }
            })
            .expect("fused");
            assert_eq!(gc, wc);
            for k in 0..3 {
                let scale = want[k].iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for (i, (g, v)) in got[k].iter().zip(&want[k]).enumerate() {
                    let err = (g - v).abs();
                    worst[0] = worst[0].max(err / scale.max(1e-300));
                    if v.abs() > 1e-3 * scale {
                        worst[1] = worst[1].max(err / v.abs());
                    }
                    assert!(
                        err <= 1e-13 * v.abs().max(1e-3 * scale),
                        "{what} {isa:?}: component {k} element {i}: {g} vs {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn fused_kernel_is_bit_for_bit_the_same_wherever_a_pixel_lies() {
        // Chunk invariance: a pixel's numbers do not depend on its place in
        // the strip (vector lanes, the overlapping last strip, the short
        // blocks' element-by-element path).
        let (h, w) = (50usize, 140usize);
        let img: Vec<f64> = (0..h * w * 3)
            .map(|i| ((i * 7919) % 1013) as f64 * 0.37)
            .collect();
        let p = TensorParams::seed(Boundary::Reflect);
        let (hb, ha) = p.halo();
        let run = |o: [usize; 2], sh: [usize; 2]| {
            let lo = [o[0] as isize - hb as isize, o[1] as isize - hb as isize];
            let shape = [sh[0] + hb + ha, sh[1] + hb + ha, 3];
            let block = cut(&img, h, w, lo, [shape[0], shape[1]]);
            let geom = Geometry {
                origin: vec![lo[0], lo[1], 0],
                array: vec![h, w, 3],
            };
            structure_tensor_block(&block, &shape, &geom, &p)
                .expect("block")
                .0
        };
        let whole = run([0, 0], [h, w]);
        for (o, sh) in [
            ([3usize, 7usize], [9usize, 3usize]),
            ([10, 40], [20, 77]),
            ([0, 101], [50, 39]),
        ] {
            let part = run(o, sh);
            for k in 0..3 {
                for y in 0..sh[0] {
                    for x in 0..sh[1] {
                        for c in 0..3 {
                            let g = part[k][(y * sh[1] + x) * 3 + c];
                            let v = whole[k][((y + o[0]) * w + x + o[1]) * 3 + c];
                            assert_eq!(g.to_bits(), v.to_bits(), "{o:?} {sh:?} ({y},{x},{c})");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn flop_counts_of_the_seed_block() {
        // 540 x 540 x 3 (a 500 x 500 chunk with its 20-pixel halo): per
        // channel 2 gradients over 520 x 520 of 20 non-zero taps, the 3
        // products, the window (21 taps) over 520 x 500 and 500 x 500 for 3
        // products, 13 flops of eigenvalues; 9 flops of features per pixel.
        let (n, e) = flops(&TensorParams::seed(Boundary::Reflect), 540, 540, 3);
        let per_channel =
            2 * 520 * 520 * 40 + 520 * 520 * 3 + 3 * (520 * 500 + 500 * 500) * 42 + 500 * 500 * 13;
        assert_eq!(n, 3 * per_channel + 9 * 500 * 500);
        let per_channel =
            2 * 520 * 520 * 30 + 520 * 520 * 3 + 3 * (520 * 500 + 500 * 500) * 31 + 500 * 500 * 13;
        assert_eq!(e, 3 * per_channel + 9 * 500 * 500);
    }

    #[test]
    fn eigh2_is_ascending_and_orthonormal() {
        for (a, b, c) in [
            (2.0, 1.0, 3.0),
            (1.0, 0.0, -1.0),
            (4.0, -2.5, 4.0),
            (0.0, 0.0, 0.0),
            (-1.0, 0.0, 5.0),
        ] {
            let (l, v) = eigh2_vectors(a, b, c);
            assert!(l[0] <= l[1]);
            for k in 0..2 {
                let (x, y) = (v[0][k], v[1][k]);
                assert!(((x * x + y * y) - 1.0).abs() < 1e-14);
                let (rx, ry) = (a * x + b * y - l[k] * x, b * x + c * y - l[k] * y);
                assert!(
                    rx.abs() < 1e-12 && ry.abs() < 1e-12,
                    "{a} {b} {c}: {l:?} {v:?}"
                );
            }
        }
    }

    #[test]
    fn eigh3_solves_repeated_and_general() {
        for m in [
            [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]],
            [[4.0, 1.0, -2.0], [1.0, 2.0, 0.5], [-2.0, 0.5, 3.0]],
            [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
        ] {
            let (l, v) = eigh3(m);
            assert!(l[0] <= l[1] && l[1] <= l[2]);
            for k in 0..3 {
                for r in 0..3 {
                    let mv: f64 = (0..3).map(|j| m[r][j] * v[j][k]).sum();
                    assert!((mv - l[k] * v[r][k]).abs() < 1e-12, "{m:?}");
                }
            }
        }
    }
}

//! Separable filters with scipy.ndimage's conventions.
//!
//! `correlate1d` follows scipy exactly: `out[i] = Σ_j w[j]·x[i + j − n/2 −
//! origin]`, the input extended beyond its ends by the boundary mode;
//! `convolve1d` reverses the weights (and shifts even lengths as scipy);
//! Gaussian kernels are scipy's `_gaussian_kernel1d`; multi-axis filters
//! run one axis after the other and store each pass in the input's dtype,
//! as scipy does.
//!
//! Every filter is built on [`correlate_valid`]: a correlation over an
//! array that already holds its halo, computed in float64 as one axpy per
//! tap over tiles that stay in cache, along any axis. The runtime's
//! overlap assembler gives chunks their halo (padding with the boundary
//! mode at the array's true edges), so a chunk is filtered with the same
//! code as a whole array.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use blockflow_core::Element;

/// How an array is extended beyond its ends (scipy.ndimage's `mode`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Boundary {
    /// `d c b a | a b c d | d c b a` (half-sample symmetric; scipy's default).
    Reflect,
    /// `d c b | a b c d | c b a` (whole-sample symmetric).
    Mirror,
    /// `a a a | a b c d | d d d`.
    Nearest,
    /// `a b c d | a b c d | a b c d`.
    Wrap,
    /// `k k k | a b c d | k k k`.
    Constant(f64),
    /// No extension: an output whose window leaves the array is 0 (the
    /// seed's numba stencils under dask's `boundary='none'`).
    Zero,
}

impl Boundary {
    /// The mode names scipy accepts (and `none`).
    pub const NAMES: [&'static str; 9] = [
        "reflect",
        "mirror",
        "nearest",
        "wrap",
        "constant",
        "grid-mirror",
        "grid-wrap",
        "grid-constant",
        "none",
    ];

    pub fn parse(name: &str, cval: f64) -> Option<Boundary> {
        Some(match name {
            "reflect" | "grid-mirror" => Boundary::Reflect,
            "mirror" => Boundary::Mirror,
            "nearest" => Boundary::Nearest,
            "wrap" | "grid-wrap" => Boundary::Wrap,
            "constant" | "grid-constant" => Boundary::Constant(cval),
            "none" => Boundary::Zero,
            _ => return None,
        })
    }

    /// The index in `0..n` that position `i` reads, or `None` for a
    /// constant (or zero) value.
    pub fn index(self, i: isize, n: usize) -> Option<usize> {
        let n_i = n as isize;
        if (0..n_i).contains(&i) {
            return Some(i as usize);
        }
        match self {
            Boundary::Reflect => {
                let p = 2 * n_i;
                let k = i.rem_euclid(p);
                Some(if k < n_i { k } else { p - 1 - k } as usize)
            }
            Boundary::Mirror => {
                if n == 1 {
                    return Some(0);
                }
                let p = 2 * n_i - 2;
                let k = i.rem_euclid(p);
                Some(if k < n_i { k } else { p - k } as usize)
            }
            Boundary::Nearest => Some(i.clamp(0, n_i - 1) as usize),
            Boundary::Wrap => Some(i.rem_euclid(n_i) as usize),
            Boundary::Constant(_) | Boundary::Zero => None,
        }
    }

    fn fill(self) -> f64 {
        match self {
            Boundary::Constant(c) => c,
            _ => 0.0,
        }
    }
}

/// scipy's `_gaussian_kernel1d(sigma, order, radius)`: the Gaussian
/// normalised to sum 1 over `-radius..=radius`, times the polynomial that
/// gives its `order`-th derivative. Tap `j` is offset `j - radius`.
pub fn gaussian_kernel1d(sigma: f64, order: usize, radius: usize) -> Vec<f64> {
    let s2 = sigma * sigma;
    let r = radius as i64;
    let phi: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 / s2 * (x * x) as f64).exp())
        .collect();
    let sum: f64 = phi.iter().sum();
    let phi: Vec<f64> = phi.iter().map(|p| p / sum).collect();
    if order == 0 {
        return phi;
    }
    // q(x) starts at 1; each derivative maps q to q' + q·p' with p' = -x/σ².
    let mut q = vec![0.0; order + 1];
    q[0] = 1.0;
    for _ in 0..order {
        let mut next = vec![0.0; order + 1];
        for (k, &c) in q.iter().enumerate() {
            if k > 0 {
                next[k - 1] += k as f64 * c;
            }
            if k < order {
                next[k + 1] -= c / s2;
            }
        }
        q = next;
    }
    (-r..=r)
        .zip(&phi)
        .map(|(x, p)| {
            let poly: f64 = q
                .iter()
                .enumerate()
                .map(|(k, c)| c * (x as f64).powi(k as i32))
                .sum();
            poly * p
        })
        .collect()
}

/// Values of `a` as float64 in standard (row-major) order.
fn to_f64_vec<T: Element>(a: &ArrayViewD<'_, T>) -> Vec<f64> {
    match a.as_slice() {
        Some(s) => s.iter().map(|v| v.to_f64()).collect(),
        None => a.iter().map(|v| v.to_f64()).collect(),
    }
}

const TILE: usize = 2048;

/// Valid correlation along `axis` of a row-major float64 array of `shape`:
/// `out[.., i, ..] = Σ_j w[j]·a[.., i + j, ..]`, so the axis shrinks by
/// `w.len() - 1`. One axpy per tap over cache-sized tiles.
pub fn correlate_valid(
    a: &[f64],
    shape: &[usize],
    axis: usize,
    w: &[f64],
) -> (Vec<f64>, Vec<usize>) {
    let n = shape[axis];
    let k = w.len();
    assert!(k >= 1 && n + 1 >= k, "the array is shorter than the kernel");
    let m = n + 1 - k;
    let (outer, inner) = around(shape, axis);
    let mut out = vec![0.0; outer * m * inner];
    let slab_in = n * inner;
    let slab_out = m * inner;
    for o in 0..outer {
        let src = &a[o * slab_in..(o + 1) * slab_in];
        let dst = &mut out[o * slab_out..(o + 1) * slab_out];
        taps(dst, src, w, inner);
    }
    let mut out_shape = shape.to_vec();
    out_shape[axis] = m;
    (out, out_shape)
}

/// `dst[i] += Σ_j w[j]·src[i + j·inner]` tile by tile.
#[inline(always)]
fn taps_generic(dst: &mut [f64], src: &[f64], w: &[f64], inner: usize) {
    let mut t = 0;
    while t < dst.len() {
        let len = TILE.min(dst.len() - t);
        let d = &mut dst[t..t + len];
        for (j, &wj) in w.iter().enumerate() {
            if wj == 0.0 {
                continue;
            }
            let s = &src[t + j * inner..t + j * inner + len];
            for (x, &y) in d.iter_mut().zip(s) {
                *x += wj * y;
            }
        }
        t += len;
    }
}

/// The same loop compiled for AVX2 (4 doubles per instruction; the same
/// multiplies and adds, no FMA, so the results are bit for bit the same).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn taps_avx2(dst: &mut [f64], src: &[f64], w: &[f64], inner: usize) {
    taps_generic(dst, src, w, inner)
}

fn taps(dst: &mut [f64], src: &[f64], w: &[f64], inner: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            #[allow(unsafe_code)]
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe {
                return taps_avx2(dst, src, w, inner);
            }
        }
    }
    taps_generic(dst, src, w, inner)
}

/// Elements before and after `axis` in a row-major array: a block of
/// `outer` slabs, each `shape[axis]` rows of `inner` contiguous values.
fn around(shape: &[usize], axis: usize) -> (usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis + 1..].iter().product(),
    )
}

/// Pads a row-major float64 array along `axis` by `before` and `after`
/// values, taken from the array by the boundary mode.
pub fn pad_axis(
    a: &[f64],
    shape: &[usize],
    axis: usize,
    before: usize,
    after: usize,
    mode: Boundary,
) -> (Vec<f64>, Vec<usize>) {
    let n = shape[axis];
    let (outer, inner) = around(shape, axis);
    let np = n + before + after;
    let mut out = Vec::with_capacity(outer * np * inner);
    let fill = mode.fill();
    for o in 0..outer {
        for i in 0..np {
            match mode.index(i as isize - before as isize, n) {
                Some(src) => {
                    let s = (o * n + src) * inner;
                    out.extend_from_slice(&a[s..s + inner]);
                }
                None => out.extend(std::iter::repeat_n(fill, inner)),
            }
        }
    }
    let mut out_shape = shape.to_vec();
    out_shape[axis] = np;
    (out, out_shape)
}

/// Sets to 0 every element along `axis` whose position `i` (in an array
/// that starts at global `offset` of an axis of `global_len`) has a window
/// `[i - before, i + after]` reaching outside `0..global_len`.
pub fn zero_outside(
    a: &mut [f64],
    shape: &[usize],
    axis: usize,
    offset: isize,
    global_len: usize,
    before: usize,
    after: usize,
) {
    let n = shape[axis];
    let (outer, inner) = around(shape, axis);
    for i in 0..n {
        let g = offset + i as isize;
        if g - before as isize >= 0 && g + (after as isize) < global_len as isize {
            continue;
        }
        for o in 0..outer {
            let s = (o * n + i) * inner;
            a[s..s + inner].iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

/// The halo a correlation with `len` weights and `origin` reads before and
/// after each output element. scipy requires `-(len/2) <= origin <= (len-1)/2`.
pub fn halo(len: usize, origin: isize) -> (usize, usize) {
    let before = (len / 2) as isize + origin;
    let after = len as isize - 1 - before;
    (before.max(0) as usize, after.max(0) as usize)
}

/// The origin range scipy accepts for `len` weights.
pub fn origin_ok(len: usize, origin: isize) -> bool {
    let l = len as isize;
    -(l / 2) <= origin && origin <= (l - 1) / 2
}

/// One correlation pass on float64 data (pad by the mode, valid correlate,
/// zero the outputs whose window leaves the array for [`Boundary::Zero`]).
fn pass(
    a: Vec<f64>,
    shape: Vec<usize>,
    axis: usize,
    w: &[f64],
    origin: isize,
    mode: Boundary,
) -> (Vec<f64>, Vec<usize>) {
    let (before, after) = halo(w.len(), origin);
    let n = shape[axis];
    let (p, ps) = pad_axis(&a, &shape, axis, before, after, mode);
    drop(a);
    let (mut out, os) = correlate_valid(&p, &ps, axis, w);
    if mode == Boundary::Zero {
        zero_outside(&mut out, &os, axis, 0, n, before, after);
    }
    (out, os)
}

fn to_array<T: Element>(v: Vec<f64>, shape: &[usize]) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), v.into_iter().map(T::from_f64).collect())
        .expect("length matches the shape")
}

/// scipy.ndimage.correlate1d (output in the input's dtype).
pub fn correlate1d<T: Element>(
    a: ArrayViewD<'_, T>,
    w: &[f64],
    axis: usize,
    mode: Boundary,
    origin: isize,
) -> ArrayD<T> {
    let shape = a.shape().to_vec();
    let (out, os) = pass(to_f64_vec(&a), shape, axis, w, origin, mode);
    to_array(out, &os)
}

/// scipy.ndimage.convolve1d: the weights reversed, the origin mirrored.
pub fn convolve1d<T: Element>(
    a: ArrayViewD<'_, T>,
    w: &[f64],
    axis: usize,
    mode: Boundary,
    origin: isize,
) -> ArrayD<T> {
    let rev: Vec<f64> = w.iter().rev().copied().collect();
    let mut o = -origin;
    if w.len().is_multiple_of(2) {
        o -= 1;
    }
    correlate1d(a, &rev, axis, mode, o)
}

/// The radius scipy uses: `radius` if given, else `int(truncate·σ + 0.5)`.
pub fn gaussian_radius(sigma: f64, truncate: f64, radius: Option<usize>) -> usize {
    radius.unwrap_or((truncate * sigma + 0.5) as usize)
}

/// scipy.ndimage.gaussian_filter1d.
pub fn gaussian_filter1d<T: Element>(
    a: ArrayViewD<'_, T>,
    sigma: f64,
    axis: usize,
    order: usize,
    mode: Boundary,
    truncate: f64,
    radius: Option<usize>,
) -> ArrayD<T> {
    let r = gaussian_radius(sigma, truncate, radius);
    let w: Vec<f64> = gaussian_kernel1d(sigma, order, r)
        .into_iter()
        .rev()
        .collect();
    correlate1d(a, &w, axis, mode, 0)
}

/// scipy.ndimage.gaussian_filter: one 1-D pass per axis whose sigma is
/// above 1e-15, each pass stored in the input's dtype.
pub fn gaussian_filter<T: Element>(
    a: ArrayViewD<'_, T>,
    sigma: &[f64],
    order: &[usize],
    mode: Boundary,
    truncate: f64,
    radius: Option<&[usize]>,
) -> ArrayD<T> {
    let mut cur: ArrayD<T> = a.to_owned();
    for ax in 0..a.ndim() {
        if sigma[ax] > 1e-15 {
            cur = gaussian_filter1d(
                cur.view(),
                sigma[ax],
                ax,
                order[ax],
                mode,
                truncate,
                radius.map(|r| r[ax]),
            );
        }
    }
    cur
}

/// scipy.ndimage.uniform_filter1d (a running mean of `size`).
pub fn uniform_filter1d<T: Element>(
    a: ArrayViewD<'_, T>,
    size: usize,
    axis: usize,
    mode: Boundary,
    origin: isize,
) -> ArrayD<T> {
    let w = vec![1.0 / size as f64; size];
    correlate1d(a, &w, axis, mode, origin)
}

/// scipy.ndimage.uniform_filter: a running mean of `size[ax]` along each axis.
pub fn uniform_filter<T: Element>(
    a: ArrayViewD<'_, T>,
    size: &[usize],
    mode: Boundary,
) -> ArrayD<T> {
    let mut cur: ArrayD<T> = a.to_owned();
    for (ax, &s) in size.iter().enumerate() {
        if s > 1 {
            cur = uniform_filter1d(cur.view(), s, ax, mode, 0);
        }
    }
    cur
}

/// scipy.ndimage.sobel: the derivative `[-1, 0, 1]` along `axis`, the
/// smoothing `[1, 2, 1]` along every other axis.
pub fn sobel<T: Element>(a: ArrayViewD<'_, T>, axis: usize, mode: Boundary) -> ArrayD<T> {
    let mut cur = correlate1d(a, &[-1.0, 0.0, 1.0], axis, mode, 0);
    for ax in 0..cur.ndim() {
        if ax != axis {
            cur = correlate1d(cur.view(), &[1.0, 2.0, 1.0], ax, mode, 0);
        }
    }
    cur
}

/// Finite differences along an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// `x[i+1] - x[i]` (the seed's stencil).
    Forward,
    /// `(x[i+1] - x[i-1]) / 2`.
    Central,
}

/// A finite difference along `axis` as a correlation, so every boundary mode
/// applies; with [`Boundary::Zero`] the forward difference's last element
/// is 0, as the seed's stencil writes it.
pub fn finite_difference<T: Element>(
    a: ArrayViewD<'_, T>,
    axis: usize,
    kind: Difference,
    mode: Boundary,
) -> ArrayD<T> {
    match kind {
        Difference::Forward => correlate1d(a, &[-1.0, 1.0], axis, mode, -1),
        Difference::Central => correlate1d(a, &[-0.5, 0.0, 0.5], axis, mode, 0),
    }
}

/// The axis of `a` as a float64 vector and shape (helper for fused kernels).
pub fn as_f64<T: Element>(a: ArrayViewD<'_, T>) -> (Vec<f64>, Vec<usize>) {
    (to_f64_vec(&a), a.shape().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_scipy_values() {
        // scipy: _gaussian_kernel1d(1.5, 1, 3) and (2, 0, 2), printed with repr.
        let k = gaussian_kernel1d(2.0, 0, 2);
        let s: f64 = k.iter().sum();
        assert!((s - 1.0).abs() < 1e-15);
        let d = gaussian_kernel1d(1.5, 1, 10);
        assert!(
            d[0] > 0.0 && d[20] < 0.0,
            "tap 0 positive (offset -10): -x/σ²·g"
        );
        assert!((d[10]).abs() < 1e-18);
        for j in 0..21 {
            assert!((d[j] + d[20 - j]).abs() < 1e-18, "antisymmetric");
        }
    }

    #[test]
    fn boundary_extensions() {
        let n = 4;
        let ext = |m: Boundary| -> Vec<Option<usize>> { (-5..9).map(|i| m.index(i, n)).collect() };
        let r: Vec<usize> = ext(Boundary::Reflect)
            .into_iter()
            .map(|v| v.expect("some"))
            .collect();
        assert_eq!(r, vec![3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]);
        let m: Vec<usize> = ext(Boundary::Mirror)
            .into_iter()
            .map(|v| v.expect("some"))
            .collect();
        assert_eq!(m, vec![1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2]);
        let w: Vec<usize> = ext(Boundary::Wrap)
            .into_iter()
            .map(|v| v.expect("some"))
            .collect();
        assert_eq!(w, vec![3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert_eq!(Boundary::Nearest.index(-3, 4), Some(0));
        assert_eq!(Boundary::Constant(1.0).index(-1, 4), None);
        assert_eq!(Boundary::Mirror.index(-3, 1), Some(0));
    }

    #[test]
    fn correlate_conventions_match_scipy() {
        // scipy: correlate1d([0,0,0,1,0,0,0], w) for odd/even lengths and origins.
        let x = ndarray::arr1(&[0.0f64, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]).into_dyn();
        let c = |w: &[f64], o: isize| {
            correlate1d(x.view(), w, 0, Boundary::Reflect, o)
                .into_raw_vec_and_offset()
                .0
        };
        assert_eq!(
            c(&[1.0, 2.0, 3.0], 0),
            vec![0.0, 0.0, 3.0, 2.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(c(&[1.0, 2.0], 0), vec![0.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0]);
        assert_eq!(
            c(&[1.0, 2.0, 3.0, 4.0], 0),
            vec![0.0, 0.0, 4.0, 3.0, 2.0, 1.0, 0.0]
        );
        assert_eq!(
            c(&[1.0, 2.0, 3.0], 1),
            vec![0.0, 0.0, 0.0, 3.0, 2.0, 1.0, 0.0]
        );
        assert_eq!(
            c(&[1.0, 2.0, 3.0], -1),
            vec![0.0, 3.0, 2.0, 1.0, 0.0, 0.0, 0.0]
        );
        let v = convolve1d(x.view(), &[1.0, 2.0], 0, Boundary::Reflect, 0)
            .into_raw_vec_and_offset()
            .0;
        assert_eq!(v, vec![0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0]);
        let f = finite_difference(
            ndarray::arr1(&[1.0f32, 4.0, 9.0]).into_dyn().view(),
            0,
            Difference::Forward,
            Boundary::Zero,
        );
        assert_eq!(f.into_raw_vec_and_offset().0, vec![3.0, 5.0, 0.0]);
    }
}

/// Where a block lies in its array: the global coordinate of its first
/// element along each axis (negative when its halo reaches before the
/// array) and the array's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub origin: Vec<isize>,
    pub array: Vec<usize>,
}

/// Along `axis`, replaces the values at positions outside the array with
/// the mode's extension of the values inside (the fill value for
/// `constant` and `none`). This is what scipy does before each pass, so a
/// block with a halo filtered pass by pass gives exactly the whole-array
/// result. Fails when the extension reads array positions the block does
/// not hold (`wrap` on an axis split into chunks).
pub fn reextend(
    a: &mut [f64],
    shape: &[usize],
    axis: usize,
    geom: &Geometry,
    mode: Boundary,
) -> Result<(), String> {
    reextend_with(a, shape, axis, geom, mode, mode.fill())
}

/// [`reextend`] for any element type, with `fill` for the positions a
/// constant boundary gives (the rank filters' values in their own dtype).
pub fn reextend_with<T: Copy>(
    a: &mut [T],
    shape: &[usize],
    axis: usize,
    geom: &Geometry,
    mode: Boundary,
    fill: T,
) -> Result<(), String> {
    let n = shape[axis];
    let len = geom.array[axis];
    let o = geom.origin[axis];
    let (outer, inner) = around(shape, axis);
    for i in 0..n {
        let g = o + i as isize;
        if g >= 0 && (g as usize) < len {
            continue;
        }
        let src = if len == 0 { None } else { mode.index(g, len) };
        match src {
            None => {
                for ob in 0..outer {
                    let s = (ob * n + i) * inner;
                    a[s..s + inner].iter_mut().for_each(|v| *v = fill);
                }
            }
            Some(src) => {
                let local = src as isize - o;
                if local < 0 || local as usize >= n {
                    return Err(format!(
                        "the {mode:?} boundary along axis {axis} reads position {src}, outside this chunk and its halo; give axis {axis} one chunk"
                    ));
                }
                let local = local as usize;
                for ob in 0..outer {
                    let (d, s) = ((ob * n + i) * inner, (ob * n + local) * inner);
                    a.copy_within(s..s + inner, d);
                }
            }
        }
    }
    Ok(())
}

/// Crops a row-major array along `axis` to `start..start + len`.
pub fn crop_axis(
    a: &[f64],
    shape: &[usize],
    axis: usize,
    start: usize,
    len: usize,
) -> (Vec<f64>, Vec<usize>) {
    let n = shape[axis];
    let (outer, inner) = around(shape, axis);
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let s = (o * n + start) * inner;
        out.extend_from_slice(&a[s..s + len * inner]);
    }
    let mut os = shape.to_vec();
    os[axis] = len;
    (out, os)
}

/// One separable correlation pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Pass {
    pub axis: usize,
    pub weights: Vec<f64>,
    pub origin: isize,
    pub mode: Boundary,
}

impl Pass {
    /// Halo the pass reads (before, after).
    pub fn halo(&self) -> (usize, usize) {
        halo(self.weights.len(), self.origin)
    }
}

/// The passes of scipy's filters, to run on blocks with a halo.
pub fn gaussian_passes(
    sigma: &[f64],
    order: &[usize],
    truncate: f64,
    radius: Option<&[usize]>,
    mode: Boundary,
) -> Vec<Pass> {
    (0..sigma.len())
        .filter(|&ax| sigma[ax] > 1e-15)
        .map(|ax| {
            let r = gaussian_radius(sigma[ax], truncate, radius.map(|r| r[ax]));
            Pass {
                axis: ax,
                weights: gaussian_kernel1d(sigma[ax], order[ax], r)
                    .into_iter()
                    .rev()
                    .collect(),
                origin: 0,
                mode,
            }
        })
        .collect()
}

/// Total halo per axis that a list of passes needs.
pub fn passes_halo(passes: &[Pass], ndim: usize) -> Vec<(usize, usize)> {
    let mut h = vec![(0, 0); ndim];
    for p in passes {
        let (b, a) = p.halo();
        h[p.axis].0 += b;
        h[p.axis].1 += a;
    }
    h
}

/// Runs passes on a block that holds the halo they need (`passes_halo`),
/// returning the core. Each pass first re-extends its axis by its mode at
/// the array's true edges, then correlates; a `none` pass zeroes outputs
/// whose window leaves the array.
///
/// With `round_f32`, every pass's result is rounded to float32, as scipy
/// stores each pass of a float32 array.
pub fn run_passes(
    block: Vec<f64>,
    shape: &[usize],
    geom: &Geometry,
    passes: &[Pass],
    round_f32: bool,
) -> Result<(Vec<f64>, Vec<usize>), String> {
    let mut a = block;
    let mut shape = shape.to_vec();
    let mut geom = geom.clone();
    for p in passes {
        let (before, after) = p.halo();
        if p.mode != Boundary::Zero {
            reextend(&mut a, &shape, p.axis, &geom, p.mode)?;
        }
        let (mut out, os) = correlate_valid(&a, &shape, p.axis, &p.weights);
        geom.origin[p.axis] += before as isize;
        if p.mode == Boundary::Zero {
            zero_outside(
                &mut out,
                &os,
                p.axis,
                geom.origin[p.axis],
                geom.array[p.axis],
                before,
                after,
            );
        }
        if round_f32 {
            out.iter_mut().for_each(|v| *v = *v as f32 as f64);
        }
        a = out;
        shape = os;
    }
    Ok((a, shape))
}

#[cfg(test)]
mod block_tests {
    use super::*;

    /// A block cut from the array with its halo (positions outside the
    /// array hold garbage, which the passes must not use).
    fn cut(a: &ArrayD<f64>, lo: &[isize], hi: &[isize]) -> (Vec<f64>, Vec<usize>) {
        let shape: Vec<usize> = lo.iter().zip(hi).map(|(l, h)| (h - l) as usize).collect();
        let mut out = ArrayD::<f64>::from_elem(IxDyn(&shape), 12345.0);
        for (idx, v) in out.indexed_iter_mut() {
            let g: Vec<isize> = idx
                .slice()
                .iter()
                .zip(lo)
                .map(|(&i, &l)| i as isize + l)
                .collect();
            if g.iter()
                .zip(a.shape())
                .all(|(&x, &n)| x >= 0 && (x as usize) < n)
            {
                let gi: Vec<usize> = g.iter().map(|&x| x as usize).collect();
                *v = a[IxDyn(&gi)];
            }
        }
        (out.into_raw_vec_and_offset().0, shape)
    }

    use ndarray::Dimension;

    #[test]
    fn blocks_with_halo_give_the_whole_array_result_in_every_mode() {
        let shape = [13usize, 11];
        let a = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
            ((i[0] * 7 + i[1] * 3) % 11) as f64 + 0.25 * i[1] as f64
        });
        for mode in [
            Boundary::Reflect,
            Boundary::Mirror,
            Boundary::Nearest,
            Boundary::Constant(2.5),
            Boundary::Zero,
        ] {
            let passes = gaussian_passes(&[1.2, 0.8], &[1, 0], 4.0, None, mode);
            let whole = {
                let s = shape.to_vec();
                let h = passes_halo(&passes, 2);
                let lo: Vec<isize> = h.iter().map(|x| -(x.0 as isize)).collect();
                let hi: Vec<isize> = h.iter().zip(&s).map(|(x, &n)| (n + x.1) as isize).collect();
                let (blk, bs) = cut(&a, &lo, &hi);
                run_passes(
                    blk,
                    &bs,
                    &Geometry {
                        origin: lo,
                        array: s.clone(),
                    },
                    &passes,
                    false,
                )
                .expect("whole")
                .0
            };
            // The reference: scipy-convention whole-array passes.
            let reference: Vec<f64> = if mode == Boundary::Zero {
                let mut cur = a.clone();
                for p in &passes {
                    cur = correlate1d(cur.view(), &p.weights, p.axis, Boundary::Zero, 0);
                }
                cur.into_raw_vec_and_offset().0
            } else {
                gaussian_filter(a.view(), &[1.2, 0.8], &[1, 0], mode, 4.0, None)
                    .into_raw_vec_and_offset()
                    .0
            };
            for (g, w) in whole.iter().zip(&reference) {
                assert!((g - w).abs() < 1e-12, "{mode:?}: {g} vs {w}");
            }
            // Chunks of 4 x 3, each with its halo, tile the same result.
            let h = passes_halo(&passes, 2);
            for y0 in (0..13).step_by(4) {
                for x0 in (0..11).step_by(3) {
                    let (y1, x1) = ((y0 + 4).min(13), (x0 + 3).min(11));
                    let lo = [y0 as isize - h[0].0 as isize, x0 as isize - h[1].0 as isize];
                    let hi = [(y1 + h[0].1) as isize, (x1 + h[1].1) as isize];
                    let (blk, bs) = cut(&a, &lo, &hi);
                    let (core, cs) = run_passes(
                        blk,
                        &bs,
                        &Geometry {
                            origin: lo.to_vec(),
                            array: shape.to_vec(),
                        },
                        &passes,
                        false,
                    )
                    .expect("block");
                    assert_eq!(cs, vec![y1 - y0, x1 - x0]);
                    for y in y0..y1 {
                        for x in x0..x1 {
                            let g = core[(y - y0) * (x1 - x0) + (x - x0)];
                            let w = reference[y * 11 + x];
                            assert!((g - w).abs() < 1e-12, "{mode:?} at ({y},{x}): {g} vs {w}");
                        }
                    }
                }
            }
        }
    }
}

//! Rigid registration by phase cross-correlation, as scikit-image's
//! `phase_cross_correlation` (space "real", normalization "phase"): the
//! shift that registers `moving` with `reference`, to the pixel by the peak
//! of the normalised cross-power spectrum's inverse FFT, then refined to
//! 1/`upsample_factor` pixel by an upsampled DFT around the peak (matrix
//! products, no zero padding).
//!
//! In the precision of the input, as scikit-image computes it (scipy.fft
//! keeps float32 as complex64): float32 frames in single precision, all
//! others in double.
//!
//! The images are real, so their spectra are Hermitian: only the half
//! spectrum along the last axis (`n / 2 + 1` values) is computed, stored
//! and multiplied, by a real FFT (a complex FFT of half the length and a
//! twiddle pass); the inverse gives the real cross-correlation, and the
//! upsampled DFT sums the half spectrum and its mirror image. Half the
//! memory and about half the work of the full complex spectra, with the
//! same result. Working buffers are kept between frames.

use std::sync::{Arc, Mutex};

use faer::{MatMut, MatRef};
use ndarray::{ArrayViewD, Axis};
use rustfft::num_complex::Complex;
use rustfft::num_traits::Float;
use rustfft::{Fft, FftNum, FftPlanner};

use blockflow_core::ArrayData;

/// Why a registration failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegisterError {
    #[error("the images differ in shape: {0:?} and {1:?}")]
    Shape(Vec<usize>, Vec<usize>),
    #[error("NaN values in the images")]
    Nan,
    #[error("upsample_factor must be at least 1")]
    Upsample,
    #[error("images with no axes cannot be registered")]
    ZeroDim,
}

/// A floating-point type registration can run in: f32 or f64.
pub trait Real: FftNum + Float {
    fn of(v: f64) -> Self;
    fn as_f64(self) -> f64;
    /// |c| as numpy's abs, without overflow for any finite value.
    fn magnitude(c: Complex<Self>) -> Self;
    /// dst = lhs · rhs (one thread: frames are registered in parallel by
    /// the callers).
    fn gemm(
        dst: MatMut<'_, Complex<Self>>,
        lhs: MatRef<'_, Complex<Self>>,
        rhs: MatRef<'_, Complex<Self>>,
    );
    fn wrap(r: Reference<Self>) -> Registrar;
    fn unwrap(r: &Registrar) -> Option<&Reference<Self>>;
}

/// The methods of [`Real`] that differ between f32 and f64 only in the
/// type and the [`Registrar`] variant.
macro_rules! real_common {
    ($t:ty, $variant:ident, $other:ident) => {
        fn gemm(
            dst: MatMut<'_, Complex<$t>>,
            lhs: MatRef<'_, Complex<$t>>,
            rhs: MatRef<'_, Complex<$t>>,
        ) {
            faer::linalg::matmul::matmul(
                dst,
                faer::Accum::Replace,
                lhs,
                rhs,
                Complex::new(1.0, 0.0),
                faer::Par::Seq,
            );
        }
        fn wrap(r: Reference<$t>) -> Registrar {
            Registrar::$variant(r)
        }
        fn unwrap(r: &Registrar) -> Option<&Reference<$t>> {
            match r {
                Registrar::$variant(r) => Some(r),
                Registrar::$other(_) => None,
            }
        }
    };
}

impl Real for f32 {
    fn of(v: f64) -> f32 {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn magnitude(c: Complex<f32>) -> f32 {
        let (re, im) = (c.re as f64, c.im as f64);
        (re * re + im * im).sqrt() as f32
    }
    real_common!(f32, F32, F64);
}

impl Real for f64 {
    fn of(v: f64) -> f64 {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn magnitude(c: Complex<f64>) -> f64 {
        let s = c.re * c.re + c.im * c.im;
        if s.is_normal() || s == 0.0 {
            s.sqrt()
        } else {
            c.re.hypot(c.im)
        }
    }
    real_common!(f64, F64, F32);
}

fn zero<T: Real>() -> Complex<T> {
    Complex::new(T::zero(), T::zero())
}

/// The FFT of a real axis of length `n` to its `n / 2 + 1` non-negative
/// frequencies, and back. Even lengths pack pairs of values into one
/// complex FFT of length `n / 2`; odd lengths (rare) run the full complex
/// FFT.
struct RealAxis<T: Real> {
    n: usize,
    h: usize,
    /// The complex FFT's length: n / 2 when n is even, else n.
    len: usize,
    fwd: Arc<dyn Fft<T>>,
    inv: Arc<dyn Fft<T>>,
    /// exp(-2 pi i k / n), k = 0..=n/2 (even n only).
    twiddle: Vec<Complex<T>>,
}

/// Rows transformed per FFT call.
const ROWS: usize = 32;

impl<T: Real> RealAxis<T> {
    fn new(n: usize, planner: &mut FftPlanner<T>) -> RealAxis<T> {
        let even = n.is_multiple_of(2);
        let len = if even { n / 2 } else { n };
        let twiddle = if even {
            (0..=n / 2)
                .map(|k| {
                    let a = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                    Complex::new(T::of(a.cos()), T::of(a.sin()))
                })
                .collect()
        } else {
            Vec::new()
        };
        RealAxis {
            n,
            h: n / 2 + 1,
            len,
            fwd: planner.plan_fft_forward(len),
            inv: planner.plan_fft_inverse(len),
            twiddle,
        }
    }

    fn scratch_len(&self) -> usize {
        self.fwd
            .get_inplace_scratch_len()
            .max(self.inv.get_inplace_scratch_len())
    }

    /// Every row of `x` (rows of `n`) to its half spectrum in `out` (rows
    /// of `h`).
    fn forward(
        &self,
        x: &[T],
        out: &mut [Complex<T>],
        blk: &mut Vec<Complex<T>>,
        scratch: &mut [Complex<T>],
    ) {
        let (n, h, len) = (self.n, self.h, self.len);
        for (xs, os) in x.chunks(n * ROWS).zip(out.chunks_mut(h * ROWS)) {
            let rows = xs.len() / n;
            blk.resize(rows * len, zero());
            if n % 2 == 0 {
                for (b, v) in blk.iter_mut().zip(xs.chunks_exact(2)) {
                    *b = Complex::new(v[0], v[1]);
                }
            } else {
                for (b, &v) in blk.iter_mut().zip(xs) {
                    *b = Complex::new(v, T::zero());
                }
            }
            self.fwd
                .process_with_scratch(&mut blk[..rows * len], scratch);
            for (z, o) in blk.chunks_exact(len).zip(os.chunks_exact_mut(h)) {
                if n % 2 == 1 {
                    o.copy_from_slice(&z[..h]);
                    continue;
                }
                let m = len;
                let half = T::of(0.5);
                for (k, v) in o.iter_mut().enumerate() {
                    let zk = z[k % m];
                    let zc = z[(m - k) % m].conj();
                    let e = (zk + zc).scale(half);
                    let d = zk - zc;
                    // (zk - zc) / 2i
                    let od = Complex::new(d.im * half, -d.re * half);
                    *v = e + self.twiddle[k] * od;
                }
            }
        }
    }

    /// Every half-spectrum row of `spec` (rows of `h`) back to a real row
    /// of `x` (rows of `n`): the unnormalised inverse, up to one factor
    /// common to all values.
    fn inverse(
        &self,
        spec: &[Complex<T>],
        x: &mut [T],
        blk: &mut Vec<Complex<T>>,
        scratch: &mut [Complex<T>],
    ) {
        let (n, h, len) = (self.n, self.h, self.len);
        for (ss, xs) in spec.chunks(h * ROWS).zip(x.chunks_mut(n * ROWS)) {
            let rows = ss.len() / h;
            blk.resize(rows * len, zero());
            for (s, z) in ss.chunks_exact(h).zip(blk.chunks_exact_mut(len)) {
                if n % 2 == 1 {
                    z[..h].copy_from_slice(s);
                    for k in 1..h {
                        z[n - k] = s[k].conj();
                    }
                    continue;
                }
                let m = len;
                for (k, v) in z.iter_mut().enumerate() {
                    let a = s[k];
                    let b = s[m - k].conj();
                    // i exp(+2 pi i k / n) (a - b)
                    let t = self.twiddle[k].conj() * (a - b);
                    *v = (a + b) + Complex::new(-t.im, t.re);
                }
            }
            self.inv
                .process_with_scratch(&mut blk[..rows * len], scratch);
            if n % 2 == 0 {
                for (v, z) in xs.chunks_exact_mut(2).zip(blk.iter()) {
                    v[0] = z.re;
                    v[1] = z.im;
                }
            } else {
                for (v, z) in xs.iter_mut().zip(blk.iter()) {
                    *v = z.re;
                }
            }
        }
    }
}

/// Complex FFTs along every axis but the last of a C-order array of
/// `shape`. The lanes are strided: they are gathered `BLOCK` at a time into
/// a contiguous buffer (reading `BLOCK` neighbouring values of each row, so
/// whole cache lines), transformed in one call, and scattered back.
fn fft_leading<T: Real>(
    values: &mut [Complex<T>],
    shape: &[usize],
    plans: &[Arc<dyn Fft<T>>],
    buf: &mut Vec<Complex<T>>,
    scratch: &mut [Complex<T>],
) {
    const BLOCK: usize = 32;
    for (ax, fft) in plans.iter().enumerate() {
        let n = shape[ax];
        if n <= 1 {
            continue;
        }
        let inner: usize = shape[ax + 1..].iter().product();
        buf.resize(n * BLOCK.min(inner), zero());
        for slab in values.chunks_mut(n * inner) {
            for c0 in (0..inner).step_by(BLOCK) {
                let w = BLOCK.min(inner - c0);
                for k in 0..n {
                    let row = &slab[k * inner + c0..k * inner + c0 + w];
                    for (j, v) in row.iter().enumerate() {
                        buf[j * n + k] = *v;
                    }
                }
                fft.process_with_scratch(&mut buf[..w * n], scratch);
                for k in 0..n {
                    let row = &mut slab[k * inner + c0..k * inner + c0 + w];
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = buf[j * n + k];
                    }
                }
            }
        }
    }
}

/// numpy's fftfreq(n, d).
fn fftfreq(n: usize, d: f64) -> Vec<f64> {
    (0..n)
        .map(|k| {
            let k = if k < n.div_ceil(2) {
                k as f64
            } else {
                k as f64 - n as f64
            };
            k / (d * n as f64)
        })
        .collect()
}

/// The C-order index of the first largest value of `mag` over `values`
/// (numpy's argmax order), as one index per axis of `shape`.
fn argmax_by<V>(values: &[V], shape: &[usize], mag: impl Fn(&V) -> f64) -> Vec<usize> {
    let mut best = (f64::NEG_INFINITY, 0usize);
    for (k, v) in values.iter().enumerate() {
        let m = mag(v);
        if m > best.0 {
            best = (m, k);
        }
    }
    let mut rem = best.1;
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        idx[ax] = rem % shape[ax];
        rem /= shape[ax];
    }
    idx
}

/// Contracts axis `ax` of the C-order array `src` of `shape` with `kernel`
/// (`size` × `shape[ax]`, row-major): the axis is replaced by one of `size`.
fn contract<T: Real>(
    src: &[Complex<T>],
    shape: &[usize],
    ax: usize,
    kernel: &[Complex<T>],
    size: usize,
) -> Vec<Complex<T>> {
    let n = shape[ax];
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    let mut out = vec![zero(); outer * size * inner];
    if n == 0 || inner == 0 || size == 0 {
        return out;
    }
    let lhs = MatRef::from_row_major_slice(kernel, size, n);
    for (s, d) in src
        .chunks_exact(n * inner)
        .zip(out.chunks_exact_mut(size * inner))
    {
        let rhs = MatRef::from_row_major_slice(s, n, inner);
        let dst = MatMut::from_row_major_slice_mut(d, size, inner);
        T::gemm(dst, lhs, rhs);
    }
    out
}

/// The kernel of scikit-image's `_upsampled_dft` along one axis, conjugated
/// (`exp(+2 pi i (u - offset) freq[k])`, `size` × `n`): the caller sums the
/// product spectrum itself, not its conjugate, so gets the conjugate of
/// scikit-image's cross-correlation, whose magnitudes are the same.
fn dft_kernel<T: Real>(n: usize, size: usize, factor: f64, offset: f64) -> Vec<Complex<T>> {
    let freq = fftfreq(n, factor);
    (0..size)
        .flat_map(|u| {
            let f = &freq;
            (0..n).map(move |j| {
                let phase = 2.0 * std::f64::consts::PI * (u as f64 - offset) * f[j];
                Complex::new(T::of(phase.cos()), T::of(phase.sin()))
            })
        })
        .collect()
}

/// scikit-image's upsampled DFT of the cross-power spectrum (`size` points
/// per axis, `factor` times finer, from `offsets`), from the half spectrum
/// `half` (C order, `shape` with the last axis cut to `n / 2 + 1`) of a
/// Hermitian spectrum of `shape`. Returns the conjugate of scikit-image's
/// values (C order, `size` per axis).
///
/// The values at the last axis's negative frequencies are the conjugates
/// of the half spectrum's at the mirrored index of every axis: the leading
/// axes are summed once with the kernels (T) and once with the mirrored
/// kernels (T'), which differ only in an even axis's Nyquist column; then
/// V = sum_j T[.., j] K[u, j] + sum_{j >= 1} conj(T'[.., j]) K[u, n - j].
fn upsampled_dft<T: Real>(
    half: &[Complex<T>],
    shape: &[usize],
    size: usize,
    factor: f64,
    offsets: &[f64],
) -> Vec<Complex<T>> {
    let d = shape.len();
    let n_last = shape[d - 1];
    let h = n_last / 2 + 1;
    let mut cur_shape: Vec<usize> = shape.to_vec();
    cur_shape[d - 1] = h;
    // The first leading axis's sum is the large one: computed once, the
    // mirrored sum follows from it by the Nyquist column alone.
    let (mut t, mut tm) = if d == 1 {
        (half.to_vec(), half.to_vec())
    } else {
        let n0 = shape[0];
        let k = dft_kernel::<T>(n0, size, factor, offsets[0]);
        let t = contract(half, &cur_shape, 0, &k, size);
        let mut tm = t.clone();
        if n0.is_multiple_of(2) {
            let nyq = n0 / 2;
            let inner: usize = cur_shape[1..].iter().product();
            let row = &half[nyq * inner..(nyq + 1) * inner];
            for u in 0..size {
                let kv = k[u * n0 + nyq];
                let delta = kv.conj() - kv;
                for (x, &p) in tm[u * inner..(u + 1) * inner].iter_mut().zip(row) {
                    *x = *x + delta * p;
                }
            }
        }
        cur_shape[0] = size;
        (t, tm)
    };
    for ax in 1..d.saturating_sub(1) {
        let n = shape[ax];
        let k = dft_kernel::<T>(n, size, factor, offsets[ax]);
        let mut km = k.clone();
        if n.is_multiple_of(2) {
            for u in 0..size {
                km[u * n + n / 2] = k[u * n + n / 2].conj();
            }
        }
        t = contract(&t, &cur_shape, ax, &k, size);
        tm = contract(&tm, &cur_shape, ax, &km, size);
        cur_shape[ax] = size;
    }
    // The last axis: the half spectrum's frequencies, then the mirrored.
    let lead: usize = cur_shape[..d - 1].iter().product();
    let k = dft_kernel::<T>(n_last, size, factor, offsets[d - 1]);
    let rest = n_last - h;
    let mut out = vec![zero(); lead * size];
    for l in 0..lead {
        let tr = &t[l * h..(l + 1) * h];
        let tmr = &tm[l * h..(l + 1) * h];
        for u in 0..size {
            let kr = &k[u * n_last..(u + 1) * n_last];
            let mut acc = zero::<T>();
            for j in 0..h {
                acc = acc + tr[j] * kr[j];
            }
            for j in 1..=rest {
                acc = acc + tmr[j].conj() * kr[n_last - j];
            }
            out[l * size + u] = acc;
        }
    }
    out
}

/// Buffers for one frame's registration, kept for the next.
struct Workspace<T: Real> {
    /// The frame's half spectrum, then the normalised cross-power product.
    product: Vec<Complex<T>>,
    /// Its copy being inverse-transformed (upsampling only).
    copy: Vec<Complex<T>>,
    /// The real cross-correlation.
    real: Vec<T>,
    blk: Vec<Complex<T>>,
    gather: Vec<Complex<T>>,
    scratch: Vec<Complex<T>>,
}

/// A reference prepared in precision `T`: its half spectrum, the FFT plans
/// and a pool of working buffers.
pub struct Reference<T: Real> {
    shape: Vec<usize>,
    /// `shape` with the last axis `n / 2 + 1`.
    half: Vec<usize>,
    spectrum: Vec<Complex<T>>,
    last: RealAxis<T>,
    leading_fwd: Vec<Arc<dyn Fft<T>>>,
    leading_inv: Vec<Arc<dyn Fft<T>>>,
    pool: Mutex<Vec<Workspace<T>>>,
}

impl<T: Real> std::fmt::Debug for Reference<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference")
            .field("shape", &self.shape)
            .field("precision", &std::any::type_name::<T>())
            .finish()
    }
}

/// A contiguous slice of a view's values, copied only when the view is not
/// in standard layout.
fn contiguous<'a, T: Real>(v: &'a ArrayViewD<'_, T>) -> std::borrow::Cow<'a, [T]> {
    match v.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(v.iter().copied().collect()),
    }
}

impl<T: Real> Reference<T> {
    fn new(reference: ArrayViewD<'_, T>) -> Result<Reference<T>, RegisterError> {
        if reference.ndim() == 0 {
            return Err(RegisterError::ZeroDim);
        }
        if reference.iter().any(|v| v.is_nan()) {
            return Err(RegisterError::Nan);
        }
        let shape = reference.shape().to_vec();
        let d = shape.len();
        let mut half = shape.clone();
        half[d - 1] = shape[d - 1] / 2 + 1;
        let mut planner = FftPlanner::new();
        let last = RealAxis::new(shape[d - 1], &mut planner);
        let leading_fwd = shape[..d - 1]
            .iter()
            .map(|&n| planner.plan_fft_forward(n))
            .collect();
        let leading_inv = shape[..d - 1]
            .iter()
            .map(|&n| planner.plan_fft_inverse(n))
            .collect();
        let mut r = Reference {
            shape,
            half,
            spectrum: Vec::new(),
            last,
            leading_fwd,
            leading_inv,
            pool: Mutex::new(Vec::new()),
        };
        let mut ws = r.workspace();
        let x = contiguous(&reference);
        r.forward(&x, &mut ws);
        r.spectrum = std::mem::take(&mut ws.product);
        Ok(r)
    }

    fn half_len(&self) -> usize {
        self.half.iter().product()
    }

    fn workspace(&self) -> Workspace<T> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        pooled.unwrap_or_else(|| {
            let scratch = self
                .leading_fwd
                .iter()
                .chain(&self.leading_inv)
                .map(|f| f.get_inplace_scratch_len())
                .chain([self.last.scratch_len()])
                .max()
                .unwrap_or(0);
            Workspace {
                product: Vec::new(),
                copy: Vec::new(),
                real: Vec::new(),
                blk: Vec::new(),
                gather: Vec::new(),
                scratch: vec![zero(); scratch],
            }
        })
    }

    /// The half spectrum of `x` into `ws.product`.
    fn forward(&self, x: &[T], ws: &mut Workspace<T>) {
        ws.product.resize(self.half_len(), zero());
        self.last
            .forward(x, &mut ws.product, &mut ws.blk, &mut ws.scratch);
        fft_leading(
            &mut ws.product,
            &self.half,
            &self.leading_fwd,
            &mut ws.gather,
            &mut ws.scratch,
        );
    }

    fn register(
        &self,
        moving: ArrayViewD<'_, T>,
        upsample_factor: usize,
    ) -> Result<Vec<f64>, RegisterError> {
        let shape = self.shape.clone();
        if moving.shape() != shape.as_slice() {
            return Err(RegisterError::Shape(shape, moving.shape().to_vec()));
        }
        if upsample_factor == 0 {
            return Err(RegisterError::Upsample);
        }
        let x = contiguous(&moving);
        if x.iter().any(|v| v.is_nan()) {
            return Err(RegisterError::Nan);
        }
        let mut ws = self.workspace();
        let result = self.register_with(&x, upsample_factor, &mut ws);
        if let Ok(mut p) = self.pool.lock() {
            p.push(ws);
        }
        Ok(result)
    }

    fn register_with(&self, x: &[T], upsample_factor: usize, ws: &mut Workspace<T>) -> Vec<f64> {
        let shape = &self.shape;
        self.forward(x, ws);
        // The normalised cross-power spectrum, reference times the
        // conjugate of moving, over max(|.|, 100 eps).
        let floor = T::of(100.0) * T::epsilon();
        let up = upsample_factor > 1;
        ws.copy
            .resize(if up { ws.product.len() } else { 0 }, zero());
        let normalise = |b: &mut Complex<T>, a: &Complex<T>| {
            let p = *a * b.conj();
            *b = p.unscale(T::magnitude(p).max(floor));
        };
        if up {
            for ((b, a), c) in ws
                .product
                .iter_mut()
                .zip(&self.spectrum)
                .zip(ws.copy.iter_mut())
            {
                normalise(b, a);
                *c = *b;
            }
        } else {
            for (b, a) in ws.product.iter_mut().zip(&self.spectrum) {
                normalise(b, a);
            }
        }
        // Its inverse, for the peak; the product itself again for the
        // refinement.
        let target = if up { &mut ws.copy } else { &mut ws.product };
        fft_leading(
            target,
            &self.half,
            &self.leading_inv,
            &mut ws.gather,
            &mut ws.scratch,
        );
        ws.real.resize(x.len(), T::zero());
        self.last
            .inverse(target, &mut ws.real, &mut ws.blk, &mut ws.scratch);
        let maxima = argmax_by(&ws.real, shape, |v| v.abs().as_f64());
        let mut shift: Vec<f64> = maxima
            .iter()
            .zip(shape)
            .map(|(&m, &n)| {
                let mid = (n / 2) as f64;
                if m as f64 > mid {
                    m as f64 - n as f64
                } else {
                    m as f64
                }
            })
            .collect();
        if up {
            let f = upsample_factor as f64;
            for s in &mut shift {
                *s = (*s * f).round() / f;
            }
            let region = (f * 1.5).ceil();
            let dftshift = (region / 2.0).trunc();
            let offsets: Vec<f64> = shift.iter().map(|s| dftshift - s * f).collect();
            let size = region as usize;
            let cc = upsampled_dft(&ws.product, shape, size, f, &offsets);
            let peak = argmax_by(&cc, &vec![size; shape.len()], |v| {
                v.re.as_f64().hypot(v.im.as_f64())
            });
            for (s, &m) in shift.iter_mut().zip(&peak) {
                *s += (m as f64 - dftshift) / f;
            }
        }
        for (s, &n) in shift.iter_mut().zip(shape) {
            if n == 1 {
                *s = 0.0;
            }
        }
        shift
    }
}

/// A reference prepared for registering many frames against it: its half
/// spectrum is computed once, in the precision of the reference (float32
/// in single precision, everything else in double).
#[derive(Debug)]
pub enum Registrar {
    F32(Reference<f32>),
    F64(Reference<f64>),
}

impl Registrar {
    pub fn new<T: Real>(reference: ArrayViewD<'_, T>) -> Result<Registrar, RegisterError> {
        Ok(T::wrap(Reference::new(reference)?))
    }

    /// The reference from one timepoint `(1, ...)` of any dtype.
    pub fn of_timepoint(data: &ArrayData) -> Result<Registrar, RegisterError> {
        match data {
            ArrayData::F32(a) => Registrar::new(a.index_axis(Axis(0), 0)),
            ArrayData::F64(a) => Registrar::new(a.index_axis(Axis(0), 0)),
            other => Registrar::new(other.to_f64().index_axis(Axis(0), 0)),
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Registrar::F32(r) => &r.shape,
            Registrar::F64(r) => &r.shape,
        }
    }

    /// 4 when registering in single precision, 8 in double.
    pub fn precision_bytes(&self) -> usize {
        match self {
            Registrar::F32(_) => 4,
            Registrar::F64(_) => 8,
        }
    }

    /// The bytes a registration keeps: the reference's half spectrum, and
    /// per frame being registered, the product, its copy and the real
    /// cross-correlation. `bytes_per_value` is 4 or 8 (f32 or f64).
    pub fn memory(shape: &[usize], bytes_per_value: usize, parallel: usize) -> (usize, usize) {
        let n: usize = shape.iter().product();
        let half: usize = match shape.split_last() {
            Some((last, lead)) => lead.iter().product::<usize>() * (last / 2 + 1),
            None => 1,
        };
        let reference = half * 2 * bytes_per_value;
        (
            reference,
            parallel * (2 * half * 2 * bytes_per_value + n * bytes_per_value),
        )
    }

    /// The shift (one value per axis) that registers `moving` with the
    /// reference, as scikit-image's phase_cross_correlation returns it: to
    /// the pixel when `upsample_factor` is 1, else to 1/`upsample_factor`.
    /// `moving` is converted to the reference's precision when it has
    /// another.
    pub fn register<T: Real>(
        &self,
        moving: ArrayViewD<'_, T>,
        upsample_factor: usize,
    ) -> Result<Vec<f64>, RegisterError> {
        if let Some(r) = T::unwrap(self) {
            return r.register(moving, upsample_factor);
        }
        match self {
            Registrar::F32(r) => {
                r.register(moving.mapv(|v| v.as_f64() as f32).view(), upsample_factor)
            }
            Registrar::F64(r) => r.register(moving.mapv(|v| v.as_f64()).view(), upsample_factor),
        }
    }

    /// [`Registrar::register`] for one timepoint `(1, ...)` of any dtype.
    pub fn register_timepoint(
        &self,
        data: &ArrayData,
        upsample_factor: usize,
    ) -> Result<Vec<f64>, RegisterError> {
        match data {
            ArrayData::F32(a) => self.register(a.index_axis(Axis(0), 0), upsample_factor),
            ArrayData::F64(a) => self.register(a.index_axis(Axis(0), 0), upsample_factor),
            other => self.register(other.to_f64().index_axis(Axis(0), 0), upsample_factor),
        }
    }
}

/// The shift (one value per axis) that registers `moving` with
/// `reference`, as scikit-image's phase_cross_correlation returns it: to
/// the pixel when `upsample_factor` is 1, else to 1/`upsample_factor`.
pub fn phase_cross_correlation<T: Real>(
    reference: ArrayViewD<'_, T>,
    moving: ArrayViewD<'_, T>,
    upsample_factor: usize,
) -> Result<Vec<f64>, RegisterError> {
    if reference.shape() != moving.shape() {
        return Err(RegisterError::Shape(
            reference.shape().to_vec(),
            moving.shape().to_vec(),
        ));
    }
    Registrar::new(reference)?.register(moving, upsample_factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    /// A small deterministic pseudo-random real array.
    fn noise(shape: &[usize], seed: u64) -> ArrayD<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ArrayD::from_shape_simple_fn(IxDyn(shape), || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        })
    }

    /// The full N-D DFT by direct sums (sign -1 forward, +1 unnormalised inverse).
    fn dft(a: &ArrayD<Complex<f64>>, sign: f64) -> ArrayD<Complex<f64>> {
        let shape = a.shape().to_vec();
        ArrayD::from_shape_fn(IxDyn(&shape), |k| {
            let mut acc = Complex::new(0.0, 0.0);
            for (j, v) in a.indexed_iter() {
                let mut phase = 0.0;
                for ax in 0..shape.len() {
                    phase += (k[ax] * j[ax]) as f64 / shape[ax] as f64;
                }
                let p = sign * 2.0 * std::f64::consts::PI * phase;
                acc += v * Complex::new(p.cos(), p.sin());
            }
            acc
        })
    }

    #[test]
    fn real_axis_round_trips_and_matches_the_complex_fft() {
        for n in [1usize, 2, 3, 4, 7, 8, 10, 15] {
            let x = noise(&[3, n], n as u64);
            let mut planner = FftPlanner::new();
            let axis = RealAxis::<f64>::new(n, &mut planner);
            let h = n / 2 + 1;
            let mut out = vec![zero(); 3 * h];
            let mut blk = Vec::new();
            let mut scratch = vec![zero(); axis.scratch_len()];
            axis.forward(x.as_slice().expect("c"), &mut out, &mut blk, &mut scratch);
            for r in 0..3 {
                let row = x
                    .index_axis(Axis(0), r)
                    .mapv(|v| Complex::new(v, 0.0))
                    .into_dyn();
                let full = dft(&row, -1.0);
                for k in 0..h {
                    assert!(
                        (out[r * h + k] - full[[k]]).norm() < 1e-12,
                        "n {n} row {r} k {k}"
                    );
                }
            }
            let mut back = vec![0.0; 3 * n];
            axis.inverse(&out, &mut back, &mut blk, &mut scratch);
            // The unnormalised inverse of the full spectrum is n x.
            for (b, v) in back.iter().zip(x.iter()) {
                assert!(
                    (b - n as f64 * v).abs() < 1e-12,
                    "n {n}: {b} vs {}",
                    n as f64 * v
                );
            }
        }
    }

    #[test]
    fn the_half_spectrum_upsampled_dft_equals_the_full_one() {
        for shape in [
            vec![6usize],
            vec![7],
            vec![4, 6],
            vec![5, 3],
            vec![4, 3, 6],
            vec![3, 4, 5],
            vec![2, 2, 2],
        ] {
            let a = noise(&shape, 7);
            let b = noise(&shape, 9);
            let fa = dft(&a.mapv(|v| Complex::new(v, 0.0)), -1.0);
            let fb = dft(&b.mapv(|v| Complex::new(v, 0.0)), -1.0);
            let prod = ndarray::Zip::from(&fa).and(&fb).map_collect(|x, y| {
                let p = x * y.conj();
                p / p.norm()
            });
            // The half spectrum, as the registrar holds it.
            let d = shape.len();
            let h = shape[d - 1] / 2 + 1;
            let half: Vec<Complex<f64>> = prod
                .indexed_iter()
                .filter(|(i, _)| i[d - 1] < h)
                .map(|(_, v)| *v)
                .collect();
            let (size, factor) = (5usize, 3.0);
            let offsets: Vec<f64> = (0..d).map(|ax| 2.0 - 0.5 * ax as f64).collect();
            let got = upsampled_dft(&half, &shape, size, factor, &offsets);
            // Directly: sum over the whole spectrum of prod[k] times the
            // conjugate kernels of every axis.
            let freqs: Vec<Vec<f64>> = shape.iter().map(|&n| fftfreq(n, factor)).collect();
            let out_shape = vec![size; d];
            let want = ArrayD::from_shape_fn(IxDyn(&out_shape), |u| {
                let mut acc = Complex::new(0.0, 0.0);
                for (k, v) in prod.indexed_iter() {
                    let mut phase = 0.0;
                    for ax in 0..d {
                        phase += (u[ax] as f64 - offsets[ax]) * freqs[ax][k[ax]];
                    }
                    let p = 2.0 * std::f64::consts::PI * phase;
                    acc += v * Complex::new(p.cos(), p.sin());
                }
                acc
            });
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).norm() < 1e-10, "shape {shape:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn odd_and_even_shapes_find_a_rolled_copy_in_both_precisions() {
        for shape in [vec![9usize, 10], vec![6, 7, 5], vec![8, 8, 8], vec![11]] {
            let a = noise(&shape, 3);
            let roll: Vec<usize> = shape.iter().map(|&n| n - 2).collect();
            let b = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
                let src: Vec<usize> = (0..shape.len())
                    .map(|ax| (i[ax] + roll[ax]) % shape[ax])
                    .collect();
                a[IxDyn(&src)]
            });
            let want: Vec<f64> = shape.iter().map(|_| -2.0).collect();
            for up in [1, 10] {
                assert_eq!(
                    phase_cross_correlation(a.view(), b.view(), up).expect("f64"),
                    want
                );
                let (a32, b32) = (a.mapv(|v| v as f32), b.mapv(|v| v as f32));
                assert_eq!(
                    phase_cross_correlation(a32.view(), b32.view(), up).expect("f32"),
                    want
                );
            }
        }
    }
}

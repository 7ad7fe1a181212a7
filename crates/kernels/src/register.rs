//! Rigid registration by phase cross-correlation, as scikit-image's
//! `phase_cross_correlation` (space "real", normalization "phase"): the
//! shift that registers `moving` with `reference`, to the pixel by the peak
//! of the normalised cross-power spectrum's inverse FFT, then refined to
//! 1/`upsample_factor` pixel by an upsampled DFT around the peak (matrix
//! products, no zero padding).

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rustfft::num_complex::Complex64;
use rustfft::FftPlanner;

/// Why a registration failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegisterError {
    #[error("the images differ in shape: {0:?} and {1:?}")]
    Shape(Vec<usize>, Vec<usize>),
    #[error("NaN values in the images")]
    Nan,
    #[error("upsample_factor must be at least 1")]
    Upsample,
}

/// The N-D FFT (forward or unnormalised inverse), axis by axis. Lanes of
/// an axis that is not the last are strided: they are gathered `BLOCK` at a
/// time into a contiguous buffer (reading `BLOCK` neighbouring values of
/// each row, so whole cache lines), transformed in one call, and scattered
/// back.
fn fftn(data: &mut ArrayD<Complex64>, inverse: bool, planner: &mut FftPlanner<f64>) {
    const BLOCK: usize = 32;
    if !data.is_standard_layout() {
        *data = data.as_standard_layout().into_owned();
    }
    let shape = data.shape().to_vec();
    let Some(values) = data.as_slice_mut() else {
        return;
    };
    let zero = Complex64::new(0.0, 0.0);
    for ax in 0..shape.len() {
        let n = shape[ax];
        if n <= 1 {
            continue;
        }
        let fft = if inverse {
            planner.plan_fft_inverse(n)
        } else {
            planner.plan_fft_forward(n)
        };
        let mut scratch = vec![zero; fft.get_inplace_scratch_len()];
        let inner: usize = shape[ax + 1..].iter().product();
        if inner == 1 {
            // The last axis: every lane is contiguous already.
            fft.process_with_scratch(values, &mut scratch);
            continue;
        }
        let mut buf = vec![zero; n * BLOCK.min(inner)];
        for slab in values.chunks_mut(n * inner) {
            for c0 in (0..inner).step_by(BLOCK) {
                let w = BLOCK.min(inner - c0);
                for k in 0..n {
                    let row = &slab[k * inner + c0..k * inner + c0 + w];
                    for (j, v) in row.iter().enumerate() {
                        buf[j * n + k] = *v;
                    }
                }
                fft.process_with_scratch(&mut buf[..w * n], &mut scratch);
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

/// The first position of the largest magnitude (numpy's argmax order).
fn argmax_abs(a: &ArrayD<Complex64>) -> Vec<usize> {
    let mut best = (f64::NEG_INFINITY, 0usize);
    for (k, v) in a.iter().enumerate() {
        let m = v.norm();
        if m > best.0 {
            best = (m, k);
        }
    }
    let mut rem = best.1;
    let mut idx = vec![0; a.ndim()];
    for ax in (0..a.ndim()).rev() {
        idx[ax] = rem % a.shape()[ax];
        rem /= a.shape()[ax];
    }
    idx
}

/// scikit-image's `_upsampled_dft`: the DFT of `data` on a region of
/// `size` points per axis, `factor` times finer, starting at `offsets`.
fn upsampled_dft(
    data: ArrayD<Complex64>,
    size: usize,
    factor: f64,
    offsets: &[f64],
) -> ArrayD<Complex64> {
    let dims = data.shape().to_vec();
    let mut cur = data;
    for ax in (0..dims.len()).rev() {
        let n = dims[ax];
        let freq = fftfreq(n, factor);
        // kernel[u, j] = exp(-2 pi i (u - offset) freq[j])
        let kernel: Vec<Complex64> = (0..size)
            .flat_map(|u| {
                let f = &freq;
                (0..n).map(move |j| {
                    let phase = -2.0 * std::f64::consts::PI * (u as f64 - offsets[ax]) * f[j];
                    Complex64::new(phase.cos(), phase.sin())
                })
            })
            .collect();
        // tensordot(kernel, cur, axes=(1, -1)): the new axis goes first,
        // out (size x rest) = kernel (size x n) . cur^T (n x rest), as one
        // complex matrix product (faer's; one thread: frames are registered
        // in parallel by the caller). Splitting it into four real products
        // was 10% slower at 256^3: the product streams `cur` from memory.
        let shape = cur.shape().to_vec();
        let rest: usize = shape[..shape.len() - 1].iter().product();
        if !cur.is_standard_layout() {
            cur = cur.as_standard_layout().into_owned();
        }
        let src = cur.as_slice().unwrap_or(&[]);
        let mut out = vec![Complex64::new(0.0, 0.0); size * rest];
        if rest > 0 && n > 0 && size > 0 {
            let lhs = faer::MatRef::from_row_major_slice(&kernel, size, n);
            let rhs = faer::MatRef::from_row_major_slice(src, rest, n).transpose();
            let dst = faer::MatMut::from_row_major_slice_mut(&mut out, size, rest);
            faer::linalg::matmul::matmul(
                dst,
                faer::Accum::Replace,
                lhs,
                rhs,
                Complex64::new(1.0, 0.0),
                faer::Par::Seq,
            );
        }
        let mut new_shape = vec![size];
        new_shape.extend_from_slice(&shape[..shape.len() - 1]);
        cur = ArrayD::from_shape_vec(IxDyn(&new_shape), out)
            .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&new_shape)));
    }
    cur
}

/// A reference prepared for registering many frames against it: its
/// spectrum is computed once.
#[derive(Debug, Clone)]
pub struct Registrar {
    spectrum: ArrayD<Complex64>,
}

impl Registrar {
    pub fn new(reference: ArrayViewD<'_, f64>) -> Result<Registrar, RegisterError> {
        if reference.iter().any(|v| v.is_nan()) {
            return Err(RegisterError::Nan);
        }
        let mut spectrum = reference.mapv(|v| Complex64::new(v, 0.0));
        fftn(&mut spectrum, false, &mut FftPlanner::new());
        Ok(Registrar { spectrum })
    }

    pub fn shape(&self) -> &[usize] {
        self.spectrum.shape()
    }

    /// The shift (one value per axis) that registers `moving` with the
    /// reference, as scikit-image's phase_cross_correlation returns it: to
    /// the pixel when `upsample_factor` is 1, else to 1/`upsample_factor`.
    pub fn register(
        &self,
        moving: ArrayViewD<'_, f64>,
        upsample_factor: usize,
    ) -> Result<Vec<f64>, RegisterError> {
        let shape = self.spectrum.shape().to_vec();
        if moving.shape() != shape.as_slice() {
            return Err(RegisterError::Shape(shape, moving.shape().to_vec()));
        }
        if upsample_factor == 0 {
            return Err(RegisterError::Upsample);
        }
        if moving.iter().any(|v| v.is_nan()) {
            return Err(RegisterError::Nan);
        }
        let mut planner = FftPlanner::new();
        let mut product = moving.mapv(|v| Complex64::new(v, 0.0));
        fftn(&mut product, false, &mut planner);
        let floor = 100.0 * f64::EPSILON;
        ndarray::Zip::from(&mut product)
            .and(&self.spectrum)
            .for_each(|b, a| {
                let p = a * b.conj();
                *b = p / p.norm().max(floor);
            });
        // The inverse transform is needed for the peak only; the product
        // itself again for the refinement.
        let maxima = if upsample_factor > 1 {
            let mut cc = product.clone();
            fftn(&mut cc, true, &mut planner);
            argmax_abs(&cc)
        } else {
            fftn(&mut product, true, &mut planner);
            argmax_abs(&product)
        };
        let mut shift: Vec<f64> = maxima
            .iter()
            .zip(&shape)
            .map(|(&m, &n)| {
                let mid = (n / 2) as f64;
                if m as f64 > mid {
                    m as f64 - n as f64
                } else {
                    m as f64
                }
            })
            .collect();
        if upsample_factor > 1 {
            let f = upsample_factor as f64;
            for s in &mut shift {
                *s = (*s * f).round() / f;
            }
            let region = (f * 1.5).ceil();
            let dftshift = (region / 2.0).trunc();
            let offsets: Vec<f64> = shift.iter().map(|s| dftshift - s * f).collect();
            product.mapv_inplace(|v| v.conj());
            let up = upsampled_dft(product, region as usize, f, &offsets);
            // The conjugate has the same magnitudes.
            let peak = argmax_abs(&up);
            for (s, &m) in shift.iter_mut().zip(&peak) {
                *s += (m as f64 - dftshift) / f;
            }
        }
        for (s, &n) in shift.iter_mut().zip(&shape) {
            if n == 1 {
                *s = 0.0;
            }
        }
        Ok(shift)
    }
}

/// The shift (one value per axis) that registers `moving` with
/// `reference`, as scikit-image's phase_cross_correlation returns it: to
/// the pixel when `upsample_factor` is 1, else to 1/`upsample_factor`.
pub fn phase_cross_correlation(
    reference: ArrayViewD<'_, f64>,
    moving: ArrayViewD<'_, f64>,
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

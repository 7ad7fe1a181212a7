//! Rigid registration by phase cross-correlation, as scikit-image's
//! `phase_cross_correlation` (space "real", normalization "phase"): the
//! shift that registers `moving` with `reference`, to the pixel by the peak
//! of the normalised cross-power spectrum's inverse FFT, then refined to
//! 1/`upsample_factor` pixel by an upsampled DFT around the peak (matrix
//! products, no zero padding).

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
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

/// The N-D FFT (forward or unnormalised inverse), axis by axis.
fn fftn(data: &mut ArrayD<Complex64>, inverse: bool, planner: &mut FftPlanner<f64>) {
    for ax in 0..data.ndim() {
        let n = data.shape()[ax];
        if n <= 1 {
            continue;
        }
        let fft = if inverse {
            planner.plan_fft_inverse(n)
        } else {
            planner.plan_fft_forward(n)
        };
        let mut buf = vec![Complex64::new(0.0, 0.0); n];
        for mut lane in data.lanes_mut(Axis(ax)) {
            for (b, v) in buf.iter_mut().zip(lane.iter()) {
                *b = *v;
            }
            fft.process(&mut buf);
            for (v, b) in lane.iter_mut().zip(&buf) {
                *v = *b;
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
    data: &ArrayD<Complex64>,
    size: usize,
    factor: f64,
    offsets: &[f64],
) -> ArrayD<Complex64> {
    let mut cur = data.clone();
    for ax in (0..data.ndim()).rev() {
        let n = data.shape()[ax];
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
        // tensordot(kernel, cur, axes=(1, -1)): the new axis goes first.
        let shape = cur.shape().to_vec();
        let last = *shape.last().unwrap_or(&1);
        let rest: usize = shape[..shape.len() - 1].iter().product();
        let flat = cur.as_standard_layout().into_owned();
        let src = flat.as_slice().unwrap_or(&[]);
        let mut out = vec![Complex64::new(0.0, 0.0); size * rest];
        for u in 0..size {
            let krow = &kernel[u * n..(u + 1) * n];
            for r in 0..rest {
                let row = &src[r * last..(r + 1) * last];
                let mut acc = Complex64::new(0.0, 0.0);
                for (k, v) in krow.iter().zip(row) {
                    acc += k * v;
                }
                out[u * rest + r] = acc;
            }
        }
        let mut new_shape = vec![size];
        new_shape.extend_from_slice(&shape[..shape.len() - 1]);
        cur = ArrayD::from_shape_vec(IxDyn(&new_shape), out)
            .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&new_shape)));
    }
    cur
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
    if upsample_factor == 0 {
        return Err(RegisterError::Upsample);
    }
    if reference.iter().chain(moving.iter()).any(|v| v.is_nan()) {
        return Err(RegisterError::Nan);
    }
    let mut planner = FftPlanner::new();
    let mut src = reference.mapv(|v| Complex64::new(v, 0.0));
    let mut tgt = moving.mapv(|v| Complex64::new(v, 0.0));
    fftn(&mut src, false, &mut planner);
    fftn(&mut tgt, false, &mut planner);
    let floor = 100.0 * f64::EPSILON;
    let mut product = ndarray::Zip::from(&src).and(&tgt).map_collect(|a, b| {
        let p = a * b.conj();
        p / p.norm().max(floor)
    });
    let mut cc = product.clone();
    fftn(&mut cc, true, &mut planner);
    let shape = reference.shape().to_vec();
    let maxima = argmax_abs(&cc);
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
        let up = upsampled_dft(&product, region as usize, f, &offsets);
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

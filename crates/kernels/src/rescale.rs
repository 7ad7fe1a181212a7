//! `rescale_intensity` exactly as scikit-image 0.26's
//! `skimage.exposure.rescale_intensity` (with NumPy 2's promotion rules):
//!
//! ```text
//! imin, imax = in_range        (image min/max, dtype limits, a dtype name,
//!                               explicit values, or np.percentile(image, (p_lo, p_hi)))
//! omin, omax = out_range       (dtype limits with the negative half dropped when
//!                               imin >= 0, a dtype name, explicit values, image min/max)
//! x = clip(image, imin, imax)
//! out = (x - imin) / (imax - imin) * (omax - omin) + omin   if imin != imax
//!     = clip(x, omin, omax)                                 otherwise
//! out.astype(out_dtype)         (truncation toward zero for integer outputs)
//! ```
//!
//! The arithmetic is float64 for every input dtype except float32, which
//! skimage computes in float32 (Python scalars are weak under NumPy 2); the
//! output dtype is the image's for `dtype`/`image` out ranges, the named
//! dtype for a dtype name (`uint10`, `uint12`, `uint14` give uint16), and
//! float32 for a float32 image or float64 otherwise for explicit values.
//!
//! Seed 001 (WORKFLOWS D) calls it with the defaults on each uint8 image:
//! `uint8(trunc((x - imin) / (imax - imin) * 255))` in float64 with the
//! image's min and max over all channels; a constant image stays as it is.

use blockflow_core::{with_array, with_dtype, ArrayData, ArrayKind, DType, Element};

/// A named intensity range (skimage's `DTYPE_RANGE`): its limits and the
/// dtype an output with that range gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NamedRange {
    pub lo: f64,
    pub hi: f64,
    pub dtype: DType,
}

impl NamedRange {
    /// The limits of a dtype: integers their full range, floats `(-1, 1)`,
    /// bool `(0, 1)`.
    pub fn of_dtype(d: DType) -> NamedRange {
        let (lo, hi) = match d {
            DType::Bool => (0.0, 1.0),
            DType::U8 => (0.0, u8::MAX as f64),
            DType::U16 => (0.0, u16::MAX as f64),
            DType::U32 => (0.0, u32::MAX as f64),
            DType::I16 => (i16::MIN as f64, i16::MAX as f64),
            DType::I32 => (i32::MIN as f64, i32::MAX as f64),
            DType::I64 => (i64::MIN as f64, i64::MAX as f64),
            DType::F32 | DType::F64 => (-1.0, 1.0),
        };
        NamedRange { lo, hi, dtype: d }
    }

    /// skimage's names: every dtype name (`uint8`, `float32`, ...; also the
    /// short forms `u8`, `f4`), `float` (float64), and `uint10`, `uint12`,
    /// `uint14` (their ranges, as uint16). int8, uint64 and float16 have no
    /// blockflow dtype and are not accepted.
    pub fn parse(name: &str) -> Option<NamedRange> {
        let bits = |b: i32| NamedRange {
            lo: 0.0,
            hi: 2f64.powi(b) - 1.0,
            dtype: DType::U16,
        };
        match name.trim() {
            "uint10" => Some(bits(10)),
            "uint12" => Some(bits(12)),
            "uint14" => Some(bits(14)),
            "float" => Some(NamedRange::of_dtype(DType::F64)),
            other => DType::parse(other).map(NamedRange::of_dtype),
        }
    }
}

/// Where the input intensities are taken from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InRange {
    /// The image's min and max (skimage's default `'image'`).
    Image,
    /// The limits of the image's dtype (`'dtype'`).
    Dtype,
    /// A named range (`'uint12'`, ...).
    Named(NamedRange),
    /// Explicit `(lo, hi)`.
    Values(f64, f64),
    /// `np.percentile(image, (p_lo, p_hi))` (the linear method) as explicit
    /// values, the usual contrast stretch `in_range=(p2, p98)`.
    Percentiles(f64, f64),
}

/// Where the output intensities go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutRange {
    /// The limits of the image's dtype (skimage's default `'dtype'`); the
    /// negative half is dropped when `imin >= 0`.
    Dtype,
    /// The image's min and max (`'image'`).
    Image,
    /// A named range; the output gets its dtype. The negative half is
    /// dropped when `imin >= 0`.
    Named(NamedRange),
    /// Explicit `(lo, hi)`; the output is float.
    Values(f64, f64),
}

/// Errors of [`rescale_intensity`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RescaleError {
    #[error("image {index} of the chunk: {source}")]
    Image {
        index: usize,
        #[source]
        source: Box<RescaleError>,
    },
    #[error("rescale_intensity: the image is empty, so it has no min, max or percentile")]
    Empty,
    #[error("rescale_intensity: percentiles must be within [0, 100], got ({0}, {1})")]
    Percentiles(f64, f64),
    #[error("rescale_intensity: percentiles of a bool image are not defined (numpy raises too)")]
    BoolPercentiles,
}

/// The dtype [`rescale_intensity`] returns for an input dtype.
pub fn output_dtype(input: DType, out_range: &OutRange) -> DType {
    match out_range {
        OutRange::Dtype | OutRange::Image => input,
        OutRange::Named(n) => n.dtype,
        OutRange::Values(..) => {
            if input == DType::F32 {
                DType::F32
            } else {
                DType::F64
            }
        }
    }
}

/// numpy's `min`/`max` of the whole array as float64 (NaN if any is NaN).
pub fn min_max(image: &ArrayData) -> Result<(f64, f64), RescaleError> {
    if image.is_empty() {
        return Err(RescaleError::Empty);
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    with_array!(image, a => {
        for v in a.iter() {
            let x = v.to_f64();
            if x.is_nan() {
                return Ok((f64::NAN, f64::NAN));
            }
            lo = lo.min(x);
            hi = hi.max(x);
        }
    });
    Ok((lo, hi))
}

/// numpy's linear interpolation between two sorted neighbours `a <= b`,
/// with the difference `d = b - a` computed in the array's dtype.
fn lerp(a: f64, b: f64, d: f64, t: f64) -> f64 {
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

fn percentiles_sorted<T: Copy>(
    v: &[T],
    q: [f64; 2],
    to: impl Fn(T) -> f64,
    diff: impl Fn(T, T) -> f64,
) -> [f64; 2] {
    let n = v.len();
    q.map(|q| {
        let vi = (n - 1) as f64 * q;
        if vi >= (n - 1) as f64 {
            return to(v[n - 1]);
        }
        let prev = vi.floor();
        let i = prev as usize;
        let (a, b) = (v[i], v[i + 1]);
        lerp(to(a), to(b), diff(a, b), vi - prev)
    })
}

/// `np.percentile(image, (p_lo, p_hi))` with the default linear method, as
/// float64 (NaN if the image holds a NaN).
pub fn percentiles(image: &ArrayData, p_lo: f64, p_hi: f64) -> Result<[f64; 2], RescaleError> {
    if !(0.0..=100.0).contains(&p_lo) || !(0.0..=100.0).contains(&p_hi) {
        return Err(RescaleError::Percentiles(p_lo, p_hi));
    }
    if image.is_empty() {
        return Err(RescaleError::Empty);
    }
    let q = [p_lo / 100.0, p_hi / 100.0];
    macro_rules! ints {
        ($a:expr, $t:ty) => {{
            let mut v: Vec<$t> = $a.iter().copied().collect();
            v.sort_unstable();
            percentiles_sorted(&v, q, |x| x as f64, |a, b| b.wrapping_sub(a) as f64)
        }};
    }
    macro_rules! floats {
        ($a:expr, $t:ty) => {{
            let mut v: Vec<$t> = $a.iter().copied().collect();
            if v.iter().any(|x| x.is_nan()) {
                return Ok([f64::NAN, f64::NAN]);
            }
            v.sort_unstable_by(|a, b| a.total_cmp(b));
            percentiles_sorted(&v, q, |x| x as f64, |a, b| (b - a) as f64)
        }};
    }
    Ok(match image {
        ArrayData::Bool(_) => return Err(RescaleError::BoolPercentiles),
        ArrayData::U8(a) => ints!(a, u8),
        ArrayData::U16(a) => ints!(a, u16),
        ArrayData::U32(a) => ints!(a, u32),
        ArrayData::I16(a) => ints!(a, i16),
        ArrayData::I32(a) => ints!(a, i32),
        ArrayData::I64(a) => ints!(a, i64),
        ArrayData::F32(a) => floats!(a, f32),
        ArrayData::F64(a) => floats!(a, f64),
    })
}

/// numpy's `clip` of one value: `min(max(x, lo), hi)` where a NaN in any of
/// the three gives NaN.
macro_rules! np_clip {
    ($x:expr, $lo:expr, $hi:expr) => {{
        let (x, lo, hi) = ($x, $lo, $hi);
        let m = if x.is_nan() || x > lo { x } else { lo };
        if m.is_nan() || m < hi {
            m
        } else {
            hi
        }
    }};
}

/// `out.astype(out_dtype)` of `f` applied to every value (as float64).
fn map_to(image: &ArrayData, out: DType, f: impl Fn(f64) -> f64) -> ArrayData {
    with_dtype!(out, T => with_array!(image, a => T::wrap(a.mapv(|v| T::from_f64(f(v.to_f64()))))))
}

/// skimage's `rescale_intensity(image, in_range, out_range)` over a whole
/// image of any shape (channels included in the min/max).
pub fn rescale_intensity(
    image: &ArrayData,
    in_range: &InRange,
    out_range: &OutRange,
) -> Result<ArrayData, RescaleError> {
    let dtype = image.dtype();
    let out_dtype = output_dtype(dtype, out_range);
    let (imin, imax) = match *in_range {
        InRange::Image => min_max(image)?,
        InRange::Dtype => {
            let r = NamedRange::of_dtype(dtype);
            (r.lo, r.hi)
        }
        InRange::Named(r) => (r.lo, r.hi),
        InRange::Values(lo, hi) => (lo, hi),
        InRange::Percentiles(p, q) => {
            let [lo, hi] = percentiles(image, p, q)?;
            (lo, hi)
        }
    };
    let clip_negative = imin >= 0.0;
    let named = |r: NamedRange| (if clip_negative { 0.0 } else { r.lo }, r.hi);
    let (omin, omax) = match *out_range {
        OutRange::Dtype => named(NamedRange::of_dtype(dtype)),
        OutRange::Named(r) => named(r),
        OutRange::Image => min_max(image)?,
        OutRange::Values(lo, hi) => (lo, hi),
    };
    // NaN != NaN: a NaN range rescales (to NaN), as in skimage.
    let stretch = imin != imax;
    Ok(if dtype == DType::F32 {
        // float32 images: every operation in float32, the Python floats
        // rounded to float32 first.
        let (lo, hi) = (imin as f32, imax as f32);
        let (span, ospan, o0) = ((imax - imin) as f32, (omax - omin) as f32, omin as f32);
        let (olo, ohi) = (omin as f32, omax as f32);
        map_to(image, out_dtype, |v| {
            let x = np_clip!(v as f32, lo, hi);
            let y = if stretch {
                (x - lo) / span * ospan + o0
            } else {
                np_clip!(x, olo, ohi)
            };
            y as f64
        })
    } else {
        let (span, ospan) = (imax - imin, omax - omin);
        map_to(image, out_dtype, |v| {
            let x = np_clip!(v, imin, imax);
            if stretch {
                (x - imin) / span * ospan + omin
            } else {
                np_clip!(x, omin, omax)
            }
        })
    })
}

/// [`rescale_intensity`] of each image (along axis 0) of a stack.
pub fn rescale_each(
    data: &ArrayData,
    in_range: &InRange,
    out_range: &OutRange,
) -> Result<ArrayData, RescaleError> {
    let n = data.shape()[0];
    let mut parts = Vec::with_capacity(n);
    with_array!(data, a => {
        for k in 0..n {
            let img = ArrayKind::wrap(a.index_axis(ndarray::Axis(0), k).to_owned());
            parts.push(rescale_intensity(&img, in_range, out_range).map_err(|e| {
                RescaleError::Image { index: k, source: Box::new(e) }
            })?);
        }
    });
    let dtype = output_dtype(data.dtype(), out_range);
    Ok(with_dtype!(dtype, T => {
        let mut out = ndarray::ArrayD::<T>::default(data.shape());
        for (k, p) in parts.iter().enumerate() {
            if let Some(img) = T::unwrap_ref(p) {
                out.index_axis_mut(ndarray::Axis(0), k).assign(img);
            }
        }
        T::wrap(out)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn u8s(v: &[u8]) -> ArrayData {
        ArrayData::U8(ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).expect("shape"))
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn docstring_examples() {
        let out =
            rescale_intensity(&u8s(&[51, 102, 153]), &InRange::Image, &OutRange::Dtype).unwrap();
        assert_eq!(out, u8s(&[0, 127, 255]));
        let c = u8s(&[130, 130, 130]);
        assert_eq!(
            rescale_intensity(&c, &InRange::Image, &OutRange::Dtype).unwrap(),
            c
        );
        let out = rescale_intensity(
            &ArrayData::I32(ArrayD::from_shape_vec(IxDyn(&[3]), vec![130, 130, 130]).unwrap()),
            &InRange::Image,
            &OutRange::Values(0.0, 127.0),
        )
        .unwrap();
        assert_eq!(out.dtype(), DType::F64);
        assert_eq!(
            out.to_f64().iter().copied().collect::<Vec<_>>(),
            vec![127.0; 3]
        );
        assert_eq!(NamedRange::parse("uint12").map(|r| r.hi), Some(4095.0));
        assert_eq!(
            output_dtype(DType::F32, &OutRange::Values(0.0, 1.0)),
            DType::F32
        );
    }
}

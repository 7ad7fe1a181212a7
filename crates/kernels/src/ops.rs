//! Array operations as numpy's: `diff` along an axis and the matrix
//! product `a @ b` with integers that never wrap silently.

use blockflow_core::{ArrayData, DType};
use ndarray::{Array2, ArrayD, Axis, IxDyn, Slice, Zip};

/// Why a matrix product failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpsError {
    #[error("element ({i}, {j}) of the product, {value}, does not fit int64")]
    Overflow { i: usize, j: usize, value: i128 },
    #[error("the product cannot take the shape {shape:?}: {why}")]
    Shape { shape: Vec<usize>, why: String },
}

/// numpy's diff (n = 1) along `axis`: integers wrap as numpy's do,
/// booleans give not-equal.
pub fn diff(data: &ArrayData, axis: usize) -> ArrayData {
    macro_rules! d {
        ($a:expr, $f:expr) => {{
            let hi = $a.slice_axis(Axis(axis), Slice::from(1..));
            let lo = $a.slice_axis(Axis(axis), Slice::from(..-1));
            Zip::from(&hi).and(&lo).map_collect($f)
        }};
    }
    match data {
        ArrayData::Bool(a) => ArrayData::Bool(d!(a, |x: &bool, y: &bool| x != y)),
        ArrayData::U8(a) => ArrayData::U8(d!(a, |x: &u8, y: &u8| x.wrapping_sub(*y))),
        ArrayData::U16(a) => ArrayData::U16(d!(a, |x: &u16, y: &u16| x.wrapping_sub(*y))),
        ArrayData::U32(a) => ArrayData::U32(d!(a, |x: &u32, y: &u32| x.wrapping_sub(*y))),
        ArrayData::I16(a) => ArrayData::I16(d!(a, |x: &i16, y: &i16| x.wrapping_sub(*y))),
        ArrayData::I32(a) => ArrayData::I32(d!(a, |x: &i32, y: &i32| x.wrapping_sub(*y))),
        ArrayData::I64(a) => ArrayData::I64(d!(a, |x: &i64, y: &i64| x.wrapping_sub(*y))),
        ArrayData::F32(a) => ArrayData::F32(d!(a, |x: &f32, y: &f32| x - y)),
        ArrayData::F64(a) => ArrayData::F64(d!(a, |x: &f64, y: &f64| x - y)),
    }
}

/// numpy's `clip(x, lo, hi)` with either bound optional, keeping the
/// array's dtype: floats compare in their own precision (NaN stays NaN);
/// integers are clipped to the integers within `[lo, hi]` (`ceil(lo)`,
/// `floor(hi)`, saturated to the type), where numpy would instead promote
/// an integer array clipped by a fractional bound to float64. `lo <= hi`
/// is the caller's to check; bool arrays are returned unchanged.
pub fn clip(data: &ArrayData, lo: Option<f64>, hi: Option<f64>) -> ArrayData {
    fn float<T: Copy + PartialOrd>(a: &ArrayD<T>, lo: Option<T>, hi: Option<T>) -> ArrayD<T> {
        a.mapv(|x| match (lo, hi) {
            (Some(l), _) if x < l => l,
            (_, Some(h)) if x > h => h,
            _ => x,
        })
    }
    fn int<T: blockflow_core::Element + Ord>(
        a: &ArrayD<T>,
        lo: Option<f64>,
        hi: Option<f64>,
    ) -> ArrayD<T> {
        // from_f64 saturates to the type's range.
        let lo = lo.map(|l| T::from_f64(l.ceil()));
        let hi = hi.map(|h| T::from_f64(h.floor()));
        a.mapv(|x| match (lo, hi) {
            (Some(l), _) if x < l => l,
            (_, Some(h)) if x > h => h,
            _ => x,
        })
    }
    match data {
        ArrayData::Bool(_) => data.clone(),
        ArrayData::U8(a) => ArrayData::U8(int(a, lo, hi)),
        ArrayData::U16(a) => ArrayData::U16(int(a, lo, hi)),
        ArrayData::U32(a) => ArrayData::U32(int(a, lo, hi)),
        ArrayData::I16(a) => ArrayData::I16(int(a, lo, hi)),
        ArrayData::I32(a) => ArrayData::I32(int(a, lo, hi)),
        ArrayData::I64(a) => ArrayData::I64(int(a, lo, hi)),
        ArrayData::F32(a) => ArrayData::F32(float(a, lo.map(|l| l as f32), hi.map(|h| h as f32))),
        ArrayData::F64(a) => ArrayData::F64(float(a, lo, hi)),
    }
}

/// An array as a matrix: 2-D as it is, 1-D as a row (`row`) or a column.
fn as_matrix<T: Clone + Default>(a: &ArrayD<T>, row: bool) -> Array2<T> {
    let s = a.shape();
    let (m, n) = match (s.len(), row) {
        (2, _) => (s[0], s[1]),
        (_, true) => (1, a.len()),
        (_, false) => (a.len(), 1),
    };
    a.as_standard_layout()
        .to_owned()
        .into_shape_with_order((m, n))
        .unwrap_or_else(|_| Array2::default((m, n)))
}

fn shaped<T>(c: ArrayD<T>, shape: &[usize]) -> Result<ArrayD<T>, OpsError> {
    c.into_shape_with_order(IxDyn(shape))
        .map_err(|e| OpsError::Shape {
            shape: shape.to_vec(),
            why: e.to_string(),
        })
}

/// numpy's `a @ b` for 1-D and 2-D arrays, the result in `out` (float32 for
/// float32 @ float32, float64 for other floats, int64 for integers) with
/// `shape`. Floats through matrixmultiply; integers exactly: through
/// float64 when every partial sum is below 2^53, else in i128, and an error
/// where a result does not fit int64.
pub fn matmul(
    a: &ArrayData,
    b: &ArrayData,
    out: DType,
    shape: &[usize],
) -> Result<ArrayData, OpsError> {
    if let (ArrayData::F32(x), ArrayData::F32(y)) = (a, b) {
        let c = as_matrix(x, true).dot(&as_matrix(y, false));
        return shaped(c.into_dyn(), shape).map(ArrayData::F32);
    }
    let (x, y) = (as_matrix(&a.to_f64(), true), as_matrix(&b.to_f64(), false));
    if out.is_float() {
        return shaped(x.dot(&y).into_dyn(), shape).map(ArrayData::F64);
    }
    let amax = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let bmax = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if amax * bmax * (x.ncols() as f64) < 9_007_199_254_740_992.0 {
        let c = shaped(x.dot(&y).into_dyn(), shape)?;
        return Ok(ArrayData::I64(c.mapv(|v| v as i64)));
    }
    let (ArrayData::I64(xi), ArrayData::I64(yi)) = (a.cast(DType::I64), b.cast(DType::I64)) else {
        unreachable!("cast to int64 gives int64")
    };
    let (xi, yi) = (as_matrix(&xi, true), as_matrix(&yi, false));
    let mut c = Vec::with_capacity(xi.nrows() * yi.ncols());
    for (i, row) in xi.rows().into_iter().enumerate() {
        for (j, col) in yi.columns().into_iter().enumerate() {
            let value: i128 = row
                .iter()
                .zip(col.iter())
                .map(|(&p, &q)| p as i128 * q as i128)
                .sum();
            c.push(i64::try_from(value).map_err(|_| OpsError::Overflow { i, j, value })?);
        }
    }
    let c = ArrayD::from_shape_vec(IxDyn(&[c.len()]), c).map_err(|e| OpsError::Shape {
        shape: shape.to_vec(),
        why: e.to_string(),
    })?;
    shaped(c, shape).map(ArrayData::I64)
}

#[cfg(test)]
mod clip_tests {
    use super::*;

    fn arr<T: Clone>(v: Vec<T>) -> ArrayD<T> {
        ArrayD::from_shape_vec(IxDyn(&[v.len()]), v).expect("1-D")
    }

    #[test]
    fn clip_is_numpys_for_floats_with_either_bound() {
        let a = ArrayData::F64(arr(vec![-2.0, 0.5, 3.0, f64::NAN, 9.0]));
        let both = clip(&a, Some(0.0), Some(3.0)).to_f64();
        assert_eq!(&both.as_slice().expect("std")[..3], &[0.0, 0.5, 3.0]);
        assert!(both[[3]].is_nan(), "NaN stays NaN, as numpy");
        assert_eq!(both[[4]], 3.0);
        let lo = clip(&a, Some(1.0), None).to_f64();
        assert_eq!(lo[[0]], 1.0);
        assert_eq!(lo[[4]], 9.0);
        let hi = clip(&a, None, Some(-1.0)).to_f64();
        assert_eq!(hi[[1]], -1.0);
        assert_eq!(hi[[0]], -2.0);
    }

    #[test]
    fn clip_keeps_integer_dtypes_within_the_bounds() {
        let a = ArrayData::U8(arr(vec![0u8, 1, 10, 11, 255]));
        let c = clip(&a, Some(0.5), Some(10.5));
        assert_eq!(c.dtype(), DType::U8);
        assert_eq!(
            c.to_f64().as_slice().expect("std"),
            &[1.0, 1.0, 10.0, 10.0, 10.0]
        );
        // Bounds beyond the type saturate: nothing changes.
        let same = clip(&a, Some(-300.0), Some(1e9));
        assert_eq!(
            same.to_f64().as_slice().expect("std"),
            &[0.0, 1.0, 10.0, 11.0, 255.0]
        );
        let f = ArrayData::F32(arr(vec![0.1f32, 0.7]));
        let c = clip(&f, Some(0.25), None);
        assert_eq!(c.dtype(), DType::F32);
        assert_eq!(c.to_f64()[[0]], 0.25);
    }
}

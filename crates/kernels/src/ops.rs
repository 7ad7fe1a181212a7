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

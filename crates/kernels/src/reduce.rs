//! Reductions of one chunk.

use blockflow_core::{with_array, ArrayData, Element};

/// How many values exceed `threshold` (NaN does not), and the largest
/// value ignoring NaN (NaN when there is none).
pub fn count_above(data: &ArrayData, threshold: f64) -> (u64, f64) {
    with_array!(data, a => {
        let a = a.as_standard_layout();
        let values = a.as_slice().expect("standard layout");
        let mut n = 0u64;
        let mut max = f64::NAN;
        for v in values {
            let v = v.to_f64();
            if v > threshold {
                n += 1;
            }
            if !v.is_nan() && (max.is_nan() || v > max) {
                max = v;
            }
        }
        (n, max)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ignore_nan() {
        let a = ArrayData::F64(ndarray::arr1(&[f64::NAN, 0.5, 0.01, 0.009, f64::NAN]).into_dyn());
        assert_eq!(count_above(&a, 0.009), (2, 0.5));
        let b = ArrayData::F64(ndarray::arr1(&[f64::NAN]).into_dyn());
        let (n, m) = count_above(&b, 0.0);
        assert_eq!(n, 0);
        assert!(m.is_nan());
    }
}

/// A reduction, as numpy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    Sum,
    Mean,
    Min,
    Max,
    Std,
    Var,
    Count,
    ArgMin,
    ArgMax,
    Any,
    All,
    NanSum,
    NanMean,
    NanMin,
    NanMax,
    NanStd,
    NanVar,
}

impl Reduction {
    pub const NAMES: [&'static str; 17] = [
        "sum", "mean", "min", "max", "std", "var", "count", "argmin", "argmax", "any", "all",
        "nansum", "nanmean", "nanmin", "nanmax", "nanstd", "nanvar",
    ];

    pub fn parse(s: &str) -> Option<Reduction> {
        use Reduction::*;
        let all = [
            Sum, Mean, Min, Max, Std, Var, Count, ArgMin, ArgMax, Any, All, NanSum, NanMean,
            NanMin, NanMax, NanStd, NanVar,
        ];
        Self::NAMES.iter().position(|n| *n == s).map(|i| all[i])
    }

    /// Whether NaN values are skipped (the `nan*` reductions).
    pub fn skips_nan(self) -> bool {
        use Reduction::*;
        matches!(self, NanSum | NanMean | NanMin | NanMax | NanStd | NanVar)
    }
}

/// What a reduction keeps of the values it has seen; partials of disjoint
/// parts merge in any grouping (Chan et al.'s update for the variance), so
/// chunks reduce independently and combine as a tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Partial {
    /// Values counted (NaN excluded when skipping).
    pub n: f64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Exact-order sum (numpy's `sum` of the values).
    pub sum: f64,
    pub min: f64,
    pub min_at: u64,
    pub max: f64,
    pub max_at: u64,
    pub any: bool,
    pub all: bool,
    /// First NaN seen (global flat index), when NaN is not skipped.
    pub nan_at: Option<u64>,
}

impl Default for Partial {
    fn default() -> Self {
        Partial {
            n: 0.0,
            mean: 0.0,
            m2: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            min_at: u64::MAX,
            max: f64::NEG_INFINITY,
            max_at: u64::MAX,
            any: false,
            all: true,
            nan_at: None,
        }
    }
}

impl Partial {
    /// Bytes in [`Partial::to_bytes`].
    pub const BYTES: usize = 11 * 8;

    /// Its fields as little-endian bytes, floats bit for bit, so a partial
    /// stored by one process merges in another exactly as in memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let words: [u64; 11] = [
            self.n.to_bits(),
            self.mean.to_bits(),
            self.m2.to_bits(),
            self.sum.to_bits(),
            self.min.to_bits(),
            self.min_at,
            self.max.to_bits(),
            self.max_at,
            u64::from(self.any) | (u64::from(self.all) << 1),
            u64::from(self.nan_at.is_some()),
            self.nan_at.unwrap_or(0),
        ];
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// [`Partial::to_bytes`] read back; None if `b` is not one.
    pub fn from_bytes(b: &[u8]) -> Option<Partial> {
        if b.len() != Self::BYTES {
            return None;
        }
        let w: Vec<u64> = b
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Some(Partial {
            n: f64::from_bits(w[0]),
            mean: f64::from_bits(w[1]),
            m2: f64::from_bits(w[2]),
            sum: f64::from_bits(w[3]),
            min: f64::from_bits(w[4]),
            min_at: w[5],
            max: f64::from_bits(w[6]),
            max_at: w[7],
            any: w[8] & 1 != 0,
            all: w[8] & 2 != 0,
            nan_at: (w[9] != 0).then_some(w[10]),
        })
    }

    /// The partial of `values`, each with its global flat index.
    pub fn of(values: impl IntoIterator<Item = (u64, f64)>, skip_nan: bool) -> Partial {
        let mut p = Partial::default();
        for (i, v) in values {
            p.any |= v != 0.0;
            p.all &= v != 0.0;
            if v.is_nan() {
                if !skip_nan && p.nan_at.is_none_or(|a| i < a) {
                    p.nan_at = Some(i);
                }
                continue;
            }
            p.n += 1.0;
            p.sum += v;
            let d = v - p.mean;
            p.mean += d / p.n;
            p.m2 += d * (v - p.mean);
            if v < p.min || (v == p.min && i < p.min_at) {
                p.min = v;
                p.min_at = i;
            }
            if v > p.max || (v == p.max && i < p.max_at) {
                p.max = v;
                p.max_at = i;
            }
        }
        p
    }

    /// Merges the partials of two disjoint parts.
    pub fn merge(&self, o: &Partial) -> Partial {
        let n = self.n + o.n;
        let (mean, m2) = if n == 0.0 {
            (0.0, 0.0)
        } else {
            let d = o.mean - self.mean;
            (
                self.mean + d * o.n / n,
                self.m2 + o.m2 + d * d * self.n * o.n / n,
            )
        };
        let (min, min_at) = if o.min < self.min || (o.min == self.min && o.min_at < self.min_at) {
            (o.min, o.min_at)
        } else {
            (self.min, self.min_at)
        };
        let (max, max_at) = if o.max > self.max || (o.max == self.max && o.max_at < self.max_at) {
            (o.max, o.max_at)
        } else {
            (self.max, self.max_at)
        };
        let nan_at = match (self.nan_at, o.nan_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Partial {
            n,
            mean,
            m2,
            sum: self.sum + o.sum,
            min,
            min_at,
            max,
            max_at,
            any: self.any || o.any,
            all: self.all && o.all,
            nan_at,
        }
    }

    /// The reduction's value (argmin/argmax: the global flat index; any/all: 0 or 1).
    /// `ddof` as numpy's; a variance with `n - ddof <= 0` is NaN.
    pub fn finish(&self, op: Reduction, ddof: u32) -> f64 {
        use Reduction::*;
        let nan = self.nan_at.is_some() && !op.skips_nan();
        match op {
            Count => self.n,
            Any => self.any as u8 as f64,
            All => self.all as u8 as f64,
            ArgMin | ArgMax if nan => self.nan_at.map_or(f64::NAN, |i| i as f64),
            _ if nan => f64::NAN,
            Sum | NanSum => self.sum,
            Mean | NanMean => {
                if self.n > 0.0 {
                    self.mean
                } else {
                    f64::NAN
                }
            }
            Min | NanMin => {
                if self.n > 0.0 {
                    self.min
                } else {
                    f64::NAN
                }
            }
            Max | NanMax => {
                if self.n > 0.0 {
                    self.max
                } else {
                    f64::NAN
                }
            }
            ArgMin => self.min_at as f64,
            ArgMax => self.max_at as f64,
            Var | NanVar | Std | NanStd => {
                let dof = self.n - ddof as f64;
                let var = if dof > 0.0 { self.m2 / dof } else { f64::NAN };
                if matches!(op, Std | NanStd) {
                    var.sqrt()
                } else {
                    var
                }
            }
        }
    }
}

/// The partial of one chunk whose first element is at `origin` of an
/// array of `shape` (argmin/argmax report global flat indices).
pub fn partial_of_chunk(
    data: &ArrayData,
    origin: &[u64],
    shape: &[u64],
    skip_nan: bool,
) -> Partial {
    let nd = shape.len();
    let mut strides = vec![1u64; nd];
    for ax in (0..nd.saturating_sub(1)).rev() {
        strides[ax] = strides[ax + 1] * shape[ax + 1];
    }
    with_array!(data, a => {
        let a = a.as_standard_layout();
        let local = a.shape().to_vec();
        let values = a.as_slice().expect("standard layout");
        let row = local.last().copied().unwrap_or(1).max(1);
        let mut idx = vec![0usize; nd];
        let mut out = Partial::default();
        for (r, chunk_row) in values.chunks(row).enumerate() {
            // Multi-index of the row's first element.
            let mut rem = r;
            for ax in (0..nd.saturating_sub(1)).rev() {
                idx[ax] = rem % local[ax];
                rem /= local[ax];
            }
            let base: u64 = (0..nd.saturating_sub(1)).map(|ax| (origin[ax] + idx[ax] as u64) * strides[ax]).sum::<u64>()
                + origin.get(nd.wrapping_sub(1)).copied().unwrap_or(0);
            let p = Partial::of(chunk_row.iter().enumerate().map(|(k, v)| (base + k as u64, v.to_f64())), skip_nan);
            out = out.merge(&p);
        }
        out
    })
}

/// What an [`AxisReducer`] keeps per output element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Sum,
    Mean,
    Moments,
    Min,
    Max,
    ArgMin,
    ArgMax,
    Count,
    Any,
    All,
}

/// A reduction over chosen axes, fed chunk by chunk in any order: every
/// output element keeps a count, a value (sum, running mean, min or max),
/// a sum of squared deviations (std, var: Welford's update, float64) and a
/// position (argmin, argmax: the index along the one reduced axis, as
/// numpy's `argmin(axis=k)`, or the global flat index when every axis is
/// reduced). NaN propagates as in numpy unless the `nan*` variant skips it.
#[derive(Debug, Clone)]
pub struct AxisReducer {
    op: Reduction,
    class: Class,
    shape: Vec<u64>,
    reduced: Vec<bool>,
    out_strides: Vec<u64>,
    pos_strides: Vec<u64>,
    n: Vec<f64>,
    a: Vec<f64>,
    m2: Vec<f64>,
    at: Vec<u64>,
    nan: Vec<bool>,
}

impl AxisReducer {
    /// A reducer of `op` over `axes` (distinct, each < `shape.len()`) of an
    /// array of `shape`.
    pub fn new(op: Reduction, shape: &[u64], axes: &[usize]) -> AxisReducer {
        use Reduction::*;
        let nd = shape.len();
        let reduced: Vec<bool> = (0..nd).map(|ax| axes.contains(&ax)).collect();
        let mut out_strides = vec![0u64; nd];
        let mut s = 1u64;
        for ax in (0..nd).rev() {
            if !reduced[ax] {
                out_strides[ax] = s;
                s *= shape[ax];
            }
        }
        let out_len = s as usize;
        let mut in_strides = vec![1u64; nd];
        for ax in (0..nd.saturating_sub(1)).rev() {
            in_strides[ax] = in_strides[ax + 1] * shape[ax + 1];
        }
        let pos_strides = if axes.len() == 1 && nd > 1 {
            (0..nd).map(|ax| u64::from(ax == axes[0])).collect()
        } else {
            in_strides
        };
        let class = match op {
            Sum | NanSum => Class::Sum,
            Mean | NanMean => Class::Mean,
            Std | Var | NanStd | NanVar => Class::Moments,
            Min | NanMin => Class::Min,
            Max | NanMax => Class::Max,
            ArgMin => Class::ArgMin,
            ArgMax => Class::ArgMax,
            Count => Class::Count,
            Any => Class::Any,
            All => Class::All,
        };
        let init = match class {
            Class::Min | Class::ArgMin => f64::INFINITY,
            Class::Max | Class::ArgMax => f64::NEG_INFINITY,
            Class::All => 1.0,
            _ => 0.0,
        };
        AxisReducer {
            op,
            class,
            shape: shape.to_vec(),
            reduced,
            out_strides,
            pos_strides,
            n: vec![0.0; out_len],
            a: vec![init; out_len],
            m2: if class == Class::Moments {
                vec![0.0; out_len]
            } else {
                Vec::new()
            },
            at: if matches!(class, Class::ArgMin | Class::ArgMax) {
                vec![u64::MAX; out_len]
            } else {
                Vec::new()
            },
            nan: vec![false; out_len],
        }
    }

    /// The result's shape: reduced axes dropped, or kept as 1.
    pub fn out_shape(&self, keepdims: bool) -> Vec<u64> {
        let axes: Vec<usize> = (0..self.shape.len()).filter(|&a| self.reduced[a]).collect();
        Self::out_shape_of(&self.shape, &axes, keepdims)
    }

    /// The shape of a reduction of an array of `shape` over `axes`.
    pub fn out_shape_of(shape: &[u64], axes: &[usize], keepdims: bool) -> Vec<u64> {
        (0..shape.len())
            .filter_map(|ax| match (axes.contains(&ax), keepdims) {
                (false, _) => Some(shape[ax]),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect()
    }

    #[inline]
    fn update(&mut self, o: usize, pos: u64, v: f64, skip: bool) {
        if v.is_nan() {
            if skip {
                return;
            }
            match self.class {
                Class::Min | Class::Max => {
                    self.nan[o] = true;
                    return;
                }
                // numpy: the first NaN's position.
                Class::ArgMin | Class::ArgMax => {
                    if !self.nan[o] || pos < self.at[o] {
                        self.nan[o] = true;
                        self.at[o] = pos;
                    }
                    return;
                }
                _ => {}
            }
        }
        if self.nan[o] && matches!(self.class, Class::ArgMin | Class::ArgMax) {
            return;
        }
        let n = self.n[o] + 1.0;
        self.n[o] = n;
        let a = &mut self.a[o];
        match self.class {
            Class::Sum => *a += v,
            Class::Mean => *a += v,
            Class::Moments => {
                let d = v - *a;
                *a += d / n;
                self.m2[o] += d * (v - *a);
            }
            Class::Min => {
                if v < *a {
                    *a = v;
                }
            }
            Class::Max => {
                if v > *a {
                    *a = v;
                }
            }
            // First occurrence wins; positions arrive in any order, so a
            // tie keeps the smaller one.
            Class::ArgMin => {
                if v < *a || (v == *a && pos < self.at[o]) {
                    *a = v;
                    self.at[o] = pos;
                }
            }
            Class::ArgMax => {
                if v > *a || (v == *a && pos < self.at[o]) {
                    *a = v;
                    self.at[o] = pos;
                }
            }
            Class::Count => {}
            Class::Any => {
                if v != 0.0 {
                    *a = 1.0;
                }
            }
            Class::All => {
                if v == 0.0 {
                    *a = 0.0;
                }
            }
        }
    }

    /// Adds one chunk whose first element is at `origin`.
    pub fn add(&mut self, data: &ArrayData, origin: &[u64]) {
        let nd = self.shape.len();
        let skip = self.op.skips_nan();
        with_array!(data, a => {
            let a = a.as_standard_layout();
            let local = a.shape().to_vec();
            let Some(values) = a.as_slice() else { return };
            if nd == 0 {
                if let Some(v) = values.first() {
                    self.update(0, 0, v.to_f64(), skip);
                }
                return;
            }
            let row = local[nd - 1].max(1);
            let last_reduced = self.reduced[nd - 1];
            let (os, ps) = (self.out_strides[nd - 1] as usize, self.pos_strides[nd - 1]);
            let mut idx = vec![0usize; nd];
            for (r, chunk_row) in values.chunks(row).enumerate() {
                let mut rem = r;
                for ax in (0..nd - 1).rev() {
                    idx[ax] = rem % local[ax];
                    rem /= local[ax];
                }
                let mut o = 0u64;
                let mut pos = 0u64;
                for ax in 0..nd {
                    let g = origin[ax] + if ax + 1 == nd { 0 } else { idx[ax] as u64 };
                    o += g * self.out_strides[ax];
                    pos += g * self.pos_strides[ax];
                }
                let o = o as usize;
                if last_reduced {
                    for (k, v) in chunk_row.iter().enumerate() {
                        self.update(o, pos + k as u64 * ps, v.to_f64(), skip);
                    }
                } else {
                    for (k, v) in chunk_row.iter().enumerate() {
                        self.update(o + k * os, pos + k as u64 * ps, v.to_f64(), skip);
                    }
                }
            }
        })
    }

    /// The results in row-major order of [`AxisReducer::out_shape`]
    /// (argmin/argmax as positions; any/all as 0 or 1). `ddof` as numpy's.
    pub fn finish(&self, ddof: u32) -> Vec<f64> {
        (0..self.n.len())
            .map(|o| {
                let n = self.n[o];
                let nan = self.nan[o];
                match self.class {
                    Class::Sum => self.a[o],
                    Class::Count => n,
                    Class::Any | Class::All => self.a[o],
                    Class::Mean if n > 0.0 => self.a[o] / n,
                    Class::Min | Class::Max if nan => f64::NAN,
                    Class::Min | Class::Max if n > 0.0 => self.a[o],
                    Class::ArgMin | Class::ArgMax if self.at[o] != u64::MAX => self.at[o] as f64,
                    Class::Moments => {
                        let dof = n - ddof as f64;
                        let var = if dof > 0.0 {
                            self.m2[o] / dof
                        } else {
                            f64::NAN
                        };
                        if matches!(self.op, Reduction::Std | Reduction::NanStd) {
                            var.sqrt()
                        } else {
                            var
                        }
                    }
                    _ => f64::NAN,
                }
            })
            .collect()
    }
}

/// [`partial_of_chunk`] for one reduction: the sums, means, variances,
/// minima and maxima keep only what `op` reads, in tight loops (a second
/// pass over the chunk for the squared deviations, which is also more
/// accurate than the running update); the other reductions take the
/// general path.
pub fn partial_of_chunk_op(
    data: &ArrayData,
    origin: &[u64],
    shape: &[u64],
    op: Reduction,
) -> Partial {
    use Reduction::*;
    let skip = op.skips_nan();
    if matches!(op, Count | ArgMin | ArgMax | Any | All) {
        return partial_of_chunk(data, origin, shape, skip);
    }
    let moments = matches!(op, Std | Var | NanStd | NanVar);
    let (n, sum, min, max, first_nan, m2) = with_array!(data, a => {
        let a = a.as_standard_layout();
        let values = a.as_slice().unwrap_or(&[]);
        let (mut n, mut sum) = (0u64, 0.0f64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut first_nan: Option<usize> = None;
        for (k, v) in values.iter().enumerate() {
            let v = v.to_f64();
            if v.is_nan() {
                if first_nan.is_none() {
                    first_nan = Some(k);
                }
                continue;
            }
            n += 1;
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
        let mut m2 = 0.0;
        if moments && n > 0 {
            let mean = sum / n as f64;
            for v in values.iter() {
                let v = v.to_f64();
                if !v.is_nan() {
                    m2 += (v - mean) * (v - mean);
                }
            }
        }
        (n, sum, min, max, first_nan, m2)
    });
    let mut p = Partial {
        n: n as f64,
        sum,
        mean: if n > 0 { sum / n as f64 } else { 0.0 },
        m2,
        min,
        max,
        ..Partial::default()
    };
    if let (Some(k), false) = (first_nan, skip) {
        // The NaN's global flat index.
        let local = data.shape();
        let mut rem = k;
        let mut flat = 0u64;
        let mut stride = 1u64;
        for ax in (0..local.len()).rev() {
            let i = (rem % local[ax]) as u64;
            rem /= local[ax];
            flat += (origin[ax] + i) * stride;
            stride *= shape[ax];
        }
        p.nan_at = Some(flat);
    }
    p
}

#[cfg(test)]
mod partial_bytes {
    use super::*;

    #[test]
    fn a_partial_survives_its_bytes_bit_for_bit() {
        let p = Partial::of([(3, 0.1), (4, f64::NAN), (9, -2.5e-300), (12, 7.0)], false);
        let q = Partial::from_bytes(&p.to_bytes()).expect("round trip");
        assert_eq!(p.to_bytes(), q.to_bytes());
        assert_eq!(q.nan_at, Some(4));
        assert_eq!((q.min_at, q.max_at), (9, 12));
        assert!(q.any && q.all);
        let e = Partial::default();
        assert_eq!(
            Partial::from_bytes(&e.to_bytes()).map(|x| x.to_bytes()),
            Some(e.to_bytes())
        );
        assert!(Partial::from_bytes(&[0; 7]).is_none());
    }
}

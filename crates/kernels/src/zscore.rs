//! scipy.stats.zscore along an axis, and a streaming per-voxel Welford
//! accumulator for the same statistics.
//!
//! scipy 1.17's `zscore(a, axis, ddof, nan_policy='propagate')` computes
//! `mean = np.mean(a, axis)`, `var = np.mean((a − mean)², axis)`, times
//! `n / (n − ddof)` when `ddof ≠ 0` (NaN when `n − ddof ≤ 0`),
//! `std = var ** 0.5` and `z = (a − mean) / std`; then every slice whose
//! `std <= |eps · mean|` (eps of float64) becomes NaN — so a constant slice
//! gives NaN, not ±inf. A NaN in a slice makes its mean NaN and every z of
//! the slice NaN. Here the sums run in float64 in index order along the
//! axis (what numpy does for a non-contiguous axis; along the last axis
//! numpy sums pairwise, a difference of a few ulps). Integer and float32
//! inputs are read as float64 (scipy computes a float32 input in float32).

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Zip};

use blockflow_core::Element;

/// What is wrong with a zscore or Welford request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ZscoreError {
    #[error("zscore: axis {axis} of a {ndim}-D array")]
    Axis { axis: usize, ndim: usize },
    #[error("welford: a frame of shape {got:?} does not match the statistics' shape {want:?}")]
    Shape { got: Vec<usize>, want: Vec<usize> },
    #[error("welford: {what} has {got} values, the shape {shape:?} needs {want}")]
    Parts {
        what: &'static str,
        got: usize,
        want: usize,
        shape: Vec<usize>,
    },
}

/// scipy.stats.zscore(a, axis=axis, ddof=ddof) in float64, for a chunk
/// that holds the whole axis.
pub fn zscore<T: Element>(
    a: ArrayViewD<'_, T>,
    axis: usize,
    ddof: usize,
) -> Result<ArrayD<f64>, ZscoreError> {
    if axis >= a.ndim() {
        return Err(ZscoreError::Axis {
            axis,
            ndim: a.ndim(),
        });
    }
    let x: ArrayD<f64> = a.mapv(|v| v.to_f64());
    let n = x.shape()[axis];
    let mut out_shape = x.shape().to_vec();
    out_shape[axis] = 1;
    // mean: running sums in index order along the axis.
    let mut sum = ArrayD::<f64>::zeros(IxDyn(&out_shape));
    for lane in x.axis_iter(Axis(axis)) {
        Zip::from(sum.view_mut().remove_axis(Axis(axis)))
            .and(&lane)
            .for_each(|s, &v| *s += v);
    }
    let mean = sum.mapv(|s| s / n as f64);
    let mean_r = mean.view().remove_axis(Axis(axis));
    let mut sq = ArrayD::<f64>::zeros(IxDyn(&out_shape));
    for lane in x.axis_iter(Axis(axis)) {
        Zip::from(sq.view_mut().remove_axis(Axis(axis)))
            .and(&lane)
            .and(&mean_r)
            .for_each(|s, &v, &m| {
                let d = v - m;
                *s += d * d;
            });
    }
    let std = sq.mapv(|s| {
        let mut var = s / n as f64;
        if ddof != 0 {
            let nc = n as f64 - ddof as f64;
            var *= if nc > 0.0 { n as f64 / nc } else { f64::NAN };
        }
        var.sqrt()
    });
    let eps = f64::EPSILON;
    let mut z = x;
    Zip::from(&mut z)
        .and_broadcast(&mean)
        .and_broadcast(&std)
        .for_each(|v, &m, &s| {
            *v = if s <= (eps * m).abs() {
                f64::NAN
            } else {
                (*v - m) / s
            };
        });
    Ok(z)
}

/// Running per-voxel count, mean and sum of squared deviations (Welford),
/// for statistics over a stream of frames. The fields are plain data: save
/// `n`, the shape and the two arrays' values (C order) to resume
/// ([`Welford::to_parts`], [`Welford::from_parts`]).
///
/// Accuracy: the stored mean is rounded at every frame, so the standard
/// deviation carries a relative error of about `eps · |mean| / std` (numpy's
/// two-pass `std` does not). For camera-like data (mean/std ≈ 25) it agrees
/// with numpy to ~1e-14; with mean/std = 1e4 (e.g. 1e4 + unit noise) to
/// ~1e-12. Subtract a per-voxel offset first where that matters.
#[derive(Debug, Clone, PartialEq)]
pub struct Welford {
    pub n: u64,
    pub mean: ArrayD<f64>,
    pub m2: ArrayD<f64>,
}

impl Welford {
    /// No frames yet, statistics of frames of `shape`.
    pub fn new(shape: &[usize]) -> Welford {
        Welford {
            n: 0,
            mean: ArrayD::zeros(IxDyn(shape)),
            m2: ArrayD::zeros(IxDyn(shape)),
        }
    }

    /// Rebuilds the accumulator from saved parts (`mean` and `m2` in C order).
    pub fn from_parts(
        n: u64,
        shape: &[usize],
        mean: Vec<f64>,
        m2: Vec<f64>,
    ) -> Result<Welford, ZscoreError> {
        let want: usize = shape.iter().product();
        for (what, got) in [("mean", mean.len()), ("m2", m2.len())] {
            if got != want {
                return Err(ZscoreError::Parts {
                    what,
                    got,
                    want,
                    shape: shape.to_vec(),
                });
            }
        }
        let arr = |v: Vec<f64>| {
            ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|_| ZscoreError::Parts {
                what: "shape",
                got: 0,
                want,
                shape: shape.to_vec(),
            })
        };
        Ok(Welford {
            n,
            mean: arr(mean)?,
            m2: arr(m2)?,
        })
    }

    /// The parts to save: `(n, shape, mean, m2)`, arrays in C order.
    pub fn to_parts(&self) -> (u64, Vec<usize>, Vec<f64>, Vec<f64>) {
        (
            self.n,
            self.mean.shape().to_vec(),
            self.mean.iter().copied().collect(),
            self.m2.iter().copied().collect(),
        )
    }

    /// Shape of a frame.
    pub fn shape(&self) -> &[usize] {
        self.mean.shape()
    }

    fn check(&self, shape: &[usize]) -> Result<(), ZscoreError> {
        if shape != self.mean.shape() {
            return Err(ZscoreError::Shape {
                got: shape.to_vec(),
                want: self.mean.shape().to_vec(),
            });
        }
        Ok(())
    }

    /// Adds one frame.
    pub fn push<T: Element>(&mut self, frame: ArrayViewD<'_, T>) -> Result<(), ZscoreError> {
        self.check(frame.shape())?;
        self.n += 1;
        let n = self.n as f64;
        Zip::from(&mut self.mean)
            .and(&mut self.m2)
            .and(&frame)
            .for_each(|m, s, &x| {
                let x = x.to_f64();
                let d = x - *m;
                *m += d / n;
                *s += d * (x - *m);
            });
        Ok(())
    }

    /// Combines the statistics of another stream of frames (Chan et al.).
    pub fn merge(&mut self, other: &Welford) -> Result<(), ZscoreError> {
        self.check(other.mean.shape())?;
        if other.n == 0 {
            return Ok(());
        }
        if self.n == 0 {
            *self = other.clone();
            return Ok(());
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        Zip::from(&mut self.mean)
            .and(&mut self.m2)
            .and(&other.mean)
            .and(&other.m2)
            .for_each(|ma, sa, &mb, &sb| {
                let d = mb - *ma;
                *ma += d * nb / n;
                *sa += sb + d * d * na * nb / n;
            });
        self.n += other.n;
        Ok(())
    }

    /// Per-voxel mean of the frames so far (NaN before the first frame).
    pub fn mean(&self) -> ArrayD<f64> {
        if self.n == 0 {
            return self.mean.mapv(|_| f64::NAN);
        }
        self.mean.clone()
    }

    /// Per-voxel variance with `ddof` (NaN when `n ≤ ddof`).
    pub fn var(&self, ddof: usize) -> ArrayD<f64> {
        let nc = self.n as f64 - ddof as f64;
        self.m2.mapv(|s| if nc > 0.0 { s / nc } else { f64::NAN })
    }

    /// Per-voxel standard deviation with `ddof` (numpy's `std(ddof=…)`).
    pub fn std(&self, ddof: usize) -> ArrayD<f64> {
        self.var(ddof).mapv(f64::sqrt)
    }

    /// A frame's z-score against the running statistics, with scipy's rule
    /// that `std <= |eps · mean|` gives NaN.
    pub fn zscore<T: Element>(
        &self,
        frame: ArrayViewD<'_, T>,
        ddof: usize,
    ) -> Result<ArrayD<f64>, ZscoreError> {
        self.check(frame.shape())?;
        let std = self.std(ddof);
        let mean = self.mean();
        let mut z = frame.mapv(|v| v.to_f64());
        Zip::from(&mut z)
            .and(&mean)
            .and(&std)
            .for_each(|v, &m, &s| {
                *v = if s <= (f64::EPSILON * m).abs() {
                    f64::NAN
                } else {
                    (*v - m) / s
                };
            });
        Ok(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_of_a_small_series() {
        // scipy.stats.zscore([1, 2, 3, 4]) = [-1.3416..., -0.4472..., 0.4472..., 1.3416...]
        let a = ndarray::arr1(&[1.0, 2.0, 3.0, 4.0]).into_dyn();
        let z = zscore(a.view(), 0, 0).expect("z");
        let want = [
            -1.3416407864998738,
            -0.4472135954999579,
            0.4472135954999579,
            1.3416407864998738,
        ];
        for (g, w) in z.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{g} vs {w}");
        }
        let c = ndarray::arr1(&[2.0, 2.0, 2.0]).into_dyn();
        assert!(zscore(c.view(), 0, 0)
            .expect("z")
            .iter()
            .all(|v| v.is_nan()));
        assert!(zscore(c.view(), 1, 0).is_err());
        assert!(zscore(a.view(), 0, 4)
            .expect("z")
            .iter()
            .all(|v| v.is_nan()));
    }

    #[test]
    fn merge_equals_pushing_everything() {
        let frames: Vec<ArrayD<f64>> = (0..7)
            .map(|t| {
                ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| {
                    (t * 5 + i[0] * 3 + i[1]) as f64 % 4.0 + 1e3
                })
            })
            .collect();
        let mut all = Welford::new(&[2, 3]);
        let mut a = Welford::new(&[2, 3]);
        let mut b = Welford::new(&[2, 3]);
        for (t, f) in frames.iter().enumerate() {
            all.push(f.view()).expect("push");
            if t < 3 {
                a.push(f.view())
            } else {
                b.push(f.view())
            }
            .expect("push");
        }
        a.merge(&b).expect("merge");
        assert_eq!(a.n, 7);
        for (x, y) in a.std(1).iter().zip(all.std(1).iter()) {
            assert!((x - y).abs() <= 1e-12 * y.abs());
        }
        let (n, shape, mean, m2) = all.to_parts();
        let back = Welford::from_parts(n, &shape, mean, m2).expect("parts");
        assert_eq!(back, all);
        assert!(Welford::from_parts(1, &[2, 2], vec![0.0; 3], vec![0.0; 4]).is_err());
        assert!(all
            .push(ArrayD::<f64>::zeros(IxDyn(&[3, 2])).view())
            .is_err());
    }
}

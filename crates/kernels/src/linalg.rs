//! Tall-skinny SVD for PCA (TSQR), on faer's blocked Householder QR and SVD.
//!
//! A tall matrix `A` (m x n, m >> n) arrives as row blocks. Each block is
//! reduced to its R factor ([`qr_r`]); R factors are combined pairwise in a
//! binary tree ([`stack_r`], [`Tsqr`]); the SVD of the final n x n R
//! ([`svd_r`]) gives the singular values of `A` and its right singular
//! vectors `V`, since `A = Q R` with orthonormal `Q`. The left singular
//! vectors of any row block are then `block · V[:, :k] / s[:k]`
//! ([`left_singular`]), and `block · V[:, :k]` ([`project`]) is `U · diag(s)`
//! for those rows, the principal-component scores that seed 001 plots.
//!
//! Conventions: singular values descending; [`svd_r`] signs each column of
//! `V` so that its component of largest magnitude (the first such, on a
//! tie) is positive, which makes results independent of the block order and
//! size up to rounding. numpy's SVD picks signs freely, so compare `U` and
//! `V` with numpy up to the sign of each column, or sign both by one rule:
//! [`sign_by_u_sums`] applies dask's `svd_flip(u, v, u_based_decision=True)`
//! (each column of `U` with a non-negative sum) from the column sums of `A`
//! ([`row_sums`] of each block, added up), without `U`.
//!
//! Accuracy: TSQR is backward stable, so singular values are exact to about
//! `1e-15 · s[0]` absolutely (a Gram-matrix `AᵀA` method would lose the small
//! ones: it is accurate only to `1e-8 · s[0]`). After centring, the last
//! singular value is about 0 and its singular vectors are arbitrary.
//!
//! Parallelism: faer's global setting ([`faer::get_global_parallelism`],
//! rayon's global pool by default).

use std::collections::BTreeMap;

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::qr::no_pivoting::factor as qr;
use faer::linalg::svd::{self as faer_svd, ComputeSvdVectors};
use faer::{Accum, Mat, MatMut, MatRef};
use ndarray::{Array1, Array2, ArrayView2};

/// Errors of the tall-skinny SVD.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinalgError {
    #[error("tsqr: block {key} has {got} columns, expected {expected}")]
    Columns {
        key: u64,
        got: usize,
        expected: usize,
    },
    #[error("tsqr: R factors with {a} and {b} columns cannot be stacked")]
    Stack { a: usize, b: usize },
    #[error("tsqr: block {key} was given twice")]
    DuplicateKey { key: u64 },
    #[error("tsqr: no block was given")]
    Empty,
    #[error("svd: did not converge (is there a NaN or an infinity in the data?)")]
    NoConvergence,
    #[error("project: V has {v_rows} rows but the block {cols} columns, or k = {k} exceeds them")]
    Project {
        v_rows: usize,
        cols: usize,
        k: usize,
    },
}

/// Copies rows `[row0, row0 + src.nrows())` of a column-major faer matrix
/// from an ndarray view, tile by tile so that both sides are read and
/// written in cache-friendly runs.
fn fill(dst: &mut Mat<f64>, row0: usize, src: ArrayView2<f64>) {
    const TILE: usize = 64;
    let (m, n) = src.dim();
    for i0 in (0..m).step_by(TILE) {
        let i1 = (i0 + TILE).min(m);
        for j in 0..n {
            let col = &mut dst.col_as_slice_mut(j)[row0 + i0..row0 + i1];
            for (d, i) in col.iter_mut().zip(i0..i1) {
                *d = src[[i, j]];
            }
        }
    }
}

/// QR-factorises `a` in place and returns its R factor: the upper
/// triangle of the first `min(m, n)` rows.
fn factor_r(mut a: Mat<f64>) -> Array2<f64> {
    let (m, n) = (a.nrows(), a.ncols());
    let k = m.min(n);
    if k == 0 {
        return Array2::zeros((0, n));
    }
    let par = faer::get_global_parallelism();
    let bs = qr::recommended_block_size::<f64>(m, n);
    let mut coeff = Mat::<f64>::zeros(bs, k);
    let mut mem = MemBuffer::new(qr::qr_in_place_scratch::<f64>(
        m,
        n,
        bs,
        par,
        Default::default(),
    ));
    qr::qr_in_place(
        a.as_mut(),
        coeff.as_mut(),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    );
    let mut r = Array2::zeros((k, n));
    for j in 0..n {
        let col = a.col_as_slice(j);
        for i in 0..=j.min(k - 1) {
            r[[i, j]] = col[i];
        }
    }
    r
}

/// The R factor (`min(m, n)` x `n`, upper triangular) of a row block
/// (`m` x `n`): `block = Q R` with orthonormal `Q`. Signs of R's rows are
/// faer's; they do not matter to [`svd_r`].
pub fn qr_r(block: ArrayView2<f64>) -> Array2<f64> {
    let (m, n) = block.dim();
    let mut a = Mat::<f64>::zeros(m, n);
    fill(&mut a, 0, block);
    factor_r(a)
}

/// The R factor of two R factors (or any two row blocks) stacked, `a` on
/// top of `b`: the combination step of the tree.
pub fn stack_r(a: &Array2<f64>, b: &Array2<f64>) -> Result<Array2<f64>, LinalgError> {
    let (ma, n) = a.dim();
    let (mb, nb) = b.dim();
    if n != nb {
        return Err(LinalgError::Stack { a: n, b: nb });
    }
    let mut s = Mat::<f64>::zeros(ma + mb, n);
    fill(&mut s, 0, a.view());
    fill(&mut s, ma, b.view());
    Ok(factor_r(s))
}

/// Flips the columns of `v` so that each one's largest-magnitude component
/// (the first, on a tie) is positive.
fn sign_columns(v: &mut Array2<f64>) {
    for mut col in v.columns_mut() {
        let mut best = 0usize;
        for (i, x) in col.iter().enumerate() {
            if x.abs() > col[best].abs() {
                best = i;
            }
        }
        if !col.is_empty() && col[best] < 0.0 {
            col.mapv_inplace(|x| -x);
        }
    }
}

/// The sums over the rows of a row block (`n` values, one per column of
/// `A`): added up over the blocks they give `1ᵀA`, from which
/// [`sign_by_u_sums`] gets the sums of `U`'s columns.
pub fn row_sums(block: ArrayView2<f64>) -> Array1<f64> {
    block.sum_axis(ndarray::Axis(0))
}

/// dask's `svd_flip(u, v, u_based_decision=True)` without `U`: flips
/// column `j` of `v` (and so of `U`) where the sum of `U`'s column `j` is
/// negative. That sum is `(1ᵀA) · v_j / s_j`, so its sign is the sign of
/// `col_sums · v_j` (`col_sums`: `1ᵀA`, the sums of each column of `A` over
/// all its rows); 0 counts as non-negative, as dask's `signs >= 0`. Where
/// that sum is within rounding of 0 (a zero singular value, or a mode
/// orthogonal to the ones vector) the sign is as arbitrary as dask's.
pub fn sign_by_u_sums(v: &mut Array2<f64>, col_sums: &Array1<f64>) -> Result<(), LinalgError> {
    if col_sums.len() != v.nrows() {
        return Err(LinalgError::Project {
            v_rows: v.nrows(),
            cols: col_sums.len(),
            k: v.ncols(),
        });
    }
    for mut col in v.columns_mut() {
        if col_sums.dot(&col) < 0.0 {
            col.mapv_inplace(|x| -x);
        }
    }
    Ok(())
}

/// `f` of `values` in descending order of the values, with `vectors`'
/// columns in the same order, signed by [`sign_columns`].
fn descending(
    values: &[f64],
    vectors: &Mat<f64>,
    f: impl Fn(f64) -> f64,
) -> (Array1<f64>, Array2<f64>) {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| values[j].total_cmp(&values[i]));
    let out = Array1::from_iter(order.iter().map(|&i| f(values[i])));
    let mut v = Array2::zeros((vectors.nrows(), n));
    for (jo, &j) in order.iter().enumerate() {
        for (i, &x) in vectors.col_as_slice(j).iter().enumerate() {
            v[[i, jo]] = x;
        }
    }
    sign_columns(&mut v);
    (out, v)
}

/// The SVD of an R factor (`k` x `n`): the `n` singular values, descending
/// (zeros past `k`), and `V` (`n` x `n`) whose columns are the right
/// singular vectors, signed as the module says.
pub fn svd_r(r: &Array2<f64>) -> Result<(Array1<f64>, Array2<f64>), LinalgError> {
    let (k, n) = r.dim();
    if n == 0 {
        return Ok((Array1::zeros(0), Array2::zeros((0, 0))));
    }
    // Zero rows change neither the singular values nor V.
    let rows = k.max(n);
    let mut a = Mat::<f64>::zeros(rows, n);
    fill(&mut a, 0, r.view());
    let par = faer::get_global_parallelism();
    let mut s = Diag::<f64>::zeros(n);
    let mut v = Mat::<f64>::zeros(n, n);
    let mut mem = MemBuffer::new(faer_svd::svd_scratch::<f64>(
        rows,
        n,
        ComputeSvdVectors::No,
        ComputeSvdVectors::Full,
        par,
        Default::default(),
    ));
    faer_svd::svd(
        a.as_ref(),
        s.as_mut(),
        None,
        Some(v.as_mut()),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| LinalgError::NoConvergence)?;
    // Descending, stable (faer already sorts; this makes it a contract).
    let sv: Vec<f64> = s.column_vector().iter().copied().collect();
    Ok(descending(&sv, &v, |x| x))
}

/// The Gram matrix `AᵀA` (`n` x `n`) of a tall matrix, accumulated row
/// block by row block (lower triangle only: half the flops of a full
/// product, at matrix-multiply speed on faer's parallelism). Its
/// eigendecomposition ([`Gram::eigen`]) gives `A`'s singular values and
/// right singular vectors with a quarter of TSQR's flops, accurate for the
/// large singular values (see [`Gram::eigen`]).
#[derive(Debug, Clone)]
pub struct Gram {
    g: Mat<f64>,
    blocks: u64,
}

impl Gram {
    pub fn new(n: usize) -> Self {
        Gram {
            g: Mat::zeros(n, n),
            blocks: 0,
        }
    }

    /// Adds `blockᵀ · block` (the block: `m` x `n`).
    pub fn add(&mut self, block: ArrayView2<f64>) -> Result<(), LinalgError> {
        let n = self.g.ncols();
        if block.ncols() != n {
            return Err(LinalgError::Columns {
                key: self.blocks,
                got: block.ncols(),
                expected: n,
            });
        }
        let mut a = Mat::<f64>::zeros(block.nrows(), n);
        fill(&mut a, 0, block);
        faer::linalg::matmul::triangular::matmul(
            self.g.as_mut(),
            faer::linalg::matmul::triangular::BlockStructure::TriangularLower,
            Accum::Add,
            a.transpose(),
            faer::linalg::matmul::triangular::BlockStructure::Rectangular,
            a.as_ref(),
            faer::linalg::matmul::triangular::BlockStructure::Rectangular,
            1.0,
            faer::get_global_parallelism(),
        );
        self.blocks += 1;
        Ok(())
    }

    /// The singular values of `A` (descending: the square roots of `AᵀA`'s
    /// eigenvalues, negative rounding clamped to 0) and `V`, signed as
    /// [`svd_r`]'s. Accuracy: an eigenvalue is exact to about
    /// `1e-16 · n · s[0]²`, so `s[i]` to about `1e-16 · n · s[0]² / s[i]`:
    /// as TSQR's for the large singular values, but only to `~1e-8 · s[0]`
    /// for those near 0 ([`Gram::reliable`] says which).
    pub fn eigen(&self) -> Result<(Array1<f64>, Array2<f64>), LinalgError> {
        let n = self.g.ncols();
        if self.blocks == 0 {
            return Err(LinalgError::Empty);
        }
        let par = faer::get_global_parallelism();
        let mut w = Diag::<f64>::zeros(n);
        let mut u = Mat::<f64>::zeros(n, n);
        let mut mem = MemBuffer::new(faer::linalg::evd::self_adjoint_evd_scratch::<f64>(
            n,
            faer::linalg::evd::ComputeEigenvectors::Yes,
            par,
            Default::default(),
        ));
        faer::linalg::evd::self_adjoint_evd(
            self.g.as_ref(),
            w.as_mut(),
            Some(u.as_mut()),
            par,
            MemStack::new(&mut mem),
            Default::default(),
        )
        .map_err(|_| LinalgError::NoConvergence)?;
        let ev: Vec<f64> = w.column_vector().iter().copied().collect();
        Ok(descending(&ev, &u, |x| x.max(0.0).sqrt()))
    }

    /// Whether the first `k` singular values (and their vectors) from
    /// [`Gram::eigen`] are as accurate as TSQR's to within `1e-11 · s[0]`:
    /// an eigenvalue's error is `c · 1.1e-16 · s[0]²` with `c` a small
    /// multiple of the rounding the product and the eigensolver add, so
    /// `s[i]`'s is `c · 5.5e-17 · s[0]² / s[i]`; with `s[k-1] >= 1e-3 · s[0]`
    /// that stays below `1e-11 · s[0]` for any `c` up to 180. A vector's
    /// error is TSQR's times at most `s[0] / 2 s[i]` (500).
    pub fn reliable(s: &Array1<f64>, k: usize) -> bool {
        match (s.first(), k.checked_sub(1).and_then(|i| s.get(i))) {
            (Some(&s0), Some(&sk)) => s0 == 0.0 || sk >= 1e-3 * s0,
            _ => false,
        }
    }
}

/// `block · V[:, :k]` (`m` x `k`): the rows' coordinates on the first `k`
/// right singular vectors, which is `U[:, :k] · diag(s[:k])` for these rows
/// (seed 001's `u.dot(np.diag(s))`). Well defined even where `s` is 0.
pub fn project(
    block: ArrayView2<f64>,
    v: &Array2<f64>,
    k: usize,
) -> Result<Array2<f64>, LinalgError> {
    let (m, n) = block.dim();
    if v.nrows() != n || k > v.ncols() {
        return Err(LinalgError::Project {
            v_rows: v.nrows(),
            cols: n,
            k,
        });
    }
    let block = block.as_standard_layout();
    let v = v.as_standard_layout();
    let mut out = Array2::<f64>::zeros((m, k));
    let (Some(bs), Some(vs), Some(os)) = (block.as_slice(), v.as_slice(), out.as_slice_mut())
    else {
        // Standard layout always has a slice; unreachable in practice.
        return Err(LinalgError::Project {
            v_rows: v.nrows(),
            cols: n,
            k,
        });
    };
    let lhs = MatRef::from_row_major_slice(bs, m, n);
    let rhs = MatRef::from_row_major_slice(vs, n, v.ncols()).subcols(0, k);
    let dst = MatMut::from_row_major_slice_mut(os, m, k);
    faer::linalg::matmul::matmul(
        dst,
        Accum::Replace,
        lhs,
        rhs,
        1.0,
        faer::get_global_parallelism(),
    );
    Ok(out)
}

/// The left singular vectors of a row block: `block · V[:, :k] / s[:k]`
/// (`m` x `k`). A column whose singular value is 0 is left 0 (numpy returns
/// an arbitrary orthonormal completion there); near-zero singular values
/// amplify rounding, so prefer [`project`] when the scale is wanted anyway.
pub fn left_singular(
    block: ArrayView2<f64>,
    v: &Array2<f64>,
    s: &Array1<f64>,
    k: usize,
) -> Result<Array2<f64>, LinalgError> {
    let mut u = project(block, v, k)?;
    for (mut col, &sj) in u.columns_mut().into_iter().zip(s.iter()) {
        if sj == 0.0 {
            col.fill(0.0);
        } else {
            col.mapv_inplace(|x| x / sj);
        }
    }
    Ok(u)
}

/// A tall-skinny QR reduction over keyed row blocks.
///
/// Blocks are keyed by their index along the rows (0, 1, 2, ...) and may
/// arrive in any order. Block `key` is a leaf of a binary tree; a node
/// holds the R factor of a complete aligned run of keys
/// `[i·2^l, (i+1)·2^l)` and is combined with its sibling (left on top) as
/// soon as both are there, so the tree, and the result bit for bit, depends
/// on the keys only, never on the arrival order. Held R factors: the number
/// of complete runs not yet paired, at most `⌊log2 B⌋ + 1` when the `B`
/// blocks arrive in key order, and that plus the number of blocks that
/// arrived ahead of a missing one otherwise (bounded by what a runtime has
/// in flight). Each R is at most `n` x `n` f64 ([`Tsqr::held_bytes`]).
/// [`Tsqr::finish`] combines the remaining runs left to right.
#[derive(Debug)]
pub struct Tsqr {
    ncols: usize,
    /// (level, index) -> R of keys `[index << level, (index + 1) << level)`.
    nodes: BTreeMap<(u32, u64), Array2<f64>>,
    blocks: u64,
    peak_held: usize,
    peak_bytes: u64,
}

impl Tsqr {
    /// A reduction of blocks with `ncols` columns.
    pub fn new(ncols: usize) -> Self {
        Tsqr {
            ncols,
            nodes: BTreeMap::new(),
            blocks: 0,
            peak_held: 0,
            peak_bytes: 0,
        }
    }

    pub fn ncols(&self) -> usize {
        self.ncols
    }

    /// Blocks given so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// R factors held now.
    pub fn held(&self) -> usize {
        self.nodes.len()
    }

    /// Bytes of the R factors held now.
    pub fn held_bytes(&self) -> u64 {
        self.nodes.values().map(|r| (r.len() * 8) as u64).sum()
    }

    /// The most R factors held at once so far.
    pub fn peak_held(&self) -> usize {
        self.peak_held
    }

    /// The most bytes of R factors held at once so far.
    pub fn peak_bytes(&self) -> u64 {
        self.peak_bytes
    }

    /// Bytes a reduction of `blocks` in-order blocks of `ncols` columns
    /// holds at most, for planning: `(⌊log2 blocks⌋ + 2)` n x n factors (the
    /// held ones plus the one being combined).
    pub fn projected_bytes(ncols: usize, blocks: u64) -> u64 {
        let levels = u64::from(64 - blocks.max(1).leading_zeros()) + 1;
        levels * (ncols * ncols * 8) as u64
    }

    /// Adds row block `key` (`m` x `ncols`, any `m`).
    pub fn push(&mut self, key: u64, block: ArrayView2<f64>) -> Result<(), LinalgError> {
        self.check(key, block.ncols())?;
        self.push_r(key, qr_r(block))
    }

    /// Adds the R factor of row block `key`, computed elsewhere with
    /// [`qr_r`] (for example in parallel workers).
    pub fn push_r(&mut self, key: u64, r: Array2<f64>) -> Result<(), LinalgError> {
        self.check(key, r.ncols())?;
        let (mut level, mut index, mut r) = (0u32, key, r);
        while let Some(sibling) = self.nodes.remove(&(level, index ^ 1)) {
            r = if index & 1 == 0 {
                stack_r(&r, &sibling)?
            } else {
                stack_r(&sibling, &r)?
            };
            level += 1;
            index >>= 1;
        }
        self.nodes.insert((level, index), r);
        self.blocks += 1;
        self.peak_held = self.peak_held.max(self.nodes.len());
        self.peak_bytes = self.peak_bytes.max(self.held_bytes());
        Ok(())
    }

    fn check(&self, key: u64, ncols: usize) -> Result<(), LinalgError> {
        if ncols != self.ncols {
            return Err(LinalgError::Columns {
                key,
                got: ncols,
                expected: self.ncols,
            });
        }
        let covered = self
            .nodes
            .keys()
            .any(|&(l, i)| key.checked_shr(l).unwrap_or(0) == i);
        if covered {
            return Err(LinalgError::DuplicateKey { key });
        }
        Ok(())
    }

    /// The R factor of all the blocks (`min(rows, n)` x `n`).
    pub fn finish_r(self) -> Result<Array2<f64>, LinalgError> {
        let mut runs: Vec<(u128, Array2<f64>)> = self
            .nodes
            .into_iter()
            .map(|((l, i), r)| ((i as u128) << l, r))
            .collect();
        runs.sort_by_key(|(start, _)| *start);
        let mut it = runs.into_iter().map(|(_, r)| r);
        let mut acc = it.next().ok_or(LinalgError::Empty)?;
        for r in it {
            acc = stack_r(&acc, &r)?;
        }
        Ok(acc)
    }

    /// Singular values (descending, `n` of them) and `V` (`n` x `n`) of all
    /// the blocks stacked in key order.
    pub fn finish(self) -> Result<(Array1<f64>, Array2<f64>), LinalgError> {
        svd_r(&self.finish_r()?)
    }
}

/// A band of a stack (N, f...) as the features x observations block of a
/// PCA's data matrix (f rows, N columns, each image a column), each feature
/// centred by its mean over the N observations (the band's own part of the
/// mean image).
pub fn centred_features(data: &blockflow_core::ArrayData) -> Array2<f64> {
    use blockflow_core::{with_array, Element};
    let n = data.shape()[0];
    let f = data.len() / n.max(1);
    let mut b = Array2::<f64>::zeros((f, n));
    with_array!(data, a => {
        let a = a.as_standard_layout();
        if let Some(values) = a.as_slice() {
            for (t, row) in values.chunks(f.max(1)).enumerate() {
                let mut col = b.column_mut(t);
                for (dst, v) in col.iter_mut().zip(row) {
                    *dst = v.to_f64();
                }
            }
        }
    });
    for mut row in b.rows_mut() {
        let m = row.sum() / n.max(1) as f64;
        row.mapv_inplace(|v| v - m);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn matrix(m: usize, n: usize) -> Array2<f64> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            let x = (i * 7919 + j * 104_729) % 1009;
            x as f64 / 1009.0 - 0.5
        })
    }

    #[test]
    fn gram_eigen_agrees_with_tsqr_where_reliable_and_says_where_not() {
        let a = matrix(300, 9);
        let (s_qr, v_qr) = svd_r(&qr_r(a.view())).expect("svd");
        let mut g = Gram::new(9);
        for rows in [0..70, 70..71, 71..300] {
            g.add(a.slice(ndarray::s![rows, ..])).expect("add");
        }
        let (s, v) = g.eigen().expect("eigen");
        assert!(Gram::reliable(&s, 9), "{s:?}");
        for i in 0..9 {
            assert!(
                (s[i] - s_qr[i]).abs() <= 1e-12 * s_qr[0],
                "s{i}: {} vs {}",
                s[i],
                s_qr[i]
            );
            for r in 0..9 {
                assert!((v[[r, i]] - v_qr[[r, i]]).abs() <= 1e-9, "v[{r}, {i}]");
            }
        }
        // Centred, the last singular value is 0 up to rounding: not reliable.
        let mean = a.mean_axis(ndarray::Axis(1)).expect("mean");
        let centred = &a - &mean.insert_axis(ndarray::Axis(1));
        let mut g = Gram::new(9);
        g.add(centred.view()).expect("add");
        let (s, _) = g.eigen().expect("eigen");
        assert!(Gram::reliable(&s, 8) && !Gram::reliable(&s, 9), "{s:?}");
        assert_eq!(
            Gram::new(3).add(a.view()),
            Err(LinalgError::Columns {
                key: 0,
                got: 9,
                expected: 3
            })
        );
        assert_eq!(Gram::new(3).eigen().map(|_| ()), Err(LinalgError::Empty));
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn r_reproduces_gram_matrix() {
        let a = matrix(40, 6);
        let r = qr_r(a.view());
        assert_eq!(r.dim(), (6, 6));
        let g1 = a.t().dot(&a);
        let g2 = r.t().dot(&r);
        for (x, y) in g1.iter().zip(g2.iter()) {
            assert!((x - y).abs() < 1e-12 * 40.0, "{x} {y}");
        }
        // A short block gives a trapezoidal R.
        let r = qr_r(a.slice(ndarray::s![..3, ..]));
        assert_eq!(r.dim(), (3, 6));
        assert_eq!(r[[2, 1]], 0.0);
    }

    /// dask's u-based flip from the column sums alone equals the flip
    /// computed from `U` itself (`A V / s`), block by block, on a centred
    /// matrix (seed 001's layout, where `V`'s column sums are ~0).
    #[test]
    #[allow(clippy::unwrap_used)]
    fn u_sums_sign_the_modes_as_dask_u_based_svd_flip() {
        let mut a = matrix(72, 10);
        for mut row in a.rows_mut() {
            let m = row.sum() / 10.0;
            row.mapv_inplace(|x| x - m);
        }
        let mut sums = Array1::zeros(10);
        let mut t = Tsqr::new(10);
        for k in 0..6u64 {
            let b = a.slice(ndarray::s![(k as usize) * 12..(k as usize + 1) * 12, ..]);
            sums += &row_sums(b);
            t.push(k, b).unwrap();
        }
        let (s, mut v) = t.finish().unwrap();
        sign_by_u_sums(&mut v, &sums).unwrap();
        let u = project(a.view(), &v, 10).unwrap();
        let mut flipped = 0;
        for j in 0..9 {
            assert!(s[j] > 1e-6);
            let usum = u.column(j).sum() / s[j];
            // dask: signs = (sum >= 0) * 2 - 1 applied to u; here already.
            assert!(usum > 1e-6, "mode {j}: sum of u {usum}");
            // The ones vector is orthogonal to V's columns: what dask's
            // default rule would read is rounding.
            assert!(v.column(j).sum().abs() < 1e-12);
            let (_, v0) = svd_r(&qr_r(a.view())).unwrap();
            if v0.column(j).dot(&v.column(j)) < 0.0 {
                flipped += 1;
            }
        }
        assert!(
            flipped > 0,
            "the rule differs from the largest-component one here"
        );
        assert!(sign_by_u_sums(&mut v, &Array1::zeros(3)).is_err());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn tree_holds_few_factors_in_order() {
        let a = matrix(64 * 5, 4);
        let mut t = Tsqr::new(4);
        for k in 0..64u64 {
            let rows = ndarray::s![(k as usize) * 5..(k as usize + 1) * 5, ..];
            t.push(k, a.slice(rows)).unwrap();
        }
        assert!(t.peak_held() <= 7, "{}", t.peak_held());
        assert_eq!(t.held(), 1);
        assert!(matches!(
            t.push(3, a.slice(ndarray::s![..5, ..])),
            Err(LinalgError::DuplicateKey { key: 3 })
        ));
        assert!(matches!(
            t.push(99, a.slice(ndarray::s![..5, ..3])),
            Err(LinalgError::Columns { .. })
        ));
        let (s, v) = t.finish().unwrap();
        let (s2, v2) = svd_r(&qr_r(a.view())).unwrap();
        for (x, y) in s.iter().zip(s2.iter()) {
            assert!((x - y).abs() < 1e-12 * s2[0]);
        }
        for (x, y) in v.iter().zip(v2.iter()) {
            assert!((x - y).abs() < 1e-10);
        }
        assert!(matches!(Tsqr::new(3).finish(), Err(LinalgError::Empty)));
    }
}

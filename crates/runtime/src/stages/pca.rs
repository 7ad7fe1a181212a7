//! `pca`: principal components by TSQR over bands of features. Each band
//! (all N observations of some features) is stacked under the R factor of
//! the bands before it and factored again (the flat TSQR: one N x N factor
//! held, and fewer flops than a binary tree, whose merges of two full R
//! factors cost as much as the bands' own QRs here); for the modes, the
//! bands also go into a scratch store. The SVD of the last R gives s and
//! V; the modes u_i s_i of a band are the band times V's first k columns,
//! read back from the store band by band. Each mode is signed as dask's
//! `svd_flip(u, v, u_based_decision=True)` (its sum non-negative) by
//! default, from the data matrix's column sums gathered in the first pass.

use std::any::Any;
use std::path::PathBuf;

use blockflow_core::{ArrayData, Chunk, ChunkGrid, DType};
use blockflow_kernels::linalg;

use super::{p, Arity, Barrier, BarrierOp, Exec, KindDef, MemoryCx, PType, PlanCx, Planned, Stage};
use crate::exec::keep::Keeper;
use crate::exec::{RunError, StageIo};

pub static KIND: KindDef = KindDef {
    kind: "pca",
    role: "kernel",
    summary: "principal components of a stack (N, ...): the data matrix is features x observations (each image a column), centred by the mean image, decomposed by a tall-skinny QR over the chunks (each a band of features of all N images; rechunk to whole axis 0 first) and an SVD of R; the stream is the first k modes u_i s_i as (k, ...) images (their norms are the singular values), or the singular values. Signs: each mode (a column of u) is flipped so that its sum is non-negative, which is dask's svd_flip(u, v, u_based_decision=True); dask's default rule (u_based_decision=False: each row of Vᵀ with a non-negative sum) cannot decide on centred data: every row of the centred data matrix sums to 0, so every row of Vᵀ of a non-zero singular value sums to 0 up to rounding, and dask's own signs change with its chunks",
    inputs: Arity::Exactly(1),
    params: &[
        p("k", PType::Int(1, 1_000_000), Some("10"), "how many modes (or singular values)"),
        p("output", PType::Choice(&["modes", "values"]), Some("modes"), "modes: (k, ...) as the input's chunks, u_i s_i (the seed's u.dot(diag(s))); values: the k largest singular values. Modes read the input a second time from a scratch store"),
        p("method", PType::Choice(&["auto", "gram", "tsqr"]), Some("auto"), "how V and s are found. gram: the Gram matrix XᵀX summed over the bands (lower triangle, at matrix-multiply speed) and its symmetric eigendecomposition, a quarter of TSQR's flops; each s_i is accurate to about 1e-16·s0²/s_i, so the large ones as TSQR's and those near 0 only to ~1e-8·s0 (as scikit-learn's covariance_eigh solver). tsqr: the tall-skinny QR, accurate to ~1e-15·s0 for every s_i. auto: gram for the modes when all k asked for are >= 1e-3·s0 (then within 1e-11·s0 of TSQR's), else TSQR over the bands kept for the modes; tsqr for `output = \"values\"`"),
        p("signs", PType::Choice(&["mode-sum", "largest"]), Some("mode-sum"), "mode-sum: each mode's sum (over all its pixels) non-negative, dask's svd_flip(u, v, u_based_decision=True), so the modes compare with numpy's SVD signed that way; largest: the rule blockflow used before, each row of Vᵀ (a mode's weights over the N images) with its largest-magnitude entry positive, to reproduce earlier results. Where a mode's sum is within rounding of 0 (a zero singular value) its sign means nothing"),
    ],
    example: "inputs = [\"bands\"]\nk = 2",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    pub k: usize,
    /// The singular values instead of the modes.
    pub values: bool,
    /// Where the bands wait for the modes' second pass.
    pub dir: PathBuf,
    /// The input's grid (bands of whole axis 0).
    pub input: ChunkGrid,
    /// Sign each mode by its sum (dask's u-based svd_flip); false: by
    /// the largest entry of its row of Vᵀ (the sign `svd_r` gives).
    pub mode_sum: bool,
    pub method: Method,
}

/// How V and s are found (the `method` parameter, `auto` resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The Gram matrix only.
    Gram,
    /// The Gram matrix, then TSQR over the kept bands if the k singular
    /// values asked for are not all well above its rounding.
    GramChecked,
    Tsqr,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?;
    let (shape, c) = (stream.shape(), stream.grid.chunk_shape());
    if shape.len() < 2 || c[0] != shape[0] {
        return cx.err("inputs", format!("pca needs every observation (axis 0) in each chunk, each chunk a band of features: the input {shape:?} is in chunks of {c:?}; rechunk it to [{}, ...] first", shape[0]));
    }
    let n = shape[0];
    let k = (cx.p.int("k")? as u64).min(n);
    let values = cx.p.str("output").as_deref() == Some("values");
    let mode_sum = cx.p.str("signs").as_deref() != Some("largest");
    let method = match cx.p.str("method")?.as_str() {
        "gram" => Method::Gram,
        "tsqr" => Method::Tsqr,
        _ if values => Method::Tsqr,
        _ => Method::GramChecked,
    };
    let (oshape, ochunks) = if values {
        (vec![k], vec![k])
    } else {
        let mut s = vec![k];
        s.extend(&shape[1..]);
        let mut ch = vec![k];
        ch.extend(&c[1..]);
        (s, ch)
    };
    let grid = cx.stage_grid(oshape, ochunks)?;
    let op = Pca {
        k: k as usize,
        values,
        dir: PathBuf::new(),
        input: stream.grid.clone(),
        mode_sum,
        method,
    };
    let of = cx.inputs[0].label();
    let about = super::About::text(if values {
        format!(
            "the {k} largest singular values of {of} as a centred data matrix (features x images)"
        )
    } else {
        format!(
            "the first {k} PCA modes u_i s_i of {of} (images x features), {}",
            if mode_sum {
                "each with a non-negative sum (dask's svd_flip, u-based)"
            } else {
                "each with the largest entry of its row of Vᵀ positive"
            }
        )
    });
    let mut planned = Planned::sends(op, DType::F64, grid).about(about);
    if let (Some(out), Some(names)) = (planned.output.as_mut(), cx.inputs[0].spec.names.as_ref()) {
        // Mode k of the observations' axis; the features keep theirs.
        let rest = if values { &[][..] } else { &names[1..] };
        let mut n = vec!["mode".to_string()];
        n.extend(rest.iter().cloned());
        out.names = (!rest.contains(&n[0])).then_some(n);
    }
    Some(planned)
}

impl Stage for Pca {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let k = self.k;
        format!(
            "{}; {}",
            match self.method {
                Method::Gram => "the Gram matrix over the bands, its eigendecomposition",
                Method::GramChecked => "the Gram matrix over the bands, its eigendecomposition (TSQR over the kept bands if a singular value asked for is below 1e-3 s0)",
                Method::Tsqr => "TSQR over the bands, SVD of R",
            },
            if self.values {
                format!("the {k} largest singular values")
            } else {
                format!(
                    "the first {k} modes u_i s_i, {} (the input kept for a second pass in {})",
                    if self.mode_sum {
                        "each with a non-negative sum"
                    } else {
                        "each with the largest entry of its row of Vᵀ positive"
                    },
                    self.dir.display()
                )
            }
        )
    }
    /// The band as float64; the R factor, and both stacked, twice (the
    /// QR's own copy); the modes being computed.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        let n = self.input.shape()[0] as u128;
        let r = n * n * 8;
        m.in_bytes + m.in_elems * 8 + r + 2 * (m.in_elems * 8 + r) + 2 * m.out_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Barrier(self)
    }
    fn scratch_dir_mut(&mut self) -> Option<&mut PathBuf> {
        Some(&mut self.dir)
    }
}

impl BarrierOp for Pca {
    fn start(&self, io: &mut StageIo<'_, '_>) -> Result<Box<dyn Barrier>, RunError> {
        // The modes read the bands a second time: keep them.
        let keeper =
            (!self.values).then(|| Keeper::new(io, &self.dir, vec![Some(self.input.clone())]));
        let gram = (self.method != Method::Tsqr)
            .then(|| linalg::Gram::new(self.input.shape()[0] as usize));
        Ok(Box::new(Tsqr {
            op: self.clone(),
            r: None,
            gram,
            sums: None,
            keeper,
        }))
    }
}

struct Tsqr {
    op: Pca,
    /// The R factor of the bands so far (TSQR).
    r: Option<ndarray::Array2<f64>>,
    /// The Gram matrix of the bands so far (instead of `r`).
    gram: Option<linalg::Gram>,
    /// The data matrix's column sums so far (one per observation), for
    /// the modes' signs: added in band order, so the same for any threads.
    sums: Option<ndarray::Array1<f64>>,
    keeper: Option<Keeper>,
}

impl Barrier for Tsqr {
    /// One band at a time: the plan counts one.
    fn at_once(&self, _parallel: usize) -> usize {
        1
    }

    /// The band's features, centred.
    fn prepare(&self, _input: usize, c: &Chunk) -> Result<Option<Box<dyn Any + Send>>, String> {
        Ok(Some(Box::new(linalg::centred_features(c.array()))))
    }

    fn add(
        &mut self,
        io: &mut StageIo<'_, '_>,
        _input: usize,
        c: Chunk,
        part: Option<Box<dyn Any + Send>>,
    ) -> Result<(), RunError> {
        let block = part
            .and_then(|p| p.downcast::<ndarray::Array2<f64>>().ok())
            .ok_or_else(|| io.err(Some(&c.index), "internal: the band was not prepared"))?;
        let held = self.r.as_ref().map_or(0, |r| r.len() as u64 * 8);
        io.note_held(c.nbytes() + 2 * (block.len() as u64 * 8 + held) + held);
        let sums = linalg::row_sums(block.view());
        self.sums = Some(match self.sums.take() {
            Some(acc) => acc + sums,
            None => sums,
        });
        if let Some(g) = &mut self.gram {
            io.pool()
                .install(|| g.add(block.view()))
                .map_err(|e| io.err(Some(&c.index), e.to_string()))?;
        } else {
            let prev = self.r.take();
            let next = io
                .pool()
                .install(|| tsqr_step(prev, &block))
                .map_err(|e| io.err(Some(&c.index), e.to_string()))?;
            self.r = Some(next);
        }
        if let Some(k) = &mut self.keeper {
            k.add(io, 0, c)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>, io: &mut StageIo<'_, '_>) -> Result<(), RunError> {
        let Tsqr {
            op,
            r,
            gram,
            sums,
            keeper,
        } = *self;
        let Some(sums) = sums else {
            return Err(io.err(None, "the input had no bands"));
        };
        let pool = io.pool();
        let kept = keeper.map(|k| k.finish(io)).transpose()?;
        let (s, mut v) = match (gram, r) {
            (Some(g), _) => {
                let (s, v) = io
                    .busy(|| pool.install(|| g.eigen()))
                    .map_err(|e| io.err(None, e.to_string()))?;
                match &kept {
                    Some(kept)
                        if op.method == Method::GramChecked
                            && !linalg::Gram::reliable(&s, op.k) =>
                    {
                        tracing::info!(
                            stage = %io.stage().name,
                            "a singular value asked for is below 1e-3 s0, where the Gram matrix's rounding shows: TSQR over the kept bands"
                        );
                        tsqr_kept(io, &op.input, kept)?
                    }
                    _ => (s, v),
                }
            }
            (None, Some(r)) => io
                .busy(|| pool.install(|| linalg::svd_r(&r)))
                .map_err(|e| io.err(None, e.to_string()))?,
            (None, None) => return Err(io.err(None, "the input had no bands")),
        };
        if op.mode_sum {
            linalg::sign_by_u_sums(&mut v, &sums).map_err(|e| io.err(None, e.to_string()))?;
        }
        let k = op.k;
        let Some(kept) = kept else {
            let a = ndarray::Array1::from_iter(s.iter().take(k).copied()).into_dyn();
            return io.send(vec![0], ArrayData::F64(a));
        };
        let reader = kept.reader(io, 0)?;
        let grid_in = &op.input;
        for idx in grid_in.indices() {
            io.check_cancel()?;
            let region = grid_in.region(&idx);
            let data = reader
                .read(&region, &idx)
                .map_err(|e| io.err(Some(&idx), format!("reading the band back: {e}")))?;
            let block = linalg::centred_features(&data);
            let p = io
                .busy(|| pool.install(|| linalg::project(block.view(), &v, k)))
                .map_err(|e| io.err(Some(&idx), e.to_string()))?;
            // (features, k) -> (k, band shape without axis 0)
            let mut shape = vec![k];
            shape.extend(region.shape[1..].iter().map(|&x| x as usize));
            let modes = p
                .t()
                .as_standard_layout()
                .to_owned()
                .into_shape_with_order(ndarray::IxDyn(&shape))
                .map_err(|e| io.err(Some(&idx), e.to_string()))?;
            let mut oidx = vec![0];
            oidx.extend(&idx[1..]);
            io.note_held(data.nbytes() + 2 * block.len() as u64 * 8 + 2 * modes.len() as u64 * 8);
            io.send(oidx, ArrayData::F64(modes))?;
        }
        Ok(())
    }
}

/// One step of the flat TSQR: the R factor of the bands before stacked
/// over this one.
fn tsqr_step(
    prev: Option<ndarray::Array2<f64>>,
    block: &ndarray::Array2<f64>,
) -> Result<ndarray::Array2<f64>, linalg::LinalgError> {
    match prev {
        None => Ok(linalg::qr_r(block.view())),
        Some(prev) => linalg::stack_r(&prev, block),
    }
}

/// TSQR over the bands kept in scratch, then the SVD of R.
fn tsqr_kept(
    io: &mut StageIo<'_, '_>,
    grid: &ChunkGrid,
    kept: &crate::exec::keep::Kept,
) -> Result<(ndarray::Array1<f64>, ndarray::Array2<f64>), RunError> {
    let reader = kept.reader(io, 0)?;
    let pool = io.pool();
    let mut r = None;
    for idx in grid.indices() {
        io.check_cancel()?;
        let data = reader
            .read(&grid.region(&idx), &idx)
            .map_err(|e| io.err(Some(&idx), format!("reading the band back: {e}")))?;
        let block = linalg::centred_features(&data);
        let prev = r.take();
        r = Some(
            io.busy(|| pool.install(|| tsqr_step(prev, &block)))
                .map_err(|e| io.err(Some(&idx), e.to_string()))?,
        );
    }
    let r = r.ok_or_else(|| io.err(None, "the input had no bands"))?;
    io.busy(|| pool.install(|| linalg::svd_r(&r)))
        .map_err(|e| io.err(None, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn pca_of(s: &crate::plan::PlannedStage) -> &Pca {
        let op = &s.kind;
        op.as_any().downcast_ref::<Pca>().expect("a pca")
    }

    #[test]
    fn plans_modes_in_the_input_bands_and_values() {
        let s = plan_one(
            "kind = \"pca\"\nk = 3",
            &[DType::F32],
            &[6, 20, 10],
            &[6, 5, 10],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F64));
        assert_eq!(s.grid.shape(), &[3, 20, 10]);
        assert_eq!(s.grid.chunk_shape(), &[3, 5, 10]);
        let p = pca_of(&s);
        assert_eq!((p.k, p.values, p.mode_sum), (3, false, true));
        // Band 6 x 5 x 10 f32 (1200 bytes, 300 values), R 6 x 6, modes
        // 3 x 5 x 10 f64 (1200 bytes).
        let (band, elems, r, out) = (1200u64, 300u64, 36 * 8u64, 1200u64);
        assert_eq!(
            s.mem.working,
            band + elems * 8 + r + 2 * (elems * 8 + r) + 2 * out
        );
        assert!(p
            .describe()
            .contains("the first 3 modes u_i s_i, each with a non-negative sum"));
        let s = plan_one(
            "kind = \"pca\"\nsigns = \"largest\"",
            &[DType::F32],
            &[6, 20, 10],
            &[6, 5, 10],
        );
        assert!(!pca_of(&s).mode_sum);
        // k is at most N; values are one chunk.
        let s = plan_one(
            "kind = \"pca\"\nk = 9\noutput = \"values\"",
            &[DType::F32],
            &[6, 20],
            &[6, 5],
        );
        assert_eq!(s.grid.shape(), &[6]);
        assert_eq!(s.grid.chunk_shape(), &[6]);
        assert_eq!(
            pca_of(&s).describe(),
            "TSQR over the bands, SVD of R; the 6 largest singular values"
        );
    }

    #[test]
    fn refuses_chunks_that_split_the_observations() {
        let e = plan_err("kind = \"pca\"", &[DType::F32], &[6, 20], &[3, 20]);
        assert!(
            e.contains("pca needs every observation (axis 0) in each chunk")
                && e.contains("rechunk it to [6, ...] first"),
            "{e}"
        );
    }
}

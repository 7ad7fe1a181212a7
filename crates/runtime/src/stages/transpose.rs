//! `transpose`: numpy's transpose. The input waits in a scratch store; each
//! result chunk is the permuted source region read back.

use std::path::{Path, PathBuf};

use blockflow_core::{with_array, ArrayKind, ChunkGrid, Region};

use super::{p, Arity, Barrier, BarrierOp, Exec, KindDef, MemoryCx, PType, PlanCx, Planned, Stage};
use crate::config::Val;
use crate::exec::keep::{AfterKeep, KeepThen, Kept};
use crate::exec::{RunError, StageIo};

pub static KIND: KindDef = KindDef {
    kind: "transpose",
    role: "kernel",
    summary: "numpy's transpose: the axes permuted (reversed by default); the input waits in a scratch store, then each result chunk is read back and permuted",
    inputs: Arity::Exactly(1),
    params: &[p("axes", PType::Ints, Some(""), "the permutation, as numpy's `axes` (default: reversed)")],
    example: "inputs = [\"f32_rgb\"]",
    plan,
};

/// Output axis k is input axis `perm[k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transpose {
    pub perm: Vec<usize>,
    /// The input's grid.
    pub src: ChunkGrid,
    /// Where it waits.
    pub dir: PathBuf,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?;
    let nd = stream.shape().len();
    let perm: Vec<usize> = match cx.p.value("axes") {
        None => (0..nd).rev().collect(),
        Some(Val::Array(a)) => {
            let p: Vec<usize> = a
                .iter()
                .filter_map(|x| match x.v {
                    Val::Int(i) => Some(i),
                    _ => None,
                })
                .map(|i| {
                    if i < 0 {
                        (i + nd as i64) as usize
                    } else {
                        i as usize
                    }
                })
                .collect();
            let mut sorted = p.clone();
            sorted.sort_unstable();
            if sorted != (0..nd).collect::<Vec<_>>() {
                return cx.err(
                    "axes",
                    format!(
                        "`axes` must be a permutation of 0..{nd} (the input {:?} has {nd} axes)",
                        stream.shape()
                    ),
                );
            }
            p
        }
        Some(_) => return cx.err("axes", "`axes` is a list of axes"),
    };
    let shape: Vec<u64> = perm.iter().map(|&k| stream.shape()[k]).collect();
    let chunks: Vec<u64> = perm.iter().map(|&k| stream.grid.chunk_shape()[k]).collect();
    let grid = cx.stage_grid(shape, chunks)?;
    let op = Transpose {
        perm,
        src: stream.grid.clone(),
        dir: PathBuf::new(),
    };
    Some(Planned::sends(op, stream.dtype, grid))
}

impl Stage for Transpose {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!(
            "axes {:?} (the input waits in {})",
            self.perm,
            self.dir.display()
        )
    }
    /// A chunk being kept; the result chunk, its part read back, a copy.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.in_bytes + 3 * m.out_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Barrier(self)
    }
    fn scratch_dir_mut(&mut self) -> Option<&mut PathBuf> {
        Some(&mut self.dir)
    }
}

impl BarrierOp for Transpose {
    fn start(&self, io: &mut StageIo<'_, '_>) -> Result<Box<dyn Barrier>, RunError> {
        Ok(KeepThen::start(self, io))
    }
}

impl AfterKeep for Transpose {
    fn kept_grids(&self) -> Vec<Option<ChunkGrid>> {
        vec![Some(self.src.clone())]
    }
    fn kept_dir(&self) -> &Path {
        &self.dir
    }

    fn after(&self, io: &mut StageIo<'_, '_>, kept: &Kept) -> Result<(), RunError> {
        let perm = &self.perm;
        let reader = kept.reader(io, 0)?;
        let grid = io.stage().grid.clone();
        for idx in grid.indices() {
            io.check_cancel()?;
            let region = grid.region(&idx);
            let mut sub = Region::new(vec![0; perm.len()], vec![0; perm.len()]);
            for (k, &p) in perm.iter().enumerate() {
                sub.origin[p] = region.origin[k];
                sub.shape[p] = region.shape[k];
            }
            let part = io
                .busy(|| reader.read(&sub, &idx))
                .map_err(|e| io.err(Some(&idx), e.to_string()))?;
            let data = io.busy(|| {
                with_array!(part, a => ArrayKind::wrap(
                    a.permuted_axes(ndarray::IxDyn(perm)).as_standard_layout().into_owned()
                ))
            });
            io.note_held(2 * data.nbytes());
            io.send(idx, data)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    #[test]
    fn reverses_the_axes_by_default() {
        let s = plan_one(
            "kind = \"transpose\"",
            &[DType::F32],
            &[6, 4, 2],
            &[3, 2, 2],
        );
        assert_eq!(s.grid.shape(), &[2, 4, 6]);
        assert_eq!(s.grid.chunk_shape(), &[2, 2, 3]);
        // A chunk being kept (12 float32), and three result chunks.
        assert_eq!(s.mem.working, 48 + 3 * 48);
        let op = &s.kind;
        let t = op
            .as_any()
            .downcast_ref::<Transpose>()
            .expect("a transpose");
        assert_eq!(t.perm, vec![2, 1, 0]);
        assert!(t
            .describe()
            .starts_with("axes [2, 1, 0] (the input waits in"));
        let s = plan_one(
            "kind = \"transpose\"\naxes = [0, -1, 1]",
            &[DType::F32],
            &[6, 4, 2],
            &[3, 2, 2],
        );
        assert_eq!(s.grid.shape(), &[6, 2, 4]);
    }

    #[test]
    fn refuses_what_is_not_a_permutation() {
        let e = plan_err(
            "kind = \"transpose\"\naxes = [0, 0]",
            &[DType::F32],
            &[6, 4],
            &[3, 2],
        );
        assert!(
            e.contains("`axes` must be a permutation of 0..2 (the input [6, 4] has 2 axes)"),
            "{e}"
        );
    }
}

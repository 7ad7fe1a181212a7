//! `concatenate` and `stack`: numpy's joins of several inputs. The inputs
//! wait in scratch stores until all have arrived; then every result chunk
//! is read from the stores it spans, in row-major order.

use std::path::{Path, PathBuf};

use blockflow_core::{with_array, with_dtype, ArrayKind, ChunkGrid, DType};

use super::{p, Arity, Barrier, BarrierOp, Exec, KindDef, MemoryCx, PType, PlanCx, Planned, Stage};
use crate::exec::keep::{AfterKeep, KeepThen, Kept};
use crate::exec::{RunError, StageIo};

pub static CONCATENATE: KindDef = KindDef {
    kind: "concatenate",
    role: "kernel",
    summary: "numpy's concatenate of several inputs along an existing axis (the other axes equal, dtypes promoted as numpy); the inputs wait in scratch stores until all have arrived, then the result streams in its own chunks (the first input's)",
    inputs: Arity::AtLeast(2),
    params: &[p("axis", PType::Int(-32, 31), Some("0"), "the axis to join along")],
    example: "inputs = [\"f32_2d\", \"f32_2d\"]\naxis = 1",
    plan: plan_concatenate,
};

pub static STACK: KindDef = KindDef {
    kind: "stack",
    role: "kernel",
    summary: "numpy's stack of several inputs of one shape along a new axis (one chunk per input along it); the inputs wait in scratch stores until all have arrived",
    inputs: Arity::AtLeast(2),
    params: &[
        p("axis", PType::Int(-33, 32), Some("0"), "where the new axis goes"),
        p("axis_name", PType::Str, Some(""), "the new axis's name, when the inputs' axes are named alike (default: the stage's name); the result's axes are then the inputs' with it inserted"),
    ],
    example: "inputs = [\"f32_2d\", \"f32_2d\"]",
    plan: plan_stack,
};

/// concatenate (`new_axis` false) or stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub axis: usize,
    pub new_axis: bool,
    /// The inputs' grids.
    pub grids: Vec<ChunkGrid>,
    /// Where they wait.
    pub dir: PathBuf,
}

fn plan_concatenate(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    plan(cx, false)
}

fn plan_stack(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    plan(cx, true)
}

fn plan(cx: &mut PlanCx<'_, '_>, new_axis: bool) -> Option<Planned> {
    let kind = if new_axis {
        STACK.kind
    } else {
        CONCATENATE.kind
    };
    let specs: Vec<_> = cx.inputs.iter().map(|i| i.spec).collect();
    let first = *specs.first()?;
    let nd = first.shape().len() + usize::from(new_axis);
    let a = cx.p.int("axis")?;
    let ax = if a < 0 { a + nd as i64 } else { a };
    if ax < 0 || ax >= nd as i64 {
        return cx.err(
            "axis",
            format!("axis {a} is out of range for the result's {nd} axes"),
        );
    }
    let ax = ax as usize;
    let mut dtype = first.dtype;
    let mut extent = 0;
    for (i, sp) in specs.iter().enumerate() {
        let same = if new_axis {
            sp.shape() == first.shape()
        } else {
            sp.shape().len() == first.shape().len()
                && (0..sp.shape().len()).all(|k| k == ax || sp.shape()[k] == first.shape()[k])
        };
        if !same {
            let (n0, ni) = (cx.inputs[0].name, cx.inputs[i].name);
            return cx.err(
                "inputs",
                format!(
                    "{kind} needs inputs of one shape{}: \"{n0}\" is {:?}, \"{ni}\" is {:?}",
                    if new_axis {
                        ""
                    } else {
                        " but for the joined axis"
                    },
                    first.shape(),
                    sp.shape()
                ),
            );
        }
        dtype = DType::promote(dtype, sp.dtype);
        if !new_axis {
            extent += sp.shape()[ax];
        }
    }
    let (shape, chunks) = if new_axis {
        let mut s = first.shape().to_vec();
        s.insert(ax, specs.len() as u64);
        let mut c = first.grid.chunk_shape().to_vec();
        c.insert(ax, 1);
        (s, c)
    } else {
        let mut s = first.shape().to_vec();
        s[ax] = extent;
        (s, first.grid.chunk_shape().to_vec())
    };
    let grid = cx.stage_grid(shape, chunks)?;
    let op = Join {
        axis: ax,
        new_axis,
        grids: specs.iter().map(|s| s.grid.clone()).collect(),
        dir: PathBuf::new(),
    };
    let mut planned = Planned::sends(op, dtype, grid);
    if new_axis {
        let given = cx.p.str("axis_name").filter(|s| !s.is_empty());
        let name = given.unwrap_or_else(|| cx.st.name.v.clone());
        if let Some(out) = planned.output.as_mut() {
            out.names = stacked_names(&specs, ax, name);
        }
    }
    Some(planned)
}

/// A stack's axes' names: the inputs' (all named alike) with `name`
/// inserted at `ax`, unless an input's axis already has that name.
fn stacked_names(
    specs: &[&blockflow_core::ArraySpec],
    ax: usize,
    name: String,
) -> Option<Vec<String>> {
    let names = specs.first()?.names.as_ref()?;
    if specs.iter().any(|s| s.names.as_ref() != Some(names)) || names.contains(&name) {
        return None;
    }
    let mut out = names.clone();
    out.insert(ax, name);
    Some(out)
}

impl Stage for Join {
    fn kind(&self) -> &'static str {
        if self.new_axis {
            STACK.kind
        } else {
            CONCATENATE.kind
        }
    }
    fn describe(&self) -> String {
        format!(
            "{} along axis {} (the inputs wait in {})",
            self.kind(),
            self.axis,
            self.dir.display()
        )
    }
    /// A chunk being kept; the result chunk, its parts read back, a cast.
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

impl BarrierOp for Join {
    fn start(&self, io: &mut StageIo<'_, '_>) -> Result<Box<dyn Barrier>, RunError> {
        Ok(KeepThen::start(self, io))
    }
}

impl AfterKeep for Join {
    fn kept_grids(&self) -> Vec<Option<ChunkGrid>> {
        self.grids.iter().cloned().map(Some).collect()
    }
    fn kept_dir(&self) -> &Path {
        &self.dir
    }

    fn after(&self, io: &mut StageIo<'_, '_>, kept: &Kept) -> Result<(), RunError> {
        let op = self;
        let readers = (0..op.grids.len())
            .map(|i| kept.reader(io, i))
            .collect::<Result<Vec<_>, _>>()?;
        let spec = io
            .stage()
            .output
            .clone()
            .ok_or_else(|| io.err(None, "internal: no output"))?;
        let grid = &spec.grid;
        let axis = op.axis;
        for idx in grid.indices() {
            io.check_cancel()?;
            let region = grid.region(&idx);
            let data = if op.new_axis {
                let k = region.origin[axis] as usize;
                let mut sub = region.clone();
                sub.origin.remove(axis);
                sub.shape.remove(axis);
                let part = io
                    .busy(|| readers[k].read(&sub, &idx))
                    .map_err(|e| io.err(Some(&idx), e.to_string()))?
                    .cast(spec.dtype);
                let shape = region.shape_usize();
                with_array!(part, a => a
                    .into_shape_with_order(ndarray::IxDyn(&shape))
                    .map(ArrayKind::wrap)
                    .map_err(|e| io.err(Some(&idx), e.to_string()))?)
            } else {
                let (r0, r1) = (region.origin[axis], region.end()[axis]);
                let mut parts = Vec::new();
                let mut offset = 0;
                for (i, g) in op.grids.iter().enumerate() {
                    let n = g.shape()[axis];
                    let (a0, a1) = (r0.max(offset), r1.min(offset + n));
                    if a0 < a1 {
                        let mut sub = region.clone();
                        sub.origin[axis] = a0 - offset;
                        sub.shape[axis] = a1 - a0;
                        parts.push(
                            io.busy(|| readers[i].read(&sub, &idx))
                                .map_err(|e| io.err(Some(&idx), e.to_string()))?
                                .cast(spec.dtype),
                        );
                    }
                    offset += n;
                }
                with_dtype!(spec.dtype, T => {
                    let views: Vec<ndarray::ArrayViewD<T>> = parts.iter().filter_map(|p| T::unwrap_ref(p).map(|a| a.view())).collect();
                    ndarray::concatenate(ndarray::Axis(axis), &views)
                        .map(T::wrap)
                        .map_err(|e| io.err(Some(&idx), e.to_string()))?
                })
            };
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

    fn join_of(s: &crate::plan::PlannedStage) -> &Join {
        let op = &s.kind;
        op.as_any().downcast_ref::<Join>().expect("a join")
    }

    #[test]
    fn concatenates_along_an_axis_in_the_first_inputs_chunks() {
        let s = plan_one(
            "kind = \"concatenate\"\naxis = -1",
            &[DType::I16, DType::F32],
            &[6, 4],
            &[3, 2],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F32));
        assert_eq!(s.grid.shape(), &[6, 8]);
        assert_eq!(s.grid.chunk_shape(), &[3, 2]);
        let j = join_of(&s);
        assert_eq!((j.axis, j.new_axis, j.grids.len()), (1, false, 2));
        // A chunk of each input (int16 and float32 3 x 2), and three result chunks.
        assert_eq!(s.mem.working, (12 + 24) + 3 * 24);
        assert!(j
            .describe()
            .starts_with("concatenate along axis 1 (the inputs wait in"));
        assert_eq!(j.kind(), "concatenate");
    }

    #[test]
    fn stacks_along_a_new_axis_one_chunk_per_input() {
        let s = plan_one(
            "kind = \"stack\"\naxis = 1",
            &[DType::U8, DType::U8, DType::U8],
            &[6, 4],
            &[3, 2],
        );
        assert_eq!(s.grid.shape(), &[6, 3, 4]);
        assert_eq!(s.grid.chunk_shape(), &[3, 1, 2]);
        let j = join_of(&s);
        assert_eq!(j.kind(), "stack");
        assert!(j.describe().starts_with("stack along axis 1"));
    }

    #[test]
    fn refuses_other_shapes_and_axes_out_of_range() {
        let e = plan_err(
            "kind = \"stack\"\naxis = 3",
            &[DType::U8, DType::U8],
            &[6, 4],
            &[3, 2],
        );
        assert!(
            e.contains("axis 3 is out of range for the result's 3 axes"),
            "{e}"
        );
        let text = config("kind = \"concatenate\"\naxis = 0", &[DType::U8], &[6, 4], &[3, 2])
            + "[stage.b]\nkind = \"synthetic\"\nshape = [6, 5]\nchunks = [3, 5]\ndtype = \"uint8\"\n";
        let text = text.replace("inputs = [\"in0\"]", "inputs = [\"in0\", \"b\"]");
        let e = plan_text(&text, &crate::catalog::FakeCatalog::default()).expect_err("refused");
        assert!(
            e.contains("concatenate needs inputs of one shape but for the joined axis: \"in0\" is [6, 4], \"b\" is [6, 5]"),
            "{e}"
        );
    }
}

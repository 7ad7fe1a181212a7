//! `reduce`: a statistic of the whole array, of each block, or over chosen
//! axes. A barrier: each chunk's partial is computed in the pool, and the
//! partials are merged in the order the chunks arrive (row-major), so the
//! result does not depend on the threads and partials computed elsewhere
//! (a cluster task's) merge the same way.

use std::any::Any;

use blockflow_core::{ArrayData, ArraySpec, Chunk, ChunkGrid, DType};
use blockflow_kernels::reduce::{self, AxisReducer, Partial, Reduction};

use super::{
    p, About, Arity, Barrier, BarrierOp, BlocksOf, Exec, IndexInto, InputRef, KindDef, MemoryCx,
    PType, PartialReduce, PlanCx, Planned, Stage,
};
use crate::config::Val;
use crate::exec::{RunError, StageIo};

pub static KIND: KindDef = KindDef {
    kind: "reduce",
    role: "kernel",
    summary: "a statistic of the whole array (a 1-element array), over chosen axes, or of each block (one value per chunk, an array shaped like the chunk grid); float64 accumulation and results (min and max keep the dtype; sums of integers and booleans int64, exact; count, argmin, argmax int64; any, all bool); argmin/argmax of the whole array or of blocks give global flat indices",
    inputs: Arity::Exactly(1),
    params: &[
        p("op", PType::Choice(&["sum", "mean", "min", "max", "std", "var", "count", "argmin", "argmax", "any", "all", "nansum", "nanmean", "nanmin", "nanmax", "nanstd", "nanvar"]), None, "the statistic, as numpy names it (nan*: NaN skipped; else NaN propagates)"),
        p("over", PType::Choice(&["all", "blocks"]), Some("all"), "the whole array, or each block (chunk) of the stream"),
        p("axis", PType::Ints, Some(""), "reduce only these axes (an integer or a list; negative counts from the end), as numpy's `axis`: the result has the other axes (argmin/argmax: one axis, the index along it)"),
        p("keepdims", PType::Bool, Some("false"), "with `axis`: keep the reduced axes, as length 1"),
        p("ddof", PType::Int(0, 1_000_000), Some("0"), "std and var: delta degrees of freedom, as numpy"),
    ],
    example: "inputs = [\"f32_2d\"]\nop = \"std\"\nover = \"blocks\"",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Reduce {
    pub op: Reduction,
    /// One value per block (chunk) of the input.
    pub per_block: bool,
    pub ddof: u32,
    /// The grid of the stream it reduces.
    pub input: ChunkGrid,
    /// Reduce only these axes (sorted); None: all of them.
    pub axes: Option<Vec<usize>>,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?;
    let op = Reduction::parse(&cx.p.str("op")?)?;
    let per_block = cx.p.str("over").as_deref() == Some("blocks");
    let nd = stream.shape().len();
    let axes = match cx.p.value("axis") {
        None => None,
        Some(v) => Some(axes_of(cx, &v, nd, stream.shape(), op, per_block)?),
    };
    let dtype = match op {
        Reduction::Sum | Reduction::NanSum if !stream.dtype.is_float() => DType::I64,
        Reduction::ArgMin | Reduction::ArgMax | Reduction::Count => DType::I64,
        Reduction::Any | Reduction::All => DType::Bool,
        // numpy keeps the dtype for min and max.
        Reduction::Min | Reduction::Max | Reduction::NanMin | Reduction::NanMax
            if stream.dtype != DType::Bool =>
        {
            stream.dtype
        }
        _ => DType::F64,
    };
    let shape = if per_block {
        stream.grid.grid_shape()
    } else if let Some(axes) = &axes {
        let r = AxisReducer::out_shape_of(stream.shape(), axes, cx.p.bool("keepdims")?);
        if r.is_empty() {
            vec![1]
        } else {
            r
        }
    } else {
        vec![1]
    };
    let op = Reduce {
        op,
        per_block,
        ddof: u32::try_from(cx.p.int("ddof")?).ok()?,
        input: stream.grid.clone(),
        axes,
    };
    let about = about(&op, &cx.inputs[0]);
    Some(Planned::sends(op, dtype, ChunkGrid::whole(shape)).about(about))
}

/// The name the config writes for `op`.
fn op_name(op: Reduction) -> &'static str {
    Reduction::NAMES
        .iter()
        .find(|n| Reduction::parse(n) == Some(op))
        .copied()
        .unwrap_or("?")
}

/// What a reduction's values are: "max of cells[730, :, :, :]", "std of
/// each 200 x 200 block of feet"; an argmin or argmax of a whole array is a
/// flat index into it (and, where that array is per block, into its blocks).
fn about(r: &Reduce, input: &InputRef<'_>) -> About {
    let of = input.label();
    let name = op_name(r.op);
    let ddof = if r.ddof > 0
        && matches!(
            r.op,
            Reduction::Std | Reduction::Var | Reduction::NanStd | Reduction::NanVar
        ) {
        format!(" (ddof {})", r.ddof)
    } else {
        String::new()
    };
    let arg = match r.op {
        Reduction::ArgMin => Some("min"),
        Reduction::ArgMax => Some("max"),
        _ => None,
    };
    let shape = input.spec.shape().to_vec();
    let axes_text = |a: &[usize]| {
        if a.len() == 1 {
            format!("axis {}", a[0])
        } else {
            format!("axes {a:?}")
        }
    };
    let block = r
        .input
        .chunk_shape()
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" x ");
    match (r.per_block, &r.axes, arg) {
        (true, _, Some(m)) => About::text(format!(
            "flat index into {of} (shape {shape:?}, row-major) of the first {m} of each {block} block"
        )),
        (true, _, None) => About {
            text: format!("{name}{ddof} of each {block} block of {of}"),
            blocks_of: Some(BlocksOf {
                array: input.name.to_string(),
                grid: r.input.clone(),
            }),
            ..About::default()
        },
        (false, Some(a), Some(m)) => About::text(format!(
            "index along {} of the first {m} of {of}",
            axes_text(a)
        )),
        (false, Some(a), None) => {
            About::text(format!("{name}{ddof} over {} of {of}", axes_text(a)))
        }
        (false, None, Some(m)) => About {
            text: format!(
                "flat index (row-major, numpy's {name}) of the first {m} of {of}, shape {shape:?}"
            ),
            index_into: Some(IndexInto {
                array: input.name.to_string(),
                shape,
                blocks_of: input.about.blocks_of.clone(),
            }),
            ..About::default()
        },
        (false, None, None) => About::text(format!("{name}{ddof} of {of}")),
    }
}

/// The axes `axis` names among `nd` (sorted), or an error on `axis`.
fn axes_of(
    cx: &mut PlanCx<'_, '_>,
    v: &Val,
    nd: usize,
    shape: &[u64],
    op: Reduction,
    per_block: bool,
) -> Option<Vec<usize>> {
    let list: Vec<i64> = match v {
        Val::Int(i) => vec![*i],
        Val::Array(a) => a
            .iter()
            .filter_map(|x| match x.v {
                Val::Int(i) => Some(i),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut axes = Vec::new();
    for a in list {
        let ax = if a < 0 { a + nd as i64 } else { a };
        if ax < 0 || ax >= nd as i64 {
            return cx.err(
                "axis",
                format!("axis {a} is out of range for the input's {nd} axes (shape {shape:?})"),
            );
        }
        if axes.contains(&(ax as usize)) {
            return cx.err("axis", format!("axis {a} is named twice"));
        }
        axes.push(ax as usize);
    }
    axes.sort_unstable();
    if axes.is_empty() {
        return cx.err("axis", "`axis` names no axis");
    }
    if per_block {
        return cx.err("axis", "`axis` reduces axes of the whole array; it cannot be combined with `over = \"blocks\"`");
    }
    if matches!(op, Reduction::ArgMin | Reduction::ArgMax) && axes.len() != 1 && axes.len() != nd {
        return cx.err(
            "axis",
            "argmin and argmax take one axis (or none, for the whole array), as numpy",
        );
    }
    Some(axes)
}

impl Stage for Reduce {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let what = match (self.per_block, &self.axes) {
            (true, _) => "each block".to_string(),
            (false, Some(a)) => format!(
                "{} {}",
                if a.len() == 1 { "axis" } else { "axes" },
                a.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (false, None) => "the whole array".to_string(),
        };
        let ddof = if self.ddof > 0 {
            format!(", ddof {}", self.ddof)
        } else {
            String::new()
        };
        // The name the config writes.
        let op = Reduction::NAMES
            .iter()
            .find(|n| Reduction::parse(n) == Some(self.op))
            .unwrap_or(&"?");
        format!("{op} over {what}{ddof}")
    }
    /// The chunks being reduced and the result with its partials.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * m.in_bytes + m.out_elems * 96
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Barrier(self)
    }
    fn partials(&self) -> Option<&dyn PartialReduce> {
        // Along axes the accumulators take the chunks themselves.
        self.axes.is_none().then_some(self as &dyn PartialReduce)
    }
}

impl PartialReduce for Reduce {
    fn chunk_partial(&self, data: &ArrayData, origin: &[u64]) -> Vec<u8> {
        reduce::partial_of_chunk_op(data, origin, self.input.shape(), self.op).to_bytes()
    }

    /// As [`Reducing::add`] then [`Reducing::finish`]: the partials merged
    /// in chunk order from the empty partial, or each block's finished.
    fn merge(
        &self,
        parts: &mut dyn Iterator<Item = Vec<u8>>,
        out: &ArraySpec,
    ) -> Result<ArrayData, String> {
        let mut total = Partial::default();
        let mut values = Vec::new();
        let mut n = 0u64;
        for b in parts {
            let p = Partial::from_bytes(&b)
                .ok_or_else(|| format!("a stored partial of {} bytes is damaged", b.len()))?;
            if self.per_block {
                values.push(p.finish(self.op, self.ddof));
            } else {
                total = total.merge(&p);
            }
            n += 1;
        }
        if n != self.input.num_chunks() {
            return Err(format!(
                "{n} partials for the {} chunks of the input",
                self.input.num_chunks()
            ));
        }
        if !self.per_block {
            values = vec![total.finish(self.op, self.ddof)];
        }
        let dims: Vec<usize> = out.shape().iter().map(|&n| n as usize).collect();
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), values)
            .map_err(|e| e.to_string())?;
        Ok(ArrayData::F64(a).cast(out.dtype))
    }
}

impl BarrierOp for Reduce {
    fn start(&self, _io: &mut StageIo<'_, '_>) -> Result<Box<dyn Barrier>, RunError> {
        let acc = match &self.axes {
            Some(axes) => Acc::Axes(AxisReducer::new(self.op, self.input.shape(), axes)),
            None if self.per_block => Acc::Blocks(vec![0.0; self.input.num_chunks() as usize]),
            None => Acc::Whole(Partial::default()),
        };
        Ok(Box::new(Reducing {
            op: self.clone(),
            acc,
        }))
    }
}

/// What a reduction holds while its chunks arrive.
enum Acc {
    /// The partials of the chunks so far, merged in order.
    Whole(Partial),
    /// Each block's value.
    Blocks(Vec<f64>),
    /// Every output element's accumulator, fed chunk by chunk in order.
    Axes(AxisReducer),
}

struct Reducing {
    op: Reduce,
    acc: Acc,
}

impl Barrier for Reducing {
    /// A chunk's partial (the whole array, or its block); none along axes,
    /// whose accumulators take the chunk itself, in order.
    fn prepare(&self, _input: usize, c: &Chunk) -> Result<Option<Box<dyn Any + Send>>, String> {
        if matches!(self.acc, Acc::Axes(_)) {
            return Ok(None);
        }
        let part = reduce::partial_of_chunk_op(
            c.array(),
            &c.region.origin,
            self.op.input.shape(),
            self.op.op,
        );
        Ok(Some(Box::new(part)))
    }

    fn add(
        &mut self,
        io: &mut StageIo<'_, '_>,
        _input: usize,
        c: Chunk,
        part: Option<Box<dyn Any + Send>>,
    ) -> Result<(), RunError> {
        let (op, ddof) = (self.op.op, self.op.ddof);
        let partial = || -> Result<Partial, RunError> {
            part.and_then(|p| p.downcast::<Partial>().ok())
                .map(|p| *p)
                .ok_or_else(|| io.err(Some(&c.index), "internal: the chunk has no partial"))
        };
        match &mut self.acc {
            Acc::Axes(acc) => acc.add(c.array(), &c.region.origin),
            Acc::Whole(total) => *total = total.merge(&partial()?),
            Acc::Blocks(values) => {
                let k = self.op.input.ravel(&c.index) as usize;
                let v = partial()?.finish(op, ddof);
                let slot = values
                    .get_mut(k)
                    .ok_or_else(|| io.err(Some(&c.index), "a chunk outside the input's grid"))?;
                *slot = v;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, io: &mut StageIo<'_, '_>) -> Result<(), RunError> {
        let (op, ddof) = (self.op.op, self.op.ddof);
        let values = match self.acc {
            Acc::Whole(total) => vec![total.finish(op, ddof)],
            Acc::Blocks(values) => values,
            Acc::Axes(acc) => io.busy(|| acc.finish(ddof)),
        };
        let out = io
            .stage()
            .output
            .clone()
            .ok_or_else(|| io.err(None, "internal: a reduce without an output"))?;
        let dims: Vec<usize> = out.shape().iter().map(|&n| n as usize).collect();
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&dims), values)
            .map_err(|e| io.err(None, e.to_string()))?;
        let data = ArrayData::F64(a).cast(out.dtype);
        io.send(vec![0; dims.len()], data)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn reduce_of(s: &crate::plan::PlannedStage) -> &Reduce {
        let op = &s.kind;
        op.as_any().downcast_ref::<Reduce>().expect("a reduce")
    }

    #[test]
    fn plans_the_whole_array_blocks_and_axes() {
        let s = plan_one(
            "kind = \"reduce\"\nop = \"mean\"",
            &[DType::I32],
            &[10, 12],
            &[4, 5],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::F64));
        assert_eq!(s.grid.shape(), &[1]);
        // Two int32 chunks of 4 x 5 being reduced, one value with partials.
        assert_eq!(s.mem.working, 2 * 80 + 96);
        assert_eq!(reduce_of(&s).describe(), "mean over the whole array");
        let s = plan_one(
            "kind = \"reduce\"\nop = \"argmin\"\nover = \"blocks\"",
            &[DType::F32],
            &[10, 12],
            &[4, 5],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::I64));
        assert_eq!(s.grid.shape(), &[3, 3]);
        assert_eq!(s.grid.chunk_shape(), &[3, 3]);
        assert_eq!(reduce_of(&s).describe(), "argmin over each block");
        let s = plan_one(
            "kind = \"reduce\"\nop = \"std\"\naxis = [-1, 0]\nkeepdims = true\nddof = 1",
            &[DType::U8],
            &[10, 12, 3],
            &[4, 5, 3],
        );
        assert_eq!(s.grid.shape(), &[1, 12, 1]);
        let r = reduce_of(&s);
        assert_eq!(r.axes, Some(vec![0, 2]));
        assert_eq!(r.describe(), "std over axes 0, 2, ddof 1");
        let s = plan_one(
            "kind = \"reduce\"\nop = \"sum\"\naxis = 1",
            &[DType::U8],
            &[10, 12],
            &[4, 5],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::I64));
        assert_eq!(s.grid.shape(), &[10]);
        assert_eq!(reduce_of(&s).describe(), "sum over axis 1");
        // Min keeps the dtype.
        let s = plan_one(
            "kind = \"reduce\"\nop = \"min\"",
            &[DType::I16],
            &[10],
            &[5],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::I16));
    }

    #[test]
    fn refuses_bad_axes() {
        let bad = |extra: &str| {
            plan_err(
                &format!("kind = \"reduce\"\nop = \"sum\"\n{extra}"),
                &[DType::F32],
                &[10, 12],
                &[4, 5],
            )
        };
        let e = bad("axis = 2");
        assert!(
            e.contains("axis 2 is out of range for the input's 2 axes (shape [10, 12])"),
            "{e}"
        );
        assert!(bad("axis = [0, -2]").contains("axis -2 is named twice"));
        assert!(bad("axis = 0\nover = \"blocks\"").contains("cannot be combined"));
        let e = plan_err(
            "kind = \"reduce\"\nop = \"argmax\"\naxis = [0, 1]",
            &[DType::F32],
            &[10, 12, 2],
            &[4, 5, 2],
        );
        assert!(e.contains("argmin and argmax take one axis"), "{e}");
    }
}

//! `median`: scipy.ndimage's median_filter (and rank_filter,
//! percentile_filter), chunk by chunk with the halo the window needs.

use blockflow_core::{with_array, ArrayData, ArrayKind, Chunk, Region};
use blockflow_kernels::rank::{RankFilter, Statistic};

use super::common::{self, MODES};
use super::{
    p, Arity, Exec, KernelState, KindDef, MapKernel, MemoryCx, PType, PlanCx, Planned, Stage,
};
use crate::config::Val;

pub static KIND: KindDef = KindDef {
    kind: "median",
    role: "kernel",
    summary: "scipy.ndimage's median_filter (or rank_filter, percentile_filter) with a window size per axis, e.g. [1, 3, 3, 3] on a (T, Z, Y, X) stack: chunk by chunk with the halo the window needs, equal to scipy on the whole array; keeps the dtype",
    inputs: Arity::Exactly(1),
    params: &[
        p("size", PType::Ints, None, "the window's size per axis (an integer: every axis); 1 leaves an axis alone"),
        p("rank", PType::Int(i64::MIN, i64::MAX), Some(""), "rank_filter: this rank of each window instead of the median (negative counts from the top)"),
        p("percentile", PType::Float, Some(""), "percentile_filter: this percentile (0..100) instead of the median"),
        p("mode", PType::Choice(MODES), Some("reflect"), "how the array is extended at its edges, as scipy.ndimage"),
        p("cval", PType::Float, Some("0.0"), "the value beyond the edges for mode = \"constant\""),
    ],
    example: "inputs = [\"frames\"]\nsize = [1, 3, 3, 3]",
    plan,
};

#[derive(Debug, Clone)]
pub struct Median {
    pub filter: RankFilter,
    pub stat: Statistic,
    pub mode: String,
    /// The input's shape.
    pub array: Vec<usize>,
    pub halo: Vec<(usize, usize)>,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?.clone();
    let nd = stream.shape().len();
    let size: Vec<usize> = match cx.p.value("size") {
        Some(Val::Int(i)) if i >= 1 => vec![i as usize; nd],
        Some(Val::Array(a)) => a
            .iter()
            .filter_map(|x| match x.v {
                Val::Int(i) if i >= 1 => Some(i as usize),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if size.len() != nd {
        return cx.err(
            "size",
            format!(
                "`size` must be a positive integer or one per axis ({nd} for the input {:?})",
                stream.shape()
            ),
        );
    }
    for (ax, &n) in size.iter().enumerate() {
        if !common::check_radius(cx, "size", ax, (n / 2) as f64, stream.shape()[ax]) {
            return None;
        }
    }
    if size
        .iter()
        .try_fold(1usize, |a, &n| a.checked_mul(n))
        .is_none_or(|n| n > 1 << 32)
    {
        return cx.err(
            "size",
            format!("the window {size:?} holds more than 2^32 values"),
        );
    }
    let stat = if let Some(r) = cx.p.int("rank") {
        Statistic::Rank(r)
    } else if let Some(q) = cx.p.float("percentile") {
        Statistic::Percentile(q)
    } else {
        Statistic::Median
    };
    let filter = match RankFilter::new(&size, stat, common::boundary(cx)?) {
        Ok(f) => f,
        Err(e) => return cx.err("size", e.to_string()),
    };
    let halo = filter.halo();
    if !common::check_wrap(cx, &stream.grid, &halo) {
        return None;
    }
    let m = Median {
        filter,
        stat,
        mode: cx.p.str("mode")?,
        array: stream.shape().iter().map(|&n| n as usize).collect(),
        halo,
    };
    Some(Planned::sends(m, stream.dtype, stream.grid.clone()))
}

impl Stage for Median {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let stat = match self.stat {
            Statistic::Median => "median".to_string(),
            Statistic::Rank(r) => format!("rank {r}"),
            Statistic::Percentile(q) => format!("percentile {q}"),
        };
        format!(
            "{stat} of {:?} windows, mode {}",
            self.filter.size(),
            self.mode
        )
    }
    /// The block with its halo, the gathered windows, the result.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * (3 * m.in_bytes + m.out_bytes)
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Map(self)
    }
    fn halo(&self) -> Option<Vec<(usize, usize)>> {
        Some(self.halo.clone())
    }
}

impl MapKernel for Median {
    fn apply(
        &self,
        _state: &KernelState,
        inputs: &[Chunk],
        _index: &[u64],
        _region: &Region,
    ) -> Result<ArrayData, String> {
        let c = inputs.first().ok_or("median has no input")?;
        let (padded, geom) = common::block(c, &self.halo, &self.array)?;
        let data = padded.as_ref().unwrap_or(c.array());
        with_array!(data, a => self.filter
            .filter_block(a.view(), &geom)
            .map(ArrayKind::wrap)
            .map_err(|e| e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    #[test]
    fn plans_the_window_halo_and_memory() {
        let s = plan_one(
            "kind = \"median\"\nsize = [1, 3, 5]",
            &[DType::U16],
            &[4, 10, 12],
            &[1, 5, 6],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::U16));
        assert_eq!(s.grid.chunk_shape(), &[1, 5, 6]);
        let op = &s.kind;
        assert_eq!(op.halo(), Some(vec![(0, 0), (1, 1), (2, 2)]));
        assert_eq!(op.describe(), "median of [1, 3, 5] windows, mode reflect");
        // 2 × (3 × (1 × 7 × 10) uint16 + 1 × 5 × 6 uint16).
        assert_eq!(s.mem.working, 2 * (3 * 140 + 60));
    }

    #[test]
    fn refuses_a_size_per_axis_of_another_length() {
        let e = plan_err(
            "kind = \"median\"\nsize = [3, 3]",
            &[DType::F32],
            &[4, 10, 12],
            &[1, 5, 6],
        );
        assert!(
            e.contains("`size` must be a positive integer or one per axis (3"),
            "{e}"
        );
    }

    #[test]
    fn equals_the_whole_array_filter() {
        let values: Vec<f64> = (0..30).map(|i| ((i * 7) % 11) as f64).collect();
        let f = RankFilter::median(&[3, 3], blockflow_kernels::filters::Boundary::Mirror)
            .expect("filter");
        let k = Median {
            halo: f.halo(),
            filter: f.clone(),
            stat: Statistic::Median,
            mode: "mirror".into(),
            array: vec![5, 6],
        };
        let a = array_f64(&[5, 6], &values);
        let out = apply_map(&k, std::slice::from_ref(&a));
        let ArrayData::F64(whole) = &a else {
            unreachable!()
        };
        assert_eq!(out, ArrayData::F64(f.apply(whole.view()).expect("apply")));
        // One value by hand: the corner's 3 × 3 window, mirrored.
        let at = |y: usize, x: usize| values[y * 6 + x];
        let mut w = vec![
            at(1, 1),
            at(1, 0),
            at(1, 1),
            at(0, 1),
            at(0, 0),
            at(0, 1),
            at(1, 1),
            at(1, 0),
            at(1, 1),
        ];
        w.sort_by(f64::total_cmp);
        assert_eq!(out.to_f64()[[0, 0]], w[4]);
    }
}

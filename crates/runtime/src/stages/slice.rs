//! `slice`: numpy's basic indexing on any axes, in a stream: only the
//! source chunks the slice touches are held, in a sliding window.

use super::{p, Arity, Exec, KindDef, MemoryCx, PType, PlanCx, Planned, Stage, Window};
use crate::plan::Regrid;

pub static KIND: KindDef = KindDef {
    kind: "slice",
    role: "kernel",
    summary: "numpy's basic indexing on any axes, split or not, in a stream: `index = \"730, :, :, :\"` (one image of a stack; an integer drops its axis), `\"100:, 100:\"` (a crop), `\"::2, ::2\"` (a step), `\"..., :3\"`; only the source chunks the slice touches are held, in a sliding window",
    inputs: Arity::Exactly(1),
    params: &[
        p("index", PType::Str, None, "the index, as in numpy: integers, start:stop:step slices (step > 0; negative start/stop count from the end), `...`; axes left out are taken whole"),
        p("chunks", PType::Shape, Some(""), "the result's chunks (default: the input's, clipped to the result)"),
    ],
    example: "inputs = [\"f32_rgb\"]\nindex = \"2:, ::2, 0\"",
    plan,
};

/// Destination position j along axis k is source position
/// `regrid.map[k].0 + j * regrid.map[k].1`; `regrid.dst` is the result's
/// grid with the `drop`ped (integer-indexed) axes kept as length 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub regrid: Regrid,
    pub drop: Vec<bool>,
    /// The source chunks held at once.
    pub window: u64,
    /// The index as written.
    pub text: String,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?;
    let text = cx.p.str("index")?;
    let (map, drop, extents) = match parse_index(&text, stream.shape()) {
        Ok(v) => v,
        Err(e) => {
            return cx.err(
                "index",
                format!(
                    "`index = \"{text}\"`: {e} (the input is {:?})",
                    stream.shape()
                ),
            )
        }
    };
    let kept: Vec<u64> = extents
        .iter()
        .zip(&drop)
        .filter(|(_, &dr)| !dr)
        .map(|(&e, _)| e)
        .collect();
    let default: Vec<u64> = stream
        .grid
        .chunk_shape()
        .iter()
        .zip(&drop)
        .filter(|(_, &dr)| !dr)
        .map(|(&c, _)| c)
        .collect();
    let out_chunks = cx.p.shape("chunks").unwrap_or(default);
    if out_chunks.len() != kept.len() {
        return cx.err(
            "chunks",
            format!(
                "`chunks` has {} values but the result has {} axes ({kept:?})",
                out_chunks.len(),
                kept.len()
            ),
        );
    }
    let grid = cx.stage_grid(kept, out_chunks)?;
    let mut it = grid.chunk_shape().iter();
    let inner_chunks: Vec<u64> = drop
        .iter()
        .map(|&dr| if dr { 1 } else { *it.next().unwrap_or(&1) })
        .collect();
    let inner = cx.stage_grid(extents.clone(), inner_chunks)?;
    let regrid = Regrid {
        src: stream.grid.clone(),
        dst: inner,
        halo: vec![(0, 0); extents.len()],
        map,
    };
    let window = regrid.window();
    // For the readers of results: the positions the index takes.
    let about = resolved_index(&text, stream.shape())
        .map(|(index, notes)| {
            let mut t = format!("{}[{index}]", cx.inputs[0].label());
            if !notes.is_empty() {
                t = format!("{t} (index {})", notes.join("; "));
            }
            t
        })
        .unwrap_or_else(|_| format!("{}[{text}]", cx.inputs[0].label()));
    let op = Slice {
        regrid,
        drop,
        window,
        text,
    };
    let about = super::About {
        text: about,
        inline: true,
        ..Default::default()
    };
    Some(Planned::sends(op, stream.dtype, grid).about(about))
}

impl Stage for Slice {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!(
            "[{}], holding up to {} source chunks",
            self.text, self.window
        )
    }
    /// The source chunks it must hold, and the chunk being assembled.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        self.window as u128 * m.in_bytes + 2 * m.out_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Window(Window {
            regrid: self.regrid.clone(),
            drop: self.drop.clone(),
        })
    }
}

/// numpy's basic index (`"730, :, :"`, `"100:, ::2"`, `"..., 0"`) over an
/// array of `shape`: per axis (start, step), whether an integer dropped it,
/// and the extent taken.
#[allow(clippy::type_complexity)]
pub fn parse_index(
    text: &str,
    shape: &[u64],
) -> Result<(Vec<(u64, u64)>, Vec<bool>, Vec<u64>), String> {
    let items = expand(text, shape)?;
    let num = |s: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse::<i64>()
                .map(Some)
                .map_err(|_| format!("`{s}` is not an integer"))
        }
    };
    let (mut map, mut drop, mut extents) = (Vec::new(), Vec::new(), Vec::new());
    for (ax, (item, &n)) in items.iter().zip(shape).enumerate() {
        let n = n as i64;
        if item.contains(':') {
            let f: Vec<&str> = item.split(':').collect();
            if f.len() > 3 {
                return Err(format!("`{item}` has too many colons"));
            }
            let step = num(f.get(2).copied().unwrap_or(""))?.unwrap_or(1);
            if step <= 0 {
                return Err(format!(
                    "axis {ax}: step {step}; only positive steps are supported"
                ));
            }
            let clamp = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
            let start = num(f[0])?.map_or(0, clamp);
            let stop = num(f.get(1).copied().unwrap_or(""))?.map_or(n, clamp);
            let len = if stop > start {
                (stop - start + step - 1) / step
            } else {
                0
            };
            if len == 0 {
                return Err(format!("axis {ax}: `{item}` selects nothing"));
            }
            map.push((start as u64, step as u64));
            drop.push(false);
            extents.push(len as u64);
        } else {
            let i = num(item)?.ok_or("an empty index")?;
            let j = if i < 0 { i + n } else { i };
            if j < 0 || j >= n {
                return Err(format!(
                    "index {i} is out of range for axis {ax} of length {n}"
                ));
            }
            map.push((j as u64, 1));
            drop.push(true);
            extents.push(1);
        }
    }
    if drop.iter().all(|&d| d) {
        // numpy gives a scalar; here a 1-element array of the last axis.
        if let Some(last) = drop.last_mut() {
            *last = false;
        }
    }
    Ok((map, drop, extents))
}

/// The index's items, one per axis (`...` and missing trailing axes as `:`).
fn expand<'t>(text: &'t str, shape: &[u64]) -> Result<Vec<&'t str>, String> {
    let parts: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let ellipses = parts.iter().filter(|p| **p == "...").count();
    if ellipses > 1 {
        return Err("at most one `...`".into());
    }
    let named = parts.len() - ellipses;
    if named > shape.len() {
        return Err(format!("{named} indices for {} axes", shape.len()));
    }
    let mut items: Vec<&str> = Vec::new();
    for p in &parts {
        if *p == "..." {
            items.extend(std::iter::repeat_n(":", shape.len() - named));
        } else {
            items.push(p);
        }
    }
    while items.len() < shape.len() {
        items.push(":");
    }
    Ok(items)
}

/// The index with each integer resolved to the position it takes (`-1` of
/// 16 images is 15), every axis written; and, for each negative integer,
/// where it counted from (for the readers of results).
pub fn resolved_index(text: &str, shape: &[u64]) -> Result<(String, Vec<String>), String> {
    let (map, _, _) = parse_index(text, shape)?;
    let items = expand(text, shape)?;
    let mut notes = Vec::new();
    let out: Vec<String> = items
        .iter()
        .zip(&map)
        .enumerate()
        .map(|(ax, (item, &(start, _)))| {
            if item.contains(':') {
                return (*item).to_string();
            }
            if item.trim().starts_with('-') {
                notes.push(format!(
                    "{} from the end of axis {ax}, length {}",
                    item.trim(),
                    shape[ax]
                ));
            }
            start.to_string()
        })
        .collect();
    Ok((out.join(", "), notes))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    fn slice_of(s: &crate::plan::PlannedStage) -> &Slice {
        let op = &s.kind;
        op.as_any().downcast_ref::<Slice>().expect("a slice")
    }

    #[test]
    fn an_integer_drops_its_axis_and_a_step_thins_one() {
        let s = plan_one(
            "kind = \"slice\"\nindex = \"3, ::2\"",
            &[DType::I16],
            &[10, 20],
            &[4, 5],
        );
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::I16));
        assert_eq!(s.grid.shape(), &[10]);
        assert_eq!(s.grid.chunk_shape(), &[5]);
        let sl = slice_of(&s);
        assert_eq!(sl.drop, vec![true, false]);
        assert_eq!(sl.regrid.map, vec![(3, 1), (0, 2)]);
        assert_eq!(sl.regrid.dst.shape(), &[1, 10]);
        // Row 3 lies in the first row of source chunks: 4 of them, each
        // needed by the one result chunk that follows it.
        assert!(sl.window >= 1 && sl.window <= 4, "{}", sl.window);
        // The window of int16 chunks of 4 x 5, and twice the result chunk.
        assert_eq!(s.mem.working, sl.window * 40 + 2 * 10);
        assert_eq!(
            sl.describe(),
            format!("[3, ::2], holding up to {} source chunks", sl.window)
        );
        let Exec::Window(w) = sl.exec() else {
            panic!("a window")
        };
        assert_eq!(w.drop, vec![true, false]);
    }

    #[test]
    fn refuses_a_bad_index_and_chunks_of_the_wrong_rank() {
        let e = plan_err(
            "kind = \"slice\"\nindex = \"12, :\"",
            &[DType::F32],
            &[10, 20],
            &[4, 5],
        );
        assert!(
            e.contains("`index = \"12, :\"`: index 12 is out of range for axis 0 of length 10 (the input is [10, 20])"),
            "{e}"
        );
        let e = plan_err(
            "kind = \"slice\"\nindex = \"1:3\"\nchunks = [2]",
            &[DType::F32],
            &[10, 20],
            &[4, 5],
        );
        assert!(
            e.contains("`chunks` has 1 values but the result has 2 axes ([2, 20])"),
            "{e}"
        );
    }

    #[test]
    fn parses_numpy_basic_indices() {
        let (map, drop, ext) = parse_index("..., -1", &[4, 6, 8]).expect("parses");
        assert_eq!(map, vec![(0, 1), (0, 1), (7, 1)]);
        assert_eq!(drop, vec![false, false, true]);
        assert_eq!(ext, vec![4, 6, 1]);
        let (map, _, ext) = parse_index("1:-1:3", &[10]).expect("parses");
        assert_eq!((map, ext), (vec![(1, 3)], vec![3]));
        assert!(parse_index("5:2", &[10]).is_err_and(|e| e.contains("selects nothing")));
        assert!(parse_index("..., ...", &[10]).is_err());
        assert!(parse_index("::0", &[10]).is_err_and(|e| e.contains("positive steps")));
    }

    /// A negative integer counts from the end, as numpy's; out of range
    /// either way it is refused, naming the index, the axis and its length.
    #[test]
    fn a_negative_index_counts_from_the_end() {
        let (map, drop, ext) = parse_index("-1, :, :, :", &[16, 4, 4, 3]).expect("parses");
        assert_eq!(map[0], (15, 1));
        assert_eq!((drop[0], ext[0]), (true, 1));
        let (map, _, _) = parse_index("-16", &[16, 4]).expect("parses");
        assert_eq!(map[0], (0, 1));
        let e = parse_index("-17, :", &[16, 4]).expect_err("out of range");
        assert_eq!(e, "index -17 is out of range for axis 0 of length 16");
        let e = plan_err(
            "kind = \"slice\"\nindex = \"-11, :\"",
            &[DType::F32],
            &[10, 20],
            &[4, 5],
        );
        assert!(
            e.contains("`index = \"-11, :\"`: index -11 is out of range for axis 0 of length 10"),
            "{e}"
        );
        // What the result is, for write-json: the position it resolved to.
        assert_eq!(
            resolved_index("-1, ...", &[16, 4, 3]).expect("resolves"),
            (
                "15, :, :".to_string(),
                vec!["-1 from the end of axis 0, length 16".to_string()]
            )
        );
        let s = plan_one(
            "kind = \"slice\"\nindex = \"-1, :\"",
            &[DType::F32],
            &[10, 20],
            &[4, 5],
        );
        assert_eq!(
            s.about.text,
            "in0[9, :] (index -1 from the end of axis 0, length 10)"
        );
    }
}

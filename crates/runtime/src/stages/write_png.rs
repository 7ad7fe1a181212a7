//! `write-png`: a PNG preview of an (H, W) or RGB (H, W, 3) array.

use std::path::PathBuf;
use std::sync::Mutex;

use blockflow_core::Chunk;
use blockflow_io::preview::{Colormap, PreviewOptions, PreviewWriter, Stretch};
use blockflow_io::IoError;

use super::{
    p, Arity, BuildCx, ChunkSink, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SinkOp, Stage, Writes,
};

pub static KIND: KindDef = KindDef {
    kind: "write-png",
    role: "writer",
    summary: "a PNG preview of an (H, W) or RGB (H, W, 3) array: a region, or the whole array averaged down (or a small one enlarged), clipped between percentiles, stretched (linear, sqrt, asinh, log) and coloured by a matplotlib colormap",
    inputs: Arity::Exactly(1),
    params: &[
        p("path", PType::Path(PathRole::Output), None, "the PNG file"),
        p("max_size", PType::Int(8, 16384), Some("1024"), "the picture's longer side in pixels (the array is block-averaged down to it)"),
        p("region", PType::Ints, Some(""), "[y0, y1, x0, x1]: preview only this part of the array"),
        p("block", PType::Ints, Some(""), "[row, column]: preview only this block (chunk) of the input's grid; negative counts from the end, and an index past the end takes the last block along that axis, so the config fits a smaller image (`region`, if given, wins)"),
        p("min_size", PType::Int(1, 16384), Some("256"), "a smaller array (or region) is enlarged by an integer factor, each value a square of pixels (nearest neighbour), until its shorter side is at least this many pixels, its longer side staying within max_size"),
        p("colormap", PType::Choice(Colormap::NAMES), Some("gray"), "for single-channel arrays: matplotlib's table, byte for byte (`_r`: reversed)"),
        p("percentiles", PType::Floats, Some("[1.0, 99.5]"), "values at these percentiles map to the ends of the colormap (the values between are t in [0, 1])"),
        p("stretch", PType::Choice(Stretch::NAMES), Some("linear"), "applied to t after the percentile clipping, as astropy.visualization: linear t; sqrt; asinh: asinh(t/a)/asinh(1/a), linear below about a and logarithmic above, which shows faint sources next to bright ones (sky images); log: ln(1 + t/a)/ln(1 + 1/a)"),
        p("softening", PType::Float, Some(""), "`a` of the asinh or log stretch, > 0 (default 0.1 for asinh, astropy's; 0.001 for log, astropy's LogStretch a = 1000): a smaller a brightens fainter values"),
        p("downsample", PType::Choice(&["mean", "max"]), Some("mean"), "how a block of pixels becomes one: mean, or max (for sparse peaks)"),
        p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when the file exists"),
    ],
    example: "inputs = [\"f32_2d\"]\npath = \"out.png\"\ncolormap = \"viridis\"",
    plan,
};

#[derive(Debug, Clone)]
pub struct WritePng {
    pub path: PathBuf,
    pub options: PreviewOptions,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?;
    let shape = stream.shape().to_vec();
    let rgb = shape.len() == 3 && shape[2] == 3 && stream.grid.chunk_shape()[2] == 3;
    if shape.len() != 2 && !rgb {
        return cx.err("inputs", format!("a preview takes an (H, W) array or an RGB (H, W, 3) array with whole channels per chunk; the input is {shape:?} in chunks of {:?}", stream.grid.chunk_shape()));
    }
    let region = match (cx.p.ints("region", 4), cx.p.ints("block", 2)) {
        (None, Some(Ok(b))) if b.len() == 2 => {
            let g = stream.grid.grid_shape();
            let at = |i: i64, n: u64| -> u64 {
                let n = n.max(1) as i64;
                (if i < 0 { n + i } else { i }).clamp(0, n - 1) as u64
            };
            let mut idx = vec![at(b[0], g[0]), at(b[1], g[1])];
            idx.extend(std::iter::repeat_n(0, shape.len() - 2));
            let r = stream.grid.region(&idx);
            Some([
                r.origin[0],
                r.origin[0] + r.shape[0],
                r.origin[1],
                r.origin[1] + r.shape[1],
            ])
        }
        (None, Some(_)) => {
            return cx.err(
                "block",
                "`block` is [row, column] of the input's chunk grid",
            );
        }
        (None, None) => None,
        (Some(r), _) => match r {
            Ok(r)
                if r.len() == 4
                    && r[0] >= 0
                    && r[2] >= 0
                    && r[0] < r[1]
                    && r[2] < r[3]
                    && r[1] as u64 <= shape[0]
                    && r[3] as u64 <= shape[1] =>
            {
                Some([r[0] as u64, r[1] as u64, r[2] as u64, r[3] as u64])
            }
            _ => {
                return cx.err(
                    "region",
                    format!(
                        "`region` is [y0, y1, x0, x1] with y0 < y1 <= {} and x0 < x1 <= {}",
                        shape[0], shape[1]
                    ),
                );
            }
        },
    };
    let percentiles = match cx.p.floats("percentiles", 2) {
        Some(Ok(p)) if p.len() == 2 && 0.0 <= p[0] && p[0] < p[1] && p[1] <= 100.0 => [p[0], p[1]],
        _ => {
            return cx.err(
                "percentiles",
                "`percentiles` is [low, high] with 0 <= low < high <= 100",
            );
        }
    };
    let softening = cx.p.float("softening");
    if softening.is_some_and(|a| !(a.is_finite() && a > 0.0)) {
        return cx.err("softening", "`softening` is a number > 0");
    }
    let options = PreviewOptions {
        region,
        max_size: cx.p.int("max_size")? as u64,
        min_size: cx.p.int("min_size")? as u64,
        colormap: Colormap::parse(&cx.p.str("colormap")?)?,
        percentiles,
        stretch: Stretch::parse(&cx.p.str("stretch")?, softening)?,
        max_pool: cx.p.str("downsample").as_deref() == Some("max"),
        overwrite: cx.p.str("if_exists").as_deref() == Some("overwrite"),
    };
    let path = cx.path("path")?;
    Some(Planned::sink(
        WritePng { path, options },
        stream.grid.clone(),
    ))
}

impl Stage for WritePng {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let o = &self.options;
        let part = match o.region {
            Some([y0, y1, x0, x1]) => format!("rows {y0}..{y1}, columns {x0}..{x1}"),
            None => "the whole array".to_string(),
        };
        let stretch = match o.stretch {
            Stretch::Asinh { a } | Stretch::Log { a } => format!("{} (a = {a})", o.stretch.name()),
            s => s.name().to_string(),
        };
        format!(
            "PNG preview {} of {part}, {} down to at most {} px (enlarged to at least {} px), {} between percentiles {} and {}, {stretch} stretch",
            self.path.display(),
            if o.max_pool { "max-pooled" } else { "averaged" },
            o.max_size,
            o.min_size,
            o.colormap.name(),
            o.percentiles[0],
            o.percentiles[1]
        )
    }
    /// The chunks held and the preview's sums and counts.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * m.in_bytes + self.options.held_bytes(m.grid.shape()) as u128
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Sink(self)
    }
    fn writes(&self) -> Option<Writes<'_>> {
        Some(Writes::Files(std::slice::from_ref(&self.path)))
    }
}

impl SinkOp for WritePng {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSink>, IoError> {
        let w = PreviewWriter::create(&self.path, cx.stage.grid.shape(), self.options.clone())?;
        Ok(Box::new(PngSink {
            path: self.path.clone(),
            w: Mutex::new(w),
        }))
    }
}

/// The preview's sums, added to by chunks written at once.
struct PngSink {
    path: PathBuf,
    w: Mutex<PreviewWriter>,
}

impl ChunkSink for PngSink {
    fn write(&self, _input: usize, chunk: &Chunk) -> Result<(), String> {
        let mut w = self
            .w
            .lock()
            .map_err(|_| "another chunk failed while adding to the preview")?;
        w.add(&chunk.region, chunk.array());
        Ok(())
    }
    fn held_bytes(&self) -> u64 {
        self.w.lock().map_or(0, |w| w.held_bytes())
    }
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError> {
        let PngSink { path, w } = *self;
        let w = w.into_inner().map_err(|_| IoError::Store {
            path,
            why: "a chunk failed while adding to the preview".into(),
        })?;
        w.finish().map(|p| vec![p])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use blockflow_core::DType;

    #[test]
    fn plans_the_preview_and_its_sums() {
        let s = plan_one(
            "kind = \"write-png\"\npath = \"p.png\"\nmax_size = 8\nregion = [0, 10, 2, 12]",
            &[DType::F32],
            &[20, 30],
            &[10, 10],
        );
        assert!(s.output.is_none());
        // 2 chunks of 400 bytes, and a 10 x 10 region down to 8 px (factor
        // 2): 5 x 5 values, 12 bytes each while streaming (sums, counts),
        // 16 when written (values, sorted copy), and the picture, 6 bytes a
        // pixel.
        assert_eq!(s.mem.working, 2 * 400 + 5 * 5 * 16 + 5 * 5 * 6);
        let op = &s.kind;
        assert_eq!(
            op.describe(),
            "PNG preview /cfg/p.png of rows 0..10, columns 2..12, averaged down to at most 8 px (enlarged to at least 256 px), gray between percentiles 1 and 99.5, linear stretch"
        );
    }

    #[test]
    fn a_block_of_the_grid_clipped_to_its_end() {
        let region = |cfg: &str, shape: &[u64]| {
            let s = plan_one(cfg, &[DType::F32], shape, &[10, 10]);
            let op = s
                .kind
                .as_any()
                .downcast_ref::<super::WritePng>()
                .expect("png");
            op.options.region
        };
        let cfg = "kind = \"write-png\"\npath = \"p.png\"\nblock = [0, 20]";
        // The block asked for where the grid has it; the last one where not.
        assert_eq!(region(cfg, &[40, 300]), Some([0, 10, 200, 210]));
        assert_eq!(region(cfg, &[40, 55]), Some([0, 10, 50, 55]));
        let cfg = "kind = \"write-png\"\npath = \"p.png\"\nblock = [-1, 1]";
        assert_eq!(region(cfg, &[40, 55]), Some([30, 40, 10, 20]));
        // A region wins.
        let cfg = "kind = \"write-png\"\npath = \"p.png\"\nblock = [0, 1]\nregion = [0, 5, 0, 5]";
        assert_eq!(region(cfg, &[40, 55]), Some([0, 5, 0, 5]));
    }

    #[test]
    fn refuses_a_region_outside_the_array_bad_percentiles_and_3_d_arrays() {
        let e = plan_err(
            "kind = \"write-png\"\npath = \"p.png\"\nregion = [0, 30, 0, 10]",
            &[DType::F32],
            &[20, 30],
            &[10, 10],
        );
        assert!(e.contains("y0 < y1 <= 20 and x0 < x1 <= 30"), "{e}");
        let e = plan_err(
            "kind = \"write-png\"\npath = \"p.png\"\npercentiles = [50, 10]",
            &[DType::F32],
            &[20, 30],
            &[10, 10],
        );
        assert!(e.contains("0 <= low < high <= 100"), "{e}");
        let e = plan_err(
            "kind = \"write-png\"\npath = \"p.png\"",
            &[DType::F32],
            &[20, 30, 4],
            &[10, 10, 4],
        );
        assert!(e.contains("a preview takes an (H, W) array"), "{e}");
    }
}

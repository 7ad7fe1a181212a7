//! PNG previews of any 2-D (H, W) or RGB (H, W, 3) array: a region, or the
//! whole array block-averaged down to a size you can look at, stretched
//! between two percentiles and coloured by a colormap. Built while the
//! chunks stream past; only the small preview is held.

use std::path::{Path, PathBuf};

use blockflow_core::{with_array, ArrayData, Element, Region};

use crate::output::{Claim, Made};
use crate::IoError;

/// A colormap for single-channel previews: matplotlib's 256-entry table,
/// byte for byte as matplotlib writes it (`cmap(i, bytes=True)`; the
/// tables under `colormaps/` are made by scripts/fixtures/make_colormaps.py
/// and checked by tests/colormaps.rs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Colormap {
    name: &'static str,
    table: &'static [u8; 768],
}

impl std::fmt::Debug for Colormap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Colormap({})", self.name)
    }
}

macro_rules! tables {
    ($($name:literal),* $(,)?) => {
        const TABLES: &[(&str, &[u8; 768])] = &[
            $(($name, include_bytes!(concat!("colormaps/", $name, ".rgb")))),*
        ];
        impl Colormap {
            /// The maps offered, as matplotlib names them.
            pub const NAMES: &'static [&'static str] = &[$($name),*];
        }
    };
}

tables!(
    "gray",
    "gray_r",
    "viridis",
    "viridis_r",
    "magma",
    "magma_r",
    "inferno",
    "inferno_r",
    "plasma",
    "plasma_r",
    "cividis",
    "cividis_r",
    "pink",
    "pink_r",
);

impl Colormap {
    pub fn parse(s: &str) -> Option<Colormap> {
        TABLES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|&(name, table)| Colormap { name, table })
    }

    pub fn name(self) -> &'static str {
        self.name
    }

    /// The colour of `t` in [0, 1] (clamped), as matplotlib picks it: entry
    /// `floor(256 t)`, the last for t = 1.
    pub fn map(self, t: f64) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let i = ((t * 256.0) as usize).min(255);
        [
            self.table[3 * i],
            self.table[3 * i + 1],
            self.table[3 * i + 2],
        ]
    }
}

/// How values between the two percentiles become brightness: `t` in
/// [0, 1] after the clipping goes to `f(t)` in [0, 1], with astropy's
/// formulas (astropy.visualization).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stretch {
    Linear,
    /// `sqrt(t)`.
    Sqrt,
    /// `asinh(t / a) / asinh(1 / a)`: linear below about `a`, logarithmic
    /// above, so faint sources show while bright cores keep their shape
    /// (astropy's AsinhStretch(a), default a = 0.1; smaller shows fainter).
    Asinh {
        a: f64,
    },
    /// `ln(1 + t / a) / ln(1 + 1 / a)` (astropy's LogStretch with its `a` =
    /// 1 / this `a`; default a = 0.001, astropy's 1000).
    Log {
        a: f64,
    },
}

impl Stretch {
    pub const NAMES: &'static [&'static str] = &["linear", "sqrt", "asinh", "log"];

    /// `softening` is `a` (None: the stretch's default).
    pub fn parse(name: &str, softening: Option<f64>) -> Option<Stretch> {
        match name {
            "linear" => Some(Stretch::Linear),
            "sqrt" => Some(Stretch::Sqrt),
            "asinh" => Some(Stretch::Asinh {
                a: softening.unwrap_or(0.1),
            }),
            "log" => Some(Stretch::Log {
                a: softening.unwrap_or(0.001),
            }),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stretch::Linear => "linear",
            Stretch::Sqrt => "sqrt",
            Stretch::Asinh { .. } => "asinh",
            Stretch::Log { .. } => "log",
        }
    }

    /// `t` clamped to [0, 1], stretched.
    pub fn apply(self, t: f64) -> f64 {
        let t = t.clamp(0.0, 1.0);
        match self {
            Stretch::Linear => t,
            Stretch::Sqrt => t.sqrt(),
            Stretch::Asinh { a } => (t / a).asinh() / (1.0 / a).asinh(),
            Stretch::Log { a } => (t / a).ln_1p() / (1.0 / a).ln_1p(),
        }
    }
}

/// How a preview is made.
#[derive(Debug, Clone)]
pub struct PreviewOptions {
    /// `[y0, y1, x0, x1]` of the array, or the whole array.
    pub region: Option<[u64; 4]>,
    /// The longer side of the picture, in pixels.
    pub max_size: u64,
    /// A smaller array is enlarged by an integer factor (each value a
    /// square of pixels) until its shorter side is at least this, its
    /// longer side staying within `max_size`.
    pub min_size: u64,
    pub colormap: Colormap,
    /// Percentiles mapped to black and white (or the colormap's ends).
    pub percentiles: [f64; 2],
    /// Applied to the values after the percentile clipping.
    pub stretch: Stretch,
    /// Downsample by the block maximum (sparse peaks) instead of the mean.
    pub max_pool: bool,
    pub overwrite: bool,
}

/// The preview's sizes for an array of `shape`.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    y0: u64,
    x0: u64,
    /// Array pixels a preview value covers along each side.
    factor: u64,
    /// Preview values along y and x.
    out_h: usize,
    out_w: usize,
    channels: usize,
    /// Picture pixels each preview value takes along each side.
    up: usize,
}

impl PreviewOptions {
    fn geometry(&self, shape: &[u64]) -> Geometry {
        let [y0, y1, x0, x1] = self.region.unwrap_or([0, shape[0], 0, shape[1]]);
        let (h, w) = (y1 - y0, x1 - x0);
        let max_size = self.max_size.max(1);
        let factor = h.max(w).div_ceil(max_size).max(1);
        let up = if factor == 1 && h.min(w) >= 1 {
            let want = self.min_size.div_ceil(h.min(w));
            let room = max_size / h.max(w).max(1);
            want.min(room).max(1)
        } else {
            1
        };
        Geometry {
            y0,
            x0,
            factor,
            out_h: h.div_ceil(factor) as usize,
            out_w: w.div_ceil(factor) as usize,
            channels: if shape.len() == 3 { 3 } else { 1 },
            up: up as usize,
        }
    }

    /// The picture's size, (height, width) in pixels, for an array of `shape`.
    pub fn picture_size(&self, shape: &[u64]) -> (u64, u64) {
        let g = self.geometry(shape);
        ((g.out_h * g.up) as u64, (g.out_w * g.up) as u64)
    }

    /// Bytes the preview holds for an array of `shape`, at most: its sums
    /// and counts (12 bytes a value) while the chunks stream; when it is
    /// written, the values (the sums, in place) and their sorted copy for
    /// the percentiles (16 bytes a value), then the picture, raw and
    /// encoded (at most 6 bytes a pixel).
    pub fn held_bytes(&self, shape: &[u64]) -> u64 {
        let g = self.geometry(shape);
        let values = (g.out_h * g.out_w * g.channels) as u64;
        let (ph, pw) = self.picture_size(shape);
        values * 16 + ph * pw * 6
    }
}

/// Accumulates block means of the streamed chunks; [`PreviewWriter::finish`] writes the PNG.
#[derive(Debug)]
pub struct PreviewWriter {
    path: PathBuf,
    o: PreviewOptions,
    g: Geometry,
    sum: Vec<f64>,
    count: Vec<u32>,
    claim: Claim,
}

impl PreviewWriter {
    /// `shape` is the array's: (H, W) or (H, W, 3).
    pub fn create(path: &Path, shape: &[u64], o: PreviewOptions) -> Result<Self, IoError> {
        let claim = Claim::take(path, Made::Png, o.overwrite)?;
        let g = o.geometry(shape);
        let n = g.out_h * g.out_w * g.channels;
        Ok(PreviewWriter {
            path: path.to_path_buf(),
            o,
            g,
            sum: vec![0.0; n],
            count: vec![0; n],
            claim,
        })
    }

    /// Bytes the preview holds while the chunks stream.
    pub fn held_bytes(&self) -> u64 {
        (self.sum.len() * 12) as u64
    }

    /// Adds a chunk at `region` (its core, without halo).
    pub fn add(&mut self, region: &Region, data: &ArrayData) {
        let (ry0, rx0) = (region.origin[0], region.origin[1]);
        let [_, y1, _, x1] = self.o.region.unwrap_or([0, u64::MAX, 0, u64::MAX]);
        // Rows and columns of the chunk inside the previewed region.
        let ys = ry0.max(self.g.y0)..(ry0 + region.shape[0]).min(y1);
        let xs = rx0.max(self.g.x0)..(rx0 + region.shape[1]).min(x1);
        if ys.is_empty() || xs.is_empty() {
            return;
        }
        let c = self.g.channels;
        let w = region.shape[1] as usize;
        with_array!(data, a => {
            let a = a.as_standard_layout();
            let Some(v) = a.as_slice() else { return };
            for gy in ys.clone() {
                let row = &v[((gy - ry0) as usize * w) * c..((gy - ry0) as usize * w + w) * c];
                let py = ((gy - self.g.y0) / self.g.factor) as usize;
                for gx in xs.clone() {
                    let px = ((gx - self.g.x0) / self.g.factor) as usize;
                    let base = (py * self.g.out_w + px) * c;
                    for ch in 0..c {
                        let val = row[(gx - rx0) as usize * c + ch].to_f64();
                        if val.is_finite() {
                            let k = base + ch;
                            if !self.o.max_pool {
                                self.sum[k] += val;
                            } else if self.count[k] == 0 || val > self.sum[k] {
                                self.sum[k] = val;
                            }
                            self.count[k] += 1;
                        }
                    }
                }
            }
        });
    }

    /// Writes the PNG; returns its path.
    pub fn finish(self) -> Result<PathBuf, IoError> {
        // The sums become the values in place, so that the counts can go
        // before the sorted copy for the percentiles is made.
        let PreviewWriter {
            path,
            o,
            g:
                Geometry {
                    out_h,
                    out_w,
                    channels,
                    up,
                    ..
                },
            sum: mut means,
            count,
            claim,
        } = self;
        for (v, &n) in means.iter_mut().zip(&count) {
            *v = match (n, o.max_pool) {
                (0, _) => f64::NAN,
                (_, true) => *v,
                (n, false) => *v / n as f64,
            };
        }
        drop(count);
        let mut finite: Vec<f64> = means.iter().copied().filter(|v| v.is_finite()).collect();
        finite.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if finite.is_empty() {
                return 0.0;
            }
            let x = (p / 100.0).clamp(0.0, 1.0) * (finite.len() - 1) as f64;
            let (i, f) = (x.floor() as usize, x - x.floor());
            finite[i] + f * (finite[(i + 1).min(finite.len() - 1)] - finite[i])
        };
        let (lo, hi) = (pct(o.percentiles[0]), pct(o.percentiles[1]));
        drop(finite);
        let scale = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
        let stretch = o.stretch;
        // Each value's colour: clipped to [lo, hi], stretched, coloured.
        let level = |v: f64| stretch.apply((v - lo) * scale);
        let mut colours = Vec::with_capacity(out_h * out_w * 3);
        for px in 0..out_h * out_w {
            if channels == 3 {
                for ch in 0..3 {
                    let v = means[px * 3 + ch];
                    colours.push(if v.is_finite() {
                        (level(v) * 255.0).round() as u8
                    } else {
                        0
                    });
                }
            } else {
                let v = means[px];
                colours.extend(if v.is_finite() {
                    o.colormap.map(level(v))
                } else {
                    [0, 0, 0]
                });
            }
        }
        drop(means);
        let rgb = upscale(&colours, out_w, up);
        drop(colours);
        let (pic_h, pic_w) = (out_h * up, out_w * up);
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, pic_w as u32, pic_h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(|e| IoError::Store {
                path: path.clone(),
                why: e.to_string(),
            })?;
            w.write_image_data(&rgb).map_err(|e| IoError::Store {
                path: path.clone(),
                why: e.to_string(),
            })?;
        }
        claim.commit_bytes(&bytes)?;
        Ok(path)
    }
}

/// RGB rows of `w` pixels, each pixel repeated `up` times along x and each
/// row `up` times along y (nearest neighbour).
fn upscale(rgb: &[u8], w: usize, up: usize) -> Vec<u8> {
    if up <= 1 {
        return rgb.to_vec();
    }
    let mut out = Vec::with_capacity(rgb.len() * up * up);
    for row in rgb.chunks(w * 3) {
        let start = out.len();
        for px in row.chunks(3) {
            for _ in 0..up {
                out.extend_from_slice(px);
            }
        }
        for _ in 1..up {
            out.extend_from_within(start..start + w * 3 * up);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscale_repeats_each_pixel_as_a_square() {
        // 2 x 2 pixels, up 3: a 6 x 6 picture of four 3 x 3 squares.
        let rgb = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let out = upscale(&rgb, 2, 3);
        assert_eq!(out.len(), 6 * 6 * 3);
        for y in 0..6 {
            for x in 0..6 {
                let src = (y / 3) * 2 + x / 3;
                assert_eq!(
                    out[(y * 6 + x) * 3..][..3],
                    rgb[src * 3..][..3],
                    "({y}, {x})"
                );
            }
        }
    }

    #[test]
    fn stretches_keep_the_ends_and_lift_faint_values() {
        for s in ["linear", "sqrt", "asinh", "log"] {
            let s = Stretch::parse(s, None).expect("stretch");
            assert!(s.apply(0.0).abs() < 1e-12, "{s:?}");
            assert!((s.apply(1.0) - 1.0).abs() < 1e-12, "{s:?}");
            assert!(s.apply(-1.0).abs() < 1e-12 && (s.apply(2.0) - 1.0).abs() < 1e-12);
        }
        // astropy: AsinhStretch(0.1)(0.01) and LogStretch(1000)(0.01).
        let asinh = Stretch::parse("asinh", None).expect("asinh");
        assert!(
            (asinh.apply(0.01) - 0.033_297_75).abs() < 1e-6,
            "{}",
            asinh.apply(0.01)
        );
        let log = Stretch::parse("log", None).expect("log");
        assert!(
            (log.apply(0.01) - 0.347_080_68).abs() < 1e-6,
            "{}",
            log.apply(0.01)
        );
    }

    #[test]
    fn small_arrays_are_enlarged_within_max_size() {
        let o = |min_size, max_size| PreviewOptions {
            region: None,
            max_size,
            min_size,
            colormap: Colormap::parse("gray").expect("gray"),
            percentiles: [1.0, 99.0],
            stretch: Stretch::Linear,
            max_pool: false,
            overwrite: false,
        };
        // 40 x 40 to at least 256: 7 times, 280 x 280.
        assert_eq!(o(256, 1024).picture_size(&[40, 40]), (280, 280));
        // The longer side caps it: 10 x 100 within 1024 px is 10 times.
        assert_eq!(o(256, 1024).picture_size(&[10, 100]), (100, 1000));
        // Large arrays are averaged down (4 x 4 values a pixel), never enlarged.
        assert_eq!(o(256, 1024).picture_size(&[4000, 2000]), (1000, 500));
        assert_eq!(o(1, 1024).picture_size(&[40, 40]), (40, 40));
    }
}

//! PNG previews of any 2-D (H, W) or RGB (H, W, 3) array: a region, or the
//! whole array block-averaged down to a size you can look at, stretched
//! between two percentiles and coloured by a colormap. Built while the
//! chunks stream past; only the small preview is held.

use std::path::{Path, PathBuf};

use blockflow_core::{with_array, ArrayData, Element, Region};

use crate::output::{Claim, Made};
use crate::IoError;

/// Colormaps for single-channel previews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    Gray,
    Viridis,
    PinkR,
}

impl Colormap {
    pub const NAMES: [&'static str; 3] = ["gray", "viridis", "pink_r"];
    pub fn parse(s: &str) -> Option<Colormap> {
        match s {
            "gray" => Some(Colormap::Gray),
            "viridis" => Some(Colormap::Viridis),
            "pink_r" => Some(Colormap::PinkR),
            _ => None,
        }
    }
    fn stops(self) -> &'static [[f64; 3]] {
        match self {
            Colormap::Gray => &[[0.0, 0.0, 0.0], [255.0, 255.0, 255.0]],
            // matplotlib's viridis at 0, 1/4, 1/2, 3/4, 1.
            Colormap::Viridis => &[
                [68.0, 1.0, 84.0],
                [59.0, 82.0, 139.0],
                [33.0, 145.0, 140.0],
                [94.0, 201.0, 98.0],
                [253.0, 231.0, 37.0],
            ],
            // matplotlib's pink, reversed, at 0, 1/4, 1/2, 3/4, 1.
            Colormap::PinkR => &[
                [255.0, 255.0, 255.0],
                [231.0, 231.0, 196.0],
                [198.0, 158.0, 142.0],
                [158.0, 94.0, 89.0],
                [30.0, 0.0, 0.0],
            ],
        }
    }
    fn map(self, t: f64) -> [u8; 3] {
        let s = self.stops();
        let x = t.clamp(0.0, 1.0) * (s.len() - 1) as f64;
        let i = (x.floor() as usize).min(s.len() - 2);
        let f = x - i as f64;
        [0, 1, 2].map(|k| (s[i][k] + f * (s[i + 1][k] - s[i][k])).round() as u8)
    }
}

/// How a preview is made.
#[derive(Debug, Clone)]
pub struct PreviewOptions {
    /// `[y0, y1, x0, x1]` of the array, or the whole array.
    pub region: Option<[u64; 4]>,
    /// The longer side of the picture, in pixels.
    pub max_size: u64,
    pub colormap: Colormap,
    /// Percentiles mapped to black and white (or the colormap's ends).
    pub percentiles: [f64; 2],
    /// Downsample by the block maximum (sparse peaks) instead of the mean.
    pub max_pool: bool,
    pub overwrite: bool,
}

impl PreviewOptions {
    /// Bytes the preview's sums and counts take for an array of `shape`.
    pub fn held_bytes(&self, shape: &[u64]) -> u64 {
        let [y0, y1, x0, x1] = self.region.unwrap_or([0, shape[0], 0, shape[1]]);
        let (h, w) = (y1 - y0, x1 - x0);
        let f = h.max(w).div_ceil(self.max_size.max(1)).max(1);
        let channels = if shape.len() == 3 { 3 } else { 1 };
        h.div_ceil(f) * w.div_ceil(f) * channels * 12
    }
}

/// Accumulates block means of the streamed chunks; [`PreviewWriter::finish`] writes the PNG.
#[derive(Debug)]
pub struct PreviewWriter {
    path: PathBuf,
    o: PreviewOptions,
    y0: u64,
    x0: u64,
    factor: u64,
    out_h: usize,
    out_w: usize,
    channels: usize,
    sum: Vec<f64>,
    count: Vec<u32>,
    claim: Claim,
}

impl PreviewWriter {
    /// `shape` is the array's: (H, W) or (H, W, 3).
    pub fn create(path: &Path, shape: &[u64], o: PreviewOptions) -> Result<Self, IoError> {
        let claim = Claim::take(path, Made::Png, o.overwrite)?;
        let [y0, y1, x0, x1] = o.region.unwrap_or([0, shape[0], 0, shape[1]]);
        let (h, w) = (y1 - y0, x1 - x0);
        let factor = h.max(w).div_ceil(o.max_size.max(1)).max(1);
        let (out_h, out_w) = (h.div_ceil(factor) as usize, w.div_ceil(factor) as usize);
        let channels = if shape.len() == 3 { 3 } else { 1 };
        Ok(PreviewWriter {
            path: path.to_path_buf(),
            o,
            y0,
            x0,
            factor,
            out_h,
            out_w,
            channels,
            sum: vec![0.0; out_h * out_w * channels],
            count: vec![0; out_h * out_w * channels],
            claim,
        })
    }

    /// Bytes the preview holds while the run goes on.
    pub fn held_bytes(&self) -> u64 {
        (self.sum.len() * 12) as u64
    }

    /// Adds a chunk at `region` (its core, without halo).
    pub fn add(&mut self, region: &Region, data: &ArrayData) {
        let (ry0, rx0) = (region.origin[0], region.origin[1]);
        let [_, y1, _, x1] = self.o.region.unwrap_or([0, u64::MAX, 0, u64::MAX]);
        // Rows and columns of the chunk inside the previewed region.
        let ys = ry0.max(self.y0)..(ry0 + region.shape[0]).min(y1);
        let xs = rx0.max(self.x0)..(rx0 + region.shape[1]).min(x1);
        if ys.is_empty() || xs.is_empty() {
            return;
        }
        let c = self.channels;
        let w = region.shape[1] as usize;
        with_array!(data, a => {
            let a = a.as_standard_layout();
            let Some(v) = a.as_slice() else { return };
            for gy in ys.clone() {
                let row = &v[((gy - ry0) as usize * w) * c..((gy - ry0) as usize * w + w) * c];
                let py = ((gy - self.y0) / self.factor) as usize;
                for gx in xs.clone() {
                    let px = ((gx - self.x0) / self.factor) as usize;
                    let base = (py * self.out_w + px) * c;
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
        let means: Vec<f64> = self
            .sum
            .iter()
            .zip(&self.count)
            .map(|(s, &n)| match (n, self.o.max_pool) {
                (0, _) => f64::NAN,
                (_, true) => *s,
                (n, false) => s / n as f64,
            })
            .collect();
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
        let (lo, hi) = (pct(self.o.percentiles[0]), pct(self.o.percentiles[1]));
        let scale = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
        let mut rgb = Vec::with_capacity(self.out_h * self.out_w * 3);
        for px in 0..self.out_h * self.out_w {
            if self.channels == 3 {
                for ch in 0..3 {
                    let v = means[px * 3 + ch];
                    rgb.push(if v.is_finite() {
                        (((v - lo) * scale).clamp(0.0, 1.0) * 255.0).round() as u8
                    } else {
                        0
                    });
                }
            } else {
                let v = means[px];
                rgb.extend(if v.is_finite() {
                    self.o.colormap.map((v - lo) * scale)
                } else {
                    [0, 0, 0]
                });
            }
        }
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, self.out_w as u32, self.out_h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(|e| IoError::Store {
                path: self.path.clone(),
                why: e.to_string(),
            })?;
            w.write_image_data(&rgb).map_err(|e| IoError::Store {
                path: self.path.clone(),
                why: e.to_string(),
            })?;
        }
        self.claim.commit_bytes(&bytes)?;
        Ok(self.path)
    }
}

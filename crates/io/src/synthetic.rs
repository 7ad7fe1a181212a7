//! Deterministic synthetic arrays.
//!
//! Every value is a function of its global coordinates and the seed, so a
//! chunk is generated from its region alone and any chunking of the same
//! array gives identical values. Objects (galaxies, stars) live in cells of
//! a fixed grid, each cell drawing its own objects from a hash of its
//! coordinates; a chunk renders the objects of the cells around it.

use blockflow_core::{with_dtype, ArrayData, ArrayKind, DType, Element, Region};
use ndarray::{ArrayD, Dimension, IxDyn};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// An RGB survey image like the Hubble Ultra Deep Field, values in [0, 1]:
    /// dark sky with noise, Gaussian galaxies of many sizes, shapes and
    /// colours, bright point-like stars and small red blobs. Shape (H, W, 3).
    Survey,
    /// An RGBA elevation map: fractal terrain coloured by height, alpha 255
    /// (values 0..=255). Shape (H, W, 4) or (H, W, 3).
    Terrain,
    /// Uniform noise in [0, 1) (floats) or over the dtype's range (integers).
    Noise,
    /// The row-major flat index of each element (wrapping for small integers).
    Ramp,
}

impl Pattern {
    pub const NAMES: [&'static str; 4] = ["survey", "terrain", "noise", "ramp"];
    pub fn parse(s: &str) -> Option<Pattern> {
        match s {
            "survey" => Some(Pattern::Survey),
            "terrain" => Some(Pattern::Terrain),
            "noise" => Some(Pattern::Noise),
            "ramp" => Some(Pattern::Ramp),
            _ => None,
        }
    }
    /// Checks a shape for the pattern; the message says what is expected.
    pub fn check_shape(self, shape: &[u64]) -> Result<(), String> {
        match self {
            Pattern::Survey if shape.len() != 3 || shape[2] != 3 => Err(format!(
                "the survey pattern makes RGB images of shape (H, W, 3), not {shape:?}"
            )),
            Pattern::Terrain if shape.len() != 3 || !(shape[2] == 3 || shape[2] == 4) => Err(
                format!("the terrain pattern makes images of shape (H, W, 4) (RGBA) or (H, W, 3), not {shape:?}"),
            ),
            _ if shape.is_empty() => Err("the shape needs at least one axis".into()),
            _ => Ok(()),
        }
    }
}

#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn hash(seed: u64, a: u64, b: u64, c: u64) -> u64 {
    mix(mix(mix(seed ^ a.wrapping_mul(0x100_0000_01B3)) ^ b) ^ c.wrapping_mul(31))
}

/// Uniform in [0, 1) from a hash.
#[inline]
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// An approximately normal deviate (mean 0, variance 1) from one hash:
/// the Irwin-Hall sum of its four 16-bit parts, cheap and smooth enough
/// for image noise.
#[inline]
fn normalish(h: u64) -> f64 {
    let s = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48);
    (s as f64 / 65535.0 - 2.0) * 3.0f64.sqrt()
}

/// Generates the values of `region` of the array.
pub fn generate(
    pattern: Pattern,
    seed: u64,
    shape: &[u64],
    dtype: DType,
    region: &Region,
) -> ArrayData {
    let dims = region.shape_usize();
    let values: ArrayD<f64> = match pattern {
        Pattern::Survey => survey(seed, region),
        Pattern::Terrain => terrain(seed, shape, region),
        Pattern::Noise => {
            let mut a = ArrayD::<f64>::zeros(IxDyn(&dims));
            let strides = row_strides(shape);
            for (idx, v) in a.indexed_iter_mut() {
                let flat: u64 = idx
                    .as_array_view()
                    .iter()
                    .zip(&region.origin)
                    .zip(&strides)
                    .map(|((&i, &o), &s)| (i as u64 + o) * s)
                    .sum();
                *v = unit(hash(seed, flat, 0, 0));
            }
            if !dtype.is_float() {
                let (lo, hi) = int_range(dtype);
                a.mapv_inplace(|u| (lo + u * (hi - lo + 1.0)).floor().min(hi));
            }
            a
        }
        Pattern::Ramp => {
            let mut a = ArrayD::<f64>::zeros(IxDyn(&dims));
            let strides = row_strides(shape);
            for (idx, v) in a.indexed_iter_mut() {
                *v = idx
                    .as_array_view()
                    .iter()
                    .zip(&region.origin)
                    .zip(&strides)
                    .map(|((&i, &o), &s)| (i as u64 + o) * s)
                    .sum::<u64>() as f64;
            }
            if dtype.is_integer() {
                return with_dtype!(dtype, T => T::wrap(a.mapv(|v| T::from_i64(v as i64))));
            }
            a
        }
    };
    with_dtype!(dtype, T => T::wrap(values.mapv(T::from_f64)))
}

fn row_strides(shape: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; shape.len()];
    for ax in (0..shape.len().saturating_sub(1)).rev() {
        s[ax] = s[ax + 1] * shape[ax + 1];
    }
    s
}

fn int_range(d: DType) -> (f64, f64) {
    match d {
        DType::Bool => (0.0, 1.0),
        DType::U8 => (0.0, 255.0),
        DType::U16 => (0.0, 65535.0),
        DType::U32 => (0.0, u32::MAX as f64),
        DType::I16 => (i16::MIN as f64, i16::MAX as f64),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        _ => (0.0, 1e6),
    }
}

const CELL: i64 = 96;
const REACH: i64 = 48;

/// One Gaussian object: centre, inverse covariance, amplitude per channel.
struct Blob {
    cy: f64,
    cx: f64,
    a: f64,
    b: f64,
    c: f64,
    amp: [f64; 3],
    radius: f64,
}

fn cell_objects(seed: u64, cy: i64, cx: i64, out: &mut Vec<Blob>) {
    let h = |k: u64| hash(seed, cy as u64, cx as u64, k);
    let (y0, x0) = ((cy * CELL) as f64, (cx * CELL) as f64);
    let mut k = 0u64;
    let mut next = || {
        k += 1;
        unit(h(k))
    };
    // Galaxies: 0-3 per cell (about 3,000 per 4000x4000 pixels... and more
    // at the tutorial's size), elliptical, sizes from 1.5 to 12 pixels.
    let n_gal = (next() * 3.6) as usize;
    for _ in 0..n_gal {
        let sy = 1.5 + 10.5 * next().powi(3);
        let sx = sy * (0.35 + 0.65 * next());
        let th = next() * std::f64::consts::PI;
        let bright = 0.04 + 0.6 * next().powi(4);
        let redshift = next();
        let amp = [
            bright * (0.7 + 0.6 * redshift),
            bright * (0.8 + 0.2 * next()),
            bright * (1.2 - 0.6 * redshift),
        ];
        out.push(gaussian(
            y0 + next() * CELL as f64,
            x0 + next() * CELL as f64,
            sy,
            sx,
            th,
            amp,
        ));
    }
    // Stars: rare, point-like and bright, white.
    if next() < 0.08 {
        let s = 0.8 + 0.6 * next();
        let b = 0.5 + 0.5 * next();
        out.push(gaussian(
            y0 + next() * CELL as f64,
            x0 + next() * CELL as f64,
            s,
            s,
            0.0,
            [b, b, b * 0.95],
        ));
    }
    // Small red, round blobs: the forming galaxies the seed looks for.
    if next() < 0.01 {
        let s = 1.0 + 1.5 * next();
        let b = 0.3 + 0.6 * next();
        out.push(gaussian(
            y0 + next() * CELL as f64,
            x0 + next() * CELL as f64,
            s,
            s,
            0.0,
            [b, b * 0.15, b * 0.1],
        ));
    }
}

fn gaussian(cy: f64, cx: f64, sy: f64, sx: f64, th: f64, amp: [f64; 3]) -> Blob {
    let (s, c) = th.sin_cos();
    let (iy, ix) = (1.0 / (sy * sy), 1.0 / (sx * sx));
    Blob {
        cy,
        cx,
        a: 0.5 * (c * c * iy + s * s * ix),
        b: 0.5 * (2.0 * s * c * (ix - iy)),
        c: 0.5 * (s * s * iy + c * c * ix),
        amp,
        radius: (4.0 * sy.max(sx)).min(REACH as f64),
    }
}

fn survey(seed: u64, region: &Region) -> ArrayD<f64> {
    let (h, w) = (region.shape[0] as usize, region.shape[1] as usize);
    let (oy, ox) = (region.origin[0] as i64, region.origin[1] as i64);
    let nc = region.shape[2] as usize;
    let c0 = region.origin[2] as usize;
    let mut img = vec![[0.0f64; 3]; h * w];
    // Sky: a faint background with noise.
    for y in 0..h {
        let gy = (oy + y as i64) as u64;
        for x in 0..w {
            let gx = (ox + x as i64) as u64;
            let px = &mut img[y * w + x];
            for (ch, v) in px.iter_mut().enumerate() {
                *v = 0.012 + 0.004 * normalish(hash(seed, gy, gx, ch as u64 + 1));
            }
        }
    }
    let mut objs = Vec::new();
    let cy0 = (oy - REACH).div_euclid(CELL);
    let cy1 = (oy + h as i64 + REACH).div_euclid(CELL);
    let cx0 = (ox - REACH).div_euclid(CELL);
    let cx1 = (ox + w as i64 + REACH).div_euclid(CELL);
    for cy in cy0..=cy1 {
        for cx in cx0..=cx1 {
            cell_objects(seed, cy, cx, &mut objs);
        }
    }
    for o in &objs {
        let y_lo = ((o.cy - o.radius).floor() as i64 - oy).max(0);
        let y_hi = ((o.cy + o.radius).ceil() as i64 - oy).min(h as i64 - 1);
        let x_lo = ((o.cx - o.radius).floor() as i64 - ox).max(0);
        let x_hi = ((o.cx + o.radius).ceil() as i64 - ox).min(w as i64 - 1);
        for y in y_lo..=y_hi {
            let dy = (oy + y) as f64 - o.cy;
            for x in x_lo..=x_hi {
                let dx = (ox + x) as f64 - o.cx;
                let e = (-(o.a * dy * dy + o.b * dy * dx + o.c * dx * dx)).exp();
                if e < 1e-4 {
                    continue;
                }
                let px = &mut img[y as usize * w + x as usize];
                for (v, amp) in px.iter_mut().zip(o.amp) {
                    *v += amp * e;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(h * w * nc);
    for px in &img {
        out.extend(px[c0..c0 + nc].iter().map(|v| v.clamp(0.0, 1.0)));
    }
    ArrayD::from_shape_vec(IxDyn(&[h, w, nc]), out).expect("length matches the shape")
}

/// Smooth value noise on an integer lattice of spacing `scale`.
fn value_noise(seed: u64, y: f64, x: f64, scale: f64, octave: u64) -> f64 {
    let (fy, fx) = (y / scale, x / scale);
    let (iy, ix) = (fy.floor(), fx.floor());
    let (ty, tx) = (fy - iy, fx - ix);
    let s = |t: f64| t * t * (3.0 - 2.0 * t);
    let v = |dy: f64, dx: f64| {
        unit(hash(
            seed,
            (iy + dy) as i64 as u64,
            (ix + dx) as i64 as u64,
            1000 + octave,
        ))
    };
    let top = v(0.0, 0.0) * (1.0 - s(tx)) + v(0.0, 1.0) * s(tx);
    let bot = v(1.0, 0.0) * (1.0 - s(tx)) + v(1.0, 1.0) * s(tx);
    top * (1.0 - s(ty)) + bot * s(ty)
}

fn terrain(seed: u64, shape: &[u64], region: &Region) -> ArrayD<f64> {
    let (h, w) = (region.shape[0] as usize, region.shape[1] as usize);
    let nc = region.shape[2] as usize;
    let c0 = region.origin[2] as usize;
    let base = (shape[0].max(shape[1]) as f64 / 3.0).max(8.0);
    let mut out = Vec::with_capacity(h * w * nc);
    for y in 0..h {
        for x in 0..w {
            let (gy, gx) = (
                (region.origin[0] as usize + y) as f64,
                (region.origin[1] as usize + x) as f64,
            );
            let mut e = 0.0;
            let mut amp = 0.5;
            let mut scale = base;
            for oct in 0..7 {
                e += amp * value_noise(seed, gy, gx, scale, oct);
                amp *= 0.5;
                scale *= 0.5;
                if scale < 1.0 {
                    break;
                }
            }
            let rgb = terrain_colour(e.clamp(0.0, 0.999));
            out.extend((c0..c0 + nc).map(|c| if c < 3 { rgb[c] } else { 255.0 }));
        }
    }
    ArrayD::from_shape_vec(IxDyn(&[h, w, nc]), out).expect("length matches the shape")
}

/// A terrain colour map: water, sand, grass, rock, snow.
fn terrain_colour(e: f64) -> [f64; 3] {
    const STOPS: [(f64, [f64; 3]); 6] = [
        (0.0, [20.0, 40.0, 120.0]),
        (0.3, [60.0, 110.0, 190.0]),
        (0.36, [210.0, 200.0, 150.0]),
        (0.5, [70.0, 150.0, 60.0]),
        (0.7, [120.0, 100.0, 80.0]),
        (1.0, [250.0, 250.0, 250.0]),
    ];
    for win in STOPS.windows(2) {
        let ((e0, c0), (e1, c1)) = (win[0], win[1]);
        if e <= e1 {
            let t = (e - e0) / (e1 - e0);
            return [0, 1, 2].map(|k| (c0[k] + t * (c1[k] - c0[k])).floor());
        }
    }
    STOPS[5].1
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockflow_core::ChunkGrid;

    fn assemble(p: Pattern, shape: &[u64], chunk: &[u64], dtype: DType) -> ArrayD<f64> {
        let g = ChunkGrid::new(shape.to_vec(), chunk.to_vec()).expect("grid");
        let dims: Vec<usize> = shape.iter().map(|&s| s as usize).collect();
        let mut out = ArrayD::<f64>::zeros(IxDyn(&dims));
        for idx in g.indices() {
            let r = g.region(&idx);
            let part = generate(p, 7, shape, dtype, &r).to_f64();
            let info: Vec<ndarray::SliceInfoElem> = r
                .origin
                .iter()
                .zip(&r.shape)
                .map(|(&o, &s)| ndarray::SliceInfoElem::Slice {
                    start: o as isize,
                    end: Some((o + s) as isize),
                    step: 1,
                })
                .collect();
            let info = ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(info).expect("slice");
            out.slice_mut(info).assign(&part);
        }
        out
    }

    #[test]
    fn every_pattern_is_chunk_invariant() {
        for (p, shape, dt) in [
            (Pattern::Survey, vec![150u64, 170, 3], DType::F32),
            (Pattern::Terrain, vec![90, 80, 4], DType::U8),
            (Pattern::Noise, vec![13, 17, 5], DType::U16),
            (Pattern::Ramp, vec![6, 7, 8], DType::I32),
        ] {
            let whole = assemble(p, &shape, &shape, dt);
            let small: Vec<u64> = shape.iter().map(|&s| s / 3 + 1).collect();
            assert_eq!(whole, assemble(p, &shape, &small, dt), "{p:?}");
        }
    }

    #[test]
    fn survey_has_dark_sky_and_bright_objects() {
        let r = Region::new(vec![0, 0, 0], vec![400, 400, 3]);
        let a = generate(Pattern::Survey, 1, &[400, 400, 3], DType::F32, &r).to_f64();
        let mut v: Vec<f64> = a.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        assert!(median < 0.05, "sky is dark: {median}");
        assert!(v[v.len() - 1] > 0.2, "objects are bright");
        assert!(v[0] >= 0.0 && v[v.len() - 1] <= 1.0);
    }

    #[test]
    fn terrain_alpha_is_opaque() {
        let r = Region::new(vec![0, 0, 0], vec![50, 60, 4]);
        let a = generate(Pattern::Terrain, 3, &[50, 60, 4], DType::U8, &r);
        let a = a.as_typed::<u8>().expect("u8");
        assert!(a.slice(ndarray::s![.., .., 3]).iter().all(|&v| v == 255));
        let rgb: std::collections::HashSet<u8> =
            a.slice(ndarray::s![.., .., 0]).iter().copied().collect();
        assert!(rgb.len() > 5, "terrain varies");
    }
}

/// A generated array as a store: any region, computed from the region alone.
#[derive(Debug, Clone)]
pub struct Generated {
    pub pattern: Pattern,
    pub seed: u64,
    pub shape: Vec<u64>,
    pub dtype: DType,
}

impl crate::store::ChunkSource for Generated {
    /// Stored nowhere: one chunk as large as the array.
    fn spec(&self) -> crate::store::StoreSpec {
        crate::store::StoreSpec {
            dtype: self.dtype,
            shape: self.shape.clone(),
            chunks: self.shape.clone(),
        }
    }
    fn read(&self, region: &Region, _chunk: &[u64]) -> Result<ArrayData, crate::IoError> {
        Ok(generate(
            self.pattern,
            self.seed,
            &self.shape,
            self.dtype,
            region,
        ))
    }
}

//! OME-Zarr images (NGFF 0.5 on Zarr v3, NGFF 0.4 on Zarr v2): a group of
//! arrays `0`, `1`, ... (level `k` is the image downsampled 2^k times along
//! its space axes) with `multiscales` (axes, datasets, scale and
//! translation) and, for a channel axis, `omero` channel metadata.
//!
//! The pyramid is computed in the same stream as level 0, chunk by chunk:
//! each region written at level `k` is copied into the accumulators
//! ("tiles") of the level-`k+1` stored chunks it touches; a tile holds the
//! level-`k` values under one level-`k+1` chunk, and when all of them have
//! arrived it is downsampled, written as that chunk, and passed on to
//! level `k+2` in turn. No level is ever held whole: only the tiles some of
//! whose values have arrived (a band of chunks, in the stream's row-major
//! order), which [`OmeOptions::held_tiles`] projects.
//!
//! The group is assembled under the output's [`Claim`] (its work name) and
//! renamed into place at commit, as every output: the whole image appears
//! or none of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use blockflow_core::{with_array, with_dtype, ArrayData, ArrayKind, DType, Element, Region};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use serde_json::{json, Value};

use crate::output::{Claim, Made};
use crate::stored_chunks::{box_indices, held_stored_chunks};
use crate::zarr::{ZarrWriteOptions, ZarrWriter};
use crate::IoError;

/// The NGFF version written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NgffVersion {
    /// 0.4: Zarr v2, attributes in the group's `.zattrs`.
    V04,
    /// 0.5: Zarr v3, attributes under `ome` in the group's `zarr.json`.
    V05,
}

impl NgffVersion {
    pub const NAMES: [&'static str; 2] = ["0.5", "0.4"];
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "0.4" => Some(NgffVersion::V04),
            "0.5" => Some(NgffVersion::V05),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            NgffVersion::V04 => "0.4",
            NgffVersion::V05 => "0.5",
        }
    }
    /// The Zarr format of its arrays.
    pub fn zarr_format(self) -> u8 {
        match self {
            NgffVersion::V04 => 2,
            NgffVersion::V05 => 3,
        }
    }
}

/// How a level is computed from the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downsample {
    /// The mean of each 2x2(x2) block (of the values present at an edge),
    /// rounded to the nearest integer for integer dtypes: images.
    Mean,
    /// The most frequent value of each block (ties: the smallest): labels.
    Mode,
    /// The block's first value (every other pixel): labels, fast.
    Nearest,
}

impl Downsample {
    pub const NAMES: [&'static str; 3] = ["mean", "mode", "nearest"];
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(Downsample::Mean),
            "mode" => Some(Downsample::Mode),
            "nearest" => Some(Downsample::Nearest),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Downsample::Mean => "mean",
            Downsample::Mode => "mode",
            Downsample::Nearest => "nearest",
        }
    }
}

/// An axis' NGFF type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AxisKind {
    Time,
    /// An axis of another kind (a stack of images), with no `type`: NGFF
    /// allows one, before the channel and space axes.
    Custom,
    Channel,
    Space,
}

impl AxisKind {
    /// The type of an axis named `name`: `t` time, `c` channel, `z`, `y`,
    /// `x` space, any other name custom.
    pub fn of(name: &str) -> Self {
        match name {
            "t" => AxisKind::Time,
            "c" => AxisKind::Channel,
            "z" | "y" | "x" => AxisKind::Space,
            _ => AxisKind::Custom,
        }
    }
    fn name(self) -> Option<&'static str> {
        match self {
            AxisKind::Time => Some("time"),
            AxisKind::Custom => None,
            AxisKind::Channel => Some("channel"),
            AxisKind::Space => Some("space"),
        }
    }
    /// Its place in NGFF's order (time, custom, channel, z, y, x).
    fn rank(name: &str) -> usize {
        match name {
            "t" => 0,
            "c" => 2,
            "z" => 3,
            "y" => 4,
            "x" => 5,
            _ => 1,
        }
    }
}

/// The permutation that puts axes named `names` in NGFF's order (time,
/// custom, channel, then space z, y, x; stored axis `k` is input axis
/// `perm[k]`), or why they cannot be an image.
pub fn ngff_order(names: &[String]) -> Result<Vec<usize>, String> {
    let custom: Vec<&String> = names
        .iter()
        .filter(|n| AxisKind::of(n) == AxisKind::Custom)
        .collect();
    if custom.len() > 1 {
        return Err(format!(
            "an OME-Zarr image has the axes t, c, z, y, x and at most one other; {custom:?} are not among them (name the axes with `axes`, e.g. [\"y\", \"x\", \"c\"])"
        ));
    }
    if !names.iter().any(|n| n == "y") || !names.iter().any(|n| n == "x") {
        return Err(format!(
            "an OME-Zarr image has the space axes y and x, and optionally z; the axes are {names:?} (name them with `axes`, e.g. [\"y\", \"x\", \"c\"])"
        ));
    }
    let mut perm: Vec<usize> = (0..names.len()).collect();
    perm.sort_by_key(|&k| AxisKind::rank(&names[k]));
    Ok(perm)
}

/// One channel of the `omero` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub label: String,
    /// Hex RGB, as `FF0000`.
    pub color: String,
}

/// The default channels of a channel axis of `n`: red, green, blue (and
/// alpha) for 3 or 4; white for 1; else `channel K` in a cycle of colors.
pub fn default_channels(n: u64) -> Vec<Channel> {
    let named = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(l, c)| Channel {
                label: l.to_string(),
                color: c.to_string(),
            })
            .collect()
    };
    match n {
        1 => named(&[("channel 0", "FFFFFF")]),
        3 => named(&[("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF")]),
        4 => named(&[
            ("red", "FF0000"),
            ("green", "00FF00"),
            ("blue", "0000FF"),
            ("alpha", "FFFFFF"),
        ]),
        n => {
            let cycle = ["FF00FF", "00FF00", "00FFFF", "FF0000", "FFFF00", "0000FF"];
            (0..n)
                .map(|k| Channel {
                    label: format!("channel {k}"),
                    color: cycle[k as usize % cycle.len()].to_string(),
                })
                .collect()
        }
    }
}

/// Whether `s` is a hex RGB color (`FF0000`).
pub fn is_color(s: &str) -> bool {
    s.len() == 6 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The units NGFF 0.4 and 0.5 allow on a space axis (UDUNITS-2 names).
pub const SPACE_UNITS: [&str; 26] = [
    "angstrom",
    "attometer",
    "centimeter",
    "decimeter",
    "exameter",
    "femtometer",
    "foot",
    "gigameter",
    "hectometer",
    "inch",
    "kilometer",
    "megameter",
    "meter",
    "micrometer",
    "mile",
    "millimeter",
    "nanometer",
    "parsec",
    "petameter",
    "picometer",
    "terameter",
    "yard",
    "yoctometer",
    "yottameter",
    "zeptometer",
    "zettameter",
];

/// One level of the pyramid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub shape: Vec<u64>,
    /// Per axis, how many level-0 pixels one of this level spans (2^k on
    /// an axis halved k times).
    pub factor: Vec<u64>,
    /// Per axis, whether the next level halves it.
    pub halve: Vec<bool>,
}

/// The levels of an image of `shape` (stored order) with axis types
/// `kinds`: each halves every space axis longer than 1 (rounding up).
/// `levels` None: until the largest space extent is at most 256 or the
/// space axes fit in one chunk (at most 16 levels).
pub fn pyramid(
    shape: &[u64],
    chunks: &[u64],
    kinds: &[AxisKind],
    levels: Option<usize>,
) -> Vec<Level> {
    let space = |ax: usize| kinds[ax] == AxisKind::Space;
    let nd = shape.len();
    let fits = |s: &[u64]| {
        let largest = (0..nd)
            .filter(|&a| space(a))
            .map(|a| s[a])
            .max()
            .unwrap_or(0);
        largest <= 256 || (0..nd).filter(|&a| space(a)).all(|a| s[a] <= chunks[a])
    };
    let mut out: Vec<Level> = Vec::new();
    let mut s = shape.to_vec();
    let mut f = vec![1u64; nd];
    loop {
        let halve: Vec<bool> = (0..nd).map(|a| space(a) && s[a] > 1).collect();
        let done = match levels {
            Some(n) => out.len() + 1 >= n,
            None => fits(&s) || out.len() + 1 >= 16,
        };
        let stop = done || !halve.iter().any(|&h| h);
        out.push(Level {
            shape: s.clone(),
            factor: f.clone(),
            halve: if stop { vec![false; nd] } else { halve.clone() },
        });
        if stop {
            return out;
        }
        for a in 0..nd {
            if halve[a] {
                s[a] = s[a].div_ceil(2);
                f[a] *= 2;
            }
        }
    }
}

/// Everything an OME-Zarr image is written with (axes in NGFF order).
#[derive(Debug, Clone)]
pub struct OmeOptions {
    pub version: NgffVersion,
    /// Level 0's array: shape, chunks and codecs in NGFF order (every level
    /// has these chunks and codecs); its `zarr_format` is the version's.
    pub array: ZarrWriteOptions,
    /// Stored axis `k` is the stream's axis `perm[k]`.
    pub perm: Vec<usize>,
    pub names: Vec<String>,
    pub kinds: Vec<AxisKind>,
    /// Units per axis (space and time axes only).
    pub units: Vec<Option<String>>,
    /// Level 0's pixel size per axis (1 on a channel axis).
    pub scale: Vec<f64>,
    pub levels: Vec<Level>,
    pub downsample: Downsample,
    /// The channel axis' channels (empty: no channel axis, no `omero`).
    pub channels: Vec<Channel>,
    /// The image's name (`multiscales[0].name`).
    pub name: String,
}

impl OmeOptions {
    /// An image of the stream `array` describes (shape, chunks in the
    /// stream's order) with axes `names`: stored in NGFF's order, `levels`
    /// levels (None: as [`pyramid`] chooses), pixel size 1, no units, the
    /// default channels of a `c` axis.
    pub fn image(
        version: NgffVersion,
        mut array: ZarrWriteOptions,
        names: &[String],
        levels: Option<usize>,
        downsample: Downsample,
    ) -> Result<Self, String> {
        if names.len() != array.shape.len() {
            return Err(format!(
                "{} axis names for an array of {} axes",
                names.len(),
                array.shape.len()
            ));
        }
        let perm = ngff_order(names)?;
        let stored = |v: &[u64]| -> Vec<u64> { perm.iter().map(|&k| v[k]).collect() };
        let stored_names: Vec<String> = perm.iter().map(|&k| names[k].clone()).collect();
        let kinds: Vec<AxisKind> = stored_names.iter().map(|n| AxisKind::of(n)).collect();
        array.shape = stored(&array.shape);
        array.chunks = stored(&array.chunks);
        array.dimension_names = Some(stored_names.clone());
        array.zarr_format = version.zarr_format();
        let nd = names.len();
        let levels = pyramid(&array.shape, &array.chunks, &kinds, levels);
        let channels = kinds
            .iter()
            .position(|k| *k == AxisKind::Channel)
            .map(|a| default_channels(array.shape[a]))
            .unwrap_or_default();
        Ok(OmeOptions {
            version,
            array,
            perm,
            names: stored_names,
            kinds,
            units: vec![None; nd],
            scale: vec![1.0; nd],
            levels,
            downsample,
            channels,
            name: String::new(),
        })
    }

    /// The stream's shape or region in stored order.
    pub fn to_stored(&self, v: &[u64]) -> Vec<u64> {
        self.perm.iter().map(|&k| v[k]).collect()
    }
    /// A stored-order list in the stream's order.
    pub fn to_stream<T: Copy + Default>(&self, v: &[T]) -> Vec<T> {
        let mut out = vec![T::default(); v.len()];
        for (k, &p) in self.perm.iter().enumerate() {
            out[p] = v[k];
        }
        out
    }
    /// Whether the stream is written in its own axis order.
    pub fn transposes(&self) -> bool {
        self.perm.iter().enumerate().any(|(k, &p)| k != p)
    }
    fn level_options(&self, k: usize) -> ZarrWriteOptions {
        let mut o = self.array.clone();
        o.shape = self.levels[k].shape.clone();
        o.dimension_names = Some(self.names.clone());
        o.zarr_format = self.version.zarr_format();
        o
    }
    /// The level-`k` values a level-`k+1` chunk is made of (its tile):
    /// twice the chunk along a halved axis.
    fn tile_source(&self, k: usize) -> Vec<u64> {
        let l = &self.levels[k];
        (0..l.shape.len())
            .map(|a| {
                let c = self.array.chunks[a];
                if l.halve[a] { 2 * c } else { c }.min(l.shape[a].max(1))
            })
            .collect()
    }
    /// Per level `k >= 1`: the tiles held at once at most (the stream
    /// arrives in row-major order of its chunks `stream`, `parallel` at a
    /// time; tiles complete in the same order) and the bytes of one.
    pub fn held_tiles(&self, stream: &[u64], parallel: u64) -> Vec<(u64, u64)> {
        let item = self.array.dtype.size() as u64;
        let mut arriving = self.to_stored(stream);
        let mut out = Vec::new();
        for k in 0..self.levels.len().saturating_sub(1) {
            let src = self.tile_source(k);
            let shape = &self.levels[k].shape;
            let held = held_stored_chunks(
                &self.to_stream(shape),
                &self.to_stream(&src),
                &self.to_stream(&arriving),
                parallel,
            );
            let up = &self.levels[k + 1].shape;
            let out_elems: u64 = (0..up.len())
                .map(|a| self.array.chunks[a].min(up[a].max(1)))
                .product();
            let bytes = match self.downsample {
                Downsample::Mean => out_elems * 8,
                Downsample::Nearest => out_elems * item,
                Downsample::Mode => src.iter().product::<u64>() * item,
            };
            out.push((held, bytes));
            arriving = self.array.chunks.clone();
        }
        out
    }

    /// The coordinate transformations of level `k`: its scale, and for a
    /// mean (or mode) the translation that centers its pixels on the
    /// blocks they summarize ((2^k - 1) / 2 level-0 pixels).
    fn transforms(&self, k: usize) -> Value {
        let f = &self.levels[k].factor;
        let scale: Vec<f64> = (0..f.len()).map(|a| self.scale[a] * f[a] as f64).collect();
        let centred = self.downsample != Downsample::Nearest;
        let translation: Vec<f64> = (0..f.len())
            .map(|a| {
                if centred {
                    (f[a] as f64 - 1.0) / 2.0 * self.scale[a]
                } else {
                    0.0
                }
            })
            .collect();
        json!([
            {"type": "scale", "scale": scale},
            {"type": "translation", "translation": translation},
        ])
    }

    /// The image's `multiscales` entry.
    fn multiscale(&self) -> Value {
        let axes: Vec<Value> = (0..self.names.len())
            .map(|a| {
                let mut m = serde_json::Map::new();
                m.insert("name".into(), json!(self.names[a]));
                if let Some(t) = self.kinds[a].name() {
                    m.insert("type".into(), json!(t));
                }
                if let Some(u) = &self.units[a] {
                    m.insert("unit".into(), json!(u));
                }
                Value::Object(m)
            })
            .collect();
        let datasets: Vec<Value> = (0..self.levels.len())
            .map(
                |k| json!({"path": k.to_string(), "coordinateTransformations": self.transforms(k)}),
            )
            .collect();
        let mut m = json!({
            "name": self.name,
            "axes": axes,
            "datasets": datasets,
            "type": self.downsample.name(),
            "metadata": {
                "description": format!("{} of each 2x2 block of space axes, in the stream, by blockflow", self.downsample.name()),
                "method": "blockflow write-zarr",
                "version": env!("CARGO_PKG_VERSION"),
            },
        });
        if self.version == NgffVersion::V04 {
            m["version"] = json!("0.4");
        }
        m
    }

    /// The `omero` entry, with each channel's window (`min`/`max`: the
    /// dtype's range for integers, the values seen for floats; `start`/
    /// `end` the same).
    fn omero(&self, seen: &[(f64, f64)]) -> Option<Value> {
        if self.channels.is_empty() {
            return None;
        }
        let d = self.array.dtype;
        let channels: Vec<Value> = self
            .channels
            .iter()
            .enumerate()
            .map(|(c, ch)| {
                let (lo, hi) = dtype_range(d).unwrap_or_else(|| {
                    seen.get(c)
                        .copied()
                        .filter(|(a, b)| a <= b)
                        .unwrap_or((0.0, 1.0))
                });
                json!({
                    "label": ch.label,
                    "color": ch.color,
                    "active": true,
                    "coefficient": 1.0,
                    "family": "linear",
                    "inverted": false,
                    "window": {"min": lo, "max": hi, "start": lo, "end": hi},
                })
            })
            .collect();
        Some(json!({
            "channels": channels,
            "rdefs": {"model": if self.channels.len() == 1 { "greyscale" } else { "color" }},
        }))
    }

    /// The group's attributes: `{"ome": {...}}` (0.5) or the 0.4 keys.
    pub fn attributes(&self, seen: &[(f64, f64)]) -> serde_json::Map<String, Value> {
        let mut body = serde_json::Map::new();
        if self.version == NgffVersion::V05 {
            body.insert("version".into(), json!("0.5"));
        }
        body.insert("multiscales".into(), json!([self.multiscale()]));
        if let Some(o) = self.omero(seen) {
            body.insert("omero".into(), o);
        }
        match self.version {
            NgffVersion::V05 => {
                let mut m = serde_json::Map::new();
                m.insert("ome".into(), Value::Object(body));
                m
            }
            NgffVersion::V04 => body,
        }
    }

    /// The position of the channel axis (stored order).
    fn channel_axis(&self) -> Option<usize> {
        self.kinds.iter().position(|k| *k == AxisKind::Channel)
    }
}

/// An integer dtype's range (bool: 0..1); None for floats.
fn dtype_range(d: DType) -> Option<(f64, f64)> {
    Some(match d {
        DType::Bool => (0.0, 1.0),
        DType::U8 => (0.0, u8::MAX as f64),
        DType::U16 => (0.0, u16::MAX as f64),
        DType::U32 => (0.0, u32::MAX as f64),
        DType::I16 => (i16::MIN as f64, i16::MAX as f64),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        DType::I64 => (i64::MIN as f64, i64::MAX as f64),
        DType::F32 | DType::F64 => return None,
    })
}

/// The path of the full-resolution level of the OME-Zarr image at `path`
/// (its first dataset), if `path` is one.
pub fn level0(path: &Path) -> Option<PathBuf> {
    let read = |name: &str| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(path.join(name)).ok()?).ok()
    };
    let multiscales = if let Some(v3) = read("zarr.json") {
        if v3.get("node_type")?.as_str()? != "group" {
            return None;
        }
        v3.get("attributes")?
            .get("ome")?
            .get("multiscales")?
            .clone()
    } else {
        path.join(".zgroup").is_file().then_some(())?;
        read(".zattrs")?.get("multiscales")?.clone()
    };
    let first = multiscales
        .get(0)?
        .get("datasets")?
        .get(0)?
        .get("path")?
        .as_str()?;
    let p = path.join(first);
    p.is_dir().then_some(p)
}

/// A level-`k+1` chunk being made from the level-`k` values under it
/// (its source region `src`) as they arrive, and how many have.
struct Tile {
    acc: Acc,
    filled: u64,
}

/// How level `k + 1` sits over level 0 along each axis, for a mean: a
/// level-`k` value stands for `min(f_k, n0 - i f_k)` level-0 values (its
/// weight), so each level is the mean of the level-0 values under it, as
/// a block mean of level 0 (not a mean of means at an odd edge).
#[derive(Debug, Clone)]
struct Geo<'a> {
    halve: &'a [bool],
    /// Level 0's shape, and the factors of levels `k` and `k + 1`.
    n0: &'a [u64],
    fk: &'a [u64],
    fk1: &'a [u64],
}

impl Geo<'_> {
    /// The level-0 values under index `i` of a level of factor `f` on axis `a`.
    fn under(&self, a: usize, i: u64, f: u64) -> f64 {
        f.min(self.n0[a].saturating_sub(i * f)).max(1) as f64
    }
}

/// What a tile accumulates.
enum Acc {
    /// Mean: per output value, the sum of the source values so far.
    Sum(ArrayD<f64>),
    /// Mode: the source values themselves.
    Values(ArrayData),
    /// Nearest: the output values (the source values at even indices).
    Even(ArrayData),
}

impl Tile {
    fn new(how: Downsample, dtype: DType, src: &Region, out: &Region) -> Tile {
        let acc = match how {
            Downsample::Mean => Acc::Sum(ArrayD::zeros(IxDyn(&out.shape_usize()))),
            Downsample::Mode => Acc::Values(ArrayData::zeros(dtype, &src.shape_usize())),
            Downsample::Nearest => Acc::Even(ArrayData::zeros(dtype, &out.shape_usize())),
        };
        Tile { acc, filled: 0 }
    }

    /// Adds `piece`, the values of `part` of the source region `src`
    /// (which starts at even indices along the halved axes).
    fn add(
        &mut self,
        src: &Region,
        part: &Region,
        piece: &ArrayData,
        geo: &Geo<'_>,
    ) -> Result<(), String> {
        let halve = geo.halve;
        let nd = src.ndim();
        let local: Vec<usize> = (0..nd)
            .map(|a| (part.origin[a] - src.origin[a]) as usize)
            .collect();
        match &mut self.acc {
            Acc::Sum(sum) => {
                let mut f = piece.to_f64();
                for a in (0..nd).filter(|&a| halve[a]) {
                    if geo.fk[a] > 1 {
                        for (i, mut lane) in f.axis_iter_mut(Axis(a)).enumerate() {
                            let w = geo.under(a, part.origin[a] + i as u64, geo.fk[a]);
                            lane.mapv_inplace(|v| v * w);
                        }
                    }
                    f = pair_sum(&f, a, local[a] % 2 == 1);
                }
                let at: Vec<usize> = (0..nd)
                    .map(|a| if halve[a] { local[a] / 2 } else { local[a] })
                    .collect();
                sum.slice_each_axis_mut(|ax| {
                    let i = ax.axis.index();
                    Slice::from(at[i]..at[i] + f.shape()[i])
                })
                .zip_mut_with(&f, |s, &v| *s += v);
            }
            Acc::Values(buf) => with_array!(buf, b => paste(b, piece, &local))?,
            Acc::Even(out) => {
                // The piece's values at even (global) indices along the halved axes.
                let even = with_array!(piece, p => ArrayKind::wrap(p.slice_each_axis(|ax| {
                    let i = ax.axis.index();
                    if halve[i] { Slice::new((local[i] % 2) as isize, None, 2) } else { Slice::from(..) }
                }).to_owned()));
                let at: Vec<usize> = (0..nd)
                    .map(|a| {
                        if halve[a] {
                            local[a].div_ceil(2)
                        } else {
                            local[a]
                        }
                    })
                    .collect();
                if !even.is_empty() {
                    with_array!(out, o => paste(o, &even, &at))?;
                }
            }
        }
        self.filled += part.elements();
        Ok(())
    }

    /// The level-`k+1` chunk `out`: each sum over the number of source
    /// values in its block (fewer at an odd edge of `shape`, the level-`k`
    /// shape), the mode of each block, or the even values.
    fn finish(self, dtype: DType, out: &Region, geo: &Geo<'_>) -> ArrayData {
        let halve = geo.halve;
        match self.acc {
            Acc::Sum(mut sum) => {
                for a in (0..out.ndim()).filter(|&a| halve[a]) {
                    for (j, mut lane) in sum.axis_iter_mut(Axis(a)).enumerate() {
                        let n = geo.under(a, out.origin[a] + j as u64, geo.fk1[a]);
                        lane.mapv_inplace(|v| v / n);
                    }
                }
                with_dtype!(dtype, T => T::wrap(sum.mapv(from_mean::<T>)))
            }
            Acc::Values(buf) => with_array!(&buf, b => ArrayKind::wrap(block_mode(b, halve))),
            Acc::Even(out) => out,
        }
    }

    fn bytes(&self) -> u64 {
        match &self.acc {
            Acc::Sum(s) => (s.len() * 8) as u64,
            Acc::Values(d) | Acc::Even(d) => d.nbytes(),
        }
    }
}

/// An OME-Zarr image being written (see the module's doc).
pub struct OmeWriter {
    pub path: PathBuf,
    o: OmeOptions,
    levels: Vec<ZarrWriter>,
    /// `tiles[k]`: the open tiles of level `k + 1`, by chunk index.
    tiles: Vec<Mutex<HashMap<Vec<u64>, Tile>>>,
    /// Per channel, the smallest and largest value written (float windows).
    seen: Mutex<Vec<(f64, f64)>>,
    // Last: dropping it removes an unfinished image.
    claim: Claim,
}

impl std::fmt::Debug for OmeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OmeWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl OmeWriter {
    /// The image at `path`, claimed as every output (refused if another
    /// run holds it, or if it exists and may not, or cannot, be replaced),
    /// assembled under the claim's work name.
    pub fn create(path: &Path, o: &OmeOptions) -> Result<Self, IoError> {
        let bad = |why: String| IoError::Store {
            path: path.to_path_buf(),
            why,
        };
        if o.levels.is_empty() || o.perm.len() != o.array.shape.len() {
            return Err(bad("an OME-Zarr image needs at least one level".into()));
        }
        o.array.check().map_err(bad)?;
        if o.array.shards.is_some() {
            return Err(bad("an OME-Zarr image is written unsharded".into()));
        }
        let claim = Claim::take(path, Made::Zarr, o.array.overwrite)?;
        let dir = claim.partial().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| IoError::Os {
            path: dir.clone(),
            source,
        })?;
        let mut levels = Vec::new();
        for k in 0..o.levels.len() {
            levels.push(ZarrWriter::in_place_ngff(
                &dir.join(k.to_string()),
                &o.level_options(k),
            )?);
        }
        let nc = o.channel_axis().map_or(1, |a| o.array.shape[a] as usize);
        Ok(OmeWriter {
            path: path.to_path_buf(),
            o: o.clone(),
            levels,
            tiles: (1..o.levels.len())
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            seen: Mutex::new(vec![(f64::INFINITY, f64::NEG_INFINITY); nc]),
            claim,
        })
    }

    /// Writes one chunk of the stream (`region` and `data` in the
    /// stream's axis order), then what it completes of the levels above.
    pub fn write(&self, region: &Region, data: &ArrayData, chunk: &[u64]) -> Result<(), IoError> {
        let (region, data) = if self.o.transposes() {
            let r = Region::new(
                self.o.to_stored(&region.origin),
                self.o.to_stored(&region.shape),
            );
            let d = with_array!(data, a => ArrayKind::wrap(
                a.view().permuted_axes(IxDyn(&self.o.perm)).as_standard_layout().into_owned()
            ));
            (r, d)
        } else {
            (region.clone(), data.clone())
        };
        if self.o.array.dtype.is_float() {
            self.note_range(&data);
        }
        self.put(0, &region, &data, chunk)
    }

    /// Writes `data` at `region` of level `k` and adds it to the tiles of
    /// level `k + 1`, writing (and passing up) those it completes.
    fn put(
        &self,
        k: usize,
        region: &Region,
        data: &ArrayData,
        chunk: &[u64],
    ) -> Result<(), IoError> {
        self.levels[k].write(region, data, chunk)?;
        if k + 1 >= self.o.levels.len() {
            return Ok(());
        }
        let err = |why: String| IoError::Chunk {
            path: self.path.join((k + 1).to_string()),
            chunk: chunk.to_vec(),
            region: region.to_string(),
            why,
        };
        let l = &self.o.levels[k];
        let up = &self.o.levels[k + 1];
        let chunks = &self.o.array.chunks;
        let nd = region.ndim();
        let halve = |a: usize, i: u64| if l.halve[a] { i / 2 } else { i };
        let lo: Vec<u64> = (0..nd)
            .map(|a| halve(a, region.origin[a]) / chunks[a])
            .collect();
        let hi: Vec<u64> = (0..nd)
            .map(|a| halve(a, region.end()[a].max(region.origin[a] + 1) - 1) / chunks[a])
            .collect();
        for index in box_indices(&lo, &hi) {
            // The tile's level-(k+1) chunk and the level-k values under it.
            let out = Region::new(
                (0..nd).map(|a| index[a] * chunks[a]).collect(),
                (0..nd)
                    .map(|a| ((index[a] + 1) * chunks[a]).min(up.shape[a]) - index[a] * chunks[a])
                    .collect(),
            );
            let src = Region::new(
                (0..nd)
                    .map(|a| {
                        if l.halve[a] {
                            2 * out.origin[a]
                        } else {
                            out.origin[a]
                        }
                    })
                    .collect(),
                (0..nd)
                    .map(|a| {
                        if l.halve[a] {
                            (2 * out.end()[a]).min(l.shape[a]) - 2 * out.origin[a]
                        } else {
                            out.shape[a]
                        }
                    })
                    .collect(),
            );
            let part_origin: Vec<u64> = (0..nd)
                .map(|a| region.origin[a].max(src.origin[a]))
                .collect();
            let part = Region::new(
                part_origin.clone(),
                (0..nd)
                    .map(|a| region.end()[a].min(src.end()[a]) - part_origin[a])
                    .collect(),
            );
            if part.shape.contains(&0) {
                continue;
            }
            let full = if part == src {
                // The whole tile in this region: no need to hold it.
                let mut t = Tile::new(self.o.downsample, self.o.array.dtype, &src, &out);
                let piece = if part == *region {
                    data.clone()
                } else {
                    cut(data, region, &part)
                };
                t.add(&src, &part, &piece, &self.geo(k)).map_err(err)?;
                Some(t)
            } else {
                let piece = cut(data, region, &part);
                self.add(k, &index, &src, &out, &part, &piece)
                    .map_err(err)?
            };
            if let Some(t) = full {
                let down = t.finish(self.o.array.dtype, &out, &self.geo(k));
                self.put(k + 1, &out, &down, &index)?;
            }
        }
        Ok(())
    }

    fn geo(&self, k: usize) -> Geo<'_> {
        Geo {
            halve: &self.o.levels[k].halve,
            n0: &self.o.levels[0].shape,
            fk: &self.o.levels[k].factor,
            fk1: &self.o.levels[k + 1].factor,
        }
    }

    /// Adds `piece` (the values of `part`) to the tile `index` of level
    /// `k + 1` (chunk `out`, over the level-`k` region `src`); the tile
    /// once all its values have arrived (and it is forgotten).
    fn add(
        &self,
        k: usize,
        index: &[u64],
        src: &Region,
        out: &Region,
        part: &Region,
        piece: &ArrayData,
    ) -> Result<Option<Tile>, String> {
        let mut tiles = self.tiles[k]
            .lock()
            .map_err(|_| "another chunk failed while a tile was filled")?;
        let t = tiles
            .entry(index.to_vec())
            .or_insert_with(|| Tile::new(self.o.downsample, self.o.array.dtype, src, out));
        t.add(src, part, piece, &self.geo(k))?;
        if t.filled < src.elements() {
            return Ok(None);
        }
        Ok(tiles.remove(index))
    }

    /// Bytes of the open tiles.
    pub fn held_bytes(&self) -> u64 {
        self.tiles
            .iter()
            .map(|m| {
                m.lock()
                    .map(|t| t.values().map(Tile::bytes).sum())
                    .unwrap_or(0)
            })
            .sum()
    }

    fn note_range(&self, data: &ArrayData) {
        let f = data.to_f64();
        let ranges: Vec<(f64, f64)> = match self.o.channel_axis() {
            Some(c) => f
                .axis_iter(Axis(c))
                .map(|v| {
                    v.iter()
                        .filter(|x| x.is_finite())
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                            (a.min(x), b.max(x))
                        })
                })
                .collect(),
            None => vec![f
                .iter()
                .filter(|x| x.is_finite())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                })],
        };
        if let Ok(mut seen) = self.seen.lock() {
            for (s, r) in seen.iter_mut().zip(ranges) {
                *s = (s.0.min(r.0), s.1.max(r.1));
            }
        }
    }

    /// Finishes every level, writes the group's metadata and moves the
    /// image into place (replacing an old one if allowed).
    pub fn finish(self) -> Result<PathBuf, IoError> {
        for (k, m) in self.tiles.iter().enumerate() {
            let open = m.lock().map(|t| t.len()).unwrap_or(0);
            if open > 0 {
                return Err(IoError::Store {
                    path: self.path.clone(),
                    why: format!(
                        "{open} chunks of level {} were never completed: the stream did not bring all of level {k}; nothing was put in place",
                        k + 1
                    ),
                });
            }
        }
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let attributes = self.o.attributes(&seen);
        let dir = self.claim.partial().to_path_buf();
        let put = |name: &str, v: &Value| -> Result<(), IoError> {
            let p = dir.join(name);
            let text = serde_json::to_vec_pretty(v).map_err(|e| IoError::Store {
                path: self.path.clone(),
                why: e.to_string(),
            })?;
            std::fs::write(&p, text).map_err(|source| IoError::Os { path: p, source })
        };
        match self.o.version {
            NgffVersion::V05 => put(
                "zarr.json",
                &json!({"zarr_format": 3, "node_type": "group", "attributes": attributes}),
            )?,
            NgffVersion::V04 => {
                put(".zgroup", &json!({"zarr_format": 2}))?;
                put(".zattrs", &Value::Object(attributes))?;
            }
        }
        for w in self.levels {
            w.finish()?;
        }
        self.claim.commit()?;
        Ok(self.path)
    }
}

/// A copy of `part` of `data` (which holds `region`).
fn cut(data: &ArrayData, region: &Region, part: &Region) -> ArrayData {
    let at: Vec<usize> = (0..region.ndim())
        .map(|a| (part.origin[a] - region.origin[a]) as usize)
        .collect();
    data.crop(&at, &part.shape_usize())
}

/// Writes `piece` into `buf` at `at`.
fn paste<T: ArrayKind + Clone>(
    buf: &mut ArrayD<T>,
    piece: &ArrayData,
    at: &[usize],
) -> Result<(), String> {
    let src = T::unwrap_ref(piece).ok_or("a chunk of another dtype than the image's")?;
    buf.slice_each_axis_mut(|ax| {
        let i = ax.axis.index();
        Slice::from(at[i]..at[i] + src.shape()[i])
    })
    .assign(src);
    Ok(())
}

/// `data` downsampled 2x along the axes `halve` marks (each output value
/// from the block of up to 2 values per such axis that are present), as
/// the writer computes each level from the one before.
pub fn downsample(data: &ArrayData, halve: &[bool], how: Downsample) -> ArrayData {
    match how {
        Downsample::Nearest => with_array!(data, a => ArrayKind::wrap(
            a.slice_each_axis(|ax| {
                if halve[ax.axis.index()] { Slice::new(0, None, 2) } else { Slice::from(..) }
            })
            .to_owned()
        )),
        Downsample::Mean => {
            let shape: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
            let src = Region::new(vec![0; shape.len()], shape.clone());
            let out_shape: Vec<u64> = (0..shape.len())
                .map(|a| {
                    if halve[a] {
                        shape[a].div_ceil(2)
                    } else {
                        shape[a]
                    }
                })
                .collect();
            let out = Region::new(vec![0; shape.len()], out_shape);
            let ones = vec![1; shape.len()];
            let twos: Vec<u64> = halve.iter().map(|&h| if h { 2 } else { 1 }).collect();
            let geo = Geo {
                halve,
                n0: &shape,
                fk: &ones,
                fk1: &twos,
            };
            let mut t = Tile::new(how, data.dtype(), &src, &out);
            // Cannot fail: a piece of the tile's own dtype and shape.
            let _ = t.add(&src, &src, data, &geo);
            t.finish(data.dtype(), &out, &geo)
        }
        Downsample::Mode => with_array!(data, a => ArrayKind::wrap(block_mode(a, halve))),
    }
}

/// The sum of each pair along `ax`, pairs starting at index 1 if
/// `odd_start` (the first value then alone), a last unpaired value alone.
fn pair_sum(f: &ArrayD<f64>, ax: usize, odd_start: bool) -> ArrayD<f64> {
    let pairs = |x: ndarray::ArrayViewD<'_, f64>| {
        if x.shape()[ax] == 0 {
            return x.to_owned();
        }
        let even = x.slice_axis(Axis(ax), Slice::new(0, None, 2));
        let odd = x.slice_axis(Axis(ax), Slice::new(1, None, 2));
        let mut out = even.to_owned();
        let m = odd.shape()[ax];
        out.slice_axis_mut(Axis(ax), Slice::from(..m))
            .zip_mut_with(&odd, |o, &b| *o += b);
        out
    };
    if !odd_start || f.shape()[ax] == 0 {
        return pairs(f.view());
    }
    let rest = pairs(f.slice_axis(Axis(ax), Slice::from(1..)));
    let mut shape = f.shape().to_vec();
    shape[ax] = 1 + rest.shape()[ax];
    let mut out = ArrayD::zeros(IxDyn(&shape));
    out.slice_axis_mut(Axis(ax), Slice::from(..1))
        .assign(&f.slice_axis(Axis(ax), Slice::from(..1)));
    out.slice_axis_mut(Axis(ax), Slice::from(1..)).assign(&rest);
    out
}

/// A mean in a dtype: rounded to the nearest integer (half away from
/// zero) and clamped for integers; true from one half for bool.
fn from_mean<T: Element>(v: f64) -> T {
    match T::DTYPE {
        DType::F32 | DType::F64 => T::from_f64(v),
        DType::Bool => T::from_f64(if v >= 0.5 { 1.0 } else { 0.0 }),
        _ => T::from_f64(v.round()),
    }
}

/// The most frequent value of each block (ties: the smallest).
fn block_mode<T: Element>(a: &ArrayD<T>, halve: &[bool]) -> ArrayD<T> {
    let nd = a.ndim();
    let out_shape: Vec<usize> = (0..nd)
        .map(|ax| {
            if halve[ax] {
                a.shape()[ax].div_ceil(2)
            } else {
                a.shape()[ax]
            }
        })
        .collect();
    let halved: Vec<usize> = (0..nd).filter(|&ax| halve[ax]).collect();
    let mut vals: Vec<T> = Vec::with_capacity(1 << halved.len());
    let mut at = vec![0usize; nd];
    ArrayD::from_shape_fn(IxDyn(&out_shape), |ix| {
        vals.clear();
        for mask in 0..(1usize << halved.len()) {
            let mut inside = true;
            for ax in 0..nd {
                at[ax] = if halve[ax] { 2 * ix[ax] } else { ix[ax] };
            }
            for (bit, &ax) in halved.iter().enumerate() {
                if mask >> bit & 1 == 1 {
                    at[ax] += 1;
                    inside &= at[ax] < a.shape()[ax];
                }
            }
            if inside {
                vals.push(a[IxDyn(&at)]);
            }
        }
        vals.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
        let (mut best, mut best_n, mut i) = (vals[0], 0, 0);
        while i < vals.len() {
            let mut j = i;
            while j < vals.len() && vals[j] == vals[i] {
                j += 1;
            }
            if j - i > best_n {
                best = vals[i];
                best_n = j - i;
            }
            i = j;
        }
        best
    })
}

impl crate::ChunkSink for OmeWriter {
    fn write(&self, region: &Region, data: &ArrayData, chunk: &[u64]) -> Result<(), IoError> {
        OmeWriter::write(self, region, data, chunk)
    }
    fn held_bytes(&self) -> u64 {
        OmeWriter::held_bytes(self)
    }
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError> {
        self.finish().map(|p| vec![p])
    }
}

#[cfg(test)]
#[path = "ome_tests.rs"]
mod tests;

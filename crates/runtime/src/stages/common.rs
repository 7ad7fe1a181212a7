//! What several kinds share: the boundary-mode choice lists (declared
//! once, by the kernels that parse them), the checks of stencil stages,
//! and a chunk's block with its whole halo.

use blockflow_core::{with_array, ArrayData, ArrayKind, Chunk, ChunkGrid};
use blockflow_kernels::filters::{Boundary, Geometry};
use ndarray::{ArrayD, IxDyn, Slice};

use super::{PlanCx, Planned};

/// The largest kernel radius (taps on each side) a filter may have along an
/// axis: the axis's length (a wider kernel sees mostly the boundary), but
/// at least [`MIN_RADIUS_BOUND`], and never more than [`MAX_RADIUS`]
/// (a kernel of 2^20 taps per side is 16 MiB of weights).
pub const MAX_RADIUS: u64 = 1 << 20;
/// Small arrays may still take the usual kernels (see [`MAX_RADIUS`]).
pub const MIN_RADIUS_BOUND: u64 = 1024;

/// scipy.ndimage's boundary modes of filters (and `none`), as every
/// stencil kind (filter, structure-tensor, median) takes them.
pub const MODES: &[&str] = &Boundary::NAMES;

/// scipy.ndimage's interpolation modes (shift).
pub const INTERP_MODES: &[&str] = &blockflow_kernels::shift::InterpMode::NAMES;

/// The stage's `mode` and `cval` as a boundary.
pub fn boundary(cx: &PlanCx<'_, '_>) -> Option<Boundary> {
    Boundary::parse(&cx.p.str("mode")?, cx.p.float("cval")?)
}

/// `wrap` reads the far end of an axis, which a stream has not brought yet:
/// it needs the axis whole in each chunk.
pub fn check_wrap(cx: &mut PlanCx<'_, '_>, grid: &ChunkGrid, halo: &[(usize, usize)]) -> bool {
    let mode = cx.p.str("mode").unwrap_or_default();
    if mode != "wrap" && mode != "grid-wrap" {
        return true;
    }
    for (ax, &(b, a)) in halo.iter().enumerate() {
        if b + a > 0 && grid.chunk_shape()[ax] < grid.shape()[ax] {
            return cx
                .err::<()>("mode", format!("mode \"wrap\" reads the far end of axis {ax}, which is split into chunks of {}; read it as one chunk along axis {ax}, or choose another mode", grid.chunk_shape()[ax]))
                .is_some();
        }
    }
    true
}

/// Whether a kernel of radius `r` along `axis` (of `extent` elements) is
/// within [`MAX_RADIUS`]; a diagnostic on `key` when not.
pub fn check_radius(cx: &mut PlanCx<'_, '_>, key: &str, axis: usize, r: f64, extent: u64) -> bool {
    let limit = extent.clamp(MIN_RADIUS_BOUND, MAX_RADIUS);
    if r.is_finite() && r <= limit as f64 {
        return true;
    }
    cx.err::<()>(
        key,
        format!(
            "`{key}` gives a kernel of radius {r:.0} along axis {axis} (of {extent}); the radius may be at most {limit} (the axis's length, at least {MIN_RADIUS_BOUND}, at most {MAX_RADIUS})"
        ),
    )
    .is_some()
}

/// The stage's `axis` (its declared default when not given; negative
/// counts from the end) among `nd` axes; an error naming it when out of
/// range.
pub fn axis(cx: &mut PlanCx<'_, '_>, nd: usize, whose: &str) -> Option<usize> {
    let a = cx.p.int("axis")?;
    let ax = if a < 0 { a + nd as i64 } else { a };
    if ax < 0 || ax >= nd as i64 {
        return cx.err(
            "axis",
            format!("axis {a} is out of range for {whose} {nd} axes"),
        );
    }
    Some(ax as usize)
}

/// A chunk's data with the whole `halo` around its core: positions its
/// halo lacks (a chunk at the array's edge given with less, or a whole
/// array given with none, as the ingest gives a timepoint) are 0, as the
/// overlap stage leaves them, for the kernel to fill by its boundary mode;
/// and where that block lies in an array of shape `array`.
pub fn block(
    c: &Chunk,
    halo: &[(usize, usize)],
    array: &[usize],
) -> Result<(Option<ArrayData>, Geometry), String> {
    let geom = Geometry {
        origin: c
            .region
            .origin
            .iter()
            .zip(halo)
            .map(|(&o, &(b, _))| o as isize - b as isize)
            .collect(),
        array: array.to_vec(),
    };
    let has = |ax: usize| c.halo.get(ax).copied().unwrap_or((0, 0));
    if (0..halo.len()).all(|ax| has(ax) == (halo[ax].0 as u64, halo[ax].1 as u64)) {
        return Ok((None, geom));
    }
    let shape: Vec<usize> = c.region.shape_usize();
    let mut offset = Vec::with_capacity(halo.len());
    let mut full = Vec::with_capacity(halo.len());
    for (ax, &(b, a)) in halo.iter().enumerate() {
        let (hb, ha) = has(ax);
        if hb > b as u64 || ha > a as u64 {
            return Err(format!(
                "the chunk comes with a halo of {:?}, more than the {halo:?} asked for",
                c.halo
            ));
        }
        offset.push(b - hb as usize);
        full.push(shape[ax] + b + a);
    }
    let padded = with_array!(c.array(), a => {
        let mut out = ArrayD::default(IxDyn(&full));
        out.slice_each_axis_mut(|s| {
            let k = s.axis.index();
            Slice::from(offset[k]..offset[k] + a.shape()[k])
        })
        .assign(a);
        ArrayKind::wrap(out)
    });
    Ok((Some(padded), geom))
}

/// The doc of a reader's `axes` parameter.
pub const AXES_DOC: &str = "the axes' names, one per axis (e.g. [\"t\", \"z\", \"y\", \"x\"]), carried by the stream to the writers (Zarr `dimension_names` / `_ARRAY_DIMENSIONS`, OME-Zarr axes); default: what the input says, as this kind's summary tells";

/// Names `planned`'s stream: the stage's `axes` if given (checked against
/// the stream's rank: one name per axis, none empty, none twice), else
/// `default` (what the input itself says), if any. None after an error.
pub fn name_axes(
    cx: &mut PlanCx<'_, '_>,
    mut planned: Planned,
    default: Option<Vec<String>>,
) -> Option<Planned> {
    let out = planned.output.as_mut()?;
    let nd = out.shape().len();
    let names = match cx.p.names("axes").filter(|v| !v.is_empty()) {
        Some(axes) => {
            if let Err(e) = blockflow_io::zarr::check_names(&axes, nd) {
                return cx.err("axes", e);
            }
            Some(axes)
        }
        None => default.filter(|d| d.len() == nd),
    };
    out.names = names;
    Some(planned)
}

/// The names of the usual axes of an `nd`-axis image: (y, x), (z, y, x),
/// with `lead` before them.
pub fn spatial_names(lead: &[&str], nd: usize) -> Option<Vec<String>> {
    let space: &[&str] = match nd.checked_sub(lead.len())? {
        2 => &["y", "x"],
        3 => &["z", "y", "x"],
        _ => return None,
    };
    Some(lead.iter().chain(space).map(|s| s.to_string()).collect())
}

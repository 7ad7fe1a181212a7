//! `write-zarr`'s OME-Zarr options (`ome = "0.5" | "0.4"`): the axes in
//! NGFF's order, the pyramid's levels, scale, units and channels, checked
//! against the stream and planned into [`OmeOptions`].

use blockflow_io::ome::{
    default_channels, is_color, AxisKind, Downsample, NgffVersion, OmeOptions, SPACE_UNITS,
};
use blockflow_io::zarr::ZarrWriteOptions;

use super::{MemoryCx, PlanCx};
use crate::config::Val;

/// Most levels a pyramid may have.
pub const MAX_LEVELS: i64 = 16;

/// The OME-Zarr options of a `write-zarr` whose `ome` is `version`, for
/// the stream `array` describes (shape, chunks in the stream's order),
/// with axes `names`.
pub fn plan(
    cx: &mut PlanCx<'_, '_>,
    version: NgffVersion,
    mut array: ZarrWriteOptions,
    names: Option<Vec<String>>,
) -> Option<OmeOptions> {
    let Some(names) = names else {
        return cx.err(
            "ome",
            "an OME-Zarr image needs named axes (t, c, z, y, x) and the input's are not named: set `axes`, e.g. [\"y\", \"x\", \"c\"]",
        );
    };
    if array.shards.is_some() {
        return cx.err(
            "shards",
            "an OME-Zarr image is written unsharded (each level in its chunks); drop `shards` or `ome`",
        );
    }
    let levels = match cx.p.value("levels") {
        Some(Val::Int(n)) => Some(n as usize),
        _ => None,
    };
    let downsample = Downsample::parse(cx.p.str("downsample").as_deref().unwrap_or("mean"))?;
    array.overwrite = cx.p.str("if_exists").as_deref() == Some("overwrite");
    let mut o = match OmeOptions::image(version, array, &names, levels, downsample) {
        Ok(o) => o,
        Err(e) => return cx.err(if cx.p.has("axes") { "axes" } else { "ome" }, e),
    };
    let nd = names.len();
    let perm = o.perm.clone();
    let scale = match cx.p.floats("scale", nd) {
        None => vec![1.0; nd],
        Some(Ok(s)) if s.iter().all(|&x| x > 0.0) => perm.iter().map(|&k| s[k]).collect(),
        Some(Ok(_)) => return cx.err("scale", "every pixel size must be > 0"),
        Some(Err(e)) => return cx.err("scale", e),
    };
    let units = units(cx, &o)?;
    let kinds = o.kinds.clone();
    let c_axis = kinds.iter().position(|k| *k == AxisKind::Channel);
    let channels = match (c_axis, cx.p.names("channels")) {
        (None, Some(_)) => {
            return cx.err(
                "channels",
                "`channels` names the channels of a `c` axis, and there is none",
            )
        }
        (None, None) => Vec::new(),
        (Some(a), given) => {
            let n = o.array.shape[a];
            let mut ch = default_channels(n);
            if let Some(labels) = given {
                if labels.len() as u64 != n {
                    return cx.err(
                        "channels",
                        format!("{} channel names for a `c` axis of {n}", labels.len()),
                    );
                }
                for (c, l) in ch.iter_mut().zip(labels) {
                    c.label = l;
                }
            }
            if let Some(colors) = cx.p.names("colors") {
                if colors.len() as u64 != n || !colors.iter().all(|c| is_color(c)) {
                    return cx.err(
                        "colors",
                        format!(
                            "`colors` takes {n} hex RGB colors, one per channel, e.g. \"FF0000\""
                        ),
                    );
                }
                for (c, col) in ch.iter_mut().zip(colors) {
                    c.color = col.to_uppercase();
                }
            }
            ch
        }
    };
    if c_axis.is_none() && cx.p.has("colors") {
        return cx.err(
            "colors",
            "`colors` colors the channels of a `c` axis, and there is none",
        );
    }
    o.name =
        cx.p.str("name")
            .or_else(|| {
                cx.path("path")
                    .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            })
            .unwrap_or_default();
    o.scale = scale;
    o.units = units;
    o.channels = channels;
    Some(o)
}

/// The units per axis (stored order): `units` on the space axes.
fn units(cx: &mut PlanCx<'_, '_>, o: &OmeOptions) -> Option<Vec<Option<String>>> {
    let nd = o.names.len();
    let space: Vec<usize> = (0..nd).filter(|&a| o.kinds[a] == AxisKind::Space).collect();
    let mut units: Vec<Option<String>> = vec![None; nd];
    if let Some(u) = cx.p.names("units") {
        if u.len() != 1 && u.len() != space.len() {
            return cx.err(
                "units",
                format!(
                    "`units` has {} entries: give one for every space axis, or one per space axis in NGFF's order ({})",
                    u.len(),
                    space.iter().map(|&a| o.names[a].as_str()).collect::<Vec<_>>().join(", ")
                ),
            );
        }
        for (i, &a) in space.iter().enumerate() {
            let unit = &u[if u.len() == 1 { 0 } else { i }];
            if !SPACE_UNITS.contains(&unit.as_str()) {
                return cx.err(
                    "units",
                    format!("\"{unit}\" is not a unit of length OME-Zarr knows (e.g. \"micrometer\", \"nanometer\", \"meter\")"),
                );
            }
            units[a] = Some(unit.clone());
        }
    }

    Some(units)
}

/// The working bytes of an OME-Zarr writer: per chunk at once, the chunk
/// (and its transposed copy), a padded copy and its encoding at level 0,
/// its values as float64 for a mean, a finished tile of each level above
/// and its encoding; and the open tiles of every level.
pub fn memory(o: &OmeOptions, m: &MemoryCx<'_>) -> u128 {
    let held = o.held_tiles(m.grid.chunk_shape(), m.parallel as u64);
    let tiles: u128 = held.iter().map(|&(n, b)| n as u128 * b as u128).sum();
    let tile_max = held.iter().map(|&(_, b)| b as u128).max().unwrap_or(0);
    let copies = if o.transposes() { 4 } else { 3 };
    let mean = if o.downsample == Downsample::Mean {
        m.in_elems * 8
    } else {
        0
    };
    m.parallel * (copies * m.in_bytes + mean + 3 * tile_max) + tiles
}

/// The plan's words for it.
pub fn describe(o: &OmeOptions) -> String {
    let top = o.levels.last().map(|l| l.shape.clone()).unwrap_or_default();
    format!(
        "OME-Zarr {} image, axes {}{}, {} levels ({} to {top:?}, {} of 2x2 blocks)",
        o.version.name(),
        o.names.join(", "),
        if o.transposes() {
            " (transposed from the stream's order)"
        } else {
            ""
        },
        o.levels.len(),
        format_args!("{:?}", o.array.shape),
        o.downsample.name(),
    )
}

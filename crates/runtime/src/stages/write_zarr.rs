//! `write-zarr`: the stream as a Zarr array; chunk files are atomic and
//! the array appears at its path only when the run succeeds.

use std::path::PathBuf;

use blockflow_io::ome::{Downsample, NgffVersion, OmeOptions, OmeWriter};
use blockflow_io::stored_chunks::held_stored_chunks;
use blockflow_io::zarr::{
    check_names, check_shards, BloscCname, Codec, Encoding, Shuffle, ZarrWriteOptions, ZarrWriter,
};
use blockflow_io::IoError;

use super::ome_plan;
use super::stored::StoreSink;
use super::{
    p, Arity, BuildCx, ChunkSink, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SinkOp, Stage, Writes,
};

pub static KIND: KindDef = KindDef {
    kind: "write-zarr",
    role: "writer",
    summary: "writes its input as a Zarr array (v2 or v3, optionally sharded), with its axes' names; chunk files are atomic and the array appears at `path` only when the run succeeds",
    inputs: Arity::Exactly(1),
    params: &[
        p("path", PType::Path(PathRole::Output), None, "the array's directory (relative paths are from the config's folder), or `s3://bucket/prefix` (credentials, region and endpoint from the AWS environment variables and ~/.aws files: AWS_ENDPOINT_URL for an S3-compatible store; chunks first, the metadata last, so an unfinished array cannot be opened)"),
        p("format", PType::Int(2, 3), Some("3"), "Zarr format, 2 or 3"),
        p("chunks", PType::Shape, Some(""), "stored chunks (default: the stream's; for `ome`, halved along the space axes where even, so a stream chunk makes whole level-1 chunks and level 1 holds none); each must divide the stream's chunks, unless the stream's chunk holds that axis whole"),
        p("shards", PType::Shape, Some(""), "Zarr v3 shards (`sharding_indexed`, as zarr-python's `shards`): each shard is one file of whole `chunks`, so a multiple of them along every axis; the writer fills a shard from the stream's chunks as they come, holds only shards not yet complete (projected in the plan) and writes each once, whole"),
        p("codec", PType::Choice(&Codec::NAMES), Some("zstd"), "compression: zstd, blosc, gzip, zlib (numcodecs' zlib; `numcodecs.zlib` in v3), lz4 (numcodecs' lz4; `numcodecs.lz4` in v3), or none"),
        p("level", PType::Int(0, 22), Some("3"), "compression level (gzip, zlib and blosc 0..=9; unused by lz4)"),
        p("cname", PType::Choice(&BloscCname::NAMES), Some("zstd"), "blosc's compressor"),
        p("shuffle", PType::Choice(&Shuffle::NAMES), Some("shuffle"), "blosc's shuffle: by byte, by bit, or none"),
        p("checksum", PType::Bool, Some("false"), "a crc32c checksum after the compressor (Zarr v3)"),
        p("endian", PType::Choice(&["little", "big"]), Some("little"), "byte order of the stored values"),
        p("axes", PType::Names, Some(""), "the axes' names, one per axis (v3 `dimension_names`, v2 `_ARRAY_DIMENSIONS` as xarray reads them); default: the names the input has (from a Zarr array it read, kept by the stages in between), else dim_0, dim_1, ..."),
        p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when `path` exists"),
        p("ome", PType::Choice(&["0.5", "0.4", "none"]), Some(""), "write an OME-Zarr image (as napari and ome-zarr-py read it; \"none\": a plain array, e.g. `--set NAME.ome=none` against a config's choice): NGFF \"0.5\" (Zarr v3, `ome` attributes in the group's zarr.json) or \"0.4\" (Zarr v2, `.zattrs`, chunk keys `0/0`); `path` is then a group of arrays \"0\" (full resolution), \"1\", ... each halving the space axes, computed in the same stream (only a band of chunks of each level is held). The axes must be named t, c, z, y, x (at most one other name, e.g. a stack's `image`) and are stored in NGFF's order (t, other, c, z, y, x): a stream of (y, x, c) is transposed chunk by chunk to (c, y, x), and `chunks` are given in the stream's order. `read-zarr` opens such a group as its level 0"),
        p("levels", PType::IntOrAuto(1, ome_plan::MAX_LEVELS), Some(""), "OME: the pyramid's levels, counting level 0 (default \"auto\": halve until the largest space extent is at most 256 or the space axes fit in one chunk); an axis of 1 is no longer halved"),
        p("downsample", PType::Choice(&Downsample::NAMES), Some(""), "OME: how each level is made from the one before (default \"mean\"): `mean` of each 2x2(x2) block (of the values present at an odd edge; integers rounded), for images; `mode` (most frequent value, ties to the smallest) or `nearest` (the block's first value) for label arrays"),
        p("scale", PType::Floats, Some(""), "OME: level 0's pixel size, one number for every axis or one per axis in the stream's order (default 1; give 1 for a channel axis); level k's is 2^k times it on the halved axes, with the translation (2^k - 1)/2 pixel sizes that centres a mean's pixels"),
        p("units", PType::Names, Some(""), "OME: the space axes' unit, e.g. [\"micrometer\"] (one for all) or one per space axis in NGFF's order (z, y, x); none by default"),
        p("channels", PType::Names, Some(""), "OME: the names of the `c` axis' channels (`omero`; default red, green, blue (, alpha) for 3 (4) channels, else \"channel K\"); each channel's display window is the dtype's range for integers, the smallest and largest value written for floats"),
        p("colors", PType::Names, Some(""), "OME: the channels' colors as hex RGB, e.g. [\"FF0000\", \"00FF00\", \"0000FF\"] (the default for 3 channels)"),
        p("name", PType::Str, Some(""), "OME: the image's name (`multiscales` name; default: the file name without `.zarr`)"),
    ],
    example: "inputs = [\"f32_rgb\"]\npath = \"out.zarr\"\nchunks = [5, 7, 3]\naxes = [\"y\", \"x\", \"c\"]",
    plan,
};

#[derive(Debug, Clone)]
pub struct WriteZarr {
    pub path: PathBuf,
    pub options: ZarrWriteOptions,
    /// An OME-Zarr image instead of one array (`ome`).
    pub ome: Option<OmeOptions>,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let path = cx.path("path")?;
    let stream = cx.input(0)?;
    let stream_chunks = stream.grid.chunk_shape().to_vec();
    let nd = stream.shape().len();
    let stream_shape = stream.shape().to_vec();
    let chunks = stored_chunks(cx, &stream_shape, &stream_chunks, stream.names.clone())?;
    let (ome, format) = format_and_ome(cx)?;
    let shards = cx.p.shape("shards");
    if let Some(sh) = &shards {
        if let Err(e) = check_shards(sh, &chunks) {
            return cx.err("shards", e);
        }
        if format != 3 {
            return cx.err(
                "shards",
                "sharding is a Zarr v3 codec; set `format = 3` to shard",
            );
        }
    }
    let codec = Codec::parse(&cx.p.str("codec")?)?;
    let level = cx.p.int("level")? as i32;
    if matches!(codec, Codec::Gzip | Codec::Zlib | Codec::Blosc) && level > 9 {
        return cx.err("level", format!("{} levels are 0..=9", codec.name()));
    }
    let encoding = Encoding {
        cname: BloscCname::parse(&cx.p.str("cname")?)?,
        shuffle: Shuffle::parse(&cx.p.str("shuffle")?)?,
        checksum: cx.p.bool("checksum")?,
        big_endian: cx.p.str("endian").as_deref() == Some("big"),
    };
    if encoding.checksum && format != 3 {
        return cx.err(
            "checksum",
            "a crc32c checksum is a Zarr v3 codec; set `format = 3` for it",
        );
    }
    let names_for_ome = match cx.p.names("axes") {
        Some(axes) => Some(axes),
        None => stream.names.clone(),
    };
    let names = match cx.p.names("axes") {
        Some(axes) => {
            if let Err(e) = check_names(&axes, nd) {
                return cx.err("axes", e);
            }
            Some(axes)
        }
        None => stream.names.clone(),
    };
    let options = ZarrWriteOptions {
        zarr_format: format,
        dtype: stream.dtype,
        shape: stream.shape().to_vec(),
        chunks,
        shards,
        codec,
        level,
        encoding,
        dimension_names: names,
        overwrite: cx.p.str("if_exists").as_deref() == Some("overwrite"),
        attributes: Default::default(),
    };
    if ome.is_some() {
        local_for_ome(cx, &path)?;
    }
    let ome = match ome {
        Some(v) => Some(ome_plan::plan(cx, v, options.clone(), names_for_ome)?),
        None => None,
    };
    Some(Planned::sink(
        WriteZarr { path, options, ome },
        stream.grid.clone(),
    ))
}

/// The stored chunks: as given (checked against the stream's), else the
/// stream's; for an OME image, half the stream's along the space axes
/// where they are even, so each stream chunk makes whole level-1 chunks.
fn stored_chunks(
    cx: &mut PlanCx<'_, '_>,
    shape: &[u64],
    stream_chunks: &[u64],
    stream_names: Option<Vec<String>>,
) -> Option<Vec<u64>> {
    let nd = shape.len();
    let ome =
        cx.p.str("ome")
            .is_some_and(|v| !v.is_empty() && v != "none");
    let chunks = cx.p.shape("chunks").unwrap_or_else(|| {
        let names = cx.p.names("axes").or(stream_names);
        match names {
            Some(n) if ome && n.len() == nd => (0..nd)
                .map(|a| {
                    let c = stream_chunks[a];
                    let space = matches!(n[a].as_str(), "z" | "y" | "x");
                    if space && c.is_multiple_of(2) && c < shape[a] {
                        c / 2
                    } else {
                        c
                    }
                })
                .collect(),
            _ => stream_chunks.to_vec(),
        }
    });
    if chunks.len() != nd {
        return cx.err(
            "chunks",
            format!(
                "`chunks` has {} axes but the array has {} ({shape:?})",
                chunks.len(),
                nd,
            ),
        );
    }
    for ax in 0..nd {
        let (c, sc, n) = (chunks[ax], stream_chunks[ax], shape[ax]);
        if sc % c != 0 && sc < n {
            return cx.err(
                "chunks",
                format!(
                    "stored chunks {chunks:?} must divide the stream's chunks {stream_chunks:?} along every axis (axis {ax}: {c} does not divide {sc}); choose divisors, or re-grid the reader"
                ),
            );
        }
    }
    Some(chunks)
}

/// An OME-Zarr image is committed by a local rename: refused in object
/// storage.
fn local_for_ome(cx: &mut PlanCx<'_, '_>, path: &std::path::Path) -> Option<()> {
    if blockflow_io::remote::is_url(path) {
        return cx.err(
            "ome",
            format!("OME-Zarr output is written locally and renamed into place; {} is in object storage: write it to a local path and copy it, or set `ome = \"none\"`", path.display()),
        );
    }
    Some(())
}

/// The OME-Zarr version asked for, if any, and the Zarr format (the
/// version's; `format` must agree); the OME options refused without `ome`.
fn format_and_ome(cx: &mut PlanCx<'_, '_>) -> Option<(Option<NgffVersion>, u8)> {
    let ome = cx.p.str("ome").and_then(|v| NgffVersion::parse(&v));
    if ome.is_none() {
        for key in [
            "levels",
            "downsample",
            "scale",
            "units",
            "channels",
            "colors",
            "name",
        ] {
            if cx.p.has(key) {
                return cx.err(key, format!("`{key}` is an OME-Zarr option: set `ome = \"0.5\"` (or \"0.4\") to write an OME-Zarr image"));
            }
        }
    }
    let format = match ome {
        Some(v) if cx.p.has("format") && cx.p.int("format")? as u8 != v.zarr_format() => {
            return cx.err(
                "format",
                format!(
                    "OME-Zarr {} is Zarr v{}; drop `format` (it follows `ome`)",
                    v.name(),
                    v.zarr_format()
                ),
            )
        }
        Some(v) => v.zarr_format(),
        None => cx.p.int("format")? as u8,
    };
    Some((ome, format))
}

/// A codec's name as the config writes it.
fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::None => "uncompressed",
        c => c.name(),
    }
}

/// Whether every stream chunk of `stream` over `shape` covers whole
/// `shards` (along every axis a multiple of the shard, or to the array's
/// edge): then no shard is ever held half filled, and each is written by
/// the task that computes its region.
pub fn stream_fills_shards(shape: &[u64], stream: &[u64], shards: &[u64]) -> bool {
    shape
        .iter()
        .zip(stream)
        .zip(shards)
        .all(|((&n, &c), &s)| c % s.max(1) == 0 || c >= n)
}

impl WriteZarr {
    /// Shards held half filled at once, at most, and the bytes of one.
    fn held_shards(&self, stream: &[u64], parallel: u64) -> (u128, u128) {
        let o = &self.options;
        let Some(shards) = &o.shards else {
            return (0, 0);
        };
        let bytes = shards
            .iter()
            .zip(&o.shape)
            .fold(o.dtype.size() as u128, |a, (&s, &n)| {
                a.saturating_mul(s.min(n) as u128)
            });
        if stream_fills_shards(&o.shape, stream, shards) {
            return (0, bytes);
        }
        // A shard is held from the first stream chunk in it to the last,
        // as a stored chunk a finer stream cuts is (row-major arrival).
        let held = held_stored_chunks(&o.shape, shards, stream, parallel) as u128;
        (held, bytes)
    }
}

impl Stage for WriteZarr {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let o = &self.options;
        if let Some(ome) = &self.ome {
            return format!(
                "{} ({}, stored chunks {:?}, {}; {})",
                self.path.display(),
                ome_plan::describe(ome),
                ome.array.chunks,
                match o.codec {
                    Codec::None => codec_name(o.codec).to_string(),
                    c => format!("{} level {}", codec_name(c), o.level),
                },
                if o.overwrite {
                    "replaces what is there"
                } else {
                    "refused if it exists"
                }
            );
        }
        let codec = match o.codec {
            Codec::None => codec_name(o.codec).to_string(),
            c => format!("{} level {}", codec_name(c), o.level),
        };
        let shards = o
            .shards
            .as_ref()
            .map(|s| format!(" in shards {s:?}"))
            .unwrap_or_default();
        format!(
            "{} (zarr v{}, stored chunks {:?}{shards}, {codec}, axes {}; {})",
            self.path.display(),
            o.zarr_format,
            o.chunks,
            o.names().join(", "),
            if o.overwrite {
                "replaces what is there"
            } else {
                "refused if it exists"
            }
        )
    }
    /// The chunk, a padded copy, the encoded bytes; for a sharded array
    /// also the shards held half filled and, per chunk at once, a shard
    /// being encoded (its values and its bytes).
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        if let Some(ome) = &self.ome {
            return ome_plan::memory(ome, m);
        }
        let (held, shard) = self.held_shards(m.grid.chunk_shape(), m.parallel as u64);
        let encoding = if self.options.shards.is_some() {
            m.parallel * 2 * shard
        } else {
            0
        };
        m.parallel * 3 * m.in_bytes + held * shard + encoding
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Sink(self)
    }
    fn writes(&self) -> Option<Writes<'_>> {
        if let Some(ome) = &self.ome {
            return Some(Writes::Ome {
                path: &self.path,
                options: ome,
            });
        }
        Some(Writes::Zarr {
            path: &self.path,
            options: &self.options,
        })
    }
}

impl SinkOp for WriteZarr {
    fn open(&self, _cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSink>, IoError> {
        if let Some(ome) = &self.ome {
            return Ok(StoreSink::boxed(Box::new(OmeWriter::create(
                &self.path, ome,
            )?)));
        }
        let w = ZarrWriter::create(&self.path, &self.options)?;
        Ok(StoreSink::boxed(Box::new(w)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::DType;

    fn unit(s: &crate::plan::PlannedStage) -> &dyn Stage {
        &*s.kind
    }

    #[test]
    fn plans_the_stored_array_and_says_where_it_goes() {
        let s = plan_one(
            "kind = \"write-zarr\"\npath = \"out/a.zarr\"\nchunks = [2, 5]\ncodec = \"gzip\"\nformat = 2",
            &[DType::I32],
            &[10, 12],
            &[4, 5],
        );
        assert!(s.output.is_none());
        assert_eq!(s.grid.chunk_shape(), &[4, 5]);
        // 2 chunks at once, each 80 bytes, three times.
        assert_eq!(s.mem.working, 2 * 3 * 80);
        let Some(Writes::Zarr { path, options }) = unit(&s).writes() else {
            panic!("writes a Zarr array")
        };
        assert_eq!(path, std::path::Path::new("/cfg/out/a.zarr"));
        assert_eq!(options.chunks, vec![2, 5]);
        assert_eq!(options.dtype, DType::I32);
        assert_eq!(
            (options.zarr_format, options.codec, options.level),
            (2, Codec::Gzip, 3)
        );
        assert!(!options.overwrite);
        assert_eq!(
            unit(&s).describe(),
            "/cfg/out/a.zarr (zarr v2, stored chunks [2, 5], gzip level 3, axes dim_0, dim_1; refused if it exists)"
        );
    }

    #[test]
    fn refuses_chunks_that_do_not_divide_the_stream_and_gzip_above_9() {
        let e = plan_err(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\nchunks = [3, 5]",
            &[DType::F32],
            &[10, 12],
            &[4, 5],
        );
        assert!(e.contains("axis 0: 3 does not divide 4"), "{e}");
        let e = plan_err(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\nchunks = [4]",
            &[DType::F32],
            &[10, 12],
            &[4, 5],
        );
        assert!(e.contains("`chunks` has 1 axes but the array has 2"), "{e}");
        let e = plan_err(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\ncodec = \"gzip\"\nlevel = 12",
            &[DType::F32],
            &[10],
            &[5],
        );
        assert!(e.contains("gzip levels are 0..=9"), "{e}");
    }

    #[test]
    fn any_stored_chunks_along_an_axis_the_stream_holds_whole() {
        // Each stream chunk spans axis 1 whole, so it ends at the edge and
        // is written as whole stored chunks of 10 (the last one partial).
        let p = plan_one(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\nchunks = [1, 10]",
            &[DType::F32],
            &[3, 24],
            &[1, 24],
        );
        assert!(
            p.kind.describe().contains("stored chunks [1, 10]"),
            "{}",
            p.kind.describe()
        );
    }

    #[test]
    fn shards_must_be_whole_chunks_and_v3_and_their_memory_is_projected() {
        let e = plan_err(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\nchunks = [4, 5]\nshards = [8, 12]",
            &[DType::F32],
            &[16, 20],
            &[4, 5],
        );
        // On the `shards` line, naming the stage.
        assert!(e.contains("test.toml:") && e.contains("stage \"s\""), "{e}");
        assert!(e.contains("axis 1: 12 is not a multiple of 5"), "{e}");
        let e = plan_err(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\nformat = 2\nshards = [8, 10]",
            &[DType::F32],
            &[16, 20],
            &[4, 5],
        );
        assert!(e.contains("sharding is a Zarr v3 codec"), "{e}");
        let e = plan_err(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\nformat = 2\nchecksum = true",
            &[DType::F32],
            &[16],
            &[4],
        );
        assert!(e.contains("crc32c checksum is a Zarr v3 codec"), "{e}");
        // Stream chunks of 4 x 5 into shards of 8 x 10: a row of two
        // shards half filled at once (and one more the batch's second
        // chunk may start), 320 bytes each, and two being encoded.
        let s = plan_one(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\nshards = [8, 10]",
            &[DType::F32],
            &[16, 20],
            &[4, 5],
        );
        let held = held_stored_chunks(&[16, 20], &[8, 10], &[4, 5], 2);
        assert!(held >= 2);
        assert_eq!(s.mem.working, 2 * 3 * 80 + held * 320 + 2 * 2 * 320);
        // Stream chunks that are whole shards hold none.
        let s = plan_one(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\nchunks = [4, 5]\nshards = [8, 10]",
            &[DType::F32],
            &[16, 20],
            &[8, 10],
        );
        assert_eq!(s.mem.working, 2 * 3 * 320 + 2 * 2 * 320);
        assert!(stream_fills_shards(&[16, 20], &[8, 10], &[8, 10]));
        assert!(!stream_fills_shards(&[16, 20], &[4, 10], &[8, 10]));
        assert!(
            stream_fills_shards(&[6, 20], &[6, 10], &[8, 10]),
            "the whole axis"
        );
    }

    #[test]
    fn axes_name_the_array_or_come_from_the_input() {
        let s = plan_one(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\naxes = [\"y\", \"x\"]\ncodec = \"lz4\"",
            &[DType::U8],
            &[6, 4],
            &[3, 4],
        );
        let Some(Writes::Zarr { options, .. }) = unit(&s).writes() else {
            panic!("writes a Zarr array")
        };
        assert_eq!(
            options.dimension_names,
            Some(vec!["y".to_string(), "x".to_string()])
        );
        assert_eq!(options.codec, Codec::Lz4);
        // A generated input has no names: xarray's names for unnamed axes.
        let s = plan_one(
            "kind = \"write-zarr\"\npath = \"a.zarr\"",
            &[DType::U8],
            &[6, 4],
            &[3, 4],
        );
        let Some(Writes::Zarr { options, .. }) = unit(&s).writes() else {
            panic!("writes a Zarr array")
        };
        assert_eq!(options.dimension_names, None);
        assert_eq!(options.names(), vec!["dim_0", "dim_1"]);
        for (axes, why) in [
            ("[\"y\"]", "1 axis names"),
            ("[\"y\", \"y\"]", "given to two axes"),
            ("[\"y\", \" \"]", "non-empty strings"),
        ] {
            let e = plan_err(
                &format!("kind = \"write-zarr\"\npath = \"a.zarr\"\naxes = {axes}"),
                &[DType::U8],
                &[6, 4],
                &[3, 4],
            );
            assert!(e.contains(why), "{axes}: {e}");
        }
    }

    #[test]
    fn ome_images_plan_their_axes_levels_and_memory() {
        let s = plan_one(
            "kind = \"write-zarr\"\npath = \"a.zarr\"\nome = \"0.4\"\naxes = [\"y\", \"x\", \"c\"]\nchunks = [250, 250, 3]\nscale = [0.5, 0.5, 1]\nunits = [\"micrometer\"]",
            &[DType::U8],
            &[2000, 3000, 3],
            &[500, 500, 3],
        );
        let Some(Writes::Ome { options: o, .. }) = unit(&s).writes() else {
            panic!("writes an OME-Zarr image")
        };
        assert_eq!(o.names, vec!["c", "y", "x"]);
        assert_eq!(o.perm, vec![2, 0, 1]);
        assert_eq!(o.array.chunks, vec![3, 250, 250]);
        assert_eq!(o.array.zarr_format, 2, "NGFF 0.4 is Zarr v2");
        assert_eq!(o.scale, vec![1.0, 0.5, 0.5]);
        assert_eq!(o.units[1].as_deref(), Some("micrometer"));
        assert_eq!(o.units[0], None, "no unit on the channel axis");
        // auto: halved until the largest extent is <= 256 (188).
        assert_eq!(
            o.levels.last().map(|l| l.shape.clone()),
            Some(vec![3, 125, 188])
        );
        assert_eq!(o.channels.len(), 3);
        assert!(
            s.kind.describe().contains("transposed"),
            "{}",
            s.kind.describe()
        );
        // The open tiles of every level are projected: level 1's chunks
        // are made whole from one stream chunk each (2 at once), level 2's
        // from a band of them.
        let held = o.held_tiles(&[500, 500, 3], 2);
        assert_eq!(held[0].0, 2);
        assert!(held[1].0 > 2, "{held:?}");
        let tiles: u128 = held.iter().map(|&(n, b)| n as u128 * b as u128).sum();
        assert!(
            u128::from(s.mem.working) > tiles,
            "{} > {tiles}",
            s.mem.working
        );
    }

    #[test]
    fn ome_refuses_what_an_image_cannot_be() {
        let plan = |extra: &str| {
            plan_err(
                &format!("kind = \"write-zarr\"\npath = \"a.zarr\"\n{extra}"),
                &[DType::F32],
                &[10, 12],
                &[5, 6],
            )
        };
        for (extra, why) in [
            ("ome = \"0.5\"", "needs named axes"),
            ("ome = \"0.5\"\naxes = [\"a\", \"b\"]", "at most one other"),
            ("ome = \"0.5\"\naxes = [\"y\", \"z\"]", "space axes y and x"),
            (
                "ome = \"0.5\"\naxes = [\"y\", \"x\"]\nformat = 2",
                "OME-Zarr 0.5 is Zarr v3",
            ),
            (
                "ome = \"0.5\"\naxes = [\"y\", \"x\"]\nshards = [10, 12]",
                "unsharded",
            ),
            (
                "ome = \"0.5\"\naxes = [\"y\", \"x\"]\nchannels = [\"a\"]",
                "there is none",
            ),
            (
                "ome = \"0.5\"\naxes = [\"y\", \"x\"]\nunits = [\"furlong\"]",
                "not a unit of length",
            ),
            (
                "ome = \"0.5\"\naxes = [\"y\", \"x\"]\nscale = [1, 0]",
                "> 0",
            ),
            ("levels = 3", "is an OME-Zarr option"),
        ] {
            let e = plan(extra);
            assert!(e.contains(why), "{extra}: {e}");
        }
    }
}

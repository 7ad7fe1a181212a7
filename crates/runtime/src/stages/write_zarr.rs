//! `write-zarr`: the stream as a Zarr array; chunk files are atomic and
//! the array appears at its path only when the run succeeds.

use std::path::PathBuf;

use blockflow_io::zarr::{Codec, ZarrWriteOptions, ZarrWriter};
use blockflow_io::IoError;

use super::stored::StoreSink;
use super::{
    p, Arity, BuildCx, ChunkSink, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SinkOp, Stage, Writes,
};

pub static KIND: KindDef = KindDef {
    kind: "write-zarr",
    role: "writer",
    summary: "writes its input as a Zarr array; chunk files are atomic and the array appears at `path` only when the run succeeds",
    inputs: Arity::Exactly(1),
    params: &[
        p("path", PType::Path(PathRole::Output), None, "the array's directory (relative paths are from the config's folder)"),
        p("format", PType::Int(2, 3), Some("3"), "Zarr format, 2 or 3"),
        p("chunks", PType::Shape, Some(""), "stored chunks (default: the stream's); each must divide the stream's chunks, unless the stream's chunk holds that axis whole"),
        p("codec", PType::Choice(&["zstd", "blosc", "gzip", "none"]), Some("zstd"), "compression"),
        p("level", PType::Int(0, 22), Some("3"), "compression level"),
        p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when `path` exists"),
    ],
    example: "inputs = [\"f32_rgb\"]\npath = \"out.zarr\"\nchunks = [5, 7, 3]",
    plan,
};

#[derive(Debug, Clone)]
pub struct WriteZarr {
    pub path: PathBuf,
    pub options: ZarrWriteOptions,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let path = cx.path("path")?;
    let stream = cx.input(0)?;
    let stream_chunks = stream.grid.chunk_shape().to_vec();
    let chunks =
        cx.p.shape("chunks")
            .unwrap_or_else(|| stream_chunks.clone());
    if chunks.len() != stream.shape().len() {
        return cx.err(
            "chunks",
            format!(
                "`chunks` has {} axes but the array has {} ({:?})",
                chunks.len(),
                stream.shape().len(),
                stream.shape()
            ),
        );
    }
    for ax in 0..chunks.len() {
        let (c, sc, n) = (chunks[ax], stream_chunks[ax], stream.shape()[ax]);
        if sc % c != 0 && sc < n {
            return cx.err(
                "chunks",
                format!(
                    "stored chunks {chunks:?} must divide the stream's chunks {stream_chunks:?} along every axis (axis {ax}: {c} does not divide {sc}); choose divisors, or re-grid the reader"
                ),
            );
        }
    }
    let codec = Codec::parse(&cx.p.str("codec")?)?;
    let level = cx.p.int("level")? as i32;
    if codec == Codec::Gzip && level > 9 {
        return cx.err("level", "gzip levels are 0..=9");
    }
    if codec == Codec::Blosc && level > 9 {
        return cx.err("level", "blosc levels are 0..=9");
    }
    let options = ZarrWriteOptions {
        zarr_format: cx.p.int("format")? as u8,
        dtype: stream.dtype,
        shape: stream.shape().to_vec(),
        chunks,
        codec,
        level,
        overwrite: cx.p.str("if_exists").as_deref() == Some("overwrite"),
        attributes: Default::default(),
    };
    Some(Planned::sink(
        WriteZarr { path, options },
        stream.grid.clone(),
    ))
}

/// A codec's name as the config writes it.
fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::None => "uncompressed",
        Codec::Zstd => "zstd",
        Codec::Blosc => "blosc",
        Codec::Gzip => "gzip",
    }
}

impl Stage for WriteZarr {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let o = &self.options;
        let codec = match o.codec {
            Codec::None => codec_name(o.codec).to_string(),
            c => format!("{} level {}", codec_name(c), o.level),
        };
        format!(
            "{} (zarr v{}, stored chunks {:?}, {codec}; {})",
            self.path.display(),
            o.zarr_format,
            o.chunks,
            if o.overwrite {
                "replaces what is there"
            } else {
                "refused if it exists"
            }
        )
    }
    /// The chunk, a padded copy, the encoded bytes.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.parallel * 3 * m.in_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Sink(self)
    }
    fn writes(&self) -> Option<Writes<'_>> {
        Some(Writes::Zarr {
            path: &self.path,
            options: &self.options,
        })
    }
}

impl SinkOp for WriteZarr {
    fn open(&self, _cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSink>, IoError> {
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
            "/cfg/out/a.zarr (zarr v2, stored chunks [2, 5], gzip level 3; refused if it exists)"
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
}

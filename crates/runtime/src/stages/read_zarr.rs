//! `read-zarr`: a Zarr v2 or v3 array, read chunk by chunk (only the
//! stored chunks each region needs); when the stream's chunks are finer
//! than the stored ones, each stored chunk is decoded once and cut.

use std::path::PathBuf;
use std::time::Instant;

use blockflow_core::{ArrayData, Region};
use blockflow_io::stored_chunks::{held_stored_chunks, stream_is_finer, StoredChunks};
use blockflow_io::zarr::{ZarrInfo, ZarrReader};
use blockflow_io::IoError;
use rayon::prelude::*;

use super::stored::check_planned;
use super::{
    p, Arity, BuildCx, ChunkSource, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SourceOp, Stage,
};
use crate::exec::{RunError, StageIo};

pub static KIND: KindDef = KindDef {
    kind: "read-zarr",
    role: "reader",
    summary:
        "a Zarr v2 or v3 array (sharded or not; every codec zarr-python writes by default or commonly: blosc, zstd, gzip, zlib, lz4, crc32c, transpose, either byte order), read chunk by chunk (only the stored chunks each region needs: in a shard, its index and those inner chunks); its axes' names (v3 `dimension_names`, v2 `_ARRAY_DIMENSIONS`) go with the stream",
    inputs: Arity::None,
    params: &[
        p(
            "path",
            PType::Path(PathRole::Input),
            None,
            "the array's directory (relative paths are from the config's folder), or its URL: `s3://bucket/prefix` (credentials, region and endpoint from the AWS environment variables and ~/.aws files: AWS_ENDPOINT_URL for an S3-compatible store) or `http(s)://` (read with Range requests)",
        ),
        p(
            "chunks",
            PType::Shape,
            Some(""),
            "stream chunks, if not the stored ones (a sharded array's inner chunks; as dask's from_zarr(chunks=...))",
        ),
        p("axes", PType::Names, Some(""), super::common::AXES_DOC),
    ],
    example: "path = \"in.zarr\"",
    plan,
};

#[derive(Debug, Clone)]
pub struct ReadZarr {
    pub path: PathBuf,
    /// The array as planned.
    pub info: ZarrInfo,
    /// The stream's chunks are finer than the stored ones: decode each
    /// stored chunk once and cut the stream's chunks from it.
    pub regrid: bool,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let path = cx.path("path")?;
    let info = match cx.catalog.zarr(&path) {
        Ok(i) => i,
        Err(e) => return cx.err("path", e.to_string()),
    };
    let chunks = cx.p.shape("chunks").unwrap_or_else(|| info.chunks.clone());
    let grid = cx.grid("chunks", info.shape.clone(), chunks)?;
    let regrid = stream_is_finer(&info.shape, &info.chunks, grid.chunk_shape());
    let dtype = info.dtype;
    let names = info.dimension_names.clone();
    let planned = Planned::sends(ReadZarr { path, info, regrid }, dtype, grid);
    super::common::name_axes(cx, planned, names)
}

impl Stage for ReadZarr {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let regrid = if self.regrid {
            "; each stored chunk decoded once and cut into stream chunks, about a row of them held"
        } else {
            ""
        };
        let shards = self
            .info
            .shards
            .as_ref()
            .map(|s| format!(" in shards {s:?}"))
            .unwrap_or_default();
        let names = self
            .info
            .dimension_names
            .as_ref()
            .map(|n| format!(", axes {}", n.join(", ")))
            .unwrap_or_default();
        let remote = if blockflow_io::remote::is_url(&self.path) {
            "; over the network, ranged reads, one request in flight per chunk read at once"
        } else {
            ""
        };
        format!(
            "{} (zarr v{}, stored chunks {:?}{shards}, {}{names}){regrid}{remote}",
            self.path.display(),
            self.info.zarr_format,
            self.info.chunks,
            self.info.codecs
        )
    }
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        let info = &self.info;
        let stored = info.chunks.iter().fold(info.dtype.size() as u128, |a, &c| {
            a.saturating_mul(c as u128)
        });
        let stream = m.grid.chunk_shape();
        // Over the network, each read in flight (one per chunk read at
        // once) also holds its response body, up to a stored chunk.
        let in_flight = if blockflow_io::remote::is_url(&self.path) {
            m.parallel * stored
        } else {
            0
        };
        in_flight
            + if stream_is_finer(&info.shape, &info.chunks, stream) {
                // Each stored chunk decoded once and held until the last
                // stream chunk in it is cut (about a row of them); each being
                // decoded twice more while it is (its encoded bytes, then its
                // raw bytes beside the typed copy kept, as zarrs decodes); and
                // the stream chunks being cut.
                let p = m.parallel;
                let held = held_stored_chunks(&info.shape, &info.chunks, stream, p as u64) as u128;
                (held + 2 * p.min(held)) * stored + p * m.out_bytes
            } else {
                // The result and the decoded stored chunks it is cut from.
                m.parallel * (m.out_bytes + 2 * stored)
            }
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Source(self)
    }
}

impl SourceOp for ReadZarr {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSource>, IoError> {
        let reader = ZarrReader::open(&self.path)?;
        let spec = blockflow_io::ChunkSource::spec(&reader);
        check_planned(cx, &self.path, &spec)?;
        Ok(Box::new(ZarrSource {
            reader,
            regrid: self.regrid,
        }))
    }
}

/// An array opened for a run.
struct ZarrSource {
    reader: ZarrReader,
    regrid: bool,
}

impl ChunkSource for ZarrSource {
    fn read(&self, region: &Region, index: Option<&[u64]>) -> Result<ArrayData, String> {
        self.reader
            .read(region, index.unwrap_or(&[]))
            .map_err(|e| e.to_string())
    }

    fn stream(&self, io: &mut StageIo<'_, '_>) -> Option<Result<(), RunError>> {
        self.regrid.then(|| self.decode_once(io))
    }

    fn decoded(&self) -> Option<u64> {
        Some(self.reader.stored_chunks_decoded())
    }
}

impl ZarrSource {
    /// Produces every stream chunk in row-major order, `parallel` at a
    /// time, as a source does, but decodes each stored chunk once, when
    /// the first stream chunk that needs it comes up, cuts every stream
    /// chunk from the decoded stored chunks and drops each after the last
    /// stream chunk that needs it (at most `held_stored_chunks` of them at
    /// once, as projected).
    fn decode_once(&self, io: &mut StageIo<'_, '_>) -> Result<(), RunError> {
        let reader = &self.reader;
        let grid = io.stage().grid.clone();
        let total = grid.num_chunks();
        let p = io.stage().parallel.max(1);
        let mut stored = StoredChunks::new(&reader.info, &grid);
        let mut n = 0;
        while n < total {
            io.check_cancel()?;
            let batch: Vec<u64> = (n..(n + p as u64).min(total)).collect();
            // The stored chunks this batch starts, decoded `parallel` at a time.
            let missing = stored.missing(&batch);
            for group in missing.chunks(p) {
                io.check_cancel()?;
                #[allow(clippy::type_complexity)]
                let decoded: Vec<(Vec<u64>, f64, Result<ArrayData, String>)> =
                    io.pool().install(|| {
                        group
                            .par_iter()
                            .map(|s| {
                                let t = Instant::now();
                                let d = reader.read_stored(s).map_err(|e| e.to_string());
                                (s.clone(), t.elapsed().as_secs_f64(), d)
                            })
                            .collect()
                    });
                for (s, secs, d) in decoded {
                    io.count_busy(secs);
                    // Name the first stream chunk that needed it.
                    let first = batch
                        .iter()
                        .map(|&k| grid.unravel(k))
                        .find(|i| stored.needs(&grid.region(i), &s))
                        .unwrap_or_else(|| grid.unravel(batch[0]));
                    let d = d.map_err(|m| io.err(Some(&first), m))?;
                    stored.insert(s, d);
                }
            }
            let results = io.make_chunks(&batch, |region, _| {
                stored
                    .cut(region, &reader.info.path)
                    .map_err(|e| e.to_string())
            });
            let mut bytes = stored.held_bytes();
            let mut chunks = Vec::with_capacity(results.len());
            for r in results {
                let c = r.map_err(|(i, m)| io.err(Some(&i), m))?;
                bytes += c.nbytes();
                chunks.push(c);
            }
            io.note_held(bytes);
            n += batch.len() as u64;
            // Drop what no later stream chunk needs before waiting on the channel.
            stored.release_before(n);
            for c in chunks {
                io.send_chunk(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::catalog::FakeCatalog;
    use blockflow_core::DType;
    use std::path::Path;

    fn planned(body: &str, catalog: &FakeCatalog) -> Result<crate::plan::PlannedStage, String> {
        let text = format!("[pipeline]\nmemory = \"1 GiB\"\nthreads = 2\n[stage.s]\n{body}\n");
        plan_text(&text, catalog).map(|p| stage_named(&p, "s").clone())
    }

    fn catalog() -> FakeCatalog {
        let c = FakeCatalog::default();
        c.add_zarr(Path::new("/data/a.zarr"), DType::U16, &[100, 60], &[50, 60]);
        c
    }

    #[test]
    fn plans_the_stored_grid_and_memory() {
        let s =
            planned("kind = \"read-zarr\"\npath = \"/data/a.zarr\"", &catalog()).expect("plans");
        assert_eq!(s.output.as_ref().map(|o| o.dtype), Some(DType::U16));
        assert_eq!(s.grid.shape(), &[100, 60]);
        assert_eq!(s.grid.chunk_shape(), &[50, 60]);
        // 2 at once: the 6000-byte result and two stored chunks of 6000.
        assert_eq!(s.mem.working, 2 * (6000 + 2 * 6000));
    }

    #[test]
    fn plans_finer_stream_chunks_decoding_each_stored_chunk_once() {
        let s = planned(
            "kind = \"read-zarr\"\npath = \"/data/a.zarr\"\nchunks = [10, 60]",
            &catalog(),
        )
        .expect("plans");
        assert_eq!(s.grid.chunk_shape(), &[10, 60]);
        let op = &s.kind;
        assert!(op.describe().contains("decoded once"), "{}", op.describe());
        // The stored chunks held, twice more each of those being decoded
        // (at most `parallel`), and 2 stream chunks of 1200 bytes.
        let held = held_stored_chunks(&[100, 60], &[50, 60], &[10, 60], 2) as u64;
        assert_eq!(s.mem.working, (held + 2 * held.min(2)) * 6000 + 2 * 1200);
    }

    #[test]
    fn an_array_in_object_storage_counts_its_requests_in_flight() {
        let c = catalog();
        c.add_zarr(
            Path::new("s3://bucket/a.zarr"),
            DType::U16,
            &[100, 60],
            &[50, 60],
        );
        let s = planned("kind = \"read-zarr\"\npath = \"s3://bucket/a.zarr\"", &c).expect("plans");
        // As on disk, and one response body of a stored chunk per read in flight.
        assert_eq!(s.mem.working, 2 * (6000 + 2 * 6000) + 2 * 6000);
        assert!(s.kind.describe().contains("s3://bucket/a.zarr"));
        assert!(s.kind.describe().contains("in flight"));
    }

    #[test]
    fn refuses_a_missing_array_and_chunks_of_another_rank() {
        let e = planned("kind = \"read-zarr\"\npath = \"/data/b.zarr\"", &catalog())
            .expect_err("refused");
        assert!(e.contains("/data/b.zarr"), "{e}");
        let e = planned(
            "kind = \"read-zarr\"\npath = \"/data/a.zarr\"\nchunks = [10]",
            &catalog(),
        )
        .expect_err("refused");
        // On the `chunks` line.
        assert!(
            e.contains("test.toml:7:") && e.contains("chunk shape [10] has 1 axes"),
            "{e}"
        );
    }
}

//! `write-hdf5`: the stream as one chunked HDF5 dataset, moved into place
//! when the whole run succeeded.

use std::path::PathBuf;

use blockflow_core::DType;
use blockflow_io::hdf5::{Hdf5Options, Hdf5Writer};
use blockflow_io::IoError;

use super::stored::StoreSink;
use super::{
    p, Arity, BuildCx, ChunkSink, Exec, KindDef, MemoryCx, PType, PathRole, PlanCx, Planned,
    SinkOp, Stage, Writes,
};

pub static KIND: KindDef = KindDef {
    kind: "write-hdf5",
    role: "writer",
    summary: "the stream as one chunked HDF5 dataset, written in `PATH.partial` and moved into place when the whole run succeeded; readable by h5py; the dataset carries the string attributes `pipeline`, `stage` and `blockflow_version`, and its axes' names as dimension labels (h5py's `ds.dims[i].label`)",
    inputs: Arity::Exactly(1),
    params: &[
        p("path", PType::Path(PathRole::Output), None, "the HDF5 file"),
        p("dataset", PType::Str, Some("data"), "the dataset's name"),
        p("chunks", PType::Shape, Some(""), "the dataset's chunks (default: the stream's)"),
        p("compression", PType::Choice(&["none", "gzip"]), Some("none"), "the dataset's filter: gzip (deflate, what h5py's `compression=\"gzip\"` writes and every HDF5 reader has) or none"),
        p("level", PType::Int(0, 9), Some("4"), "the gzip level (h5py's default: 4)"),
        p("shuffle", PType::Bool, Some("true"), "the byte-shuffle filter before gzip (h5py's `shuffle=True`): better ratios for numbers"),
        p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when the file exists"),
        p("axes", PType::Names, Some(""), "the axes' names, one per axis, written as the dimension labels (ASCII); default: the names the input has, else none"),
    ],
    example: "inputs = [\"frames\"]\npath = \"out.h5\"",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct WriteHdf5 {
    pub path: PathBuf,
    pub dataset: String,
    pub chunks: Vec<u64>,
    pub overwrite: bool,
    /// Compression and the attributes written with the dataset.
    pub options: Hdf5Options,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let stream = cx.input(0)?.clone();
    if stream.dtype == DType::Bool {
        return cx.err(
            "inputs",
            "HDF5 output of booleans is not supported; cast to uint8 first",
        );
    }
    let chunks =
        cx.p.shape("chunks")
            .unwrap_or_else(|| stream.grid.chunk_shape().to_vec());
    let gzip = cx.p.str("compression").as_deref() == Some("gzip");
    let labels = match cx.p.names("axes").filter(|v| !v.is_empty()) {
        Some(axes) => {
            let nd = stream.shape().len();
            let ascii = axes.iter().find(|a| !a.is_ascii());
            if let Err(e) = blockflow_io::zarr::check_names(&axes, nd) {
                return cx.err("axes", e);
            }
            if let Some(a) = ascii {
                return cx.err(
                    "axes",
                    format!("HDF5 dimension labels are ASCII: \"{a}\" is not"),
                );
            }
            Some(axes)
        }
        None => stream
            .names
            .clone()
            .filter(|n| n.iter().all(|a| a.is_ascii())),
    };
    let options = Hdf5Options {
        gzip: gzip.then(|| cx.p.int("level").unwrap_or(4).clamp(0, 9) as u8),
        shuffle: gzip && cx.p.bool("shuffle").unwrap_or(true),
        attrs: vec![
            ("pipeline".into(), cx.pipeline.to_string()),
            ("stage".into(), cx.name().to_string()),
            (
                "blockflow_version".into(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ],
        labels,
    };
    let stage = WriteHdf5 {
        path: cx.path("path")?,
        dataset: cx.p.str("dataset")?,
        chunks,
        overwrite: cx.p.str("if_exists").as_deref() == Some("overwrite"),
        options,
    };
    Some(Planned::sink(stage, stream.grid.clone()))
}

impl Stage for WriteHdf5 {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        let filter = match (self.options.gzip, self.options.shuffle) {
            (Some(l), true) => format!(", shuffle + gzip level {l}"),
            (Some(l), false) => format!(", gzip level {l}"),
            (None, _) => String::new(),
        };
        format!(
            "HDF5 {} dataset \"{}\" in chunks of {:?}{filter}",
            self.path.display(),
            self.dataset,
            self.chunks
        )
    }
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        2 * m.in_bytes
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Sink(self)
    }
    fn serial(&self) -> bool {
        true
    }
    fn writes(&self) -> Option<Writes<'_>> {
        Some(Writes::Files(std::slice::from_ref(&self.path)))
    }
}

impl SinkOp for WriteHdf5 {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSink>, IoError> {
        let spec = cx
            .inputs
            .first()
            .and_then(Option::as_ref)
            .ok_or_else(|| IoError::Store {
                path: self.path.clone(),
                why: "internal: no input".into(),
            })?;
        let w = Hdf5Writer::create_with(
            &self.path,
            &self.dataset,
            spec.dtype,
            spec.shape(),
            &self.chunks,
            self.overwrite,
            &self.options,
        )?;
        Ok(StoreSink::boxed(Box::new(w)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn plans_one_chunk_at_a_time_with_the_streams_chunks() {
        let s = plan_one(
            "kind = \"write-hdf5\"\npath = \"o.h5\"",
            &[DType::U16],
            &[10, 12],
            &[4, 5],
        );
        assert!(s.output.is_none());
        assert_eq!(s.parallel, 1);
        assert_eq!(s.mem.working, 2 * 40);
        let op = &s.kind;
        assert_eq!(
            op.describe(),
            "HDF5 /cfg/o.h5 dataset \"data\" in chunks of [4, 5]"
        );
        assert!(
            matches!(op.writes(), Some(Writes::Files([p])) if p == std::path::Path::new("/cfg/o.h5"))
        );
    }

    #[test]
    fn refuses_booleans() {
        let e = plan_err(
            "kind = \"write-hdf5\"\npath = \"o.h5\"",
            &[DType::Bool],
            &[10],
            &[5],
        );
        assert!(e.contains("booleans is not supported"), "{e}");
    }
}

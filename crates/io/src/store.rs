//! The seams between the engine and the stores: a [`ChunkSource`] says
//! what array it holds and reads any region of it; a [`ChunkSink`] writes
//! chunks (several at once, from any thread) and commits. The engine's
//! readers and writers hold these, so none of them matches on a concrete
//! store type.

use std::path::PathBuf;

use blockflow_core::{ArrayData, DType, Region};

use crate::hdf5::{Hdf5Reader, Hdf5Writer, StackReader};
use crate::zarr::{ZarrReader, ZarrWriter};
use crate::IoError;

/// What a source holds: the array's dtype and shape, and the chunks it
/// is stored in (the whole array for one stored contiguously).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
}

/// An array that can be read by regions.
pub trait ChunkSource: Send + Sync {
    /// The array it holds.
    fn spec(&self) -> StoreSpec;
    /// The values of `region`; `chunk` is the caller's chunk index, named
    /// in errors where the store names one.
    fn read(&self, region: &Region, chunk: &[u64]) -> Result<ArrayData, IoError>;
}

/// An output written chunk by chunk, in place only once committed
/// (dropping it uncommitted removes what was written).
pub trait ChunkSink: Send + Sync {
    /// Writes `data` at `region`; `chunk` is its index, named in errors.
    fn write(&self, region: &Region, data: &ArrayData, chunk: &[u64]) -> Result<(), IoError>;
    /// Bytes it holds between writes (the shards of a sharded Zarr array
    /// not yet filled).
    fn held_bytes(&self) -> u64 {
        0
    }
    /// Puts the output in place; returns the paths written.
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError>;
}

impl ChunkSource for ZarrReader {
    fn spec(&self) -> StoreSpec {
        StoreSpec {
            dtype: self.info.dtype,
            shape: self.info.shape.clone(),
            chunks: self.info.chunks.clone(),
        }
    }
    fn read(&self, region: &Region, chunk: &[u64]) -> Result<ArrayData, IoError> {
        ZarrReader::read(self, region, chunk)
    }
}

impl ChunkSource for Hdf5Reader {
    fn spec(&self) -> StoreSpec {
        StoreSpec {
            dtype: self.info.dtype,
            shape: self.info.shape.clone(),
            chunks: self
                .info
                .chunks
                .clone()
                .unwrap_or_else(|| self.info.shape.clone()),
        }
    }
    fn read(&self, region: &Region, _chunk: &[u64]) -> Result<ArrayData, IoError> {
        Hdf5Reader::read(self, region)
    }
}

impl ChunkSource for StackReader {
    /// One timepoint per stored chunk.
    fn spec(&self) -> StoreSpec {
        let mut chunks = vec![1];
        chunks.extend(&self.frame);
        StoreSpec {
            dtype: self.dtype,
            shape: self.shape(),
            chunks,
        }
    }
    fn read(&self, region: &Region, _chunk: &[u64]) -> Result<ArrayData, IoError> {
        StackReader::read(self, region)
    }
}

impl ChunkSink for ZarrWriter {
    fn write(&self, region: &Region, data: &ArrayData, chunk: &[u64]) -> Result<(), IoError> {
        ZarrWriter::write(self, region, data, chunk)
    }
    fn held_bytes(&self) -> u64 {
        ZarrWriter::held_bytes(self)
    }
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError> {
        self.finish().map(|p| vec![p])
    }
}

impl ChunkSink for Hdf5Writer {
    fn write(&self, region: &Region, data: &ArrayData, _chunk: &[u64]) -> Result<(), IoError> {
        Hdf5Writer::write(self, region, data)
    }
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError> {
        self.finish().map(|p| vec![p])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zarr::{Codec, ZarrWriteOptions};

    fn options(shape: &[u64], chunks: &[u64]) -> ZarrWriteOptions {
        ZarrWriteOptions {
            zarr_format: 3,
            dtype: DType::F64,
            shape: shape.to_vec(),
            chunks: chunks.to_vec(),
            codec: Codec::None,
            level: 0,
            shards: None,
            encoding: Default::default(),
            dimension_names: None,
            overwrite: false,
            attributes: Default::default(),
        }
    }

    #[test]
    fn a_zarr_array_written_and_read_through_the_seams() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.zarr");
        let sink: Box<dyn ChunkSink> =
            Box::new(ZarrWriter::create(&path, &options(&[4, 3], &[2, 3])).expect("create"));
        for i in 0..2u64 {
            let region = Region::new(vec![2 * i, 0], vec![2, 3]);
            let values: Vec<f64> = (0..6).map(|k| (6 * i + k) as f64).collect();
            let data = ArrayData::F64(
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 3]), values).expect("shape"),
            );
            sink.write(&region, &data, &[i, 0]).expect("write");
        }
        assert!(!path.exists(), "not in place before the commit");
        assert_eq!(sink.commit().expect("commit"), vec![path.clone()]);
        let source: Box<dyn ChunkSource> = Box::new(ZarrReader::open(&path).expect("open"));
        assert_eq!(
            source.spec(),
            StoreSpec {
                dtype: DType::F64,
                shape: vec![4, 3],
                chunks: vec![2, 3]
            }
        );
        let got = source
            .read(&Region::new(vec![1, 1], vec![2, 2]), &[0, 0])
            .expect("read");
        assert_eq!(
            got.to_f64().iter().copied().collect::<Vec<_>>(),
            vec![4.0, 5.0, 7.0, 8.0]
        );
    }

    #[test]
    fn a_sink_dropped_uncommitted_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("b.zarr");
        let sink: Box<dyn ChunkSink> =
            Box::new(ZarrWriter::create(&path, &options(&[2], &[2])).expect("create"));
        drop(sink);
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;
    use crate::images::{write_png, ImageStack};

    #[test]
    fn an_image_stack_reads_whole_images_and_parts_of_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut files = Vec::new();
        for i in 0..3u8 {
            let values: Vec<u8> = (0..6).map(|k| 10 * i + k).collect();
            let image = ArrayData::U8(
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 3, 1]), values).expect("shape"),
            );
            let path = dir.path().join(format!("i{i}.png"));
            write_png(&path, &image).expect("png");
            files.push(path);
        }
        let stack = ImageStack {
            files,
            image: vec![2, 3, 1],
            dtype: DType::U8,
        };
        assert_eq!(stack.spec().shape, vec![3, 2, 3, 1]);
        let whole = stack
            .read(&Region::new(vec![1, 0, 0, 0], vec![2, 2, 3, 1]), &[1])
            .expect("reads");
        assert_eq!(whole.shape(), &[2, 2, 3, 1]);
        let part = stack
            .read(&Region::new(vec![2, 1, 1, 0], vec![1, 1, 2, 1]), &[])
            .expect("reads");
        assert_eq!(
            part.to_f64().iter().copied().collect::<Vec<_>>(),
            vec![24.0, 25.0]
        );
    }
}

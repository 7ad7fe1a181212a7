//! A gzip-compressed Zarr chunk with bytes after its gzip stream is a
//! damaged chunk: reading it is an error naming the array and the chunk,
//! as zarr-python's is (zarrs alone stops at the end of the first gzip
//! member and ignores the rest). The same array unmodified reads fine.
//!
//! The arrays are written by hand (metadata and gzip chunk files), as
//! another implementation would write them: 4 x 6 uint16 in two stored
//! chunks of 4 x 3.

use std::io::Write;
use std::path::{Path, PathBuf};

use blockflow_core::{ArrayData, Region};
use blockflow_io::zarr::ZarrReader;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(5));
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// The values of stored chunk `j` (columns 3j..3j+3), little-endian.
fn chunk_bytes(j: u16) -> Vec<u8> {
    let mut out = Vec::new();
    for r in 0..4u16 {
        for c in 0..3u16 {
            out.extend_from_slice(&(r * 6 + j * 3 + c).to_le_bytes());
        }
    }
    out
}

/// Writes the array in Zarr `format` (2 or 3); returns its path and the
/// file of stored chunk [0, 1].
fn write_array(dir: &Path, format: u8) -> (PathBuf, PathBuf) {
    let path = dir.join(format!("v{format}.zarr"));
    std::fs::create_dir_all(&path).expect("mkdir");
    let key = |j: u16| {
        if format == 2 {
            path.join(format!("0.{j}"))
        } else {
            path.join("c").join("0").join(j.to_string())
        }
    };
    if format == 2 {
        std::fs::write(
            path.join(".zarray"),
            r#"{"zarr_format": 2, "shape": [4, 6], "chunks": [4, 3], "dtype": "<u2",
                "compressor": {"id": "gzip", "level": 5}, "fill_value": 0, "order": "C",
                "filters": null}"#,
        )
        .expect("metadata");
    } else {
        std::fs::create_dir_all(path.join("c").join("0")).expect("mkdir");
        std::fs::write(
            path.join("zarr.json"),
            r#"{"zarr_format": 3, "node_type": "array", "shape": [4, 6], "data_type": "uint16",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 3]}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": 0,
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                           {"name": "gzip", "configuration": {"level": 5}}]}"#,
        )
        .expect("metadata");
    }
    for j in 0..2 {
        std::fs::write(key(j), gzip(&chunk_bytes(j))).expect("chunk");
    }
    (path.clone(), key(1))
}

fn whole() -> Region {
    Region::new(vec![0, 0], vec![4, 6])
}

fn expected() -> ArrayData {
    ArrayData::U16(
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[4, 6]), (0..24).collect()).expect("shape"),
    )
}

#[test]
fn a_gzip_chunk_with_trailing_garbage_is_an_error_naming_the_array_and_chunk() {
    let dir = tempfile::tempdir().expect("tmp");
    for format in [2, 3] {
        let (path, chunk_file) = write_array(dir.path(), format);
        // Unmodified: reads whole, by region and by stored chunk.
        let r = ZarrReader::open(&path).expect("open");
        assert_eq!(r.read(&whole(), &[0, 0]).expect("read"), expected());
        assert!(r.read_stored(&[0, 1]).is_ok());
        // Zero padding after the gzip stream is allowed (as in Python's gzip).
        let mut padded = std::fs::read(&chunk_file).expect("read chunk");
        padded.extend_from_slice(&[0; 16]);
        std::fs::write(&chunk_file, &padded).expect("pad");
        assert_eq!(r.read(&whole(), &[0, 0]).expect("padded"), expected());

        // Garbage appended to stored chunk [0, 1].
        let mut damaged = padded;
        damaged.extend_from_slice(b"trailing garbage");
        std::fs::write(&chunk_file, &damaged).expect("damage");
        let r = ZarrReader::open(&path).expect("open");
        let e = r
            .read(&Region::new(vec![0, 2], vec![4, 3]), &[0, 1])
            .expect_err("a damaged chunk must not read")
            .to_string();
        assert!(e.contains(&path.display().to_string()), "v{format}: {e}");
        assert!(e.contains("chunk [0, 1]"), "v{format}: {e}");
        assert!(
            e.contains("trailing data after the gzip stream"),
            "v{format}: {e}"
        );
        let e = r
            .read_stored(&[0, 1])
            .expect_err("a damaged chunk must not read")
            .to_string();
        assert!(e.contains(&path.display().to_string()), "v{format}: {e}");
        assert!(e.contains("stored chunk [0, 1]"), "v{format}: {e}");
        let file = if format == 2 { "0.1" } else { "c/0/1" };
        assert!(e.contains(&format!("(file {file})")), "v{format}: {e}");
        assert!(
            e.contains("trailing data after the gzip stream"),
            "v{format}: {e}"
        );
        // The undamaged chunk still reads.
        assert!(r
            .read(&Region::new(vec![0, 0], vec![4, 3]), &[0, 0])
            .is_ok());
    }
}

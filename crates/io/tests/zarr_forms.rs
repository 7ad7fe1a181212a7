//! Zarr forms blockflow writes and reads: every codec, both formats, both
//! byte orders, sharded arrays (filled from chunks that arrive in any
//! order), axis names; the metadata holds only standard keys; numcodecs'
//! lz4 chunk layout read from bytes written by hand.

use std::path::Path;

use blockflow_core::{ArrayData, DType, Region};
use blockflow_io::zarr::{
    BloscCname, Codec, Encoding, Shuffle, ZarrReader, ZarrWriteOptions, ZarrWriter,
};
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

/// A deterministic array of `dtype` and `shape` with varied values.
fn values(dtype: DType, shape: &[usize]) -> ArrayData {
    let n: usize = shape.iter().product();
    let f: Vec<f64> = (0..n)
        .map(|i| ((i * 7919 + 13) % 1000) as f64 - 300.0)
        .collect();
    let a = ArrayD::from_shape_vec(IxDyn(shape), f).expect("shape");
    match dtype {
        DType::Bool => ArrayData::Bool(a.mapv(|x| x > 0.0)),
        DType::F32 => ArrayData::F32(a.mapv(|x| x as f32 / 7.0)),
        DType::F64 => ArrayData::F64(a.mapv(|x| x / 7.0)),
        DType::U8 => ArrayData::U8(a.mapv(|x| (x.abs() as u64 % 256) as u8)),
        DType::U16 => ArrayData::U16(a.mapv(|x| (x.abs() * 61.0) as u16)),
        DType::U32 => ArrayData::U32(a.mapv(|x| (x.abs() * 1e6) as u32)),
        DType::I16 => ArrayData::I16(a.mapv(|x| (x * 97.0) as i16)),
        DType::I32 => ArrayData::I32(a.mapv(|x| (x * 1e6) as i32)),
        DType::I64 => ArrayData::I64(a.mapv(|x| (x * 1e12) as i64)),
    }
}

/// The block of `a` at `region`.
fn cut(a: &ArrayData, region: &Region) -> ArrayData {
    blockflow_core::with_array!(a, x => {
        let s = x.slice_each_axis(|ax| {
            let i = ax.axis.index();
            ndarray::Slice::from(region.origin[i] as usize..(region.origin[i] + region.shape[i]) as usize)
        });
        blockflow_core::ArrayKind::wrap(s.to_owned())
    })
}

/// Every region of a `chunks` grid over `shape`, row-major.
fn grid(shape: &[u64], chunks: &[u64]) -> Vec<Region> {
    let mut out = vec![Region::new(vec![], vec![])];
    for (&n, &c) in shape.iter().zip(chunks) {
        out = out
            .into_iter()
            .flat_map(|r| {
                (0..n.div_ceil(c)).map(move |k| {
                    let mut o = r.origin.clone();
                    let mut s = r.shape.clone();
                    o.push(k * c);
                    s.push(c.min(n - k * c));
                    Region::new(o, s)
                })
            })
            .collect();
    }
    out
}

fn whole(shape: &[u64]) -> Region {
    Region::new(vec![0; shape.len()], shape.to_vec())
}

/// Writes `data` in `stream` chunks, in `order` (indices into the
/// row-major list), and reads it back whole.
fn write_read(
    path: &Path,
    o: &ZarrWriteOptions,
    data: &ArrayData,
    stream: &[u64],
    order: &[usize],
) {
    let w = ZarrWriter::create(path, o).expect("create");
    let regions = grid(&o.shape, stream);
    assert_eq!(order.len(), regions.len());
    for &k in order {
        let r = &regions[k];
        w.write(r, &cut(data, r), &[k as u64]).expect("write");
    }
    assert_eq!(w.held_bytes(), 0, "no shard left half filled");
    w.finish().expect("finish");
    let r = ZarrReader::open(path).expect("open");
    assert_eq!(r.info.dtype, o.dtype);
    assert_eq!(r.info.shape, o.shape);
    assert_eq!(r.info.chunks, o.chunks, "the stored (inner) chunks");
    assert_eq!(r.info.shards, o.shards);
    assert_eq!(r.info.dimension_names, Some(o.names()));
    let back = r.read(&whole(&o.shape), &[]).expect("read");
    assert_eq!(&back, data, "{} {:?}", path.display(), o.codec);
}

fn options(format: u8, dtype: DType, shape: &[u64], chunks: &[u64]) -> ZarrWriteOptions {
    let mut o = ZarrWriteOptions::plain(format, dtype, shape.to_vec(), chunks.to_vec());
    o.level = 3;
    o
}

fn metadata(path: &Path, format: u8) -> (Value, Value) {
    let read = |f: &str| -> Value {
        std::fs::read_to_string(path.join(f))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    if format == 2 {
        (read(".zarray"), read(".zattrs"))
    } else {
        let m = read("zarr.json");
        let a = m.get("attributes").cloned().unwrap_or(Value::Null);
        (m, a)
    }
}

#[test]
fn every_codec_format_byte_order_and_dtype_round_trips() {
    let dir = tempfile::tempdir().expect("tmp");
    let shape = [9u64, 11];
    let chunks = [4u64, 5];
    let n = grid(&shape, &chunks).len();
    let mut cases = 0;
    for format in [2u8, 3] {
        for dtype in DType::ALL.iter() {
            for codec in [
                Codec::None,
                Codec::Zstd,
                Codec::Blosc,
                Codec::Gzip,
                Codec::Zlib,
                Codec::Lz4,
            ] {
                for big in [false, true] {
                    let mut o = options(format, *dtype, &shape, &chunks);
                    o.codec = codec;
                    o.encoding.big_endian = big;
                    o.encoding.checksum = format == 3 && big;
                    let path = dir
                        .path()
                        .join(format!("{format}-{dtype}-{codec:?}-{big}.zarr"));
                    let data = values(*dtype, &[9, 11]);
                    write_read(&path, &o, &data, &chunks, &(0..n).collect::<Vec<_>>());
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 2 * 9 * 6 * 2);
}

#[test]
fn blosc_with_each_compressor_and_shuffle_round_trips() {
    let dir = tempfile::tempdir().expect("tmp");
    for format in [2u8, 3] {
        for cname in BloscCname::NAMES {
            for shuffle in Shuffle::NAMES {
                let mut o = options(format, DType::I32, &[20, 7], &[8, 7]);
                o.codec = Codec::Blosc;
                o.encoding = Encoding {
                    cname: BloscCname::parse(cname).expect("cname"),
                    shuffle: Shuffle::parse(shuffle).expect("shuffle"),
                    ..Encoding::default()
                };
                let path = dir.path().join(format!("{format}-{cname}-{shuffle}.zarr"));
                write_read(
                    &path,
                    &o,
                    &values(DType::I32, &[20, 7]),
                    &[8, 7],
                    &[0, 1, 2],
                );
                let (m, _) = metadata(&path, format);
                let text = m.to_string();
                assert!(text.contains(&format!("\"cname\":\"{cname}\"")), "{text}");
            }
        }
    }
}

#[test]
fn metadata_has_standard_keys_names_and_no_zarrs_attribute() {
    let dir = tempfile::tempdir().expect("tmp");
    for format in [2u8, 3] {
        let path = dir.path().join(format!("m{format}.zarr"));
        let mut o = options(format, DType::U16, &[6, 4, 3], &[3, 4, 3]);
        o.codec = Codec::Zstd;
        o.dimension_names = Some(vec!["y".into(), "x".into(), "c".into()]);
        write_read(
            &path,
            &o,
            &values(DType::U16, &[6, 4, 3]),
            &[3, 4, 3],
            &[1, 0],
        );
        let (m, attrs) = metadata(&path, format);
        assert!(!m.to_string().contains("_zarrs"), "{m}");
        assert!(!attrs.to_string().contains("_zarrs"), "{attrs}");
        if format == 2 {
            let keys: Vec<&String> = m.as_object().expect("object").keys().collect();
            for k in &keys {
                assert!(
                    [
                        "zarr_format",
                        "shape",
                        "chunks",
                        "dtype",
                        "compressor",
                        "fill_value",
                        "order",
                        "filters",
                        "dimension_separator"
                    ]
                    .contains(&k.as_str()),
                    "non-standard key {k} in .zarray: {m}"
                );
            }
            assert_eq!(
                attrs["_ARRAY_DIMENSIONS"],
                serde_json::json!(["y", "x", "c"])
            );
        } else {
            assert_eq!(m["dimension_names"], serde_json::json!(["y", "x", "c"]));
        }
        // Unnamed axes are written with xarray's names for them.
        let path = dir.path().join(format!("u{format}.zarr"));
        let o = options(format, DType::U8, &[5], &[5]);
        write_read(&path, &o, &values(DType::U8, &[5]), &[5], &[0]);
        let (m, attrs) = metadata(&path, format);
        let names = if format == 2 {
            &attrs["_ARRAY_DIMENSIONS"]
        } else {
            &m["dimension_names"]
        };
        assert_eq!(names, &serde_json::json!(["dim_0"]));
    }
}

/// A permutation of 0..n that is far from row-major (a fixed shuffle).
fn scrambled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

#[test]
fn a_sharded_array_is_filled_from_chunks_in_any_order() {
    let dir = tempfile::tempdir().expect("tmp");
    // 3-D, shards of 2 x 2 inner chunks along the first two axes, edge
    // shards partial, stream chunks one inner chunk (and two along axis 1).
    let shape = [13u64, 10, 3];
    let chunks = [3u64, 2, 3];
    let shards = [6u64, 4, 3];
    for (case, (stream, codec)) in [
        ([3u64, 2, 3], Codec::Zstd),
        ([3, 4, 3], Codec::Blosc),
        ([6, 4, 3], Codec::None),
    ]
    .into_iter()
    .enumerate()
    {
        let n = grid(&shape, &stream).len();
        for (k, order) in [
            (0..n).collect::<Vec<_>>(),
            scrambled(n),
            (0..n).rev().collect(),
        ]
        .into_iter()
        .enumerate()
        {
            let mut o = options(3, DType::F32, &shape, &chunks);
            o.shards = Some(shards.to_vec());
            o.codec = codec;
            o.dimension_names = Some(vec!["z".into(), "y".into(), "x".into()]);
            let path = dir.path().join(format!("s-{case}-{k}.zarr"));
            let data = values(DType::F32, &[13, 10, 3]);
            write_read(&path, &o, &data, &stream, &order);
            // One file per shard: 3 x 3 of them.
            let files = walk(&path.join("c"));
            assert_eq!(files.len(), 9, "{files:?}");
            // Parts of the array read through inner chunks and across shards.
            let r = ZarrReader::open(&path).expect("open");
            for region in [
                Region::new(vec![5, 3, 1], vec![4, 5, 2]),
                Region::new(vec![12, 9, 0], vec![1, 1, 3]),
            ] {
                assert_eq!(r.read(&region, &[]).expect("part"), cut(&data, &region));
            }
            let inner = r.read_stored(&[4, 4, 0]).expect("inner chunk");
            assert_eq!(
                inner,
                cut(&data, &Region::new(vec![12, 8, 0], vec![1, 2, 3]))
            );
            let m: Value = serde_json::from_str(
                &std::fs::read_to_string(path.join("zarr.json")).expect("meta"),
            )
            .expect("json");
            assert_eq!(m["codecs"][0]["name"], "sharding_indexed", "{m}");
            assert_eq!(
                m["chunk_grid"]["configuration"]["chunk_shape"],
                serde_json::json!(shards)
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn shards_that_are_not_whole_chunks_are_refused_and_half_filled_shards_never_commit() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.zarr");
    let mut o = options(3, DType::U8, &[10, 10], &[4, 4]);
    o.shards = Some(vec![8, 6]);
    let e = ZarrWriter::create(&path, &o)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("bad.zarr"), "{e}");
    assert!(e.contains("axis 1: 6 is not a multiple of 4"), "{e}");
    assert!(!path.exists());
    o.shards = Some(vec![8, 8]);
    o.zarr_format = 2;
    let e = ZarrWriter::create(&path, &o).expect_err("v2").to_string();
    assert!(e.contains("sharding is a Zarr v3 codec"), "{e}");
    // One chunk of a shard of four, then finish: refused, nothing in place.
    o.zarr_format = 3;
    let w = ZarrWriter::create(&path, &o).expect("create");
    let r = Region::new(vec![0, 0], vec![4, 4]);
    w.write(&r, &values(DType::U8, &[4, 4]), &[0, 0])
        .expect("write");
    assert_eq!(w.held_bytes(), 64, "the 8 x 8 shard's buffer");
    let e = w.finish().expect_err("incomplete").to_string();
    assert!(e.contains("never filled") && e.contains("[0, 0]"), "{e}");
    assert!(!path.exists());
}

#[test]
fn numcodecs_lz4_chunks_written_by_hand_are_read() {
    // As numcodecs writes them: the decoded length (u32 little-endian),
    // then an LZ4 block.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("lz4.zarr");
    std::fs::create_dir_all(&path).expect("mkdir");
    std::fs::write(
        path.join(".zarray"),
        r#"{"zarr_format": 2, "shape": [6], "chunks": [4], "dtype": "<i4",
            "compressor": {"id": "lz4", "acceleration": 1}, "fill_value": 0,
            "order": "C", "filters": null}"#,
    )
    .expect("meta");
    for (k, vals) in [(0, [1i32, 2, 3, 4]), (1, [5, 6, 0, 0])] {
        let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(
            path.join(k.to_string()),
            lz4_flex::block::compress_prepend_size(&raw),
        )
        .expect("chunk");
    }
    let r = ZarrReader::open(&path).expect("open");
    let got = r.read(&Region::new(vec![0], vec![6]), &[]).expect("read");
    assert_eq!(
        got,
        ArrayData::I32(ArrayD::from_shape_vec(IxDyn(&[6]), vec![1, 2, 3, 4, 5, 6]).expect("shape"))
    );
    assert!(r.info.codecs.contains("lz4"), "{}", r.info.codecs);
}

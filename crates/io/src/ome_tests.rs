//! The OME-Zarr writer: levels against block means of level 0 computed
//! here from the whole array (as numpy would), on odd shapes and odd
//! chunks, in any arrival order; the metadata; the commit.

use super::*;
use crate::zarr::{Codec, ZarrReader};
use blockflow_core::Region;

/// `(y, x, c)` float32 values with no pattern a downsampler could hide.
fn image(h: usize, w: usize, c: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[h, w, c]), |ix| {
        let (y, x, k) = (ix[0] as f32, ix[1] as f32, ix[2] as f32);
        ((y * 7.3 + x * 3.1 + k * 11.0).sin() * 100.0 + y * x / 10.0).round() / 4.0
    })
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Writes `data` (stream order, axes `axes`) as an OME-Zarr image at
/// `path`, in stream chunks `chunks` (also the stored chunks), the chunks
/// in reverse row-major order (arrival order must not matter).
fn write(
    path: &Path,
    data: &ArrayData,
    axes: &[&str],
    chunks: &[u64],
    levels: Option<usize>,
    how: Downsample,
    version: NgffVersion,
) -> OmeOptions {
    let shape: Vec<u64> = data.shape().iter().map(|&n| n as u64).collect();
    let mut array = ZarrWriteOptions::plain(3, data.dtype(), shape.clone(), chunks.to_vec());
    array.codec = Codec::Zstd;
    array.level = 1;
    let o = OmeOptions::image(version, array, &names(axes), levels, how).expect("options");
    let w = OmeWriter::create(path, &o).expect("create");
    let grid = blockflow_core::ChunkGrid::new(shape, chunks.to_vec()).expect("grid");
    let mut all: Vec<Vec<u64>> = grid.indices().collect();
    all.reverse();
    for index in all {
        let r = grid.region(&index);
        let at: Vec<usize> = r.origin.iter().map(|&o| o as usize).collect();
        let part = data.crop(&at, &r.shape_usize());
        w.write(&r, &part, &index).expect("write");
        assert!(!path.exists(), "nothing at the path before the commit");
    }
    assert_eq!(w.held_bytes(), 0, "every tile completed");
    w.finish().expect("finish");
    o
}

fn read_level(path: &Path, k: usize) -> ArrayData {
    let r = ZarrReader::open(&path.join(k.to_string())).expect("open level");
    let shape = r.info.shape.clone();
    r.read(&Region::new(vec![0; shape.len()], shape), &[])
        .expect("read level")
}

/// numpy's block mean of `a` over blocks of `f` along each axis (the
/// values present at an edge): `a[i*f:(i+1)*f, ...].mean()`.
fn block_mean(a: &ArrayD<f64>, f: &[usize]) -> ArrayD<f64> {
    let out: Vec<usize> = a
        .shape()
        .iter()
        .zip(f)
        .map(|(&n, &f)| n.div_ceil(f))
        .collect();
    ArrayD::from_shape_fn(IxDyn(&out), |ix| {
        let block = a.slice_each_axis(|ax| {
            let i = ax.axis.index();
            let lo = ix[i] * f[i];
            Slice::from(lo..(lo + f[i]).min(a.shape()[i]))
        });
        block.sum() / block.len() as f64
    })
}

#[test]
fn levels_are_block_means_of_level_0_for_odd_shapes_and_any_chunks() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = ArrayData::F32(image(29, 23, 3));
    // Stored (c, y, x): level 0 transposed from the stream's (y, x, c).
    let stored = data.to_f64().permuted_axes(IxDyn(&[2, 0, 1])).to_owned();
    let mut first: Option<Vec<ArrayData>> = None;
    for (i, chunks) in [[5, 3, 3], [29, 23, 3], [1, 1, 3], [7, 23, 3], [4, 6, 1]]
        .iter()
        .enumerate()
    {
        let path = dir.path().join(format!("img{i}.zarr"));
        let o = write(
            &path,
            &data,
            &["y", "x", "c"],
            chunks,
            Some(4),
            Downsample::Mean,
            NgffVersion::V05,
        );
        assert_eq!(o.names, names(&["c", "y", "x"]));
        let shapes: Vec<Vec<u64>> = o.levels.iter().map(|l| l.shape.clone()).collect();
        assert_eq!(
            shapes,
            vec![
                vec![3, 29, 23],
                vec![3, 15, 12],
                vec![3, 8, 6],
                vec![3, 4, 3]
            ]
        );
        let levels: Vec<ArrayData> = (0..4).map(|k| read_level(&path, k)).collect();
        assert_eq!(
            levels[0].to_f64(),
            stored,
            "level 0 is the image, transposed"
        );
        for (k, level) in levels.iter().enumerate().skip(1) {
            let want = block_mean(&stored, &[1, 1 << k, 1 << k]);
            let got = level.to_f64();
            assert_eq!(got.shape(), want.shape());
            let err = got
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-4, "chunks {chunks:?} level {k}: off by {err}");
        }
        // The same levels whatever the chunks (to float32 rounding).
        match &first {
            None => first = Some(levels),
            Some(f) => {
                for k in 0..4 {
                    let d = f[k].to_f64() - levels[k].to_f64();
                    assert!(
                        d.iter().all(|x| x.abs() < 1e-4),
                        "chunks {chunks:?} level {k}"
                    );
                }
            }
        }
    }
}

#[test]
fn integer_means_round_and_3d_volumes_halve_z_too() {
    let dir = tempfile::tempdir().expect("tmp");
    let v = ArrayD::from_shape_fn(IxDyn(&[2, 9, 7, 5]), |ix| {
        ((ix[0] * 31 + ix[1] * 17 + ix[2] * 5 + ix[3] * 3) % 251) as u8
    });
    let path = dir.path().join("vol.zarr");
    let o = write(
        &path,
        &ArrayData::U8(v.clone()),
        &["t", "z", "y", "x"],
        &[1, 4, 3, 5],
        None,
        Downsample::Mean,
        NgffVersion::V04,
    );
    // auto: every extent is under 256 already: one level.
    assert_eq!(o.levels.len(), 1);
    let path = dir.path().join("vol3.zarr");
    let o = write(
        &path,
        &ArrayData::U8(v.clone()),
        &["t", "z", "y", "x"],
        &[1, 4, 3, 5],
        Some(3),
        Downsample::Mean,
        NgffVersion::V04,
    );
    assert_eq!(o.levels[2].shape, vec![2, 3, 2, 2]);
    assert_eq!(o.levels[2].factor, vec![1, 4, 4, 4]);
    let f = v.mapv(f64::from);
    for k in 1..3 {
        let want = block_mean(&f, &[1, 1 << k, 1 << k, 1 << k]);
        let got = read_level(&path, k).to_f64();
        // Each level rounds once more: within half a unit per level.
        let err = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err <= 0.5 * k as f64 + 1e-9, "level {k}: off by {err}");
    }
    // v2 arrays with "/" chunk keys, as NGFF 0.4 requires.
    let zarray: Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("1/.zarray")).expect("zarray"))
            .expect("json");
    assert_eq!(zarray["dimension_separator"], "/");
    assert!(path.join("1/0/0/0/0").is_file(), "chunk keys 0/0/0/0");
}

#[test]
fn labels_downsample_by_mode_or_nearest_in_any_chunks() {
    let dir = tempfile::tempdir().expect("tmp");
    // Labels: blobs of 1..=4 on 0.
    let lab = ArrayD::from_shape_fn(IxDyn(&[21, 19]), |ix| ((ix[0] / 3 + ix[1] / 4) % 5) as u16);
    let data = ArrayData::U16(lab.clone());
    for how in [Downsample::Mode, Downsample::Nearest] {
        let mut want = vec![data.clone()];
        for _ in 1..3 {
            let prev = want.last().expect("level").clone();
            want.push(downsample(&prev, &[true, true], how));
        }
        for chunks in [[21, 19], [5, 7], [3, 2]] {
            let path = dir
                .path()
                .join(format!("{}-{}.zarr", how.name(), chunks[0]));
            write(
                &path,
                &data,
                &["y", "x"],
                &chunks,
                Some(3),
                how,
                NgffVersion::V05,
            );
            for (k, w) in want.iter().enumerate() {
                assert_eq!(
                    &read_level(&path, k),
                    w,
                    "{} chunks {chunks:?} level {k}",
                    how.name()
                );
            }
        }
        if how == Downsample::Nearest {
            let every4 = lab.slice_each_axis(|_| Slice::new(0, None, 4)).to_owned();
            assert_eq!(want[2], ArrayData::U16(every4));
        }
    }
    // The mode by hand: [[1, 1], [2, 3]] -> 1; ties go to the smallest.
    let a = ArrayData::U16(
        ArrayD::from_shape_vec(IxDyn(&[2, 4]), vec![1, 2, 7, 5, 1, 3, 5, 7]).expect("shape"),
    );
    let m = downsample(&a, &[true, true], Downsample::Mode);
    assert_eq!(
        m,
        ArrayData::U16(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1, 5]).expect("shape"))
    );
}

#[test]
fn metadata_lists_axes_levels_and_channels() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("rgb.zarr");
    let data = ArrayData::U8(ArrayD::from_shape_fn(IxDyn(&[10, 12, 3]), |ix| {
        (ix[0] * 12 + ix[1] + ix[2]) as u8
    }));
    write(
        &path,
        &data,
        &["y", "x", "c"],
        &[4, 4, 3],
        Some(3),
        Downsample::Mean,
        NgffVersion::V05,
    );
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("zarr.json")).expect("zarr.json"))
            .expect("json");
    assert_eq!(meta["node_type"], "group");
    let ome = &meta["attributes"]["ome"];
    assert_eq!(ome["version"], "0.5");
    let ms = &ome["multiscales"][0];
    assert_eq!(
        ms["axes"],
        json!([{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}])
    );
    assert_eq!(ms["datasets"][2]["path"], "2");
    assert_eq!(
        ms["datasets"][2]["coordinateTransformations"][0]["scale"],
        json!([1.0, 4.0, 4.0])
    );
    assert_eq!(
        ms["datasets"][2]["coordinateTransformations"][1]["translation"],
        json!([0.0, 1.5, 1.5])
    );
    assert_eq!(ome["omero"]["channels"][1]["label"], "green");
    assert_eq!(
        ome["omero"]["channels"][1]["window"],
        json!({"min": 0.0, "max": 255.0, "start": 0.0, "end": 255.0})
    );
    let level: Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("1/zarr.json")).expect("level"))
            .expect("json");
    assert_eq!(level["dimension_names"], json!(["c", "y", "x"]));
    assert_eq!(level["shape"], json!([3, 5, 6]));
    // read-zarr's reader opens the group as its level 0.
    let r = ZarrReader::open(&path).expect("open the group");
    assert_eq!(r.info.shape, vec![3, 10, 12]);
    assert_eq!(level0(&path), Some(path.join("0")));
    // A float image's windows are the values seen, per channel.
    let path = dir.path().join("f.zarr");
    let data = ArrayData::F32(image(6, 5, 2));
    let o = write(
        &path,
        &data,
        &["y", "x", "c"],
        &[6, 5, 2],
        Some(1),
        Downsample::Mean,
        NgffVersion::V04,
    );
    assert_eq!(o.levels.len(), 1);
    let attrs: Value =
        serde_json::from_str(&std::fs::read_to_string(path.join(".zattrs")).expect("zattrs"))
            .expect("json");
    assert_eq!(attrs["multiscales"][0]["version"], "0.4");
    let c1 = data.to_f64().index_axis(Axis(2), 1).to_owned();
    let lo = c1.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(attrs["omero"]["channels"][1]["window"]["min"], json!(lo));
    assert!(path.join(".zgroup").is_file());
}

#[test]
fn the_image_appears_only_when_complete_and_respects_if_exists() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("a.zarr");
    let data = ArrayData::F32(image(8, 8, 1).index_axis(Axis(2), 0).to_owned());
    let array = ZarrWriteOptions::plain(3, DType::F32, vec![8, 8], vec![4, 4]);
    let o = OmeOptions::image(
        NgffVersion::V05,
        array,
        &names(&["y", "x"]),
        Some(2),
        Downsample::Mean,
    )
    .expect("options");
    // Dropped half written: nothing at the path, no work folder left.
    let w = OmeWriter::create(&path, &o).expect("create");
    w.write(
        &Region::new(vec![0, 0], vec![4, 4]),
        &data.crop(&[0, 0], &[4, 4]),
        &[0, 0],
    )
    .expect("write");
    assert!(w.held_bytes() > 0, "a level-1 tile is open");
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        0,
        "nothing left"
    );
    // A stream that never completes a tile is refused at the commit.
    let w = OmeWriter::create(&path, &o).expect("create");
    w.write(
        &Region::new(vec![0, 0], vec![4, 4]),
        &data.crop(&[0, 0], &[4, 4]),
        &[0, 0],
    )
    .expect("write");
    let e = w.finish().expect_err("incomplete");
    assert!(e.to_string().contains("never completed"), "{e}");
    assert!(!path.exists());
    write(
        &path,
        &data,
        &["y", "x"],
        &[4, 4],
        Some(2),
        Downsample::Mean,
        NgffVersion::V05,
    );
    assert!(path.join("1/zarr.json").is_file());
    // It exists now: refused unless overwrite.
    let e = OmeWriter::create(&path, &o).expect_err("exists");
    assert!(matches!(e, IoError::Exists { .. }), "{e}");
    let mut over = o.clone();
    over.array.overwrite = true;
    assert!(OmeWriter::create(&path, &over).is_ok());
}

#[test]
fn axes_go_to_ngff_order_and_the_pyramid_stops_where_it_fits() {
    assert_eq!(ngff_order(&names(&["y", "x", "c"])), Ok(vec![2, 0, 1]));
    assert_eq!(
        ngff_order(&names(&["x", "t", "z", "y"])),
        Ok(vec![1, 2, 3, 0])
    );
    assert_eq!(
        ngff_order(&names(&["image", "y", "x", "c"])),
        Ok(vec![0, 3, 1, 2])
    );
    assert!(ngff_order(&names(&["a", "b", "y", "x"])).is_err());
    assert!(ngff_order(&names(&["z", "x"])).is_err());
    let k = [AxisKind::Channel, AxisKind::Space, AxisKind::Space];
    // 12000 x 13500 in chunks of 500: halved until one chunk holds a
    // level, 375 x 422 (6 levels).
    let p = pyramid(&[3, 12000, 13500], &[3, 500, 500], &k, None);
    assert_eq!(p.len(), 6);
    assert_eq!(p[5].shape, vec![3, 375, 422]);
    // Or until the largest extent is at most 256: 250 x 250.
    assert_eq!(
        pyramid(&[3, 8000, 8000], &[3, 200, 200], &k, None)[5].shape,
        vec![3, 250, 250]
    );
    // Space axes that fit one chunk stop it early (1000 <= 1024).
    assert_eq!(
        pyramid(&[3, 1000, 4000], &[3, 1024, 4096], &k, None).len(),
        1
    );
    // An axis of 1 is not halved further.
    let p = pyramid(&[1, 3, 64], &[1, 1, 8], &k, Some(4));
    assert_eq!(p[3].shape, vec![1, 1, 8]);
    assert_eq!(p[3].factor, vec![1, 4, 8]);
}

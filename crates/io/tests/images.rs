//! Image stacks: decoding against Pillow/tifffile fixtures (made by
//! scripts/fixtures/make_image_fixtures.py; JPEG within ±2 levels of
//! Pillow's libjpeg-turbo for gray and 4:4:4, ±3 for chroma-subsampled 4:2:0,
//! as decoders are not bit-exact; TIFF and PNG exact), PNG round trips,
//! errors that name the file, glob sorting, and the cell generator.

use std::path::{Path, PathBuf};

use blockflow_core::{ArrayData, DType};
use blockflow_io::images::{
    cell_image, cell_image_is_green, decode_image, image_info, list_images, write_cell_images,
    write_png,
};
use blockflow_io::IoError;
use ndarray::{ArrayD, IxDyn};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().expect("f64"),
        other => other.as_f64().expect("number"),
    }
}

#[test]
fn fixtures_decode_as_pillow_and_tifffile_do() {
    let text = std::fs::read_to_string(fixtures().join("images_pillow.json")).expect("fixture");
    let fx: Value = serde_json::from_str(&text).expect("json");
    let files = fx.as_object().expect("object");
    assert_eq!(files.len(), 14);
    for (name, want) in files {
        let path = fixtures().join(name);
        let got = decode_image(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dtype = DType::parse(want["dtype"].as_str().expect("dtype")).expect("dtype");
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        assert_eq!(got.dtype(), dtype, "{name}");
        assert_eq!(got.shape(), &shape[..], "{name}");
        assert_eq!(
            image_info(&path).expect("info"),
            (shape.clone(), dtype),
            "{name}: header"
        );
        let tol = want["tolerance"].as_f64().expect("tolerance");
        let values: Vec<f64> = want["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(num)
            .collect();
        let mut worst = 0f64;
        for (a, b) in got.to_f64().iter().zip(&values) {
            worst = worst.max((a - b).abs());
        }
        assert!(
            worst <= tol,
            "{name}: differs from Pillow by {worst} > {tol}"
        );
    }
}

fn array<T: Clone>(shape: &[usize], f: impl Fn(usize) -> T) -> ArrayD<T> {
    let n = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(f).collect()).expect("shape")
}

#[test]
fn png_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "rgb8",
            ArrayData::U8(array(&[5, 7, 3], |i| (i * 37 % 256) as u8)),
        ),
        (
            "gray8",
            ArrayData::U8(array(&[4, 9, 1], |i| (i * 11 % 256) as u8)),
        ),
        (
            "ga8",
            ArrayData::U8(array(&[3, 2, 2], |i| (i * 50 % 256) as u8)),
        ),
        (
            "rgba8",
            ArrayData::U8(array(&[6, 3, 4], |i| (255 - i % 256) as u8)),
        ),
        (
            "gray16",
            ArrayData::U16(array(&[5, 6, 1], |i| (i * 2749 % 65536) as u16)),
        ),
        (
            "rgb16",
            ArrayData::U16(array(&[2, 3, 3], |i| (i * 3851 % 65536) as u16)),
        ),
        (
            "rgba16",
            ArrayData::U16(array(&[4, 4, 4], |i| (65535 - i * 1000) as u16)),
        ),
    ];
    for (name, a) in cases {
        let path = dir.path().join(format!("{name}.png"));
        write_png(&path, &a).expect("write");
        assert_eq!(decode_image(&path).expect("decode"), a, "{name}");
        assert_eq!(
            image_info(&path).expect("info"),
            (a.shape().to_vec(), a.dtype()),
            "{name}"
        );
    }
    // A 2-D array is written as gray and read back as (H, W, 1).
    let flat = ArrayData::U8(array(&[3, 4], |i| i as u8));
    let path = dir.path().join("flat.png");
    write_png(&path, &flat).expect("write");
    assert_eq!(decode_image(&path).expect("decode").shape(), &[3, 4, 1]);
    let f = ArrayData::F32(array(&[2, 2, 1], |i| i as f32));
    let err = write_png(&dir.path().join("f.png"), &f).expect_err("float");
    assert!(err.to_string().contains("f.png"), "{err}");
}

fn assert_names_file(err: IoError, name: &str, also: &str) {
    let msg = err.to_string();
    assert!(msg.contains(name), "error does not name {name}: {msg}");
    assert!(msg.contains(also), "error does not say `{also}`: {msg}");
}

#[test]
fn broken_files_are_errors_that_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A truncated PNG.
    let good = dir.path().join("good.png");
    write_png(
        &good,
        &ArrayData::U8(array(&[32, 32, 3], |i| (i * 7 % 256) as u8)),
    )
    .expect("write");
    let bytes = std::fs::read(&good).expect("read");
    let cut = dir.path().join("cut_0001.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    assert_names_file(
        decode_image(&cut).expect_err("truncated"),
        "cut_0001.png",
        "PNG",
    );
    // A text file named .png.
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "these are not pixels\n").expect("write");
    assert_names_file(
        decode_image(&text).expect_err("text"),
        "notes.png",
        "not a PNG, JPEG or TIFF",
    );
    assert_names_file(
        image_info(&text).expect_err("text"),
        "notes.png",
        "not a PNG, JPEG or TIFF",
    );
    // An empty file.
    let empty = dir.path().join("empty.tif");
    std::fs::write(&empty, b"").expect("write");
    assert_names_file(
        decode_image(&empty).expect_err("empty"),
        "empty.tif",
        "empty",
    );
    // A truncated JPEG (strict decoding, as Pillow refuses it too).
    let jpeg = std::fs::read(fixtures().join("rgb_baseline.jpg")).expect("read");
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() * 2 / 3]).expect("write");
    assert_names_file(
        decode_image(&cut).expect_err("truncated jpeg"),
        "cut.jpg",
        "JPEG",
    );
    // A truncated TIFF.
    let tif = std::fs::read(fixtures().join("u8_rgb.tif")).expect("read");
    let cut = dir.path().join("cut.tif");
    std::fs::write(&cut, &tif[..tif.len() / 2]).expect("write");
    assert_names_file(
        decode_image(&cut).expect_err("truncated tiff"),
        "cut.tif",
        "TIFF",
    );
    // A missing file.
    let missing = dir.path().join("missing.png");
    assert!(matches!(
        decode_image(&missing),
        Err(IoError::Missing { .. })
    ));
    // The format comes from the bytes: a PNG named .jpg decodes.
    let renamed = dir.path().join("really_png.jpg");
    std::fs::copy(&good, &renamed).expect("copy");
    assert_eq!(
        decode_image(&renamed).expect("decode").shape(),
        &[32, 32, 3]
    );
}

#[test]
fn glob_sorts_as_python_and_names_the_pattern() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for name in [
        "b.png",
        "a.png",
        "a10.png",
        "a2.png",
        "A.png",
        ".hidden.png",
        "c.txt",
        "a_1.png",
        "z[1].png",
        "ab.png",
    ] {
        std::fs::write(d.join(name), b"x").expect("write");
    }
    let base = d.to_str().expect("utf-8 temp dir");
    let names = |pattern: &str| -> Vec<String> {
        list_images(&format!("{base}/{pattern}"))
            .expect("matches")
            .iter()
            .map(|p| {
                assert_eq!(p.parent(), Some(d), "{p:?}");
                p.file_name().expect("name").to_string_lossy().into_owned()
            })
            .collect()
    };
    // sorted(glob.glob(base + "/*.png")): byte order, no hidden files.
    assert_eq!(
        names("*.png"),
        ["A.png", "a.png", "a10.png", "a2.png", "a_1.png", "ab.png", "b.png", "z[1].png"]
    );
    assert_eq!(names("a?.png"), ["a2.png", "ab.png"]);
    assert_eq!(
        names("[ab]*.png"),
        ["a.png", "a10.png", "a2.png", "a_1.png", "ab.png", "b.png"]
    );
    assert_eq!(names("[!a]*"), ["A.png", "b.png", "c.txt", "z[1].png"]);
    assert_eq!(names("a[0-9]*.png"), ["a10.png", "a2.png"]);
    assert_eq!(names(".*.png"), [".hidden.png"]);
    assert_eq!(names("z[[]1].png"), ["z[1].png"]);
    assert_eq!(names("b.png"), ["b.png"]);
    assert_eq!(
        names("*"),
        [
            "A.png", "a.png", "a10.png", "a2.png", "a_1.png", "ab.png", "b.png", "c.txt",
            "z[1].png"
        ]
    );
    let err = list_images(&format!("{base}/*.jpg")).expect_err("no match");
    assert!(matches!(err, IoError::NoMatch { .. }));
    assert!(err.to_string().contains(&format!("{base}/*.jpg")), "{err}");
    let err = list_images(&format!("{base}/nodir/*.png")).expect_err("no dir");
    assert!(err.to_string().contains("nodir/*.png"), "{err}");
    let err = list_images(&format!("{base}/*/a.png")).expect_err("wildcard dir");
    assert!(err.to_string().contains("file name only"), "{err}");
}

#[test]
fn generator_is_deterministic_and_looks_like_the_seed() {
    let (d1, d2) = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let (h, w) = (64, 48);
    let p1 = write_cell_images(d1.path(), 60, h, w, 7).expect("write");
    let p2 = write_cell_images(d2.path(), 60, h, w, 7).expect("write");
    assert_eq!(p1.len(), 60);
    assert_eq!(p1[3].file_name().expect("name"), "cell_0003.png");
    assert_eq!(
        list_images(&format!("{}/cell_*.png", d1.path().display())).expect("glob"),
        p1
    );
    let mut greens = 0;
    let mut peaks = Vec::new();
    for (i, (a, b)) in p1.iter().zip(&p2).enumerate() {
        assert_eq!(
            std::fs::read(a).expect("a"),
            std::fs::read(b).expect("b"),
            "{a:?}"
        );
        let img = decode_image(a).expect("decode");
        assert_eq!(img.shape(), &[h, w, 3]);
        let ArrayData::U8(x) = img else {
            panic!("uint8")
        };
        assert_eq!(
            x.iter().copied().collect::<Vec<u8>>(),
            cell_image(7, i, h, w)
        );
        let mean = |c: usize| {
            x.index_axis(ndarray::Axis(2), c)
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
                / (h * w) as f64
        };
        let green = mean(0) < mean(1);
        assert_eq!(green, cell_image_is_green(7, i), "image {i}");
        greens += green as usize;
        peaks.push(*x.iter().max().expect("max"));
        let blue = x.index_axis(ndarray::Axis(2), 2);
        let constant = blue.iter().all(|&v| v == blue[[0, 0]]);
        assert_eq!(
            constant,
            i % 53 == 7 || i % 53 == 29,
            "image {i}: constant blue"
        );
    }
    assert!((18..=42).contains(&greens), "{greens} green of 60");
    // Brightness varies: some dim images, some saturated ones.
    assert!(peaks.iter().any(|&p| p < 120), "{peaks:?}");
    assert!(peaks.contains(&255), "{peaks:?}");
    // Another seed gives other images.
    assert_ne!(cell_image(8, 0, h, w), cell_image(7, 0, h, w));
}

/// The seed's size: `cargo test --release -p blockflow-io --test images -- --ignored --nocapture`.
#[test]
#[ignore]
fn generator_speed_seed_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = std::time::Instant::now();
    let paths = write_cell_images(dir.path(), 844, 256, 256, 1).expect("write");
    let dt = t.elapsed().as_secs_f64();
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).expect("meta").len())
        .sum();
    let greens = (0..844).filter(|&i| cell_image_is_green(1, i)).count();
    println!(
        "844 cell images 256x256x3: {dt:.2} s, {:.1} MB of PNG, {greens} green",
        bytes as f64 / 1e6
    );
    let t = std::time::Instant::now();
    let list = list_images(&format!("{}/*.png", dir.path().display())).expect("glob");
    for p in &list {
        decode_image(p).expect("decode");
    }
    println!(
        "listed and decoded them again in {:.2} s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn a_matching_directory_or_dangling_link_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for name in ["cell_0004.png", "cell_0006.png"] {
        std::fs::write(d.join(name), b"x").expect("write");
    }
    let base = d.to_str().expect("utf-8 temp dir");
    assert_eq!(
        list_images(&format!("{base}/cell_*.png"))
            .expect("two")
            .len(),
        2
    );
    std::fs::create_dir(d.join("cell_0005.png")).expect("mkdir");
    let err = list_images(&format!("{base}/cell_*.png")).expect_err("a directory matches");
    let msg = err.to_string();
    assert!(
        msg.contains("cell_0005.png") && msg.contains("a directory"),
        "{msg}"
    );
    std::fs::remove_dir(d.join("cell_0005.png")).expect("rmdir");
    std::os::unix::fs::symlink(d.join("gone.png"), d.join("cell_0005.png")).expect("link");
    let err = list_images(&format!("{base}/cell_*.png")).expect_err("a dangling link matches");
    let msg = err.to_string();
    assert!(
        msg.contains("cell_0005.png") && msg.contains("symbolic link"),
        "{msg}"
    );
    // Outside the pattern: no matter.
    assert_eq!(
        list_images(&format!("{base}/cell_0004.png"))
            .expect("one")
            .len(),
        1
    );
}

//! HDF5 in and out: regions of every dtype round-trip, a glob of
//! timepoints stacks in natural order, and a file whose dataset is missing,
//! of another shape or dtype, or not HDF5 at all is an error naming the file
//! and the dataset.

use blockflow_core::{ArrayData, DType, Region};
use blockflow_io::hdf5::{
    natural_cmp, write_timeseries, Hdf5Options, Hdf5Reader, Hdf5Writer, StackReader,
};
use ndarray::{ArrayD, IxDyn};

fn ramp(dtype: DType, shape: &[usize]) -> ArrayData {
    let n: usize = shape.iter().product();
    ArrayData::F64(
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|v| (v % 200) as f64).collect())
            .expect("shape"),
    )
    .cast(dtype)
}

#[test]
fn every_dtype_round_trips_by_regions() {
    let dir = tempfile::tempdir().expect("tmp");
    for dtype in [
        DType::U8,
        DType::U16,
        DType::U32,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F32,
        DType::F64,
    ] {
        let path = dir.path().join(format!("{dtype}.h5"));
        let whole = ramp(dtype, &[6, 7, 5]);
        let w =
            Hdf5Writer::create(&path, "vol", dtype, &[6, 7, 5], &[3, 7, 5], false).expect("create");
        // Written in two slabs.
        for z in [0u64, 3] {
            let r = Region::new(vec![z, 0, 0], vec![3, 7, 5]);
            let part = ramp(DType::F64, &[6, 7, 5]);
            let part = match part {
                ArrayData::F64(a) => ArrayData::F64(
                    a.slice_axis(
                        ndarray::Axis(0),
                        ndarray::Slice::from(z as usize..z as usize + 3),
                    )
                    .to_owned(),
                ),
                _ => unreachable!(),
            }
            .cast(dtype);
            w.write(&r, &part).expect("write");
        }
        assert!(!path.exists(), "not in place before finish");
        w.finish().expect("finish");
        let r = Hdf5Reader::open(&path, "vol").expect("open");
        assert_eq!(r.info.shape, vec![6, 7, 5]);
        assert_eq!(r.info.dtype, dtype);
        assert_eq!(
            r.read(&Region::new(vec![0, 0, 0], vec![6, 7, 5]))
                .expect("read"),
            whole
        );
        let sub = r
            .read(&Region::new(vec![2, 3, 1], vec![2, 2, 3]))
            .expect("read");
        let want = match &whole.cast(DType::F64) {
            ArrayData::F64(a) => {
                ArrayData::F64(a.slice(ndarray::s![2..4, 3..5, 1..4]).to_owned().into_dyn())
                    .cast(dtype)
            }
            _ => unreachable!(),
        };
        assert_eq!(sub, want, "{dtype}");
    }
}

#[test]
fn gzip_with_shuffle_and_attributes_as_h5py_reads_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let whole = ramp(DType::U16, &[40, 50, 30]);
    let region = Region::new(vec![0, 0, 0], vec![40, 50, 30]);
    let write = |name: &str, opts: &Hdf5Options| {
        let path = dir.path().join(name);
        let w = Hdf5Writer::create_with(
            &path,
            "vol",
            DType::U16,
            &[40, 50, 30],
            &[20, 25, 30],
            false,
            opts,
        )
        .expect("create");
        w.write(&region, &whole).expect("write");
        w.finish().expect("finish");
        path
    };
    let plain = write("plain.h5", &Hdf5Options::default());
    let opts = Hdf5Options {
        gzip: Some(6),
        shuffle: true,
        attrs: vec![
            ("pipeline".into(), "p".into()),
            ("stage".into(), "s".into()),
        ],
        labels: Some(vec!["z".into(), "y".into(), "x".into()]),
    };
    let packed = write("packed.h5", &opts);
    let size = |p: &std::path::Path| std::fs::metadata(p).expect("stat").len();
    assert!(
        size(&packed) * 4 < size(&plain),
        "gzip: {} of {} bytes",
        size(&packed),
        size(&plain)
    );
    let r = Hdf5Reader::open(&packed, "vol").expect("open");
    assert_eq!(r.read(&region).expect("read"), whole);
    // The filters and attributes as any HDF5 reader sees them.
    let f = hdf5::File::open(&packed).expect("h5");
    let ds = f.dataset("vol").expect("dataset");
    let filters = ds.filters();
    assert!(
        filters
            .iter()
            .any(|x| matches!(x, hdf5::filters::Filter::Deflate(6))),
        "{filters:?}"
    );
    assert!(
        filters
            .iter()
            .any(|x| matches!(x, hdf5::filters::Filter::Shuffle)),
        "{filters:?}"
    );
    assert_eq!(ds.chunk(), Some(vec![20, 25, 30]));
    let attr = |n: &str| {
        ds.attr(n)
            .and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>())
            .map(|v| v.as_str().to_string())
            .expect("attribute")
    };
    assert_eq!((attr("pipeline"), attr("stage")), ("p".into(), "s".into()));
    let labels: Vec<String> = ds
        .attr("DIMENSION_LABELS")
        .and_then(|a| a.read_raw::<hdf5::types::VarLenAscii>())
        .expect("labels")
        .iter()
        .map(|l| l.as_str().to_string())
        .collect();
    assert_eq!(labels, ["z", "y", "x"]);
}

#[test]
fn a_writer_that_is_not_finished_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("x.h5");
    {
        let _w = Hdf5Writer::create(&path, "d", DType::F32, &[4], &[4], false).expect("create");
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn timepoints_stack_in_natural_order_and_bad_files_are_named() {
    assert_eq!(natural_cmp("t2.h5", "t10.h5"), std::cmp::Ordering::Less);
    assert_eq!(
        natural_cmp("t_0009.h5", "t_0010.h5"),
        std::cmp::Ordering::Less
    );
    let dir = tempfile::tempdir().expect("tmp");
    for t in [0u64, 1, 2, 10] {
        let path = dir.path().join(format!("t{t}.h5"));
        let w =
            Hdf5Writer::create(&path, "data", DType::I32, &[2, 3], &[2, 3], false).expect("create");
        let v = ArrayData::I32(ArrayD::from_elem(IxDyn(&[2, 3]), t as i32));
        w.write(&Region::new(vec![0, 0], vec![2, 3]), &v)
            .expect("write");
        w.finish().expect("finish");
    }
    let pattern = format!("{}/t*.h5", dir.path().display());
    let s = StackReader::open(&pattern, "data").expect("stack");
    assert_eq!(s.shape(), vec![4, 2, 3]);
    let all = s
        .read(&Region::new(vec![0, 0, 0], vec![4, 2, 3]))
        .expect("read");
    let ArrayData::I32(a) = all else {
        panic!("i32")
    };
    assert_eq!(
        [a[[0, 0, 0]], a[[1, 0, 0]], a[[2, 0, 0]], a[[3, 1, 2]]],
        [0, 1, 2, 10]
    );

    // A missing dataset names the file and the dataset.
    let err = StackReader::open(&pattern, "volume")
        .expect_err("no such dataset")
        .to_string();
    assert!(err.contains("t0.h5") && err.contains("\"volume\""), "{err}");
    // A timepoint of another shape.
    let odd = dir.path().join("t3.h5");
    let w = Hdf5Writer::create(&odd, "data", DType::I32, &[3, 3], &[3, 3], false).expect("create");
    w.write(
        &Region::new(vec![0, 0], vec![3, 3]),
        &ArrayData::I32(ArrayD::zeros(IxDyn(&[3, 3]))),
    )
    .expect("write");
    w.finish().expect("finish");
    let s = StackReader::open(&pattern, "data").expect("stack");
    let err = s
        .read(&Region::new(vec![0, 0, 0], vec![5, 2, 3]))
        .expect_err("shape")
        .to_string();
    assert!(
        err.contains("t3.h5") && err.contains("[3, 3]") && err.contains("\"data\""),
        "{err}"
    );
    // Not HDF5 at all (a truncated or foreign file).
    std::fs::write(&odd, b"not hdf5").expect("write");
    let err = s
        .read(&Region::new(vec![3, 0, 0], vec![1, 2, 3]))
        .expect_err("not hdf5")
        .to_string();
    assert!(err.contains("t3.h5"), "{err}");
}

#[test]
fn the_generator_is_deterministic_and_moves_timepoints() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = write_timeseries(dir.path(), 3, 24, 7).expect("write");
    assert_eq!(files.len(), 3);
    let shifts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("shifts.json")).expect("json"),
    )
    .expect("json");
    assert_eq!(shifts["shifts_zyx"][0], serde_json::json!([0.0, 0.0, 0.0]));
    let a = Hdf5Reader::open(&files[1], "data").expect("open");
    assert_eq!(a.info.shape, vec![24, 24, 24]);
    assert_eq!(a.info.dtype, DType::F64);
    let again = tempfile::tempdir().expect("tmp");
    let files2 = write_timeseries(again.path(), 3, 24, 7).expect("write");
    let whole = Region::new(vec![0, 0, 0], vec![24, 24, 24]);
    assert_eq!(
        a.read(&whole).expect("read"),
        Hdf5Reader::open(&files2[1], "data")
            .expect("open")
            .read(&whole)
            .expect("read")
    );
    assert_ne!(
        a.read(&whole).expect("read"),
        Hdf5Reader::open(&files[0], "data")
            .expect("open")
            .read(&whole)
            .expect("read"),
        "timepoint 1 is moved"
    );
}

#[test]
fn timepoints_ordered_by_a_captured_index() {
    let dir = tempfile::tempdir().expect("tmp");
    for name in ["b_10.h5", "a_2.h5", "c_1.h5"] {
        std::fs::write(dir.path().join(name), b"x").expect("write");
    }
    let glob = format!("{}/*.h5", dir.path().display());
    let re = regex::Regex::new(r"_(\d+)\.h5$").expect("regex");
    let files = blockflow_io::hdf5::list_timepoints_indexed(&glob, &re).expect("ordered");
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["c_1.h5", "a_2.h5", "b_10.h5"]);
    // Natural order would differ.
    let natural = blockflow_io::hdf5::list_timepoints(&glob).expect("natural");
    assert_ne!(natural, files);
    // Two files with one index, and a name the pattern misses, are named.
    std::fs::write(dir.path().join("d_02.h5"), b"x").expect("write");
    let err = blockflow_io::hdf5::list_timepoints_indexed(&glob, &re)
        .expect_err("duplicate")
        .to_string();
    assert!(err.contains("d_02.h5") && err.contains("a_2.h5"), "{err}");
    std::fs::remove_file(dir.path().join("d_02.h5")).expect("rm");
    std::fs::write(dir.path().join("extra.h5"), b"x").expect("write");
    let err = blockflow_io::hdf5::list_timepoints_indexed(&glob, &re)
        .expect_err("no match")
        .to_string();
    assert!(
        err.contains("extra.h5") && err.contains("does not match"),
        "{err}"
    );
}

/// Issue 11: a name that is a group, a soft link to nothing or an external
/// link to a missing file said `no dataset "data" (it has: data)`; the error
/// now says what the name is.
#[test]
fn a_name_that_is_not_a_dataset_says_what_it_is() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("odd.h5");
    {
        let f = hdf5::File::create(&path).expect("create");
        let g = f.create_group("data").expect("group");
        g.new_dataset::<f32>()
            .shape([2, 2])
            .create("inner")
            .expect("dataset");
        f.create_group("nested")
            .expect("group")
            .create_group("deeper")
            .expect("group");
        f.link_soft("/nowhere", "soft").expect("soft link");
        f.link_external("missing-target.h5", "/data", "ext")
            .expect("external link");
    }
    let err = |name: &str| {
        Hdf5Reader::open(&path, name)
            .map(|_| ())
            .expect_err(name)
            .to_string()
    };
    let e = err("data");
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(
        e.contains("\"data\" is a group, not a dataset (it has: inner)"),
        "{e}"
    );
    let e = err("nested/deeper");
    assert!(
        e.contains("\"nested/deeper\" is a group, not a dataset (it has: nothing)"),
        "{e}"
    );
    let e = err("soft");
    assert!(
        e.contains("\"soft\" is a soft link that does not resolve"),
        "{e}"
    );
    let e = err("ext");
    assert!(
        e.contains("\"ext\" is an external link into missing-target.h5, which cannot be resolved"),
        "{e}"
    );
    // A name that is not there at all lists what is.
    let e = err("absent");
    assert!(
        e.contains("no dataset \"absent\" (it has: data, ext, nested, soft)"),
        "{e}"
    );
    let e = err("nested/absent");
    assert!(
        e.contains("no dataset \"nested/absent\" (\"nested\" has: deeper)"),
        "{e}"
    );
}

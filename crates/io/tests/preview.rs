//! A preview of a small array is enlarged by nearest neighbour: each value
//! becomes a square of equal pixels, the picture as large as `min_size`
//! asks within `max_size`.

use blockflow_core::{ArrayData, Region};
use blockflow_io::preview::{Colormap, PreviewOptions, PreviewWriter, Stretch};

fn decode(path: &std::path::Path) -> (usize, usize, Vec<u8>) {
    let d = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("png"),
    ));
    let mut r = d.read_info().expect("png header");
    let mut buf = vec![0; r.output_buffer_size().expect("size")];
    let info = r.next_frame(&mut buf).expect("png data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.height as usize, info.width as usize, buf)
}

#[test]
fn a_small_array_becomes_squares_of_equal_pixels() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("small.png");
    let o = PreviewOptions {
        region: None,
        max_size: 1024,
        min_size: 20,
        colormap: Colormap::parse("viridis").expect("viridis"),
        percentiles: [0.0, 100.0],
        stretch: Stretch::Linear,
        max_pool: false,
        overwrite: false,
    };
    // A 4 x 5 ramp in two chunks of rows: each value its own colour.
    let mut w = PreviewWriter::create(&path, &[4, 5], o).expect("writer");
    for y0 in [0u64, 2] {
        let a = ndarray::ArrayD::from_shape_fn(vec![2, 5], |i| {
            ((y0 as usize + i[0]) * 5 + i[1]) as f64
        });
        w.add(&Region::new(vec![y0, 0], vec![2, 5]), &ArrayData::F64(a));
    }
    w.finish().expect("png written");
    // The shorter side, 4, enlarged 5 times to reach 20.
    let (h, wd, px) = decode(&path);
    assert_eq!((h, wd), (20, 25));
    let at = |y: usize, x: usize| &px[(y * wd + x) * 3..][..3];
    let cmap = Colormap::parse("viridis").expect("viridis");
    for y in 0..h {
        for x in 0..wd {
            let v = (y / 5) * 5 + x / 5;
            // Every pixel of a square is its value's colour, 0..19 spread over the map.
            assert_eq!(
                at(y, x),
                cmap.map(v as f64 / 19.0),
                "pixel ({y}, {x}), value {v}"
            );
        }
    }
    // Neighbouring squares differ.
    assert_ne!(at(0, 4), at(0, 5));
    assert_ne!(at(4, 0), at(5, 0));
}

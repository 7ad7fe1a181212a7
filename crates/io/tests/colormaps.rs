//! The preview colormaps give matplotlib's bytes: the fixture holds
//! `matplotlib.colormaps[name](t, bytes=True)` at several t for each map
//! and its reverse (scripts/fixtures/make_colormaps.py).

use blockflow_io::preview::Colormap;

#[test]
fn colormaps_equal_matplotlib() {
    let text = include_str!("fixtures/colormaps_matplotlib.json");
    let fx: serde_json::Value = serde_json::from_str(text).expect("fixture JSON");
    let ts: Vec<f64> = fx["t"]
        .as_array()
        .expect("t")
        .iter()
        .map(|t| t.as_f64().expect("t"))
        .collect();
    let maps = fx["maps"].as_object().expect("maps");
    assert_eq!(maps.len(), 14, "seven maps and their reverses");
    let mut wrong = Vec::new();
    for (name, want) in maps {
        let Some(cmap) = Colormap::parse(name) else {
            wrong.push(format!("{name}: not offered"));
            continue;
        };
        assert!(
            Colormap::NAMES.contains(&name.as_str()),
            "{name} not listed"
        );
        for (t, w) in ts.iter().zip(want.as_array().expect("map")) {
            let w: Vec<u8> = w
                .as_array()
                .expect("rgb")
                .iter()
                .map(|x| x.as_u64().expect("byte") as u8)
                .collect();
            let got = cmap.map(*t);
            if got[..] != w[..] {
                wrong.push(format!("{name}({t}) = {got:?}, matplotlib {w:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

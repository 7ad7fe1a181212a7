//! `write-json`: small results as one JSON document, one key per input,
//! with what each key is (`about`) and, for the flat index of an argmin or
//! argmax, its coordinates (see [`JSON_DOC`]).

use std::path::PathBuf;

use blockflow_core::{ArrayData, Chunk};
use blockflow_io::json::JsonWriter;
use blockflow_io::IoError;

use super::stored::Gathered;
use super::{
    p, Arity, BuildCx, ChunkSink, Exec, IndexInto, KindDef, MemoryCx, PType, PathRole, PlanCx,
    Planned, SinkOp, Stage, Writes,
};
use serde_json::{json, Map, Value};

/// What a write-json document holds, for `blockflow stages` and the docs.
pub const JSON_DOC: &str = r#"What write-json writes: one JSON object.
    KEY (each input's stage name)   the input's values: a number where it has one value (a whole-array
                                    reduction), else nested lists in its shape (row-major; a (40, 40)
                                    array is 40 lists of 40 numbers); integers stay integers (int64
                                    exact), NaN and infinities are null
    KEY_index                       where KEY is the flat index of an argmin or argmax of a whole array
                                    (numpy's, row-major): that index in the array's shape, a list with
                                    one integer per axis ([row, column] for a 2-D array)
    KEY_region                      where that array is also a per-block statistic of another array
                                    (reduce over = "blocks"): the part of that other array the chosen
                                    block covers, [[start, stop], ...] per axis (stop exclusive, as
                                    numpy's start:stop)
    about                           an object: every key above -> one line saying what it is, from the
                                    plan ("max of cells[730, :, :, :]"; a negative index is given with
                                    the position it resolved to); an input stage named `about`, or
                                    KEY_index/KEY_region beside an input of that name, is refused
  e.g. configs/elevation.toml's summary: "smoothest_block": 230, "smoothest_block_index": [5, 30],
    "smoothest_block_region": [[1000, 1200], [6000, 6200]], "about": {"smoothest_block": "flat index
    (row-major, numpy's argmin) of the first min of block_std, shape [40, 40]", ...}"#;

/// One key of the document: an input, what it is, and where it is a flat
/// index, into what.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub about: String,
    pub index_into: Option<IndexInto>,
}

impl Key {
    /// The extra keys of a flat index, with what each one is.
    fn coordinate_keys(&self) -> Vec<(String, String)> {
        let Some(ix) = &self.index_into else {
            return Vec::new();
        };
        let axes = if ix.shape.len() == 2 {
            "[row, column]".to_string()
        } else {
            format!("one integer per axis ({} axes)", ix.shape.len())
        };
        let mut v = vec![(
            format!("{}_index", self.name),
            format!(
                "{} as an index into {} (shape {:?}): {axes}",
                self.name, ix.array, ix.shape
            ),
        )];
        if let Some(b) = &ix.blocks_of {
            v.push((
                format!("{}_region", self.name),
                format!(
                    "the part of {} (shape {:?}, blocks of {:?}) that block covers: [start, stop] per axis, stop exclusive",
                    b.array,
                    b.grid.shape(),
                    b.grid.chunk_shape()
                ),
            ));
        }
        v
    }
}

/// The multi-index of flat index `flat` into `shape` (row-major), or None
/// where it lies outside.
fn unravel(flat: i64, shape: &[u64]) -> Option<Vec<u64>> {
    let total = shape.iter().try_fold(1u64, |a, &n| a.checked_mul(n))?;
    let mut rest = u64::try_from(flat).ok().filter(|&f| f < total)?;
    let mut idx = vec![0; shape.len()];
    for (ax, &n) in shape.iter().enumerate().rev() {
        idx[ax] = rest % n.max(1);
        rest /= n.max(1);
    }
    Some(idx)
}

/// The coordinate values of a flat index `value` (a one-element array).
fn coordinates(ix: &IndexInto, value: &ArrayData) -> (Value, Option<Value>) {
    let flat = match value {
        ArrayData::I64(a) if a.len() == 1 => a.iter().next().copied(),
        _ => None,
    };
    let Some(idx) = flat.and_then(|f| unravel(f, &ix.shape)) else {
        return (Value::Null, ix.blocks_of.as_ref().map(|_| Value::Null));
    };
    let region = ix.blocks_of.as_ref().map(|b| {
        if b.grid.grid_shape() != ix.shape {
            return Value::Null;
        }
        let r = b.grid.region(&idx);
        Value::Array(
            r.origin
                .iter()
                .zip(&r.shape)
                .map(|(&o, &n)| json!([o, o + n]))
                .collect(),
        )
    });
    (json!(idx), region)
}

pub static KIND: KindDef = KindDef {
    kind: "write-json",
    role: "writer",
    summary: "small results (a reduction's scalar, a per-block table) as one JSON document, one key per input stage, with `about` (what each key is) and, for an argmin or argmax of a whole array, its index per axis (KEY_index) and, where that array is per block, the block's range in the array it summarises (KEY_region): see \"What write-json writes\" below",
    inputs: Arity::AtLeast(1),
    params: &[
        p("path", PType::Path(PathRole::Output), None, "the JSON file"),
        p("if_exists", PType::Choice(&["fail", "overwrite"]), Some("fail"), "what to do when the file exists"),
    ],
    example: "inputs = [\"best\"]\npath = \"out.json\"",
    plan,
};

#[derive(Debug, Clone, PartialEq)]
pub struct WriteJson {
    pub path: PathBuf,
    pub overwrite: bool,
    /// One per input, in order.
    pub keys: Vec<Key>,
}

fn plan(cx: &mut PlanCx<'_, '_>) -> Option<Planned> {
    let total: u64 = cx.inputs.iter().map(|i| i.spec.grid.total_elements()).sum();
    if total > 1_000_000 {
        return cx.err("inputs", format!("{total} values are too many for JSON (at most 1,000,000); write them with write-zarr"));
    }
    let path = cx.path("path")?;
    let grid = cx.input(0)?.grid.clone();
    let overwrite = cx.p.str("if_exists").as_deref() == Some("overwrite");
    let keys: Vec<Key> = cx
        .inputs
        .iter()
        .map(|i| Key {
            name: i.name.to_string(),
            about: i.about.text.clone(),
            index_into: i.about.index_into.clone(),
        })
        .collect();
    // The keys it adds must not hide an input's.
    for k in &keys {
        let added = std::iter::once("about".to_string())
            .chain(k.coordinate_keys().into_iter().map(|(n, _)| n));
        for a in added {
            if keys.iter().any(|o| o.name == a) {
                return cx.err("inputs", format!("write-json adds the key \"{a}\" (see `blockflow stages`, write-json), which an input of the same name would be hidden by; rename that stage"));
            }
        }
    }
    Some(Planned::sink(
        WriteJson {
            path,
            overwrite,
            keys,
        },
        grid,
    ))
}

impl Stage for WriteJson {
    fn kind(&self) -> &'static str {
        KIND.kind
    }
    fn describe(&self) -> String {
        format!("JSON {}, a key per input", self.path.display())
    }
    /// Every input whole, as arrays and as JSON text.
    fn memory(&self, m: &MemoryCx<'_>) -> u128 {
        m.in_elems * 8 * 4
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Sink(self)
    }
    fn writes(&self) -> Option<Writes<'_>> {
        Some(Writes::Json(&self.path))
    }
    fn result_keys(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for k in &self.keys {
            v.push((k.name.clone(), k.about.clone()));
            v.extend(k.coordinate_keys());
        }
        v
    }
}

impl SinkOp for WriteJson {
    fn open(&self, cx: &BuildCx<'_>) -> Result<Box<dyn ChunkSink>, IoError> {
        Ok(Box::new(JsonSink {
            w: JsonWriter::create(&self.path, self.overwrite)?,
            parts: Gathered::new(cx.inputs.len()),
            keys: self.keys.clone(),
        }))
    }
}

/// The inputs kept whole until they have all ended.
struct JsonSink {
    w: JsonWriter,
    parts: Gathered,
    keys: Vec<Key>,
}

impl ChunkSink for JsonSink {
    fn write(&self, input: usize, chunk: &Chunk) -> Result<(), String> {
        self.parts.keep(input, chunk)
    }
    fn finish(&mut self, inputs: &[String]) -> Result<(), String> {
        let mut about = Map::new();
        for (i, (name, whole)) in inputs.iter().zip(self.parts.arrays(inputs)?).enumerate() {
            self.w.set(name, &whole);
            let Some(k) = self.keys.get(i) else { continue };
            about.insert(name.clone(), Value::from(k.about.clone()));
            if let Some(ix) = &k.index_into {
                let (index, region) = coordinates(ix, &whole);
                for ((key, text), v) in k.coordinate_keys().into_iter().zip([Some(index), region]) {
                    if let Some(v) = v {
                        self.w.set_value(&key, v);
                        about.insert(key, Value::from(text));
                    }
                }
            }
        }
        self.w.set_value("about", Value::Object(about));
        Ok(())
    }
    fn counts_progress(&self) -> bool {
        false
    }
    fn commit(self: Box<Self>) -> Result<Vec<PathBuf>, IoError> {
        self.w.finish().map(|p| vec![p])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use blockflow_core::{DType, Meter, Region};

    #[test]
    fn plans_small_results_and_refuses_large_ones() {
        let s = plan_one(
            "kind = \"write-json\"\npath = \"r.json\"",
            &[DType::F64, DType::I64],
            &[10],
            &[5],
        );
        assert!(s.output.is_none());
        // One chunk of each input: 10 elements, 32 bytes each.
        assert_eq!(s.mem.working, 10 * 8 * 4);
        let e = plan_err(
            "kind = \"write-json\"\npath = \"r.json\"",
            &[DType::U8],
            &[1001, 1000],
            &[100, 100],
        );
        assert!(e.contains("1001000 values are too many for JSON"), "{e}");
    }

    #[test]
    fn writes_each_input_whole_under_its_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let stage = WriteJson {
            path: dir.path().join("r.json"),
            overwrite: false,
            keys: Vec::new(),
        };
        let plan = plan_text(
            &config(
                "kind = \"write-json\"\npath = \"x.json\"",
                &[DType::F64],
                &[4],
                &[2],
            ),
            &crate::catalog::FakeCatalog::default(),
        )
        .expect("plans");
        let mut sink = stage
            .open(&BuildCx {
                stage: stage_named(&plan, "s"),
                inputs: &[None, None],
            })
            .expect("opens");
        let meter = Meter::new();
        let chunk = |k: u64, v: &[f64]| {
            Chunk::new(
                vec![k],
                Region::new(vec![2 * k], vec![2]),
                array_f64(&[2], v),
                &meter,
            )
        };
        sink.write(0, &chunk(1, &[3.0, 4.5])).expect("writes");
        sink.write(1, &chunk(0, &[7.0, 8.0])).expect("writes");
        sink.write(0, &chunk(0, &[1.0, 2.0])).expect("writes");
        sink.finish(&["a".into(), "b".into()]).expect("finishes");
        assert!(!stage.path.exists(), "written only when committed");
        let paths = sink.commit().expect("commits");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&paths[0]).expect("json"))
                .expect("parses");
        assert_eq!(
            doc,
            serde_json::json!({"a": [1.0, 2.0, 3.0, 4.5], "b": [7.0, 8.0], "about": {}})
        );
    }

    /// An argmin of a per-block statistic gets its index per axis and the
    /// block's range; every key says what it is; keys that would collide
    /// with an input are refused.
    #[test]
    fn an_argmin_of_blocks_has_coordinates_and_every_key_an_about() {
        let text = "[pipeline]\nthreads = 2\n\
            [stage.img]\nkind = \"synthetic\"\nshape = [100, 60]\nchunks = [20, 15]\n\
            [stage.spread]\nkind = \"reduce\"\ninputs = [\"img\"]\nop = \"std\"\nover = \"blocks\"\n\
            [stage.flattest]\nkind = \"reduce\"\ninputs = [\"spread\"]\nop = \"argmin\"\n\
            [stage.one]\nkind = \"slice\"\ninputs = [\"img\"]\nindex = \"-2, :\"\n\
            [stage.top]\nkind = \"reduce\"\ninputs = [\"one\"]\nop = \"max\"\n\
            [stage.w]\nkind = \"write-json\"\ninputs = [\"flattest\", \"top\", \"spread\"]\npath = \"/tmp/x.json\"\n";
        let plan = plan_text(text, &crate::catalog::FakeCatalog::default()).expect("plans");
        let w = stage_named(&plan, "w");
        let keys = w.kind.result_keys();
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "flattest",
                "flattest_index",
                "flattest_region",
                "top",
                "spread"
            ]
        );
        assert_eq!(
            keys[0].1,
            "flat index (row-major, numpy's argmin) of the first min of spread, shape [5, 4]"
        );
        assert_eq!(
            keys[1].1,
            "flattest as an index into spread (shape [5, 4]): [row, column]"
        );
        assert!(keys[2]
            .1
            .starts_with("the part of img (shape [100, 60], blocks of [20, 15])"));
        assert_eq!(
            keys[3].1,
            "max of img[98, :] (index -2 from the end of axis 0, length 100)"
        );
        assert_eq!(keys[4].1, "std of each 20 x 15 block of img");

        // Block 13 of the 5 x 4 grid is row 3, column 1: rows 60..80,
        // columns 15..30.
        let op = w
            .kind
            .as_any()
            .downcast_ref::<WriteJson>()
            .expect("write-json");
        let ix = op.keys[0].index_into.clone().expect("a flat index");
        let idx = ArrayData::I64(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1]), 13));
        assert_eq!(
            coordinates(&ix, &idx),
            (json!([3, 1]), Some(json!([[60, 80], [15, 30]])))
        );
        // Outside the array (or no index at all): null, not a guess.
        let bad = ArrayData::I64(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1]), 20));
        assert_eq!(coordinates(&ix, &bad), (Value::Null, Some(Value::Null)));
        assert_eq!(unravel(-1, &[5, 4]), None);
        assert_eq!(unravel(19, &[5, 4]), Some(vec![4, 3]));

        let e = plan_text(
            &text
                .replace("[stage.top]", "[stage.flattest_index]")
                .replace("\"top\"", "\"flattest_index\""),
            &crate::catalog::FakeCatalog::default(),
        )
        .expect_err("collides");
        assert!(
            e.contains("write-json adds the key \"flattest_index\""),
            "{e}"
        );
    }
}

//! The axes' names of a stage's output where its kind did not set them.
//! Kinds that know their axes set them when they plan: readers (a Zarr
//! array's stored names, a timepoint stack's t, z, y, x, an image stack's
//! image, y, x, c, or the stage's `axes`), a stack (the inputs' names with
//! its new axis's), the structure tensor's features (the image's less its
//! channels), PCA (mode, then the features' axes), take (its input's), and
//! matmul (a's rows and b's columns). Here, for the rest: names are kept by
//! maps and windows of the input's rank (a slice drops the axes an integer
//! indexes), by a rechunk, permuted by a transpose, kept along the axes a
//! reduction leaves (and by a per-block reduction, whose output is the
//! block grid), kept by a concatenation of inputs named alike. Any other
//! stage's output is unnamed (a kernel that adds or removes axes).

use blockflow_core::ArraySpec;

use crate::stages::join::Join;
use crate::stages::rechunk::Rechunk;
use crate::stages::reduce::Reduce;
use crate::stages::transpose::Transpose;
use crate::stages::{Exec, Stage};

/// The names `op`'s output `out` gets from its `inputs`, if any.
pub(super) fn inherit(
    op: &dyn Stage,
    inputs: &[&ArraySpec],
    out: &ArraySpec,
) -> Option<Vec<String>> {
    let names = inputs.first()?.names.as_ref()?;
    let nd = out.shape().len();
    let fits = |v: Vec<String>| (v.len() == nd).then_some(v);
    let any = op.as_any();
    if let Some(r) = any.downcast_ref::<Reduce>() {
        if r.per_block || nd == names.len() {
            // The block grid, or the reduced axes kept as length 1.
            return fits(names.clone());
        }
        let axes = r.axes.as_ref()?;
        return fits(
            names
                .iter()
                .enumerate()
                .filter(|(k, _)| !axes.contains(k))
                .map(|(_, n)| n.clone())
                .collect(),
        );
    }
    if let Some(t) = any.downcast_ref::<Transpose>() {
        return fits(
            t.perm
                .iter()
                .map(|&k| names.get(k).cloned())
                .collect::<Option<_>>()?,
        );
    }
    if any.is::<Rechunk>() {
        return fits(names.clone());
    }
    if let Some(j) = any.downcast_ref::<Join>() {
        let alike = inputs.iter().all(|i| i.names.as_ref() == Some(names));
        return (!j.new_axis && alike)
            .then(|| fits(names.clone()))
            .flatten();
    }
    match op.exec() {
        Exec::Map(_) => fits(names.clone()),
        Exec::Window(w) => fits(
            names
                .iter()
                .enumerate()
                .filter(|(k, _)| !w.drop.get(*k).copied().unwrap_or(false))
                .map(|(_, n)| n.clone())
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use blockflow_core::DType;

    use crate::catalog::FakeCatalog;
    use crate::stages::testing::{plan_text, stage_named};

    fn names_after(stages: &str) -> Vec<(String, Option<Vec<String>>)> {
        let c = FakeCatalog::default();
        c.add_zarr_named(
            Path::new("/data/v.zarr"),
            DType::F32,
            &[4, 6, 8],
            &[1, 6, 8],
            &["t", "y", "x"],
        );
        let text = format!(
            "[pipeline]\nmemory = \"1 GiB\"\nthreads = 2\n[stage.v]\nkind = \"read-zarr\"\npath = \"/data/v.zarr\"\n{stages}"
        );
        let plan = plan_text(&text, &c).unwrap_or_else(|e| panic!("plans:\n{e}"));
        plan.stages
            .iter()
            .map(|s| {
                let out = stage_named(&plan, &s.name).output.as_ref();
                (s.name.clone(), out.and_then(|o| o.names.clone()))
            })
            .collect()
    }

    fn named<'a>(all: &'a [(String, Option<Vec<String>>)], stage: &str) -> Option<&'a [String]> {
        all.iter()
            .find(|(n, _)| n == stage)
            .and_then(|(_, v)| v.as_deref())
    }

    #[test]
    fn names_go_through_maps_slices_reductions_rechunks_and_transposes() {
        let all = names_after(
            "[stage.m]\nkind = \"expr\"\ninputs = [\"v\"]\nexpr = \"v * 2\"\n\
             [stage.sl]\nkind = \"slice\"\ninputs = [\"m\"]\nindex = \"0, :, 2:\"\n\
             [stage.rd]\nkind = \"reduce\"\ninputs = [\"m\"]\nop = \"mean\"\naxis = 1\n\
             [stage.kd]\nkind = \"reduce\"\ninputs = [\"m\"]\nop = \"max\"\naxis = [0, 2]\nkeepdims = true\n\
             [stage.bl]\nkind = \"reduce\"\ninputs = [\"m\"]\nop = \"sum\"\nover = \"blocks\"\n\
             [stage.all]\nkind = \"reduce\"\ninputs = [\"m\"]\nop = \"sum\"\n\
             [stage.rc]\nkind = \"rechunk\"\ninputs = [\"m\"]\nchunks = [2, 3, 8]\n\
             [stage.tr]\nkind = \"transpose\"\ninputs = [\"m\"]\naxes = [2, 0, 1]\n\
             [stage.st]\nkind = \"stack\"\ninputs = [\"m\", \"m\"]\naxis = 0\n",
        );
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(named(&all, "v"), Some(&v(&["t", "y", "x"])[..]));
        assert_eq!(named(&all, "m"), Some(&v(&["t", "y", "x"])[..]));
        assert_eq!(named(&all, "sl"), Some(&v(&["y", "x"])[..]));
        assert_eq!(named(&all, "rd"), Some(&v(&["t", "x"])[..]));
        assert_eq!(named(&all, "kd"), Some(&v(&["t", "y", "x"])[..]));
        assert_eq!(named(&all, "bl"), Some(&v(&["t", "y", "x"])[..]));
        assert_eq!(named(&all, "all"), None);
        assert_eq!(named(&all, "rc"), Some(&v(&["t", "y", "x"])[..]));
        assert_eq!(named(&all, "tr"), Some(&v(&["x", "t", "y"])[..]));
        assert_eq!(
            named(&all, "st"),
            Some(&v(&["st", "t", "y", "x"])[..]),
            "a stack's new axis is named after the stage"
        );
    }

    #[test]
    fn names_go_through_stacks_tensors_pca_take_and_matmul() {
        let all = names_after(
            "[stage.st]\nkind = \"stack\"\ninputs = [\"v\", \"v\"]\naxis = 1\naxis_name = \"run\"\n\
             [stage.clash]\nkind = \"stack\"\ninputs = [\"v\", \"v\"]\naxis_name = \"y\"\n\
             [stage.yxt]\nkind = \"transpose\"\ninputs = [\"v\"]\naxes = [1, 2, 0]\n\
             [stage.img]\nkind = \"rechunk\"\ninputs = [\"yxt\"]\nchunks = [6, 8, 4]\n\
             [stage.ten]\nkind = \"structure-tensor\"\ninputs = [\"img\"]\nradius = 1\nwindow_radius = 1\n\
             [stage.en]\nkind = \"structure-tensor\"\ninputs = [\"img\"]\nradius = 1\nwindow_radius = 1\noutput = \"energy\"\n\
             [stage.bands]\nkind = \"rechunk\"\ninputs = [\"v\"]\nchunks = [4, 3, 8]\n\
             [stage.modes]\nkind = \"pca\"\ninputs = [\"bands\"]\nk = 2\n\
             [stage.sv]\nkind = \"pca\"\ninputs = [\"bands\"]\nk = 2\noutput = \"values\"\n\
             [stage.var]\nkind = \"reduce\"\ninputs = [\"v\"]\nop = \"var\"\nover = \"blocks\"\n\
             [stage.pick]\nkind = \"reduce\"\ninputs = [\"var\"]\nop = \"argmin\"\n\
             [stage.tk]\nkind = \"take\"\ninputs = [\"v\", \"pick\"]\n\
             [stage.yx]\nkind = \"slice\"\ninputs = [\"v\"]\nindex = \"0, :, :\"\n\
             [stage.whole]\nkind = \"rechunk\"\ninputs = [\"yx\"]\nchunks = [6, 8]\n\
             [stage.xy]\nkind = \"transpose\"\ninputs = [\"whole\"]\n\
             [stage.gram]\nkind = \"matmul\"\ninputs = [\"whole\", \"xy\"]\n\
             [stage.cross]\nkind = \"matmul\"\ninputs = [\"xy\", \"whole\"]\n",
        );
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(named(&all, "st"), Some(&v(&["t", "run", "y", "x"])[..]));
        assert_eq!(named(&all, "clash"), None, "a new axis named as an old one");
        assert_eq!(named(&all, "ten"), Some(&v(&["y", "x"])[..]));
        assert_eq!(named(&all, "en"), Some(&v(&["y", "x", "t"])[..]));
        assert_eq!(named(&all, "modes"), Some(&v(&["mode", "y", "x"])[..]));
        assert_eq!(named(&all, "sv"), Some(&v(&["mode"])[..]));
        assert_eq!(named(&all, "tk"), Some(&v(&["t", "y", "x"])[..]));
        assert_eq!(named(&all, "gram"), None, "y @ y would name two axes y");
        assert_eq!(named(&all, "cross"), None, "x @ x would name two axes x");
    }

    fn reader_names(table: &str) -> Result<Option<Vec<String>>, String> {
        let c = FakeCatalog::default();
        c.add_hdf5(Path::new("/data/v.h5"), "data", DType::F32, &[4, 5, 6]);
        c.add_stack("/data/t_*.h5", "data", 3, &[5, 6, 7], DType::F32);
        c.add_images("/data/img_*.png", 4, &[8, 9, 3], DType::U8);
        let text = format!("[pipeline]\nmemory = \"1 GiB\"\nthreads = 2\n[stage.r]\n{table}");
        let plan = plan_text(&text, &c)?;
        Ok(stage_named(&plan, "r")
            .output
            .as_ref()
            .and_then(|o| o.names.clone()))
    }

    #[test]
    fn readers_name_their_axes_or_take_the_given_ones() {
        let v = |x: &[&str]| Some(x.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let stack = "kind = \"read-hdf5-stack\"\npath = \"/data/t_*.h5\"\ndataset = \"data\"\n";
        assert_eq!(reader_names(stack), Ok(v(&["t", "z", "y", "x"])));
        let images = "kind = \"read-images\"\npath = \"/data/img_*.png\"\n";
        assert_eq!(reader_names(images), Ok(v(&["image", "y", "x", "c"])));
        let h5 = "kind = \"read-hdf5\"\npath = \"/data/v.h5\"\ndataset = \"data\"\n";
        assert_eq!(reader_names(h5), Ok(None));
        let given = format!("{h5}axes = [\"c\", \"y\", \"x\"]\n");
        assert_eq!(reader_names(&given), Ok(v(&["c", "y", "x"])));
        let survey =
            "kind = \"synthetic\"\nshape = [8, 9, 3]\nchunks = [4, 9, 3]\npattern = \"survey\"\n";
        assert_eq!(reader_names(survey), Ok(v(&["y", "x", "c"])));
        let short = format!("{h5}axes = [\"y\", \"x\"]\n");
        let e = reader_names(&short).expect_err("two names for three axes");
        assert!(e.contains("2 axis names") && e.contains("axes"), "{e}");
        let twice = format!("{stack}axes = [\"t\", \"x\", \"y\", \"x\"]\n");
        let e = reader_names(&twice).expect_err("a name twice");
        assert!(e.contains("given to two axes"), "{e}");
    }
}

//! The axes' names of a stage's output where its kind did not set them
//! (a reader of named arrays does; a writer takes them from its input):
//! kept by maps and windows of the input's rank (a slice drops the axes an
//! integer indexes), by a rechunk, permuted by a transpose, kept along the
//! axes a reduction leaves (and by a per-block reduction, whose output is
//! the block grid), kept by a concatenation of inputs named alike. Any
//! other stage's output is unnamed (a stack's new axis, a kernel that adds
//! or removes axes, PCA, take, matmul).

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
        assert_eq!(named(&all, "st"), None, "a stack's new axis has no name");
    }
}

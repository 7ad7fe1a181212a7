//! Tile-by-tile evaluation of a checked expression on one chunk.
//!
//! The tree is lowered to a list of ops in two lanes (float64 values for
//! float dtypes, int64 for integer and bool dtypes); every op rounds or
//! wraps its result to its own dtype. Leaves (inputs, indexed inputs,
//! materialised reductions) are read through broadcast views into tiles of
//! `TILE` elements, so the elementwise part needs no full-size temporaries.

use std::borrow::Cow;

use blockflow_core::{with_array, with_dtype, ArrayData, ArrayKind, DType, Element};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, SliceInfo, SliceInfoElem};

use super::{
    expand_items, slice_indices, BinOp, ExprError, Func, IndexItem, Node, RedOp, TNode, UnOp,
};

const TILE: usize = 2048;

#[derive(Debug)]
enum Op {
    Leaf(usize),
    ConstF(f64),
    ConstI(i64),
    ToF(usize),
    ToI(usize),
    Unary(UnOp, usize),
    Binary(BinOp, usize, usize),
    Func(Func, Vec<usize>),
}

type Leaf<'a> = (Cow<'a, ArrayData>, Option<Vec<IndexItem>>);

#[derive(Default)]
struct Prog<'a> {
    ops: Vec<(Op, DType)>,
    leaves: Vec<Leaf<'a>>,
}

impl<'a> Prog<'a> {
    fn push(&mut self, op: Op, dtype: DType) -> usize {
        self.ops.push((op, dtype));
        self.ops.len() - 1
    }

    /// Converts op `j` to `dtype` if it is not already.
    fn coerce(&mut self, j: usize, dtype: DType) -> usize {
        let from = self.ops[j].1;
        if from == dtype {
            return j;
        }
        // Weak constants take the target dtype directly.
        match self.ops[j].0 {
            Op::ConstF(v) if dtype.is_float() => {
                return self.push(Op::ConstF(fix_f(dtype, v)), dtype)
            }
            Op::ConstI(v) if dtype.is_float() => {
                return self.push(Op::ConstF(fix_f(dtype, v as f64)), dtype)
            }
            Op::ConstI(v) => return self.push(Op::ConstI(fix_i(dtype, v)), dtype),
            _ => {}
        }
        if dtype.is_float() {
            self.push(Op::ToF(j), dtype)
        } else {
            self.push(Op::ToI(j), dtype)
        }
    }

    fn lower(&mut self, n: &TNode, inputs: &[&'a ArrayData]) -> Result<usize, ExprError> {
        let d = n.ty.dtype;
        Ok(match &n.node {
            Node::ConstF(v) => self.push(Op::ConstF(*v), DType::F64),
            Node::ConstI(v) => self.push(Op::ConstI(*v), n.ty.dtype),
            Node::Input(i) => {
                self.leaves.push((Cow::Borrowed(inputs[*i]), None));
                self.push(Op::Leaf(self.leaves.len() - 1), inputs[*i].dtype())
            }
            Node::List(vals) => {
                let data = if d.is_float() {
                    ArrayData::F64(
                        ArrayD::from_shape_vec(IxDyn(&[vals.len()]), vals.clone())
                            .map_err(shape_err)?,
                    )
                } else {
                    ArrayData::I64(
                        ArrayD::from_shape_vec(
                            IxDyn(&[vals.len()]),
                            vals.iter().map(|v| *v as i64).collect(),
                        )
                        .map_err(shape_err)?,
                    )
                };
                self.leaves.push((Cow::Owned(data), None));
                self.push(Op::Leaf(self.leaves.len() - 1), d)
            }
            Node::Index(child, items) => {
                let data = match child.node {
                    Node::Input(i) => Cow::Borrowed(inputs[i]),
                    _ => Cow::Owned(evaluate(child, inputs)?),
                };
                self.leaves.push((data, Some(items.clone())));
                self.push(Op::Leaf(self.leaves.len() - 1), d)
            }
            Node::Reduce(op, axis, child) => {
                let data = evaluate(child, inputs)?;
                let r = reduce(*op, *axis, &data, d);
                self.leaves.push((Cow::Owned(r), None));
                self.push(Op::Leaf(self.leaves.len() - 1), d)
            }
            Node::Cast(child) => {
                let j = self.lower(child, inputs)?;
                if self.ops[j].1 == d {
                    j
                } else if d.is_float() {
                    self.push(Op::ToF(j), d)
                } else {
                    self.push(Op::ToI(j), d)
                }
            }
            Node::Unary(op, child) => {
                let j = self.lower(child, inputs)?;
                let j = self.coerce(j, d);
                self.push(Op::Unary(*op, j), d)
            }
            Node::Binary(op, a, b) => {
                let ja = self.lower(a, inputs)?;
                let jb = self.lower(b, inputs)?;
                let common = if op.is_comparison() {
                    super::promote(&a.ty, &b.ty).0
                } else {
                    d
                };
                let ja = self.coerce(ja, common);
                let jb = self.coerce(jb, common);
                self.push(Op::Binary(*op, ja, jb), d)
            }
            Node::Func(f, args) => {
                let mut js = Vec::with_capacity(args.len());
                for (k, a) in args.iter().enumerate() {
                    let j = self.lower(a, inputs)?;
                    let target = match f {
                        Func::IsNan | Func::IsFinite => {
                            if a.ty.dtype.is_float() {
                                a.ty.dtype
                            } else {
                                DType::F64
                            }
                        }
                        Func::Where if k == 0 => DType::Bool,
                        _ => d,
                    };
                    js.push(self.coerce(j, target));
                }
                self.push(Op::Func(*f, js), d)
            }
        })
    }
}

fn shape_err(e: ndarray::ShapeError) -> ExprError {
    ExprError::at(1, format!("internal shape error: {e}"))
}

#[inline]
fn fix_f(d: DType, v: f64) -> f64 {
    if d == DType::F32 {
        v as f32 as f64
    } else {
        v
    }
}

#[inline]
fn fix_i(d: DType, v: i64) -> i64 {
    match d {
        DType::Bool => (v != 0) as i64,
        DType::U8 => v as u8 as i64,
        DType::U16 => v as u16 as i64,
        DType::U32 => v as u32 as i64,
        DType::I16 => v as i16 as i64,
        DType::I32 => v as i32 as i64,
        _ => v,
    }
}

/// numpy's float-to-integer `astype`, as Rust's saturating `as`.
#[inline]
fn f_to_i(d: DType, v: f64) -> i64 {
    match d {
        DType::Bool => (v != 0.0) as i64,
        DType::U8 => v as u8 as i64,
        DType::U16 => v as u16 as i64,
        DType::U32 => v as u32 as i64,
        DType::I16 => v as i16 as i64,
        DType::I32 => v as i32 as i64,
        _ => v as i64,
    }
}

trait TileSource {
    fn fill_f(&mut self, out: &mut [f64]);
    fn fill_i(&mut self, out: &mut [i64]);
}

/// Reads a strided, possibly broadcast (stride 0) view of a contiguous
/// slice in row-major order of the output shape. Axes that can be merged
/// are merged first, so a contiguous leaf is one run and `x[..., 0]` of an
/// RGB image is one run with stride 3.
struct Source<'a, T> {
    data: &'a [T],
    shape: Vec<usize>,
    strides: Vec<isize>,
    /// Multi-index of the current row (all axes but the last).
    idx: Vec<usize>,
    /// Offset of the current row's first element, and position in the row.
    row: isize,
    col: usize,
}

impl<'a, T: Element> Source<'a, T> {
    fn new(data: &'a [T], offset: isize, shape: &[usize], strides: &[isize]) -> Self {
        let mut sh: Vec<usize> = Vec::new();
        let mut st: Vec<isize> = Vec::new();
        for (&n, &s) in shape.iter().zip(strides) {
            if n == 1 {
                continue;
            }
            if let (Some(ln), Some(ls)) = (sh.last_mut(), st.last_mut()) {
                if *ls == s * n as isize {
                    *ln *= n;
                    *ls = s;
                    continue;
                }
            }
            sh.push(n);
            st.push(s);
        }
        if sh.is_empty() {
            sh.push(1);
            st.push(1);
        }
        let outer = sh.len() - 1;
        Source {
            data,
            shape: sh,
            strides: st,
            idx: vec![0; outer],
            row: offset,
            col: 0,
        }
    }

    #[inline]
    fn fill<U>(&mut self, out: &mut [U], conv: impl Fn(T) -> U) {
        let last = self.shape.len() - 1;
        let (n, s) = (self.shape[last], self.strides[last]);
        let mut done = 0;
        while done < out.len() {
            let run = (n - self.col).min(out.len() - done);
            let start = self.row + self.col as isize * s;
            let dst = &mut out[done..done + run];
            if s == 1 {
                let src = &self.data[start as usize..start as usize + run];
                for (o, v) in dst.iter_mut().zip(src) {
                    *o = conv(*v);
                }
            } else if s == 0 {
                let v = self.data[start as usize];
                for o in dst.iter_mut() {
                    *o = conv(v);
                }
            } else {
                for (k, o) in dst.iter_mut().enumerate() {
                    *o = conv(self.data[(start + k as isize * s) as usize]);
                }
            }
            done += run;
            self.col += run;
            if self.col == n {
                self.col = 0;
                // Next row: odometer over the outer axes.
                for ax in (0..last).rev() {
                    self.idx[ax] += 1;
                    self.row += self.strides[ax];
                    if self.idx[ax] < self.shape[ax] {
                        break;
                    }
                    self.row -= self.strides[ax] * self.shape[ax] as isize;
                    self.idx[ax] = 0;
                }
            }
        }
    }
}

impl<T: Element> TileSource for Source<'_, T> {
    fn fill_f(&mut self, out: &mut [f64]) {
        self.fill(out, T::to_f64)
    }
    fn fill_i(&mut self, out: &mut [i64]) {
        self.fill(out, T::to_i64)
    }
}

/// Applies expanded numpy index items to a view (axis lengths from the view).
fn apply_items<'a, T>(
    v: ArrayViewD<'a, T>,
    items: &[IndexItem],
) -> Result<ArrayViewD<'a, T>, ExprError> {
    let items = expand_items(items, v.ndim(), 1)?;
    let mut elems = Vec::with_capacity(items.len());
    let mut ax = 0;
    for it in &items {
        match it {
            IndexItem::NewAxis => elems.push(SliceInfoElem::NewAxis),
            IndexItem::Ellipsis => unreachable!("expanded"),
            IndexItem::Int(i) => {
                let n = v.shape()[ax] as i64;
                let ii = if *i < 0 { i + n } else { *i };
                if ii < 0 || ii >= n {
                    return Err(ExprError::at(
                        1,
                        format!("index {i} out of range for axis {ax} of size {n}"),
                    ));
                }
                elems.push(SliceInfoElem::Index(ii as isize));
                ax += 1;
            }
            IndexItem::Slice(s, e, st) => {
                let n = v.shape()[ax] as i64;
                let (start, step, len) = slice_indices(n, *s, *e, *st);
                if len == 0 {
                    return Err(ExprError::at(
                        1,
                        format!("slice selects nothing of axis {ax} (size {n})"),
                    ));
                }
                let elem = if step > 0 {
                    SliceInfoElem::Slice {
                        start: start as isize,
                        end: Some((start + step * (len - 1) + 1) as isize),
                        step: step as isize,
                    }
                } else {
                    let low = start + step * (len - 1);
                    SliceInfoElem::Slice {
                        start: low as isize,
                        end: Some((start + 1) as isize),
                        step: step as isize,
                    }
                };
                elems.push(elem);
                ax += 1;
            }
        }
    }
    let info = SliceInfo::<Vec<SliceInfoElem>, IxDyn, IxDyn>::try_from(elems)
        .map_err(|e| ExprError::at(1, format!("bad index: {e}")))?;
    Ok(v.slice_move(info))
}

fn broadcast_shapes(shapes: &[Vec<usize>]) -> Result<Vec<usize>, ExprError> {
    let n = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; n];
    for s in shapes {
        let off = n - s.len();
        for (k, &len) in s.iter().enumerate() {
            let o = &mut out[off + k];
            if *o == 1 {
                *o = len;
            } else if len != 1 && len != *o {
                return Err(ExprError::at(
                    1,
                    format!("chunk shapes {shapes:?} do not broadcast"),
                ));
            }
        }
    }
    Ok(out)
}

/// A reader of `leaf` (its indexed view) broadcast to `shape`, or `None`
/// when the array is not contiguous and must be copied first.
fn source_for<'a, T: Element>(
    base: &'a ArrayD<T>,
    items: &Option<Vec<IndexItem>>,
    shape: &[usize],
) -> Result<Option<Source<'a, T>>, ExprError> {
    let Some(data) = base.as_slice() else {
        return Ok(None);
    };
    let v = leaf_view(base, items)?;
    let elem = std::mem::size_of::<T>().max(1);
    let offset = if v.is_empty() || elem == 0 {
        0
    } else {
        (v.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize) / elem
    } as isize;
    let lead = shape.len() - v.ndim();
    let mut strides = vec![0isize; shape.len()];
    for (k, (&n, &s)) in v.shape().iter().zip(v.strides()).enumerate() {
        let out_n = shape[lead + k];
        if n == out_n {
            strides[lead + k] = s;
        } else if n != 1 {
            return Err(ExprError::at(
                1,
                format!("cannot broadcast {:?} to {shape:?}", v.shape()),
            ));
        }
    }
    Ok(Some(Source::new(data, offset, shape, &strides)))
}

fn leaf_view<'a, T>(
    a: &'a ArrayD<T>,
    items: &Option<Vec<IndexItem>>,
) -> Result<ArrayViewD<'a, T>, ExprError> {
    match items {
        Some(items) => apply_items(a.view(), items),
        None => Ok(a.view()),
    }
}

/// Evaluates a subtree on one chunk into a new array of its dtype.
pub(crate) fn evaluate(root: &TNode, inputs: &[&ArrayData]) -> Result<ArrayData, ExprError> {
    let mut prog = Prog::default();
    let root_op = prog.lower(root, inputs)?;
    let leaf_shapes: Vec<Vec<usize>> = prog
        .leaves
        .iter()
        .map(|(d, items)| -> Result<Vec<usize>, ExprError> {
            Ok(with_array!(d.as_ref(), a => leaf_view(a, items)?.shape().to_vec()))
        })
        .collect::<Result<_, _>>()?;
    let shape = broadcast_shapes(&leaf_shapes)?;
    let n: usize = shape.iter().product();
    // Leaves that are not contiguous are copied first.
    for leaf in prog.leaves.iter_mut() {
        let copy = with_array!(leaf.0.as_ref(), a => {
            if a.as_slice().is_some() {
                None
            } else {
                Some(ArrayKind::wrap(a.as_standard_layout().into_owned()))
            }
        });
        if let Some(c) = copy {
            leaf.0 = Cow::Owned(c);
        }
    }
    let mut sources: Vec<Box<dyn TileSource + '_>> = prog
        .leaves
        .iter()
        .map(
            |(d, items)| -> Result<Box<dyn TileSource + '_>, ExprError> {
                with_array!(d.as_ref(), a => {
                    let s = source_for(a, items, &shape)?
                        .ok_or_else(|| ExprError::at(1, "internal: leaf not contiguous"))?;
                    Ok(Box::new(s) as Box<dyn TileSource + '_>)
                })
            },
        )
        .collect::<Result<_, _>>()?;
    let ops = &prog.ops;
    let mut fb: Vec<Vec<f64>> = Vec::with_capacity(ops.len());
    let mut ib: Vec<Vec<i64>> = Vec::with_capacity(ops.len());
    for (op, d) in ops {
        let len = TILE.min(n.max(1));
        if d.is_float() {
            fb.push(vec![if let Op::ConstF(v) = op { *v } else { 0.0 }; len]);
            ib.push(Vec::new());
        } else {
            ib.push(vec![if let Op::ConstI(v) = op { *v } else { 0 }; len]);
            fb.push(Vec::new());
        }
    }
    let out_dtype = ops[root_op].1;
    let out = with_dtype!(out_dtype, T => {
        let mut out: Vec<T> = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = (n - start).min(TILE);
            for k in 0..ops.len() {
                step(k, len, ops, &mut fb, &mut ib, &mut sources);
            }
            if out_dtype.is_float() {
                out.extend(fb[root_op][..len].iter().map(|&v| T::from_f64(v)));
            } else {
                out.extend(ib[root_op][..len].iter().map(|&v| T::from_i64(v)));
            }
            start += len;
        }
        T::wrap(ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(shape_err)?)
    });
    Ok(out)
}

#[inline(always)]
fn zip2f(o: &mut [f64], a: &[f64], b: &[f64], round32: bool, f: impl Fn(f64, f64) -> f64) {
    if round32 {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = f(a, b) as f32 as f64;
        }
    } else {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = f(a, b);
        }
    }
}

#[inline(always)]
fn map1f(o: &mut [f64], a: &[f64], d: DType, f: impl Fn(f64) -> f64) -> bool {
    if d == DType::F32 {
        for (o, &a) in o.iter_mut().zip(a) {
            *o = f(a) as f32 as f64;
        }
    } else {
        for (o, &a) in o.iter_mut().zip(a) {
            *o = f(a);
        }
    }
    true
}

#[inline(always)]
fn zip2i(o: &mut [i64], a: &[i64], b: &[i64], d: DType, f: impl Fn(i64, i64) -> i64) {
    if d == DType::I64 {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = f(a, b);
        }
    } else {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = fix_i(d, f(a, b));
        }
    }
}

fn py_fmod(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        return f64::NAN;
    }
    let r = a % b;
    if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
        r + b
    } else {
        r
    }
}

fn py_imod(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let r = a.wrapping_rem(b);
    if r != 0 && ((r < 0) != (b < 0)) {
        r + b
    } else {
        r
    }
}

fn py_idiv(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let q = a.wrapping_div(b);
    if a.wrapping_rem(b) != 0 && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Computes op `k` for the current tile of `len` elements into its lane.
fn step(
    k: usize,
    len: usize,
    ops: &[(Op, DType)],
    fb: &mut [Vec<f64>],
    ib: &mut [Vec<i64>],
    sources: &mut [Box<dyn TileSource + '_>],
) {
    let (op, d) = (&ops[k].0, ops[k].1);
    if matches!(op, Op::ConstF(_) | Op::ConstI(_)) {
        return;
    }
    if d.is_float() {
        let mut o = std::mem::take(&mut fb[k]);
        step_f(op, d, &mut o[..len], ops, fb, ib, sources);
        fb[k] = o;
    } else {
        let mut o = std::mem::take(&mut ib[k]);
        step_i(op, d, &mut o[..len], ops, fb, ib, sources);
        ib[k] = o;
    }
}

/// An op of the float lane (`d` is a float dtype) into `o`, one tile.
#[inline]
fn step_f(
    op: &Op,
    d: DType,
    o: &mut [f64],
    ops: &[(Op, DType)],
    fb: &[Vec<f64>],
    ib: &[Vec<i64>],
    sources: &mut [Box<dyn TileSource + '_>],
) {
    let len = o.len();
    match op {
        Op::Leaf(l) => sources[*l].fill_f(o),
        Op::ToF(j) => {
            if ops[*j].1.is_float() {
                for (o, &a) in o.iter_mut().zip(&fb[*j]) {
                    *o = fix_f(d, a);
                }
            } else {
                for (o, &a) in o.iter_mut().zip(&ib[*j]) {
                    *o = fix_f(d, a as f64);
                }
            }
        }
        Op::Unary(_, j) => {
            for (o, &a) in o.iter_mut().zip(&fb[*j]) {
                *o = -a;
            }
        }
        Op::Binary(bop, ja, jb) => {
            let (a, b) = (&fb[*ja][..len], &fb[*jb][..len]);
            let r = d == DType::F32;
            match bop {
                BinOp::Add => zip2f(o, a, b, r, |a, b| a + b),
                BinOp::Sub => zip2f(o, a, b, r, |a, b| a - b),
                BinOp::Mul => zip2f(o, a, b, r, |a, b| a * b),
                BinOp::Div => zip2f(o, a, b, r, |a, b| a / b),
                BinOp::FloorDiv => zip2f(o, a, b, r, |a, b| (a / b).floor()),
                BinOp::Rem => zip2f(o, a, b, r, py_fmod),
                BinOp::Pow => zip2f(o, a, b, r, f64::powf),
                _ => unreachable!("comparisons and bit ops give integer lanes"),
            }
        }
        Op::Func(func, js) => func_f(*func, js, d, o, fb, ib),
        Op::ConstF(_) | Op::ConstI(_) | Op::ToI(_) => unreachable!("float lane"),
    }
}

/// A function of the float lane (`d` is a float dtype) into `o`, one tile.
#[inline]
fn func_f(func: Func, js: &[usize], d: DType, o: &mut [f64], fb: &[Vec<f64>], ib: &[Vec<i64>]) {
    let len = o.len();
    // `where`'s condition lives in the integer lane.
    let a: &[f64] = if func == Func::Where {
        &[]
    } else {
        &fb[js[0]][..len]
    };
    // float32 maths is computed in float64 and rounded once.
    let handled = match func {
        Func::Abs => map1f(o, a, d, f64::abs),
        Func::Sqrt => map1f(o, a, d, f64::sqrt),
        Func::Exp => map1f(o, a, d, f64::exp),
        Func::Log => map1f(o, a, d, f64::ln),
        Func::Log2 => map1f(o, a, d, f64::log2),
        Func::Log10 => map1f(o, a, d, f64::log10),
        Func::Sin => map1f(o, a, d, f64::sin),
        Func::Cos => map1f(o, a, d, f64::cos),
        Func::Tan => map1f(o, a, d, f64::tan),
        Func::Arctan => map1f(o, a, d, f64::atan),
        Func::Tanh => map1f(o, a, d, f64::tanh),
        Func::Floor => map1f(o, a, d, f64::floor),
        Func::Ceil => map1f(o, a, d, f64::ceil),
        Func::Round => map1f(o, a, d, f64::round_ties_even),
        Func::Trunc => map1f(o, a, d, f64::trunc),
        Func::Square => map1f(o, a, d, |v| v * v),
        _ => false,
    };
    if handled {
        return;
    }
    match func {
        Func::Minimum | Func::Maximum => {
            let f = if func == Func::Minimum {
                nan_min
            } else {
                nan_max
            };
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(&fb[js[1]]) {
                *o = f(a, b);
            }
        }
        Func::Clip => {
            for (((o, &x), &lo), &hi) in o.iter_mut().zip(a).zip(&fb[js[1]]).zip(&fb[js[2]]) {
                *o = nan_min(nan_max(x, lo), hi);
            }
        }
        Func::Where => {
            let c = &ib[js[0]];
            for (((o, &c), &x), &y) in o.iter_mut().zip(c).zip(&fb[js[1]]).zip(&fb[js[2]]) {
                *o = if c != 0 { x } else { y };
            }
        }
        _ => unreachable!("bool-valued functions give integer lanes"),
    }
}

/// An op of the integer lane (`d` is an integer or bool dtype) into `o`,
/// one tile.
#[inline]
fn step_i(
    op: &Op,
    d: DType,
    o: &mut [i64],
    ops: &[(Op, DType)],
    fb: &[Vec<f64>],
    ib: &[Vec<i64>],
    sources: &mut [Box<dyn TileSource + '_>],
) {
    let len = o.len();
    match op {
        Op::Leaf(l) => sources[*l].fill_i(o),
        Op::ToI(j) => {
            if ops[*j].1.is_float() {
                for (o, &a) in o.iter_mut().zip(&fb[*j]) {
                    *o = f_to_i(d, a);
                }
            } else {
                for (o, &a) in o.iter_mut().zip(&ib[*j]) {
                    *o = fix_i(d, a);
                }
            }
        }
        Op::Unary(u, j) => {
            for (o, &a) in o.iter_mut().zip(&ib[*j]) {
                *o = match u {
                    UnOp::Neg => fix_i(d, a.wrapping_neg()),
                    UnOp::Not if d == DType::Bool => 1 - a,
                    UnOp::Not => fix_i(d, !a),
                };
            }
        }
        Op::Binary(bop, ja, jb) if bop.is_comparison() => {
            compare(*bop, ops[*ja].1.is_float(), *ja, *jb, o, fb, ib);
        }
        Op::Binary(bop, ja, jb) => {
            let (a, b) = (&ib[*ja][..len], &ib[*jb][..len]);
            match bop {
                BinOp::Add => zip2i(o, a, b, d, i64::wrapping_add),
                BinOp::Sub => zip2i(o, a, b, d, i64::wrapping_sub),
                BinOp::Mul => zip2i(o, a, b, d, i64::wrapping_mul),
                BinOp::FloorDiv => zip2i(o, a, b, d, py_idiv),
                BinOp::Rem => zip2i(o, a, b, d, py_imod),
                BinOp::Pow => zip2i(o, a, b, d, |a, b| {
                    if b < 0 {
                        0
                    } else {
                        a.wrapping_pow(b.min(u32::MAX as i64) as u32)
                    }
                }),
                BinOp::And => zip2i(o, a, b, d, |a, b| a & b),
                BinOp::Or => zip2i(o, a, b, d, |a, b| a | b),
                _ => unreachable!("division gives floats"),
            }
        }
        Op::Func(func, js) => func_i(*func, js, d, o, fb, ib),
        Op::ConstF(_) | Op::ConstI(_) | Op::ToF(_) => unreachable!("integer lane"),
    }
}

/// A comparison of ops `ja` and `jb` (both in the float lane when `float`,
/// else both in the integer lane) into the bool lane `o`, one tile.
#[inline]
fn compare(
    bop: BinOp,
    float: bool,
    ja: usize,
    jb: usize,
    o: &mut [i64],
    fb: &[Vec<f64>],
    ib: &[Vec<i64>],
) {
    if float {
        let f_cmp = |a: f64, b: f64| -> bool {
            match bop {
                BinOp::Lt => a < b,
                BinOp::Le => a <= b,
                BinOp::Gt => a > b,
                BinOp::Ge => a >= b,
                BinOp::Eq => a == b,
                _ => a != b,
            }
        };
        for ((o, &a), &b) in o.iter_mut().zip(&fb[ja]).zip(&fb[jb]) {
            *o = f_cmp(a, b) as i64;
        }
    } else {
        for ((o, &a), &b) in o.iter_mut().zip(&ib[ja]).zip(&ib[jb]) {
            *o = match bop {
                BinOp::Lt => a < b,
                BinOp::Le => a <= b,
                BinOp::Gt => a > b,
                BinOp::Ge => a >= b,
                BinOp::Eq => a == b,
                _ => a != b,
            } as i64;
        }
    }
}

/// A function of the integer lane (`d` is an integer or bool dtype) into
/// `o`, one tile.
#[inline]
fn func_i(func: Func, js: &[usize], d: DType, o: &mut [i64], fb: &[Vec<f64>], ib: &[Vec<i64>]) {
    let len = o.len();
    match func {
        Func::IsNan | Func::IsFinite => {
            let nan = func == Func::IsNan;
            for (o, &a) in o.iter_mut().zip(&fb[js[0]]) {
                *o = if nan { a.is_nan() } else { a.is_finite() } as i64;
            }
        }
        Func::Where => {
            for (((o, &c), &x), &y) in o.iter_mut().zip(&ib[js[0]]).zip(&ib[js[1]]).zip(&ib[js[2]])
            {
                *o = if c != 0 { x } else { y };
            }
        }
        Func::Minimum | Func::Maximum => {
            let min = func == Func::Minimum;
            for ((o, &a), &b) in o.iter_mut().zip(&ib[js[0]]).zip(&ib[js[1]]) {
                *o = if min { a.min(b) } else { a.max(b) };
            }
        }
        Func::Clip => {
            for (((o, &x), &lo), &hi) in
                o.iter_mut().zip(&ib[js[0]]).zip(&ib[js[1]]).zip(&ib[js[2]])
            {
                *o = x.max(lo).min(hi);
            }
        }
        Func::Abs => {
            for (o, &a) in o.iter_mut().zip(&ib[js[0]]) {
                *o = fix_i(d, a.wrapping_abs());
            }
        }
        Func::Square => {
            for (o, &a) in o.iter_mut().zip(&ib[js[0]]) {
                *o = fix_i(d, a.wrapping_mul(a));
            }
        }
        // Rounding an integer is the identity.
        _ => o.copy_from_slice(&ib[js[0]][..len]),
    }
}

/// Reduces `data` along `axis` into an array of `out` dtype.
// The macro instantiates the comparisons for bool arrays too.
#[allow(clippy::bool_comparison)]
fn reduce(op: RedOp, axis: usize, data: &ArrayData, out: DType) -> ArrayData {
    let ax = Axis(axis);
    let n = data.shape()[axis] as f64;
    with_array!(data, a => match op {
        RedOp::Sum if out.is_float() => ArrayData::F64(a.fold_axis(ax, 0.0, |acc, v| acc + v.to_f64())).cast(out),
        RedOp::Sum => ArrayData::I64(a.fold_axis(ax, 0i64, |acc, v| acc.wrapping_add(v.to_i64()))),
        RedOp::Mean => ArrayData::F64(a.fold_axis(ax, 0.0, |acc, v| acc + v.to_f64()).mapv(|s| s / n)).cast(out),
        RedOp::Any => ArrayData::Bool(a.fold_axis(ax, false, |acc, v| *acc || v.to_f64() != 0.0)),
        RedOp::All => ArrayData::Bool(a.fold_axis(ax, true, |acc, v| *acc && v.to_f64() != 0.0)),
        RedOp::Min | RedOp::Max => {
            let min = op == RedOp::Min;
            let mut acc = a.index_axis(ax, 0).to_owned();
            for sub in a.axis_iter(ax).skip(1) {
                acc.zip_mut_with(&sub, |acc, &v| {
                    #[allow(clippy::eq_op)]
                    let acc_nan = *acc != *acc;
                    #[allow(clippy::eq_op)]
                    let v_nan = v != v;
                    if !acc_nan && (v_nan || (min && v < *acc) || (!min && v > *acc)) {
                        *acc = v;
                    }
                });
            }
            ArrayKind::wrap(acc)
        }
    })
}

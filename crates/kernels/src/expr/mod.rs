//! Elementwise expressions over chunks: `"0.21*x[...,0] + 0.72*x[...,1] + 0.07*x[...,2]"`.
//!
//! [`Expr::compile`] parses the text and checks it against the inputs' dtypes,
//! shapes and chunk shapes, so every mistake is found at validation with
//! the column it is at. [`Expr::eval`] runs it on one chunk per input:
//! elementwise parts are fused and evaluated tile by tile (no full-size
//! temporaries); only reductions and indexing of computed values are
//! materialised.
//!
//! Types follow numpy 2: array dtypes promote as `np.result_type`, number
//! literals are "weak" (`x_f32 * 0.5` stays float32, `x_u8 * 0.5` is
//! float64), `/` gives floats, comparisons give bool, integer arithmetic
//! wraps at the result's width, casts (`u8(e)`, `f32(e)`) are numpy's
//! `astype`. float32 results are rounded after every operation, so they
//! match numpy's float32 arithmetic bit for bit. Reductions (`sum`, `mean`,
//! `amin`, `amax`, `any`, `all`) accumulate floats in float64; integer
//! `sum` gives int64.

mod eval;
mod parse;

use blockflow_core::{ArrayData, DType};
pub use parse::{Ast, AstKind, BinOp, IndexItem, UnOp};

/// An error in an expression, with the 1-based column it points at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {col}: {msg}")]
pub struct ExprError {
    pub col: usize,
    pub msg: String,
}

impl ExprError {
    pub(crate) fn at(col: usize, msg: impl Into<String>) -> Self {
        ExprError {
            col,
            msg: msg.into(),
        }
    }
}

/// What an expression knows of one input at validation.
#[derive(Debug, Clone)]
pub struct InputInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub chunk: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Abs,
    Sqrt,
    Exp,
    Log,
    Log2,
    Log10,
    Sin,
    Cos,
    Tan,
    Arctan,
    Tanh,
    Floor,
    Ceil,
    Round,
    Trunc,
    Square,
    IsNan,
    IsFinite,
    Minimum,
    Maximum,
    Clip,
    Where,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedOp {
    Sum,
    Mean,
    Min,
    Max,
    Any,
    All,
}

/// The functions an expression may call, with a line of help each
/// (printed by `blockflow stages`).
pub const FUNCTIONS: &[(&str, &str)] = &[
    (
        "abs sqrt exp log log2 log10 sin cos tan arctan tanh square",
        "elementwise maths; integer inputs give float64 (but abs, square)",
    ),
    (
        "floor ceil round trunc",
        "rounding (round is half to even, as numpy)",
    ),
    ("isnan isfinite", "bool masks"),
    (
        "min(a, b) max(a, b) clip(x, lo, hi)",
        "elementwise minimum/maximum (NaN propagates), clipping",
    ),
    ("where(cond, a, b)", "a where cond is true, else b"),
    (
        "sum mean amin amax any all (e, axis=-1)",
        "reduce a whole (unchunked) axis, e.g. the channel axis",
    ),
    (
        "u8 u16 u32 i16 i32 i64 f32 f64 bool (e)",
        "casts, as numpy astype (float to int truncates)",
    ),
    (
        "x[..., 0]  x[..., 0:3]  x[:, :, ::2]  x[..., None]",
        "indexing and slicing of whole axes, new axes",
    ),
    (
        "[0.21, 0.72, 0.07]",
        "a constant 1-D array, broadcast against the last axis",
    ),
];

/// Static facts of a node: dtype, weak literal, global shape and chunk shape.
#[derive(Debug, Clone)]
pub(crate) struct Ty {
    pub dtype: DType,
    pub weak: bool,
    pub shape: Vec<u64>,
    pub chunk: Vec<u64>,
}

#[derive(Debug, Clone)]
pub(crate) enum Node {
    ConstF(f64),
    ConstI(i64),
    Input(usize),
    List(Vec<f64>),
    Index(Box<TNode>, Vec<IndexItem>),
    Unary(UnOp, Box<TNode>),
    Binary(BinOp, Box<TNode>, Box<TNode>),
    Func(Func, Vec<TNode>),
    Cast(Box<TNode>),
    Reduce(RedOp, usize, Box<TNode>),
}

#[derive(Debug, Clone)]
pub(crate) struct TNode {
    pub node: Node,
    pub ty: Ty,
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Expr {
    root: TNode,
    n_inputs: usize,
}

impl Expr {
    /// Parses and checks `src` against the inputs.
    pub fn compile(src: &str, inputs: &[InputInfo]) -> Result<Expr, ExprError> {
        let ast = parse::Parser::new(src)?.parse_all()?;
        let root = Checker { inputs }.check(&ast)?;
        if root.ty.weak {
            return Err(ExprError::at(
                1,
                "the expression uses no input; name an input (e.g. `x * 2`)",
            ));
        }
        Ok(Expr {
            root,
            n_inputs: inputs.len(),
        })
    }

    /// Parses only, to report syntax errors without knowing the inputs.
    pub fn parse(src: &str) -> Result<Ast, ExprError> {
        parse::Parser::new(src)?.parse_all()
    }

    pub fn dtype(&self) -> DType {
        self.root.ty.dtype
    }
    /// Global shape of the result.
    pub fn shape(&self) -> &[u64] {
        &self.root.ty.shape
    }
    /// Chunk shape of the result.
    pub fn chunk(&self) -> &[u64] {
        &self.root.ty.chunk
    }

    /// Upper bound on the full-chunk temporaries one evaluation holds, in
    /// units of the result chunk's element count times 8 bytes (for the
    /// memory projection). Fused elementwise parts need none.
    pub fn temporaries(&self) -> u64 {
        fn count(n: &TNode) -> u64 {
            match &n.node {
                Node::ConstF(_) | Node::ConstI(_) | Node::Input(_) | Node::List(_) => 0,
                Node::Index(c, _) => {
                    count(c)
                        + if matches!(c.node, Node::Input(_)) {
                            0
                        } else {
                            1
                        }
                }
                Node::Unary(_, c) | Node::Cast(c) => count(c),
                Node::Binary(_, a, b) => count(a) + count(b),
                Node::Func(_, args) => args.iter().map(count).sum(),
                Node::Reduce(_, _, c) => count(c) + 2,
            }
        }
        count(&self.root)
    }

    /// The input this expression returns unchanged, if it is just a name
    /// (so a runtime may forward chunks without copying them).
    pub fn identity_of(&self) -> Option<usize> {
        match self.root.node {
            Node::Input(i) => Some(i),
            _ => None,
        }
    }

    /// Evaluates the expression on one chunk of each input.
    pub fn eval(&self, inputs: &[&ArrayData]) -> Result<ArrayData, ExprError> {
        if inputs.len() != self.n_inputs {
            return Err(ExprError::at(
                1,
                format!("expected {} inputs, got {}", self.n_inputs, inputs.len()),
            ));
        }
        eval::evaluate(&self.root, inputs)
    }
}

struct Checker<'a> {
    inputs: &'a [InputInfo],
}

fn scalar(dtype: DType) -> Ty {
    Ty {
        dtype,
        weak: true,
        shape: vec![],
        chunk: vec![],
    }
}

/// numpy 2 promotion with weak Python scalars.
fn promote(a: &Ty, b: &Ty) -> (DType, bool) {
    match (a.weak, b.weak) {
        (true, true) => {
            let d = if a.dtype.is_float() || b.dtype.is_float() {
                DType::F64
            } else if a.dtype == DType::Bool && b.dtype == DType::Bool {
                DType::Bool
            } else {
                DType::I64
            };
            (d, true)
        }
        (true, false) | (false, true) => {
            let (w, s) = if a.weak { (a, b) } else { (b, a) };
            let d = if w.dtype.is_float() && !s.dtype.is_float() {
                DType::F64
            } else if w.dtype.is_integer() && s.dtype == DType::Bool {
                DType::I64
            } else {
                s.dtype
            };
            (d, false)
        }
        (false, false) => (DType::promote(a.dtype, b.dtype), false),
    }
}

fn broadcast(a: &Ty, b: &Ty, col: usize) -> Result<(Vec<u64>, Vec<u64>), ExprError> {
    let n = a.shape.len().max(b.shape.len());
    let get = |t: &Ty, ax: usize| -> (u64, u64) {
        let off = n - t.shape.len();
        if ax < off {
            (1, 1)
        } else {
            (t.shape[ax - off], t.chunk[ax - off])
        }
    };
    let mut shape = Vec::with_capacity(n);
    let mut chunk = Vec::with_capacity(n);
    for ax in 0..n {
        let (sa, ca) = get(a, ax);
        let (sb, cb) = get(b, ax);
        if sa == sb {
            if ca != cb {
                return Err(ExprError::at(
                    col,
                    format!(
                        "operands are chunked differently along axis {ax} (chunks of {ca} and {cb}); give them the same chunks"
                    ),
                ));
            }
            shape.push(sa);
            chunk.push(ca);
        } else if sa == 1 {
            // Broadcasting within each chunk; the runtime checks that the
            // inputs' chunk streams line up.
            shape.push(sb);
            chunk.push(cb);
        } else if sb == 1 {
            shape.push(sa);
            chunk.push(ca);
        } else {
            return Err(ExprError::at(
                col,
                format!(
                    "shapes {:?} and {:?} do not broadcast (axis {ax}: {sa} vs {sb})",
                    a.shape, b.shape
                ),
            ));
        }
    }
    Ok((shape, chunk))
}

/// numpy's slice normalisation (Python's `slice.indices`): start, step, length.
pub(crate) fn slice_indices(
    len: i64,
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
) -> (i64, i64, i64) {
    let step = step.unwrap_or(1);
    let (lo, hi) = if step > 0 { (0, len) } else { (-1, len - 1) };
    let norm = |v: Option<i64>, default: i64| match v {
        None => default,
        Some(v) if v < 0 => (v + len).max(lo),
        Some(v) => v.min(hi),
    };
    let start = norm(start, if step > 0 { lo } else { hi });
    let stop = norm(stop, if step > 0 { hi } else { lo });
    let n = if step > 0 {
        if stop > start {
            (stop - start + step - 1) / step
        } else {
            0
        }
    } else if start > stop {
        (start - stop + (-step) - 1) / (-step)
    } else {
        0
    };
    (start, step, n)
}

/// Expands an index list against `ndim` axes: per item, the axis it consumes.
pub(crate) fn expand_items(
    items: &[IndexItem],
    ndim: usize,
    col: usize,
) -> Result<Vec<IndexItem>, ExprError> {
    let consumed = items
        .iter()
        .filter(|i| !matches!(i, IndexItem::Ellipsis | IndexItem::NewAxis))
        .count();
    let ellipses = items
        .iter()
        .filter(|i| matches!(i, IndexItem::Ellipsis))
        .count();
    if ellipses > 1 {
        return Err(ExprError::at(col, "an index can hold only one `...`"));
    }
    if consumed > ndim {
        return Err(ExprError::at(
            col,
            format!("too many indices: {consumed} for an array of {ndim} axes"),
        ));
    }
    let mut out = Vec::new();
    for it in items {
        if *it == IndexItem::Ellipsis {
            for _ in 0..ndim - consumed {
                out.push(IndexItem::Slice(None, None, None));
            }
        } else {
            out.push(it.clone());
        }
    }
    if ellipses == 0 {
        for _ in consumed..ndim {
            out.push(IndexItem::Slice(None, None, None));
        }
    }
    Ok(out)
}

impl Checker<'_> {
    fn check(&self, ast: &Ast) -> Result<TNode, ExprError> {
        let col = ast.col;
        match &ast.kind {
            AstKind::Num(v, is_int) => Ok(if *is_int && v.abs() < 9.0e15 {
                TNode {
                    node: Node::ConstI(*v as i64),
                    ty: scalar(DType::I64),
                }
            } else {
                TNode {
                    node: Node::ConstF(*v),
                    ty: scalar(DType::F64),
                }
            }),
            AstKind::Bool(b) => Ok(TNode {
                node: Node::ConstI(*b as i64),
                ty: scalar(DType::Bool),
            }),
            AstKind::List(vals, all_int) => {
                let n = vals.len() as u64;
                Ok(TNode {
                    node: Node::List(vals.clone()),
                    ty: Ty {
                        dtype: if *all_int { DType::I64 } else { DType::F64 },
                        weak: false,
                        shape: vec![n],
                        chunk: vec![n],
                    },
                })
            }
            AstKind::Name(name) => self.name(name, col),
            AstKind::Index(base, items) => self.index(base, items, col),
            AstKind::Unary(op, e) => self.unary(*op, e, col),
            AstKind::Binary(op, a, b) => self.binary(*op, a, b, col),
            AstKind::Call(name, args) => self.call(name, args, col),
        }
    }

    /// An input by its name (`x` is the first input).
    fn name(&self, name: &str, col: usize) -> Result<TNode, ExprError> {
        let pos = self
            .inputs
            .iter()
            .position(|i| i.name == name)
            .or_else(|| (name == "x" && !self.inputs.is_empty()).then_some(0));
        match pos {
            Some(i) => {
                let info = &self.inputs[i];
                Ok(TNode {
                    node: Node::Input(i),
                    ty: Ty {
                        dtype: info.dtype,
                        weak: false,
                        shape: info.shape.clone(),
                        chunk: info.chunk.clone(),
                    },
                })
            }
            None => {
                let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                Err(ExprError::at(
                    col,
                    format!(
                        "`{name}` is not an input; the inputs are {} (`x` is the first)",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                ))
            }
        }
    }

    /// `base[items]`.
    fn index(&self, base: &Ast, items: &[IndexItem], col: usize) -> Result<TNode, ExprError> {
        let b = self.check(base)?;
        if b.ty.weak {
            return Err(ExprError::at(col, "a number cannot be indexed"));
        }
        let items = expand_items(items, b.ty.shape.len(), col)?;
        let (shape, chunk) = indexed_shape(&b.ty, &items, col)?;
        let ty = Ty {
            dtype: b.ty.dtype,
            weak: false,
            shape,
            chunk,
        };
        Ok(TNode {
            node: Node::Index(Box::new(b), items),
            ty,
        })
    }

    fn unary(&self, op: UnOp, e: &Ast, col: usize) -> Result<TNode, ExprError> {
        let e = self.check(e)?;
        let mut ty = e.ty.clone();
        match op {
            UnOp::Neg => {
                if ty.dtype == DType::Bool {
                    return Err(ExprError::at(col, "cannot negate a bool; use `~`"));
                }
            }
            UnOp::Not => {
                if ty.dtype.is_float() {
                    return Err(ExprError::at(col, "`~` needs bool or integer values"));
                }
            }
        }
        ty.weak = e.ty.weak;
        Ok(TNode {
            node: Node::Unary(op, Box::new(e)),
            ty,
        })
    }

    fn binary(&self, op: BinOp, a: &Ast, b: &Ast, col: usize) -> Result<TNode, ExprError> {
        let a = self.check(a)?;
        let b = self.check(b)?;
        let (shape, chunk) = broadcast(&a.ty, &b.ty, col)?;
        let (mut dtype, weak) = promote(&a.ty, &b.ty);
        match op {
            _ if op.is_comparison() => dtype = DType::Bool,
            BinOp::Div => {
                if !dtype.is_float() {
                    dtype = DType::F64
                }
            }
            BinOp::And | BinOp::Or => {
                if dtype.is_float() {
                    return Err(ExprError::at(
                        col,
                        "`&` and `|` need bool or integer operands; compare first, e.g. `(x > 0) & (y < 1)`",
                    ));
                }
            }
            _ => {
                if dtype == DType::Bool {
                    dtype = DType::I64
                }
            }
        }
        Ok(TNode {
            node: Node::Binary(op, Box::new(a), Box::new(b)),
            ty: Ty {
                dtype,
                weak,
                shape,
                chunk,
            },
        })
    }

    /// A call: a cast (`f32(e)`), a reduction (`sum(e, axis=-1)`) or an
    /// elementwise function.
    fn call(&self, name: &str, args: &[parse::Arg], col: usize) -> Result<TNode, ExprError> {
        let positional: Vec<&Ast> = args
            .iter()
            .filter(|a| a.name.is_none())
            .map(|a| &a.value)
            .collect();
        let named = |key: &str| args.iter().find(|a| a.name.as_deref() == Some(key));
        for a in args {
            if let Some(n) = &a.name {
                if n != "axis" {
                    return Err(ExprError::at(
                        a.value.col,
                        format!("`{name}` takes no argument named `{n}`"),
                    ));
                }
            }
        }
        if let Some(dtype) = DType::parse(name) {
            arity(name, &positional, 1, col)?;
            let e = self.check(positional[0])?;
            let ty = Ty {
                dtype,
                weak: false,
                shape: e.ty.shape.clone(),
                chunk: e.ty.chunk.clone(),
            };
            return Ok(TNode {
                node: Node::Cast(Box::new(e)),
                ty,
            });
        }
        if let Some(op) = reduction(name) {
            let axis = named("axis").map(|a| &a.value);
            return self.reduce(op, name, &positional, axis, col);
        }
        let Some((func, n)) = function(name) else {
            return Err(unknown_function(name, col));
        };
        if named("axis").is_some() {
            return Err(ExprError::at(col, format!("`{name}` takes no axis")));
        }
        arity(name, &positional, n, col)?;
        let args: Vec<TNode> = positional
            .iter()
            .map(|a| self.check(a))
            .collect::<Result<_, _>>()?;
        let mut ty = args[0].ty.clone();
        for a in &args[1..] {
            let (shape, chunk) = broadcast(&ty, &a.ty, col)?;
            ty.shape = shape;
            ty.chunk = chunk;
        }
        ty.dtype = func_dtype(func, &args);
        ty.weak = args.iter().all(|a| a.ty.weak);
        Ok(TNode {
            node: Node::Func(func, args),
            ty,
        })
    }

    /// The reduction `name` of `positional[0]` along the axis given by name
    /// (`axis_named`) or as the second argument (-1 if neither).
    fn reduce(
        &self,
        op: RedOp,
        name: &str,
        positional: &[&Ast],
        axis_named: Option<&Ast>,
        col: usize,
    ) -> Result<TNode, ExprError> {
        if positional.is_empty() || positional.len() > 2 {
            return Err(ExprError::at(
                col,
                format!("`{name}` takes an array and an optional axis: `{name}(e, axis=-1)`"),
            ));
        }
        let axis_ast = axis_named.or(positional.get(1).copied());
        let axis = match axis_ast {
            None => -1,
            Some(Ast {
                kind: AstKind::Num(v, true),
                ..
            }) => *v as i64,
            Some(a) => return Err(ExprError::at(a.col, "the axis must be an integer")),
        };
        let e = self.check(positional[0])?;
        let nd = e.ty.shape.len() as i64;
        if nd == 0 {
            return Err(ExprError::at(col, format!("`{name}` needs an array")));
        }
        let ax = if axis < 0 { axis + nd } else { axis };
        if ax < 0 || ax >= nd {
            return Err(ExprError::at(
                col,
                format!("axis {axis} is out of range for an array of {nd} axes"),
            ));
        }
        let ax = ax as usize;
        whole_axis(e.ty.shape[ax], e.ty.chunk[ax], ax, col)?;
        let dtype = match op {
            RedOp::Any | RedOp::All => DType::Bool,
            RedOp::Min | RedOp::Max => e.ty.dtype,
            RedOp::Sum => {
                if e.ty.dtype.is_float() {
                    e.ty.dtype
                } else {
                    DType::I64
                }
            }
            RedOp::Mean => {
                if e.ty.dtype.is_float() {
                    e.ty.dtype
                } else {
                    DType::F64
                }
            }
        };
        let mut shape = e.ty.shape.clone();
        let mut chunk = e.ty.chunk.clone();
        shape.remove(ax);
        chunk.remove(ax);
        Ok(TNode {
            node: Node::Reduce(op, ax, Box::new(e)),
            ty: Ty {
                dtype,
                weak: false,
                shape,
                chunk,
            },
        })
    }
}

/// The shape and chunk shape of an array of type `ty` indexed by `items`
/// (expanded: no ellipsis, one item per axis besides new axes).
fn indexed_shape(
    ty: &Ty,
    items: &[IndexItem],
    col: usize,
) -> Result<(Vec<u64>, Vec<u64>), ExprError> {
    let mut shape = Vec::new();
    let mut chunk = Vec::new();
    let mut ax = 0;
    for it in items {
        match it {
            IndexItem::NewAxis => {
                shape.push(1);
                chunk.push(1);
            }
            IndexItem::Ellipsis => unreachable!("expanded"),
            IndexItem::Int(i) => {
                let (n, c) = (ty.shape[ax], ty.chunk[ax]);
                whole_axis(n, c, ax, col)?;
                let ii = if *i < 0 { *i + n as i64 } else { *i };
                if ii < 0 || ii >= n as i64 {
                    return Err(ExprError::at(
                        col,
                        format!("index {i} is out of range for axis {ax} of size {n}"),
                    ));
                }
                ax += 1;
            }
            IndexItem::Slice(s, e, st) => {
                let (n, c) = (ty.shape[ax], ty.chunk[ax]);
                if s.is_none() && e.is_none() && st.unwrap_or(1) == 1 {
                    shape.push(n);
                    chunk.push(c);
                } else {
                    whole_axis(n, c, ax, col)?;
                    let (_, _, len) = slice_indices(n as i64, *s, *e, *st);
                    if len == 0 {
                        return Err(ExprError::at(
                            col,
                            format!("slice selects nothing of axis {ax} (size {n})"),
                        ));
                    }
                    shape.push(len as u64);
                    chunk.push(len as u64);
                }
                ax += 1;
            }
        }
    }
    Ok((shape, chunk))
}

/// Refuses a call of `name` with other than `n` positional arguments.
fn arity(name: &str, positional: &[&Ast], n: usize, col: usize) -> Result<(), ExprError> {
    if positional.len() != n {
        Err(ExprError::at(
            col,
            format!(
                "`{name}` takes {n} argument{}, got {}",
                if n == 1 { "" } else { "s" },
                positional.len()
            ),
        ))
    } else {
        Ok(())
    }
}

/// The reduction called `name`, if it is one.
fn reduction(name: &str) -> Option<RedOp> {
    match name {
        "sum" => Some(RedOp::Sum),
        "mean" => Some(RedOp::Mean),
        "amin" => Some(RedOp::Min),
        "amax" => Some(RedOp::Max),
        "any" => Some(RedOp::Any),
        "all" => Some(RedOp::All),
        _ => None,
    }
}

/// The elementwise function called `name` and its number of arguments.
fn function(name: &str) -> Option<(Func, usize)> {
    Some(match name {
        "abs" => (Func::Abs, 1),
        "sqrt" => (Func::Sqrt, 1),
        "exp" => (Func::Exp, 1),
        "log" => (Func::Log, 1),
        "log2" => (Func::Log2, 1),
        "log10" => (Func::Log10, 1),
        "sin" => (Func::Sin, 1),
        "cos" => (Func::Cos, 1),
        "tan" => (Func::Tan, 1),
        "arctan" => (Func::Arctan, 1),
        "tanh" => (Func::Tanh, 1),
        "floor" => (Func::Floor, 1),
        "ceil" => (Func::Ceil, 1),
        "round" => (Func::Round, 1),
        "trunc" => (Func::Trunc, 1),
        "square" => (Func::Square, 1),
        "isnan" => (Func::IsNan, 1),
        "isfinite" => (Func::IsFinite, 1),
        "min" | "minimum" => (Func::Minimum, 2),
        "max" | "maximum" => (Func::Maximum, 2),
        "clip" => (Func::Clip, 3),
        "where" => (Func::Where, 3),
        _ => return None,
    })
}

/// The error for a call of an unknown function, with a did-you-mean.
fn unknown_function(name: &str, col: usize) -> ExprError {
    let known = [
        "abs", "sqrt", "exp", "log", "log2", "log10", "sin", "cos", "tan", "arctan", "tanh",
        "floor", "ceil", "round", "trunc", "square", "isnan", "isfinite", "min", "max", "clip",
        "where", "sum", "mean", "amin", "amax", "any", "all", "u8", "u16", "u32", "i16", "i32",
        "i64", "f32", "f64", "bool",
    ];
    let hint = crate::did_you_mean(name, known.iter().copied())
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    ExprError::at(col, format!("unknown function `{name}`{hint}"))
}

/// The dtype of elementwise function `func` of the checked `args`.
fn func_dtype(func: Func, args: &[TNode]) -> DType {
    match func {
        Func::IsNan | Func::IsFinite => DType::Bool,
        Func::Abs | Func::Square | Func::Floor | Func::Ceil | Func::Round | Func::Trunc => {
            if args[0].ty.dtype == DType::Bool && func != Func::Abs {
                DType::I64
            } else {
                args[0].ty.dtype
            }
        }
        Func::Minimum | Func::Maximum => promote(&args[0].ty, &args[1].ty).0,
        Func::Clip => {
            let (d, w) = promote(&args[0].ty, &args[1].ty);
            let t = Ty {
                dtype: d,
                weak: w,
                ..args[0].ty.clone()
            };
            promote(&t, &args[2].ty).0
        }
        Func::Where => promote(&args[1].ty, &args[2].ty).0,
        _ => {
            if args[0].ty.dtype.is_float() {
                args[0].ty.dtype
            } else {
                DType::F64
            }
        }
    }
}

fn whole_axis(n: u64, c: u64, ax: usize, col: usize) -> Result<(), ExprError> {
    if c < n {
        Err(ExprError::at(
            col,
            format!(
                "axis {ax} (size {n}) is split into chunks of {c}; indexing and reducing need the whole axis in each chunk, so read it with chunks of {n} along axis {ax}"
            ),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;

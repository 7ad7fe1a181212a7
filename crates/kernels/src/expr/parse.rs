//! Tokenizer and Pratt parser for the elementwise expression language.
//!
//! The grammar follows Python/numpy precedence, lowest first: comparisons,
//! `|`, `&`, `+ -`, `* / // %`, unary `- + ~`, `**`, then calls,
//! indexing `x[..., 0:3, None]`, numbers, names, `[a, b, c]` constants.

use super::ExprError;

/// The most tokens an expression may have. Evaluation keeps a tile buffer
/// per operation, so the bound also bounds the evaluator's memory.
pub const MAX_TOKENS: usize = 1000;

/// The deepest an expression may nest: parentheses, calls, unary operators
/// and chains of binary operators (`a + b + c` is two levels). Parsing,
/// checking and evaluation recurse once per level, so the bound keeps their
/// stacks small on any thread.
pub const MAX_DEPTH: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Num(f64, bool),
    Ident(String),
    Op(&'static str),
    End,
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    const OPS: [&str; 24] = [
        "...", "**", "//", "<=", ">=", "==", "!=", "+", "-", "*", "/", "%", "<", ">", "&", "|",
        "~", "(", ")", "[", "]", ",", ":", "=",
    ];
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let col = i + 1;
        if out.len() >= MAX_TOKENS {
            return Err(ExprError::at(
                col,
                format!(
                    "the expression is too long (more than {MAX_TOKENS} tokens); split it into several `expr` stages"
                ),
            ));
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            let mut is_int = true;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' && chars.get(i + 1) != Some(&'.') {
                is_int = false;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    is_int = false;
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let v: f64 = text
                .parse()
                .map_err(|_| ExprError::at(col, format!("`{text}` is not a number")))?;
            out.push((Tok::Num(v, is_int), col));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), col));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 3)].iter().collect();
        match OPS.iter().find(|op| rest.starts_with(**op)) {
            Some(op) => {
                out.push((Tok::Op(op), col));
                i += op.chars().count();
            }
            None => return Err(ExprError::at(col, format!("unexpected character `{c}`"))),
        }
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Rem,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    pub(crate) fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IndexItem {
    Ellipsis,
    NewAxis,
    Int(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
}

/// A call argument: positional or `name=value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<String>,
    pub value: Ast,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AstKind {
    Num(f64, bool),
    Bool(bool),
    List(Vec<f64>, bool),
    Name(String),
    Unary(UnOp, Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
    Call(String, Vec<Arg>),
    Index(Box<Ast>, Vec<IndexItem>),
}

/// A parsed expression; `col` is the 1-based column where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    pub kind: AstKind,
    pub col: usize,
}

pub(crate) struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// How deeply `unary` (which every nested construct passes) recurses.
    nest: usize,
}

impl Parser {
    pub(crate) fn new(src: &str) -> Result<Self, ExprError> {
        Ok(Parser {
            toks: tokenize(src)?,
            pos: 0,
            nest: 0,
        })
    }

    /// The token after the current one (`End` past the end).
    fn peek2(&self) -> &Tok {
        self.toks.get(self.pos + 1).map_or(&Tok::End, |t| &t.0)
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn col(&self) -> usize {
        self.toks[self.pos].1
    }
    fn bump(&mut self) -> (Tok, usize) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Tok::Op(o) if *o == op) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(ExprError::at(
                self.col(),
                format!("expected `{op}`, found {}", describe(self.peek())),
            ))
        }
    }

    pub(crate) fn parse_all(mut self) -> Result<Ast, ExprError> {
        let e = self.expr()?;
        if *self.peek() != Tok::End {
            return Err(ExprError::at(
                self.col(),
                format!(
                    "unexpected {} after a complete expression",
                    describe(self.peek())
                ),
            ));
        }
        check_depth(&e)?;
        Ok(e)
    }

    fn expr(&mut self) -> Result<Ast, ExprError> {
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Ast, ExprError> {
        let lhs = self.bit_or()?;
        let op = match self.peek() {
            Tok::Op("<") => BinOp::Lt,
            Tok::Op("<=") => BinOp::Le,
            Tok::Op(">") => BinOp::Gt,
            Tok::Op(">=") => BinOp::Ge,
            Tok::Op("==") => BinOp::Eq,
            Tok::Op("!=") => BinOp::Ne,
            _ => return Ok(lhs),
        };
        self.bump();
        let rhs = self.bit_or()?;
        if matches!(self.peek(), Tok::Op("<" | "<=" | ">" | ">=" | "==" | "!=")) {
            return Err(ExprError::at(
                self.col(),
                "chained comparisons are not supported; combine with `&` and parentheses",
            ));
        }
        Ok(bin(op, lhs, rhs))
    }

    fn bit_or(&mut self) -> Result<Ast, ExprError> {
        let mut lhs = self.bit_and()?;
        while self.eat("|") {
            let rhs = self.bit_and()?;
            lhs = bin(BinOp::Or, lhs, rhs);
        }
        Ok(lhs)
    }

    fn bit_and(&mut self) -> Result<Ast, ExprError> {
        let mut lhs = self.additive()?;
        while self.eat("&") {
            let rhs = self.additive()?;
            lhs = bin(BinOp::And, lhs, rhs);
        }
        Ok(lhs)
    }

    fn additive(&mut self) -> Result<Ast, ExprError> {
        let mut lhs = self.term()?;
        loop {
            let op = match self.peek() {
                Tok::Op("+") => BinOp::Add,
                Tok::Op("-") => BinOp::Sub,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.term()?;
            lhs = bin(op, lhs, rhs);
        }
    }

    fn term(&mut self) -> Result<Ast, ExprError> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Op("*") => BinOp::Mul,
                Tok::Op("/") => BinOp::Div,
                Tok::Op("//") => BinOp::FloorDiv,
                Tok::Op("%") => BinOp::Rem,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.unary()?;
            lhs = bin(op, lhs, rhs);
        }
    }

    fn unary(&mut self) -> Result<Ast, ExprError> {
        if self.nest >= MAX_DEPTH {
            return Err(too_deep(self.col()));
        }
        self.nest += 1;
        let r = self.unary_inner();
        self.nest -= 1;
        r
    }

    fn unary_inner(&mut self) -> Result<Ast, ExprError> {
        let col = self.col();
        if self.eat("-") {
            let e = self.unary()?;
            // Fold negative literals so `-1` is a weak constant.
            if let AstKind::Num(v, i) = e.kind {
                return Ok(Ast {
                    kind: AstKind::Num(-v, i),
                    col,
                });
            }
            return Ok(Ast {
                kind: AstKind::Unary(UnOp::Neg, Box::new(e)),
                col,
            });
        }
        if self.eat("+") {
            return self.unary();
        }
        if self.eat("~") {
            let e = self.unary()?;
            return Ok(Ast {
                kind: AstKind::Unary(UnOp::Not, Box::new(e)),
                col,
            });
        }
        self.power()
    }

    fn power(&mut self) -> Result<Ast, ExprError> {
        let base = self.postfix()?;
        if self.eat("**") {
            let exp = self.unary()?;
            return Ok(bin(BinOp::Pow, base, exp));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Ast, ExprError> {
        let mut e = self.atom()?;
        while matches!(self.peek(), Tok::Op("[")) {
            let col = self.col();
            self.bump();
            let mut items = Vec::new();
            loop {
                items.push(self.index_item()?);
                if self.eat(",") {
                    if matches!(self.peek(), Tok::Op("]")) {
                        break;
                    }
                    continue;
                }
                break;
            }
            self.expect("]")?;
            e = Ast {
                kind: AstKind::Index(Box::new(e), items),
                col,
            };
        }
        Ok(e)
    }

    fn int_literal(&mut self) -> Result<Option<i64>, ExprError> {
        let col = self.col();
        let neg = self.eat("-");
        match self.peek().clone() {
            Tok::Num(v, true) => {
                self.bump();
                Ok(Some(if neg { -(v as i64) } else { v as i64 }))
            }
            t if neg => Err(ExprError::at(
                col,
                format!("expected an integer index, found {}", describe(&t)),
            )),
            _ => Ok(None),
        }
    }

    fn index_item(&mut self) -> Result<IndexItem, ExprError> {
        if self.eat("...") {
            return Ok(IndexItem::Ellipsis);
        }
        if let Tok::Ident(name) = self.peek() {
            if name == "None" || name == "newaxis" {
                self.bump();
                return Ok(IndexItem::NewAxis);
            }
        }
        let col = self.col();
        let start = self.int_literal()?;
        if !matches!(self.peek(), Tok::Op(":")) {
            return match start {
                Some(i) => Ok(IndexItem::Int(i)),
                None => Err(ExprError::at(
                    col,
                    format!(
                        "expected an index (integer, slice `a:b:c`, `...` or `None`), found {}",
                        describe(self.peek())
                    ),
                )),
            };
        }
        self.bump();
        let stop = self.int_literal()?;
        let step = if self.eat(":") {
            let c = self.col();
            let s = self.int_literal()?;
            if s == Some(0) {
                return Err(ExprError::at(c, "slice step cannot be zero"));
            }
            s
        } else {
            None
        };
        Ok(IndexItem::Slice(start, stop, step))
    }

    fn atom(&mut self) -> Result<Ast, ExprError> {
        let (tok, col) = self.bump();
        match tok {
            Tok::Num(v, is_int) => Ok(Ast {
                kind: AstKind::Num(v, is_int),
                col,
            }),
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Op("[") => self.list(col),
            Tok::Ident(name) => self.name_or_call(name, col),
            t => Err(ExprError::at(
                col,
                format!("expected a value, found {}", describe(&t)),
            )),
        }
    }

    /// A constant list `[1, -2.5, ...]` after its `[` (at `col`).
    fn list(&mut self, col: usize) -> Result<Ast, ExprError> {
        let mut vals = Vec::new();
        let mut all_int = true;
        loop {
            let c = self.col();
            let neg = self.eat("-");
            match self.bump() {
                (Tok::Num(v, i), _) => {
                    all_int &= i;
                    vals.push(if neg { -v } else { v });
                }
                (t, _) => {
                    return Err(ExprError::at(
                        c,
                        format!("a constant list holds numbers only, found {}", describe(&t)),
                    ))
                }
            }
            if !self.eat(",") {
                break;
            }
        }
        self.expect("]")?;
        Ok(Ast {
            kind: AstKind::List(vals, all_int),
            col,
        })
    }

    /// A name read at `col`: a constant (`True`, `nan`, `pi`, ...), a call
    /// `name(args)`, or an input.
    fn name_or_call(&mut self, name: String, col: usize) -> Result<Ast, ExprError> {
        if name == "True" || name == "False" {
            return Ok(Ast {
                kind: AstKind::Bool(name == "True"),
                col,
            });
        }
        if name == "nan" || name == "inf" {
            let v = if name == "nan" {
                f64::NAN
            } else {
                f64::INFINITY
            };
            return Ok(Ast {
                kind: AstKind::Num(v, false),
                col,
            });
        }
        if name == "pi" {
            return Ok(Ast {
                kind: AstKind::Num(std::f64::consts::PI, false),
                col,
            });
        }
        if self.eat("(") {
            let args = self.call_args()?;
            return Ok(Ast {
                kind: AstKind::Call(name, args),
                col,
            });
        }
        Ok(Ast {
            kind: AstKind::Name(name),
            col,
        })
    }

    /// The arguments of a call after its `(`, through its `)`.
    fn call_args(&mut self) -> Result<Vec<Arg>, ExprError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            let mut arg_name = None;
            if let (Tok::Ident(n), Tok::Op("=")) = (self.peek().clone(), self.peek2().clone()) {
                arg_name = Some(n);
                self.bump();
                self.bump();
            }
            let value = self.expr()?;
            args.push(Arg {
                name: arg_name,
                value,
            });
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }
}

fn too_deep(col: usize) -> ExprError {
    ExprError::at(
        col,
        format!(
            "the expression nests too deeply (more than {MAX_DEPTH} levels of parentheses, calls and operators; a chain `a + b + c + ...` counts a level per operator); split it into several `expr` stages"
        ),
    )
}

/// Refuses a tree deeper than [`MAX_DEPTH`] (a long chain of binary
/// operators, which the parser builds in a loop), without recursing.
fn check_depth(root: &Ast) -> Result<(), ExprError> {
    let mut stack = vec![(root, 1usize)];
    while let Some((a, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(too_deep(a.col));
        }
        match &a.kind {
            AstKind::Num(..) | AstKind::Bool(_) | AstKind::List(..) | AstKind::Name(_) => {}
            AstKind::Unary(_, e) | AstKind::Index(e, _) => stack.push((e, depth + 1)),
            AstKind::Binary(_, l, r) => {
                stack.push((l, depth + 1));
                stack.push((r, depth + 1));
            }
            AstKind::Call(_, args) => stack.extend(args.iter().map(|x| (&x.value, depth + 1))),
        }
    }
    Ok(())
}

fn bin(op: BinOp, lhs: Ast, rhs: Ast) -> Ast {
    let col = lhs.col;
    Ast {
        kind: AstKind::Binary(op, Box::new(lhs), Box::new(rhs)),
        col,
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(v, _) => format!("number `{v}`"),
        Tok::Ident(s) => format!("name `{s}`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::End => "the end of the expression".to_string(),
    }
}

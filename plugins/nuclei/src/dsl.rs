//! nuclei's DSL: the expression language of `dsl` matchers and extractors and of
//! `{{…}}` placeholders (`contains(tolower(body), "x") && status_code == 200`).
//!
//! nuclei evaluates these with govaluate plus its helper functions. This module
//! parses them once, when a template loads, so that a template using a helper we
//! do not have is skipped up front with the function named (see
//! [`Expr::unsupported_functions`]), and evaluates them per response against a
//! [`Scope`] of response fields and template variables.

use std::fmt;

/// Why an expression cannot be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DslError {
    /// The expression text is not valid DSL.
    #[error("dsl syntax error in {expr:?} at byte {at}: {reason}")]
    Syntax {
        expr: String,
        at: usize,
        reason: String,
    },
    /// A variable the expression reads has no value for this response.
    #[error("dsl variable {0:?} is not defined")]
    Undefined(String),
    /// A function is called with the wrong number or kind of arguments.
    #[error("dsl function {name}: {reason}")]
    BadCall { name: String, reason: String },
    /// An operator is applied to operands it does not take.
    #[error("dsl operator {op} cannot apply to {left} and {right}")]
    BadOperands {
        op: &'static str,
        left: &'static str,
        right: &'static str,
    },
}

/// A DSL value: govaluate's string, number and boolean.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Num(_) => "number",
            Value::Bool(_) => "boolean",
        }
    }

    /// The value as text, the way nuclei prints it into a request or an extraction.
    pub fn into_text(self) -> String {
        match self {
            Value::Str(s) => s,
            other => other.to_string(),
        }
    }

    /// Only `true` makes a matcher expression match.
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
            Value::Num(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Where an expression's variables come from.
pub trait Scope {
    fn get(&self, name: &str) -> Option<Value>;
}

impl<F: Fn(&str) -> Option<Value>> Scope for F {
    fn get(&self, name: &str) -> Option<Value> {
        self(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    RegexMatch,
    RegexNotMatch,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::RegexMatch => "=~",
            BinOp::RegexNotMatch => "!~",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    Var(String),
    Call(String, Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

/// The helper functions this engine implements (nuclei names, aliases included).
pub const FUNCTIONS: &[&str] = &[
    "contains",
    "contains_any",
    "contains_all",
    "starts_with",
    "ends_with",
    "tolower",
    "to_lower",
    "toupper",
    "to_upper",
    "len",
    "regex",
    "trim",
    "trim_space",
    "trim_left",
    "trim_right",
    "replace",
    "hex_encode",
    "hex_decode",
    "to_number",
    "to_string",
    "concat",
];

impl Expr {
    /// Functions called anywhere in the expression that [`FUNCTIONS`] lacks.
    pub fn unsupported_functions(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Call(name, _) = e {
                if !FUNCTIONS.contains(&name.as_str()) && !out.contains(name) {
                    out.push(name.clone());
                }
            }
        });
        out
    }

    /// Every variable the expression reads.
    pub fn variables(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Var(name) = e {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
        });
        out
    }

    fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Lit(_) | Expr::Var(_) => {}
            Expr::Call(_, args) => args.iter().for_each(|a| a.walk(f)),
            Expr::Not(e) | Expr::Neg(e) => e.walk(f),
            Expr::Binary(_, l, r) => {
                l.walk(f);
                r.walk(f);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

fn tokenize(src: &str) -> Result<Vec<(usize, Token)>, DslError> {
    let syntax = |at: usize, reason: &str| DslError::Syntax {
        expr: src.to_owned(),
        at,
        reason: reason.to_owned(),
    };
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let text = &src[start..i];
            let n = text
                .parse::<f64>()
                .map_err(|_| syntax(start, "malformed number"))?;
            tokens.push((start, Token::Num(n)));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            tokens.push((start, Token::Ident(src[start..i].to_owned())));
        } else if c == b'"' || c == b'\'' {
            // govaluate: a backslash takes the next character literally.
            let mut text = String::new();
            i += 1;
            let mut chars = src[i..].char_indices();
            let mut closed = false;
            while let Some((off, ch)) = chars.next() {
                if ch == '\\' {
                    if let Some((_, next)) = chars.next() {
                        text.push(next);
                    }
                } else if ch as u32 == u32::from(c) {
                    i += off + 1;
                    closed = true;
                    break;
                } else {
                    text.push(ch);
                }
            }
            if !closed {
                return Err(syntax(start, "unterminated string"));
            }
            tokens.push((start, Token::Str(text)));
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let op = match two {
                "&&" | "||" | "==" | "!=" | "<=" | ">=" | "=~" | "!~" => Some(two),
                _ => None,
            };
            if let Some(op) = op {
                let op: &'static str = match op {
                    "&&" => "&&",
                    "||" => "||",
                    "==" => "==",
                    "!=" => "!=",
                    "<=" => "<=",
                    ">=" => ">=",
                    "=~" => "=~",
                    _ => "!~",
                };
                tokens.push((start, Token::Op(op)));
                i += 2;
                continue;
            }
            let token = match c {
                b'(' => Token::LParen,
                b')' => Token::RParen,
                b',' => Token::Comma,
                b'!' => Token::Op("!"),
                b'<' => Token::Op("<"),
                b'>' => Token::Op(">"),
                b'+' => Token::Op("+"),
                b'-' => Token::Op("-"),
                b'*' => Token::Op("*"),
                b'/' => Token::Op("/"),
                b'%' => Token::Op("%"),
                _ => return Err(syntax(start, "unexpected character")),
            };
            tokens.push((start, token));
            i += 1;
        }
    }
    Ok(tokens)
}

/// Parses one expression.
pub fn parse(src: &str) -> Result<Expr, DslError> {
    let tokens = tokenize(src)?;
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
    };
    let expr = parser.expr(0)?;
    if parser.pos < parser.tokens.len() {
        return Err(parser.error("unexpected token after the expression"));
    }
    Ok(expr)
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<(usize, Token)>,
    pos: usize,
}

/// Binding power of binary operators, loosest first.
fn binary_op(token: &Token) -> Option<(u8, BinOp)> {
    let Token::Op(op) = token else { return None };
    Some(match *op {
        "||" => (1, BinOp::Or),
        "&&" => (2, BinOp::And),
        "==" => (3, BinOp::Eq),
        "!=" => (3, BinOp::Ne),
        "=~" => (3, BinOp::RegexMatch),
        "!~" => (3, BinOp::RegexNotMatch),
        "<" => (4, BinOp::Lt),
        "<=" => (4, BinOp::Le),
        ">" => (4, BinOp::Gt),
        ">=" => (4, BinOp::Ge),
        "+" => (5, BinOp::Add),
        "-" => (5, BinOp::Sub),
        "*" => (6, BinOp::Mul),
        "/" => (6, BinOp::Div),
        "%" => (6, BinOp::Rem),
        _ => return None,
    })
}

impl Parser<'_> {
    fn error(&self, reason: &str) -> DslError {
        DslError::Syntax {
            expr: self.src.to_owned(),
            at: self
                .tokens
                .get(self.pos)
                .map_or(self.src.len(), |(at, _)| *at),
            reason: reason.to_owned(),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        token
    }

    fn expr(&mut self, min_power: u8) -> Result<Expr, DslError> {
        let mut left = self.unary()?;
        while let Some((power, op)) = self.peek().and_then(binary_op) {
            if power <= min_power {
                break;
            }
            self.pos += 1;
            let right = self.expr(power)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, DslError> {
        match self.peek() {
            Some(Token::Op("!")) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Token::Op("-")) => {
                self.pos += 1;
                Ok(Expr::Neg(Box::new(self.unary()?)))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr, DslError> {
        match self.next() {
            Some(Token::Num(n)) => Ok(Expr::Lit(Value::Num(n))),
            Some(Token::Str(s)) => Ok(Expr::Lit(Value::Str(s))),
            Some(Token::LParen) => {
                let inner = self.expr(0)?;
                match self.next() {
                    Some(Token::RParen) => Ok(inner),
                    _ => {
                        self.pos -= 1;
                        Err(self.error("expected )"))
                    }
                }
            }
            Some(Token::Ident(name)) => {
                if self.peek() == Some(&Token::LParen) {
                    self.pos += 1;
                    let mut args = Vec::new();
                    if self.peek() == Some(&Token::RParen) {
                        self.pos += 1;
                        return Ok(Expr::Call(name, args));
                    }
                    loop {
                        args.push(self.expr(0)?);
                        match self.next() {
                            Some(Token::Comma) => continue,
                            Some(Token::RParen) => return Ok(Expr::Call(name, args)),
                            _ => {
                                self.pos -= 1;
                                return Err(self.error("expected , or ) in the argument list"));
                            }
                        }
                    }
                }
                Ok(match name.as_str() {
                    "true" => Expr::Lit(Value::Bool(true)),
                    "false" => Expr::Lit(Value::Bool(false)),
                    _ => Expr::Var(name),
                })
            }
            _ => {
                self.pos = self.pos.saturating_sub(1);
                Err(self.error("expected a value"))
            }
        }
    }
}

/// Evaluates `expr` against `scope`.
pub fn eval(expr: &Expr, scope: &dyn Scope) -> Result<Value, DslError> {
    match expr {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Var(name) => scope
            .get(name)
            .ok_or_else(|| DslError::Undefined(name.clone())),
        Expr::Not(e) => match eval(e, scope)? {
            Value::Bool(b) => Ok(Value::Bool(!b)),
            other => Err(DslError::BadOperands {
                op: "!",
                left: other.kind(),
                right: "nothing",
            }),
        },
        Expr::Neg(e) => match eval(e, scope)? {
            Value::Num(n) => Ok(Value::Num(-n)),
            other => Err(DslError::BadOperands {
                op: "-",
                left: other.kind(),
                right: "nothing",
            }),
        },
        Expr::Binary(BinOp::And, l, r) => Ok(Value::Bool(
            eval(l, scope)?.is_true() && eval(r, scope)?.is_true(),
        )),
        Expr::Binary(BinOp::Or, l, r) => Ok(Value::Bool(
            eval(l, scope)?.is_true() || eval(r, scope)?.is_true(),
        )),
        Expr::Binary(op, l, r) => binary(*op, eval(l, scope)?, eval(r, scope)?),
        Expr::Call(name, args) => {
            let values = args
                .iter()
                .map(|a| eval(a, scope))
                .collect::<Result<Vec<_>, _>>()?;
            call(name, values)
        }
    }
}

fn binary(op: BinOp, left: Value, right: Value) -> Result<Value, DslError> {
    let bad = |l: &Value, r: &Value| DslError::BadOperands {
        op: op.symbol(),
        left: l.kind(),
        right: r.kind(),
    };
    Ok(match op {
        BinOp::Eq => Value::Bool(left == right),
        BinOp::Ne => Value::Bool(left != right),
        BinOp::RegexMatch | BinOp::RegexNotMatch => {
            let (Value::Str(text), Value::Str(pattern)) = (&left, &right) else {
                return Err(bad(&left, &right));
            };
            let found = compile(pattern, "=~")?.is_match(text);
            Value::Bool(found == (op == BinOp::RegexMatch))
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ordering = match (&left, &right) {
                (Value::Num(a), Value::Num(b)) => a.partial_cmp(b),
                (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
                _ => return Err(bad(&left, &right)),
            };
            let Some(ordering) = ordering else {
                return Ok(Value::Bool(false));
            };
            Value::Bool(match op {
                BinOp::Lt => ordering.is_lt(),
                BinOp::Le => ordering.is_le(),
                BinOp::Gt => ordering.is_gt(),
                _ => ordering.is_ge(),
            })
        }
        BinOp::Add => match (left, right) {
            (Value::Num(a), Value::Num(b)) => Value::Num(a + b),
            (Value::Str(a), b) => Value::Str(a + &b.into_text()),
            (a, Value::Str(b)) => Value::Str(a.into_text() + &b),
            (a, b) => return Err(bad(&a, &b)),
        },
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
            let (Value::Num(a), Value::Num(b)) = (&left, &right) else {
                return Err(bad(&left, &right));
            };
            Value::Num(match op {
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                _ => a % b,
            })
        }
        BinOp::And | BinOp::Or => Value::Bool(left.is_true() && right.is_true()),
    })
}

fn compile(pattern: &str, function: &str) -> Result<regex::Regex, DslError> {
    regex::Regex::new(pattern).map_err(|err| DslError::BadCall {
        name: function.to_owned(),
        reason: format!("invalid regex {pattern:?}: {err}"),
    })
}

fn call(name: &str, args: Vec<Value>) -> Result<Value, DslError> {
    let bad = |reason: String| DslError::BadCall {
        name: name.to_owned(),
        reason,
    };
    let arity = |n: usize| -> Result<(), DslError> {
        if args.len() == n {
            Ok(())
        } else {
            Err(bad(format!("takes {n} arguments, got {}", args.len())))
        }
    };
    let at_least = |n: usize| -> Result<(), DslError> {
        if args.len() >= n {
            Ok(())
        } else {
            Err(bad(format!(
                "takes at least {n} arguments, got {}",
                args.len()
            )))
        }
    };
    let text = |i: usize| {
        args.get(i)
            .cloned()
            .map(Value::into_text)
            .unwrap_or_default()
    };
    Ok(match name {
        "contains" => {
            arity(2)?;
            Value::Bool(text(0).contains(&text(1)))
        }
        "contains_any" => {
            at_least(2)?;
            let hay = text(0);
            Value::Bool((1..args.len()).any(|i| hay.contains(&text(i))))
        }
        "contains_all" => {
            at_least(2)?;
            let hay = text(0);
            Value::Bool((1..args.len()).all(|i| hay.contains(&text(i))))
        }
        "starts_with" => {
            at_least(2)?;
            let hay = text(0);
            Value::Bool((1..args.len()).any(|i| hay.starts_with(&text(i))))
        }
        "ends_with" => {
            at_least(2)?;
            let hay = text(0);
            Value::Bool((1..args.len()).any(|i| hay.ends_with(&text(i))))
        }
        "tolower" | "to_lower" => {
            arity(1)?;
            Value::Str(text(0).to_lowercase())
        }
        "toupper" | "to_upper" => {
            arity(1)?;
            Value::Str(text(0).to_uppercase())
        }
        "len" => {
            arity(1)?;
            Value::Num(text(0).len() as f64)
        }
        "regex" => {
            arity(2)?;
            Value::Bool(compile(&text(0), name)?.is_match(&text(1)))
        }
        "trim" => {
            arity(2)?;
            let cut: Vec<char> = text(1).chars().collect();
            Value::Str(text(0).trim_matches(cut.as_slice()).to_owned())
        }
        "trim_left" => {
            arity(2)?;
            let cut: Vec<char> = text(1).chars().collect();
            Value::Str(text(0).trim_start_matches(cut.as_slice()).to_owned())
        }
        "trim_right" => {
            arity(2)?;
            let cut: Vec<char> = text(1).chars().collect();
            Value::Str(text(0).trim_end_matches(cut.as_slice()).to_owned())
        }
        "trim_space" => {
            arity(1)?;
            Value::Str(text(0).trim().to_owned())
        }
        "replace" => {
            arity(3)?;
            Value::Str(text(0).replace(&text(1), &text(2)))
        }
        "hex_encode" => {
            arity(1)?;
            Value::Str(hex::encode(text(0)))
        }
        "hex_decode" => {
            arity(1)?;
            let bytes = hex::decode(text(0)).map_err(|err| bad(format!("not hex: {err}")))?;
            Value::Str(String::from_utf8_lossy(&bytes).into_owned())
        }
        "to_number" => {
            arity(1)?;
            match &args[0] {
                Value::Num(n) => Value::Num(*n),
                other => {
                    let t = other.clone().into_text();
                    Value::Num(
                        t.trim()
                            .parse()
                            .map_err(|_| bad(format!("{t:?} is not a number")))?,
                    )
                }
            }
        }
        "to_string" => {
            arity(1)?;
            Value::Str(text(0))
        }
        "concat" => Value::Str((0..args.len()).map(text).collect()),
        other => {
            return Err(DslError::BadCall {
                name: other.to_owned(),
                reason: "is not a supported helper function".into(),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(name: &str) -> Option<Value> {
        match name {
            "body" => Some(Value::Str("Hello <HTML> World".into())),
            "header" => Some(Value::Str("Content-Type: application/JSON\r\n".into())),
            "status_code" => Some(Value::Num(200.0)),
            _ => None,
        }
    }

    fn run(src: &str) -> Value {
        eval(&parse(src).unwrap(), &scope).unwrap()
    }

    #[test]
    fn helpers_comparisons_and_boolean_operators_evaluate_like_nuclei() {
        assert!(run("contains(body, 'World') && status_code == 200").is_true());
        assert!(run("!contains(tolower(body), '<body')").is_true());
        assert!(!run("!contains(tolower(body), '<html')").is_true());
        assert!(run("contains_any(body, \"nope\", \"Hello\")").is_true());
        assert!(!run("contains_all(body, \"nope\", \"Hello\")").is_true());
        assert!(run("len(body) > 10 && len(body) <= 18").is_true());
        assert!(run("regex(\"^Hello\", body) || false").is_true());
        assert!(run("contains(to_lower(header), 'application/json')").is_true());
        assert_eq!(run("hex_encode('Bud1')"), Value::Str("42756431".into()));
        assert!(run("status_code >= 200 && status_code < 300 && !(status_code == 204)").is_true());
        assert_eq!(run("1 + 2 * 3"), Value::Num(7.0));
    }

    #[test]
    fn an_undefined_variable_fails_evaluation_naming_it() {
        let err = eval(&parse("server == 'x'").unwrap(), &scope).unwrap_err();
        assert_eq!(err, DslError::Undefined("server".into()));
    }

    #[test]
    fn unsupported_functions_are_named_at_parse_time() {
        let expr = parse("md5(body) == 'x' && contains(body, 'y')").unwrap();
        assert_eq!(expr.unsupported_functions(), vec!["md5".to_string()]);
    }

    #[test]
    fn a_syntax_error_names_the_expression_and_position() {
        let err = parse("contains(body, 'x'").unwrap_err();
        assert!(matches!(err, DslError::Syntax { .. }));
        assert!(err.to_string().contains("contains(body, 'x'"), "{err}");
    }

    #[test]
    fn backslash_in_a_string_takes_the_next_character_literally() {
        assert_eq!(run(r"'a\\.b'"), Value::Str(r"a\.b".into()));
    }
}

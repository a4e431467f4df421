//! `when:` conditions: a small expression language over placeholders.
//!
//! ```text
//! expr    := or
//! or      := and (("||" | "or") and)*
//! and     := not (("&&" | "and") not)*
//! not     := ("!" | "not") not | compare
//! compare := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "contains") operand)?
//! operand := {{placeholder}} | "string" | 'string' | number | true | false | null | "(" expr ")"
//! ```
//!
//! A lone operand is tested for truthiness (null, false, 0, empty lists or objects,
//! and text that is empty or reads false/no/0/null are false). Numbers compare
//! numerically, and so does text that holds a number (`"10" > "9"`); other text
//! compares lexicographically; text reading true/false equals the boolean. A step's
//! whole result is compared with surrounding whitespace trimmed. A placeholder without a
//! value is an error unless it has a fallback: `{{a.result.level ?? "low"}}`.

use crate::template::{
    Context, Placeholder, Resolved, parse_placeholder, parse_string_literal, resolve,
};
use serde_json::Value;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Ref(Placeholder),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Contains => "contains",
        }
    }
}

/// A malformed condition, with the byte range of the offending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    pub message: String,
    pub range: Range<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ref(Placeholder),
    Lit(Value),
    Op(CmpOp),
    And,
    Or,
    Not,
    LParen,
    RParen,
}

fn tokenize(text: &str) -> Result<Vec<(Tok, Range<usize>)>, ConditionError> {
    let mut toks = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let two = text.get(i..i + 2).unwrap_or("");
        let (tok, len) = if two == "{{" {
            match parse_placeholder(text, i) {
                Ok((ph, end)) => (Tok::Ref(ph), end - i),
                Err((e, _)) => {
                    return Err(ConditionError {
                        message: e.message,
                        range: e.range,
                    });
                }
            }
        } else if two == "==" {
            (Tok::Op(CmpOp::Eq), 2)
        } else if two == "!=" {
            (Tok::Op(CmpOp::Ne), 2)
        } else if two == "<=" {
            (Tok::Op(CmpOp::Le), 2)
        } else if two == ">=" {
            (Tok::Op(CmpOp::Ge), 2)
        } else if two == "&&" {
            (Tok::And, 2)
        } else if two == "||" {
            (Tok::Or, 2)
        } else {
            match c {
                b'<' => (Tok::Op(CmpOp::Lt), 1),
                b'>' => (Tok::Op(CmpOp::Gt), 1),
                b'!' => (Tok::Not, 1),
                b'(' => (Tok::LParen, 1),
                b')' => (Tok::RParen, 1),
                b'=' => {
                    return Err(ConditionError {
                        message: "use `==` to compare (a single `=` is not an operator)".into(),
                        range: i..i + 1,
                    });
                }
                b'"' | b'\'' => {
                    let quote = c;
                    let mut j = i + 1;
                    let mut escaped = false;
                    while j < b.len() {
                        if escaped {
                            escaped = false;
                        } else if b[j] == b'\\' && quote == b'"' {
                            escaped = true;
                        } else if b[j] == quote {
                            break;
                        }
                        j += 1;
                    }
                    if j >= b.len() {
                        return Err(ConditionError {
                            message: "unterminated string: add the closing quote".into(),
                            range: i..b.len(),
                        });
                    }
                    match parse_string_literal(&text[i..=j]) {
                        Some(s) => (Tok::Lit(Value::String(s)), j + 1 - i),
                        None => {
                            return Err(ConditionError {
                                message: "invalid string literal".into(),
                                range: i..j + 1,
                            });
                        }
                    }
                }
                _ => {
                    let end = text[i..]
                        .find(|ch: char| {
                            !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '+' | '_'))
                        })
                        .map_or(text.len(), |n| i + n);
                    let end = if end == i {
                        i + text[i..].chars().next().map_or(1, char::len_utf8)
                    } else {
                        end
                    };
                    let word = &text[i..end];
                    let tok = match word {
                        "true" => Tok::Lit(Value::Bool(true)),
                        "false" => Tok::Lit(Value::Bool(false)),
                        "null" => Tok::Lit(Value::Null),
                        "and" => Tok::And,
                        "or" => Tok::Or,
                        "not" => Tok::Not,
                        "contains" => Tok::Op(CmpOp::Contains),
                        w => match serde_json::from_str::<serde_json::Number>(w) {
                            Ok(n) => Tok::Lit(Value::Number(n)),
                            Err(_) => {
                                return Err(ConditionError {
                                    message: format!(
                                        "unexpected `{w}`: quote text (`\"{w}\"`) and write step results as `{{{{step.result}}}}`"
                                    ),
                                    range: i..end,
                                });
                            }
                        },
                    };
                    (tok, end - i)
                }
            }
        };
        i += len;
        toks.push((tok, start..i));
    }
    Ok(toks)
}

struct ExprParser {
    toks: Vec<(Tok, Range<usize>)>,
    pos: usize,
    len: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 64;

impl ExprParser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn here(&self) -> Range<usize> {
        self.toks
            .get(self.pos)
            .map_or(self.len..self.len, |(_, r)| r.clone())
    }

    fn err(&self, message: impl Into<String>) -> ConditionError {
        ConditionError {
            message: message.into(),
            range: self.here(),
        }
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.not()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ConditionError> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.err("the condition nests too deeply"));
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, ConditionError> {
        let left = self.operand()?;
        if let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            self.pos += 1;
            let right = self.operand()?;
            if let Some(Tok::Op(next)) = self.peek() {
                return Err(self.err(format!(
                    "comparisons do not chain (`a {} b {} c`); join them with `&&`",
                    op.symbol(),
                    next.symbol()
                )));
            }
            return Ok(Expr::Compare(op, Box::new(left), Box::new(right)));
        }
        Ok(left)
    }

    fn operand(&mut self) -> Result<Expr, ConditionError> {
        let Some((tok, _)) = self.toks.get(self.pos).cloned() else {
            return Err(self.err("the condition ends too early: a value is missing"));
        };
        match tok {
            Tok::Ref(ph) => {
                self.pos += 1;
                Ok(Expr::Ref(ph))
            }
            Tok::Lit(v) => {
                self.pos += 1;
                Ok(Expr::Literal(v))
            }
            Tok::LParen => {
                self.pos += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(self.err("the condition nests too deeply"));
                }
                let inner = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(self.err("missing `)`"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Tok::Op(op) => Err(self.err(format!("`{}` needs a value on its left", op.symbol()))),
            Tok::RParen => Err(self.err("unexpected `)`")),
            Tok::And | Tok::Or => Err(self.err("`&&`/`||` need a value on their left")),
            Tok::Not => Err(self.err("unexpected `!`")),
        }
    }
}

/// A parsed `when:` condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub expr: Expr,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let toks = tokenize(text)?;
        if toks.is_empty() {
            return Err(ConditionError {
                message: "the condition is empty; write e.g. `{{review.result.approved}} == true`"
                    .into(),
                range: 0..text.len(),
            });
        }
        let mut p = ExprParser {
            toks,
            pos: 0,
            len: text.len(),
            depth: 0,
        };
        let expr = p.or()?;
        if p.pos < p.toks.len() {
            return Err(p.err("unexpected text; join conditions with `&&` or `||`"));
        }
        Ok(Condition { expr })
    }

    pub fn placeholders(&self) -> Vec<&Placeholder> {
        fn walk<'e>(e: &'e Expr, out: &mut Vec<&'e Placeholder>) {
            match e {
                Expr::Literal(_) => {}
                Expr::Ref(p) => out.push(p),
                Expr::Not(a) => walk(a, out),
                Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out);
        out
    }

    /// Evaluate against upstream results. Errors name the placeholder or operator.
    pub fn evaluate(&self, ctx: &dyn Context) -> Result<bool, String> {
        eval(&self.expr, ctx).map(|v| truthy(&v))
    }
}

fn eval(e: &Expr, ctx: &dyn Context) -> Result<Value, String> {
    Ok(match e {
        Expr::Literal(v) => v.clone(),
        Expr::Ref(ph) => match resolve(ph, ctx).map_err(|e| e.message)? {
            Resolved::Text(t) => Value::String(t.trim().to_owned()),
            r => r.into_json(),
        },
        Expr::Not(a) => Value::Bool(!truthy(&eval(a, ctx)?)),
        Expr::And(a, b) => Value::Bool(truthy(&eval(a, ctx)?) && truthy(&eval(b, ctx)?)),
        Expr::Or(a, b) => Value::Bool(truthy(&eval(a, ctx)?) || truthy(&eval(b, ctx)?)),
        Expr::Compare(op, a, b) => Value::Bool(compare(*op, &eval(a, ctx)?, &eval(b, ctx)?)?),
    })
}

/// Truthiness: null, false, 0, [] and {} are false, and so is text that is
/// empty or reads `false`, `no`, `0` or `null` (models often answer in words).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "no" | "0" | "null"
        ),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Text that reads as a boolean (`true`/`false`, any case, surrounding spaces).
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    if matches!(a, Value::Bool(_)) != matches!(b, Value::Bool(_)) {
        // `{{x.result}} == true` where the result is the text "true".
        if let (Some(x), Some(y)) = (as_bool(a), as_bool(b)) {
            return x == y;
        }
    }
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (as_number(a), as_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        _ => a == b,
    }
}

fn compare(op: CmpOp, a: &Value, b: &Value) -> Result<bool, String> {
    use std::cmp::Ordering;
    let order = || -> Result<Ordering, String> {
        // Numbers, and text that holds numbers (`"10" > "9"`), compare as numbers.
        if let (Some(x), Some(y)) = (as_number(a), as_number(b)) {
            return x
                .partial_cmp(&y)
                .ok_or_else(|| "cannot order NaN".to_owned());
        }
        match (a, b) {
            (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
            _ => Err(format!(
                "cannot compare {} with {} using `{}`",
                describe(a),
                describe(b),
                op.symbol()
            )),
        }
    };
    Ok(match op {
        CmpOp::Eq => equal(a, b),
        CmpOp::Ne => !equal(a, b),
        CmpOp::Lt => order()? == Ordering::Less,
        CmpOp::Le => order()? != Ordering::Greater,
        CmpOp::Gt => order()? == Ordering::Greater,
        CmpOp::Ge => order()? != Ordering::Less,
        CmpOp::Contains => match (a, b) {
            (Value::String(x), Value::String(y)) => x.contains(y.as_str()),
            (Value::String(x), other) => x.contains(&other.to_string()),
            (Value::Array(items), needle) => items.iter().any(|i| equal(i, needle)),
            (Value::Object(m), Value::String(k)) => m.contains_key(k),
            _ => {
                return Err(format!(
                    "`contains` needs text, a list or an object on its left, not {}",
                    describe(a)
                ));
            }
        },
    })
}

fn describe(v: &Value) -> String {
    let shown = v.to_string();
    let shown = if shown.len() > 40 {
        format!(
            "{}…",
            &shown[..shown.char_indices().nth(40).map_or(shown.len(), |(i, _)| i)]
        )
    } else {
        shown
    };
    format!("{} {shown}", crate::template::json_type_name(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    struct Ctx(HashMap<&'static str, &'static str>);
    impl Context for Ctx {
        fn input(&self, name: &str) -> Option<&Value> {
            static LEVEL: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
            (name == "level").then(|| LEVEL.get_or_init(|| json!(3)))
        }
        fn output(&self, key: &str) -> Option<&str> {
            self.0.get(key).copied()
        }
        fn is_step(&self, key: &str) -> bool {
            matches!(key, "audit" | "count" | "text" | "gone")
        }
    }

    fn eval_str(cond: &str) -> Result<bool, String> {
        let ctx = Ctx(HashMap::from([
            (
                "audit",
                "{\"severity\": \"high\", \"tags\": [\"sql\", \"xss\"], \"score\": 7.5}",
            ),
            ("count", " 12\n"),
            ("text", "Looks GOOD to me\n"),
        ]));
        Condition::parse(cond)
            .map_err(|e| e.message)?
            .evaluate(&ctx)
    }

    #[test]
    fn evaluates_comparisons_and_logic() {
        assert_eq!(eval_str("{{audit.result.severity}} == \"high\""), Ok(true));
        assert_eq!(eval_str("{{audit.result.severity}} != 'high'"), Ok(false));
        assert_eq!(eval_str("{{audit.result.score}} > 7"), Ok(true));
        assert_eq!(
            eval_str("{{count.result}} >= 12 && {{level}} < 4"),
            Ok(true)
        );
        assert_eq!(eval_str("{{count.result}} == 12"), Ok(true));
        assert_eq!(eval_str("{{audit.result.tags}} contains \"xss\""), Ok(true));
        assert_eq!(
            eval_str("{{text.result}} contains 'GOOD' and not ({{level}} == 2)"),
            Ok(true)
        );
        assert_eq!(eval_str("{{audit.result.tags}}"), Ok(true));
        assert_eq!(eval_str("!{{audit.result.tags}} || false"), Ok(false));
        assert_eq!(
            eval_str("{{gone.result.x ?? \"low\"}} == \"low\""),
            Ok(true)
        );
        assert_eq!(eval_str("\"b\" > \"a\""), Ok(true));
        assert_eq!(eval_str("\"10\" > \"9\""), Ok(true));
        assert_eq!(
            eval_str("\" TRUE \" == true && !\"no\" && !\"false\""),
            Ok(true)
        );
    }

    #[test]
    fn evaluation_errors_are_explicit() {
        let e = eval_str("{{gone.result}} == 1").expect_err("missing");
        assert!(e.contains("gone"), "{e}");
        let e = eval_str("{{audit.result.tags}} > 1").expect_err("incomparable");
        assert!(e.contains("cannot compare"), "{e}");
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        let e = Condition::parse("{{a.result}} = 1").expect_err("single =");
        assert_eq!(e.range, 13..14);
        assert!(Condition::parse("").is_err());
        assert!(Condition::parse("{{a.result}} ==").is_err());
        assert!(Condition::parse("({{a.result}}").is_err());
        assert!(Condition::parse("1 < 2 < 3").is_err());
        assert!(Condition::parse("high == {{a.result}}").is_err());
        assert!(Condition::parse("'unterminated").is_err());
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(Condition::parse(&deep).is_err());
    }
}

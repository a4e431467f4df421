//! JSON → spanned nodes (RFC 8259), a small recursive-descent parser.
//!
//! serde_json does not report where values are; editors and error messages need
//! that, so this parser records a byte span for every value and key. Strings without
//! escapes borrow from the input.

use super::{Entry, Limits, Node, NodeKind, ParseError};
use crate::report::Code;
use crate::source::Span;
use std::borrow::Cow;

pub(super) fn parse<'a>(text: &'a str, limits: &Limits) -> Result<Node<'a>, ParseError> {
    let mut p = JsonParser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
        max_depth: limits.max_depth,
        entries: Vec::new(),
        items: Vec::new(),
    };
    if text.starts_with('\u{feff}') {
        p.pos = 3;
    }
    p.skip_ws();
    if p.pos >= p.bytes.len() {
        return Err(ParseError::new(
            Code::EmptyWorkflow,
            Span::new(0, 0),
            "the file holds no workflow: write at least `name` and `steps`",
        ));
    }
    let root = p.value()?;
    p.skip_ws();
    if p.pos < p.bytes.len() {
        return Err(p.error("unexpected text after the JSON document; remove it"));
    }
    Ok(root)
}

struct JsonParser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
    /// Scratch stacks: a collection's children are gathered here and moved into
    /// an exactly sized Vec when it closes (no growth reallocations per object).
    entries: Vec<Entry<'a>>,
    items: Vec<Node<'a>>,
}

impl<'a> JsonParser<'a> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError::new(
            Code::Syntax,
            Span::new(self.pos, self.pos + 1),
            format!("JSON syntax error: {}", message.into()),
        )
    }

    fn skip_ws(&mut self) {
        let rest = &self.bytes[self.pos.min(self.bytes.len())..];
        let n = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .unwrap_or(rest.len());
        self.pos += n;
    }

    fn describe_here(&self) -> String {
        match self.text[self.pos..].chars().next() {
            None => "the end of the file".to_owned(),
            Some(c) => format!("`{c}`"),
        }
    }

    fn value(&mut self) -> Result<Node<'a>, ParseError> {
        let start = self.pos;
        match self.bytes.get(self.pos) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => {
                let text = self.string()?;
                Ok(Node {
                    kind: NodeKind::Scalar { text, quoted: true },
                    span: Span::new(start, self.pos),
                })
            }
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error(format!("expected a value, found {}", self.describe_here()))),
        }
    }

    fn literal(&mut self, word: &'static str) -> Result<Node<'a>, ParseError> {
        let start = self.pos;
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(Node {
                kind: NodeKind::Scalar {
                    text: Cow::Borrowed(&self.text[start..self.pos]),
                    quoted: false,
                },
                span: Span::new(start, self.pos),
            })
        } else {
            Err(self.error(format!(
                "expected a value, found {} (strings need double quotes)",
                self.describe_here()
            )))
        }
    }

    fn number(&mut self) -> Result<Node<'a>, ParseError> {
        let start = self.pos;
        let b = self.bytes;
        let mut i = self.pos;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while matches!(b.get(i), Some(b'0'..=b'9')) {
                    i += 1;
                }
            }
            _ => {
                self.pos = i;
                return Err(self.error("a number needs digits"));
            }
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            let d = i;
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            if i == d {
                self.pos = i;
                return Err(self.error("a number needs digits after the decimal point"));
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let d = i;
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            if i == d {
                self.pos = i;
                return Err(self.error("a number needs digits in its exponent"));
            }
        }
        self.pos = i;
        Ok(Node {
            kind: NodeKind::Scalar {
                text: Cow::Borrowed(&self.text[start..i]),
                quoted: false,
            },
            span: Span::new(start, i),
        })
    }

    /// Parses a string starting at the opening quote.
    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        self.pos += 1; // opening quote
        let start = self.pos;
        // Fast path: no escapes. Scan for the first byte that ends the run.
        let run = crate::scan::json_string_stop(&self.bytes[self.pos..]);
        match run {
            None => {
                self.pos = self.bytes.len();
                return Err(self.error("unterminated string: add the closing `\"`"));
            }
            Some(n) => {
                self.pos += n;
                match self.bytes[self.pos] {
                    b'"' => {
                        let s = &self.text[start..self.pos];
                        self.pos += 1;
                        return Ok(Cow::Borrowed(s));
                    }
                    b'\\' => {}
                    _ => {
                        return Err(self.error(
                            "control characters must be escaped in strings (write \\n for a newline)",
                        ));
                    }
                }
            }
        }
        let mut out = String::from(&self.text[start..self.pos]);
        loop {
            match self.bytes.get(self.pos) {
                None => return Err(self.error("unterminated string: add the closing `\"`")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let esc = self.bytes.get(self.pos).copied();
                    self.pos += 1;
                    match esc {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => {
                            let c = self.unicode_escape()?;
                            out.push(c);
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.error("unknown escape sequence in string"));
                        }
                    }
                }
                Some(&c) if c < 0x20 => {
                    return Err(self.error(
                        "control characters must be escaped in strings (write \\n for a newline)",
                    ));
                }
                Some(_) => {
                    // Copy one UTF-8 character.
                    let rest = &self.text[self.pos..];
                    if let Some(ch) = rest.chars().next() {
                        out.push(ch);
                        self.pos += ch.len_utf8();
                    }
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let digits = self.text.get(self.pos..self.pos + 4);
        match digits.and_then(|d| u32::from_str_radix(d, 16).ok()) {
            Some(v) if digits.is_some_and(|d| d.bytes().all(|b| b.is_ascii_hexdigit())) => {
                self.pos += 4;
                Ok(v)
            }
            _ => Err(self.error("`\\u` needs four hex digits")),
        }
    }

    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                return Err(self.error("a high surrogate must be followed by a low surrogate"));
            }
            self.pos += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("invalid low surrogate"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid unicode escape"))
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(ParseError::new(
                Code::TooLarge,
                Span::new(self.pos, self.pos + 1),
                format!(
                    "the document nests deeper than {} levels; flatten it",
                    self.max_depth
                ),
            ));
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Node<'a>, ParseError> {
        let start = self.pos;
        self.enter()?;
        self.pos += 1;
        let base = self.entries.len();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                if self.bytes.get(self.pos) != Some(&b'"') {
                    return Err(self.error(format!(
                        "expected a quoted field name, found {}",
                        self.describe_here()
                    )));
                }
                let key_start = self.pos;
                let key = self.string()?;
                let key_span = Span::new(key_start, self.pos);
                self.skip_ws();
                if self.bytes.get(self.pos) != Some(&b':') {
                    return Err(self.error(format!(
                        "expected `:` after the field name, found {}",
                        self.describe_here()
                    )));
                }
                self.pos += 1;
                self.skip_ws();
                let value = self.value()?;
                self.entries.push(Entry {
                    key,
                    key_span,
                    value,
                });
                self.skip_ws();
                match self.bytes.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_ws();
                        if self.bytes.get(self.pos) == Some(&b'}') {
                            return Err(self.error("trailing comma before `}`; remove it"));
                        }
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        return Err(self.error(format!(
                            "expected `,` or `}}`, found {}",
                            self.describe_here()
                        )));
                    }
                }
            }
        }
        self.depth -= 1;
        let entries = self.entries.split_off(base);
        Ok(Node {
            kind: NodeKind::Map(entries),
            span: Span::new(start, self.pos),
        })
    }

    fn array(&mut self) -> Result<Node<'a>, ParseError> {
        let start = self.pos;
        self.enter()?;
        self.pos += 1;
        let base = self.items.len();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                let v = self.value()?;
                self.items.push(v);
                self.skip_ws();
                match self.bytes.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_ws();
                        if self.bytes.get(self.pos) == Some(&b']') {
                            return Err(self.error("trailing comma before `]`; remove it"));
                        }
                    }
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        return Err(self.error(format!(
                            "expected `,` or `]`, found {}",
                            self.describe_here()
                        )));
                    }
                }
            }
        }
        self.depth -= 1;
        let items = self.items.split_off(base);
        Ok(Node {
            kind: NodeKind::Seq(items),
            span: Span::new(start, self.pos),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Scalar;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ok(text: &str) -> Node<'_> {
        parse(text, &Limits::default()).expect("valid JSON")
    }

    fn err(text: &str) -> ParseError {
        parse(text, &Limits::default()).expect_err("invalid JSON")
    }

    #[test]
    fn parses_values_with_spans() {
        let text = r#"{"name": "x", "n": -1.5e3, "ok": true, "list": [1, null], "s": "a\"\u00e9\ud83d\ude00"}"#;
        let root = ok(text);
        let NodeKind::Map(entries) = &root.kind else {
            panic!("object")
        };
        assert_eq!(&text[entries[0].key_span.range()], "\"name\"");
        assert_eq!(entries[1].value.scalar(), Some(Scalar::Float(-1500.0)));
        assert_eq!(entries[2].value.scalar(), Some(Scalar::Bool(true)));
        assert_eq!(entries[4].value.scalar(), Some(Scalar::Str("a\"é😀")));
        assert_eq!(root.to_json()["list"], serde_json::json!([1, null]));
    }

    #[test]
    fn rejects_invalid_json_with_positions() {
        assert_eq!(err("{\"a\": 1,}").code, Code::Syntax);
        assert_eq!(err("[1 2]").span.start, 3);
        assert_eq!(err("{\"a\": tru}").code, Code::Syntax);
        assert_eq!(err("\"abc").code, Code::Syntax);
        assert_eq!(err("{\"a\": \"x\ny\"}").code, Code::Syntax);
        assert_eq!(err("01").code, Code::Syntax);
        assert_eq!(err("1.").code, Code::Syntax);
        assert_eq!(err("{} x").code, Code::Syntax);
        assert_eq!(err("\"\\ud800\"").code, Code::Syntax);
        assert_eq!(err("").code, Code::EmptyWorkflow);
        assert_eq!(err("{a: 1}").code, Code::Syntax);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion_blowup() {
        let text = "[".repeat(100_000);
        assert_eq!(err(&text).code, Code::TooLarge);
    }
}

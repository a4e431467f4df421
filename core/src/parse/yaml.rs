//! YAML → spanned nodes, on saphyr-parser's event stream.
//!
//! We build the tree ourselves (instead of deserializing with a serde YAML crate) to
//! keep every node's span and to control alias expansion: the size of an anchored
//! subtree is known before it is copied, so a billion-laughs file fails on the first
//! alias that would exceed the budget, in microseconds.

use super::{Entry, Limits, Node, NodeKind, ParseError};
use crate::report::Code;
use crate::source::{LineIndex, Span};
use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};
use std::borrow::Cow;

enum Frame<'a> {
    Seq {
        start: usize,
        anchor: usize,
        /// Where this sequence's items start on the builder's item stack.
        base: usize,
    },
    Map {
        start: usize,
        anchor: usize,
        /// Where this mapping's entries start on the builder's entry stack.
        base: usize,
        /// Key waiting for its value.
        key: Option<PendingKey<'a>>,
        /// Values of `<<` merge keys, applied when the mapping ends.
        merges: Vec<Node<'a>>,
    },
}

enum PendingKey<'a> {
    Name(Cow<'a, str>, Span),
    /// A plain `<<`: the value is merged into the mapping.
    Merge,
}

struct Builder<'a> {
    text: &'a str,
    ascii: bool,
    index: Option<LineIndex<'a>>,
    limits: Limits,
    stack: Vec<Frame<'a>>,
    /// Children of open collections, moved into exactly sized Vecs on close.
    items: Vec<Node<'a>>,
    entries: Vec<Entry<'a>>,
    /// By anchor id, sorted (ids come in increasing order; no `HashMap` type of
    /// its own in the wasm).
    anchors: Vec<(usize, (Node<'a>, usize))>,
    alias_nodes: usize,
    root: Option<Node<'a>>,
    documents: usize,
}

pub(super) fn parse<'a>(text: &'a str, limits: &Limits) -> Result<Node<'a>, ParseError> {
    let mut b = Builder {
        text,
        ascii: text.is_ascii(),
        index: None,
        limits: *limits,
        stack: Vec::new(),
        items: Vec::new(),
        entries: Vec::new(),
        anchors: Vec::new(),
        alias_nodes: 0,
        root: None,
        documents: 0,
    };
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => b.on_event(event, span)?,
            Err(e) => {
                let m = e.marker();
                let at = b.offset_of(m.index(), m.line(), m.col());
                if e.info().contains("recursion limit") {
                    return Err(ParseError::new(
                        Code::TooLarge,
                        Span::new(at, at),
                        format!(
                            "the document nests deeper than {} levels; flatten it",
                            limits.max_depth
                        ),
                    ));
                }
                return Err(ParseError::new(
                    Code::Syntax,
                    Span::new(at, at),
                    format!("YAML syntax error: {}", e.info()),
                ));
            }
        }
    }
    b.root.ok_or_else(|| {
        ParseError::new(
            Code::EmptyWorkflow,
            Span::new(0, 0),
            "the file holds no workflow: write at least `name:` and `steps:`",
        )
    })
}

impl<'a> Builder<'a> {
    /// saphyr markers count characters; we keep byte offsets.
    fn offset_of(&mut self, char_index: usize, line: usize, col: usize) -> usize {
        if self.ascii {
            return char_index.min(self.text.len());
        }
        let text = self.text;
        self.index
            .get_or_insert_with(|| LineIndex::new(text))
            .offset_of(line, col)
    }

    fn span(&mut self, s: YSpan) -> Span {
        let start = self.offset_of(s.start.index(), s.start.line(), s.start.col());
        let end = self.offset_of(s.end.index(), s.end.line(), s.end.col());
        Span::new(start, end)
    }

    fn on_event(&mut self, event: Event<'a>, ys: YSpan) -> Result<(), ParseError> {
        let span = self.span(ys);
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(ParseError::new(
                        Code::Syntax,
                        span,
                        "a workflow file holds one YAML document, but a second one starts here; \
                         remove the extra `---` or split the file",
                    ));
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                let quoted = match tag {
                    None => style != ScalarStyle::Plain,
                    Some(tag) if tag.is_yaml_core_schema() => match tag.suffix.as_str() {
                        "str" => true,
                        "null" | "bool" | "int" | "float" => false,
                        other => {
                            return Err(ParseError::new(
                                Code::Schema,
                                span,
                                format!(
                                    "the YAML tag `!!{other}` is not supported here; remove it"
                                ),
                            ));
                        }
                    },
                    Some(tag) => {
                        return Err(ParseError::new(
                            Code::Schema,
                            span,
                            format!(
                                "custom YAML tags such as `{tag}` are not supported; remove the tag"
                            ),
                        ));
                    }
                };
                let node = Node {
                    kind: NodeKind::Scalar { text, quoted },
                    span,
                };
                self.finish_node(node, anchor)
            }
            Event::Alias(id) => {
                let found = self.anchors.binary_search_by_key(&id, |a| a.0);
                let Some((_, (node, size))) = found.ok().map(|i| &self.anchors[i]) else {
                    return Err(ParseError::new(
                        Code::Syntax,
                        span,
                        "this alias refers to an anchor that is not defined before it",
                    ));
                };
                self.alias_nodes = self.alias_nodes.saturating_add(*size);
                if self.alias_nodes > self.limits.max_alias_nodes {
                    return Err(ParseError::new(
                        Code::TooLarge,
                        span,
                        format!(
                            "YAML aliases expand to more than {} nodes; a workflow needs far \
                             fewer (is this a billion-laughs file?)",
                            self.limits.max_alias_nodes
                        ),
                    ));
                }
                let mut node = node.clone();
                // Problems inside the copy point at the alias that brought it in.
                node.span = span;
                self.finish_node(node, 0)
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "seq", span)?;
                let base = self.items.len();
                self.push(Frame::Seq {
                    start: span.start as usize,
                    anchor,
                    base,
                })
            }
            Event::MappingStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "map", span)?;
                let base = self.entries.len();
                self.push(Frame::Map {
                    start: span.start as usize,
                    anchor,
                    base,
                    key: None,
                    merges: Vec::new(),
                })
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    start,
                    anchor,
                    base,
                }) => {
                    let items = self.items.split_off(base);
                    let node = Node {
                        kind: NodeKind::Seq(items),
                        span: Span::new(start, span.end as usize),
                    };
                    self.finish_node(node, anchor)
                }
                _ => Err(unbalanced(span)),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    start,
                    anchor,
                    base,
                    merges,
                    ..
                }) => {
                    let mut entries = self.entries.split_off(base);
                    apply_merges(&mut entries, merges)?;
                    let node = Node {
                        kind: NodeKind::Map(entries),
                        span: Span::new(start, span.end as usize),
                    };
                    self.finish_node(node, anchor)
                }
                _ => Err(unbalanced(span)),
            },
        }
    }

    fn check_collection_tag(
        &self,
        tag: Option<&saphyr_parser::Tag>,
        expected: &str,
        span: Span,
    ) -> Result<(), ParseError> {
        match tag {
            None => Ok(()),
            Some(t) if t.is_yaml_core_schema() && t.suffix == expected => Ok(()),
            Some(t) => Err(ParseError::new(
                Code::Schema,
                span,
                format!("YAML tags such as `{t}` are not supported; remove the tag"),
            )),
        }
    }

    fn push(&mut self, frame: Frame<'a>) -> Result<(), ParseError> {
        if self.stack.len() >= self.limits.max_depth {
            let start = match &frame {
                Frame::Seq { start, .. } | Frame::Map { start, .. } => *start,
            };
            return Err(ParseError::new(
                Code::TooLarge,
                Span::new(start, start + 1),
                format!(
                    "the document nests deeper than {} levels; flatten it",
                    self.limits.max_depth
                ),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn finish_node(&mut self, node: Node<'a>, anchor: usize) -> Result<(), ParseError> {
        if anchor != 0 {
            let size = node.count();
            let entry = (anchor, (node.clone(), size));
            match self.anchors.binary_search_by_key(&anchor, |a| a.0) {
                Ok(i) => self.anchors[i] = entry,
                Err(i) => self.anchors.insert(i, entry),
            }
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { .. }) => {
                self.items.push(node);
                Ok(())
            }
            Some(Frame::Map { key, merges, .. }) => match key.take() {
                None => {
                    let NodeKind::Scalar { text, quoted } = node.kind else {
                        return Err(ParseError::new(
                            Code::Schema,
                            node.span,
                            "mapping keys must be plain names, not lists or mappings",
                        ));
                    };
                    *key = Some(if !quoted && text == "<<" {
                        PendingKey::Merge
                    } else {
                        PendingKey::Name(text, node.span)
                    });
                    Ok(())
                }
                Some(PendingKey::Name(k, key_span)) => {
                    self.entries.push(Entry {
                        key: k,
                        key_span,
                        value: node,
                    });
                    Ok(())
                }
                Some(PendingKey::Merge) => {
                    merges.push(node);
                    Ok(())
                }
            },
        }
    }
}

fn unbalanced(span: Span) -> ParseError {
    ParseError::new(Code::Syntax, span, "unbalanced YAML collection")
}

/// YAML merge keys: `<<: *defaults` or `<<: [*a, *b]`. Keys written in the mapping
/// win over merged ones; earlier merge sources win over later ones.
fn apply_merges<'a>(entries: &mut Vec<Entry<'a>>, merges: Vec<Node<'a>>) -> Result<(), ParseError> {
    for merge in merges {
        let sources = match merge.kind {
            NodeKind::Map(m) => vec![m],
            NodeKind::Seq(items) => {
                let mut maps = Vec::new();
                for item in items {
                    match item.kind {
                        NodeKind::Map(m) => maps.push(m),
                        _ => {
                            return Err(ParseError::new(
                                Code::Schema,
                                item.span,
                                "a `<<` merge list may only hold mappings",
                            ));
                        }
                    }
                }
                maps
            }
            NodeKind::Scalar { .. } => {
                return Err(ParseError::new(
                    Code::Schema,
                    merge.span,
                    "`<<` merges a mapping (`<<: *anchor`); this value is a scalar",
                ));
            }
        };
        for source in sources {
            for e in source {
                if !entries.iter().any(|x| x.key == e.key) {
                    entries.push(e);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Scalar;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn map<'n, 'a>(n: &'n Node<'a>) -> &'n [Entry<'a>] {
        match &n.kind {
            NodeKind::Map(m) => m,
            _ => &[],
        }
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let text = "name: demo\nsteps:\n  - key: a\n    prompt: \"hi\"\n";
        let root = parse(text, &Limits::default()).expect("parses");
        let entries = map(&root);
        assert_eq!(entries[0].key, "name");
        assert_eq!(&text[entries[0].key_span.range()], "name");
        assert_eq!(&text[entries[0].value.span.range()], "demo");
        let NodeKind::Seq(steps) = &entries[1].value.kind else {
            panic!("steps is a list")
        };
        let step = map(&steps[0]);
        assert_eq!(&text[step[0].key_span.range()], "key");
        assert_eq!(&text[step[1].value.span.range()], "\"hi\"");
        assert_eq!(step[1].value.scalar(), Some(Scalar::Str("hi")));
    }

    #[test]
    fn non_ascii_text_keeps_byte_spans() {
        let text = "name: héllo\nauthor: zoë\n";
        let root = parse(text, &Limits::default()).expect("parses");
        let entries = map(&root);
        assert_eq!(&text[entries[1].key_span.range()], "author");
        assert_eq!(&text[entries[1].value.span.range()], "zoë");
    }

    #[test]
    fn billion_laughs_fails_fast() {
        let mut text = String::from(
            "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 9].join(",");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = parse(&text, &Limits::default()).expect_err("must be refused");
        assert_eq!(err.code, Code::TooLarge);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let err = parse(&text, &Limits::default()).expect_err("must be refused");
        assert_eq!(err.code, Code::TooLarge);
    }

    #[test]
    fn merge_keys_merge_and_explicit_keys_win() {
        let text = "base: &b {agent: x, prompt: p}\nstep:\n  <<: *b\n  prompt: mine\n";
        let root = parse(text, &Limits::default()).expect("parses");
        let step = map(&map(&root)[1].value);
        let keys: Vec<&str> = step.iter().map(|e| e.key.as_ref()).collect();
        assert_eq!(keys, ["prompt", "agent"]);
        assert_eq!(step[0].value.scalar(), Some(Scalar::Str("mine")));
    }

    #[test]
    fn quoted_merge_key_is_an_ordinary_key() {
        let text = "\"<<\": 1\n";
        let root = parse(text, &Limits::default()).expect("parses");
        assert_eq!(map(&root)[0].key, "<<");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let text = "name: x\nsteps:\n  - key: [unclosed\n";
        let err = parse(text, &Limits::default()).expect_err("syntax error");
        assert_eq!(err.code, Code::Syntax);
        assert!(err.span.start > 0);
    }

    #[test]
    fn second_document_is_refused() {
        let err = parse("a: 1\n---\nb: 2\n", &Limits::default()).expect_err("two docs");
        assert_eq!(err.code, Code::Syntax);
    }

    #[test]
    fn undefined_alias_and_custom_tags_are_errors() {
        assert!(parse("a: *nope\n", &Limits::default()).is_err());
        assert!(parse("a: !custom x\n", &Limits::default()).is_err());
        let ok = parse("a: !!str 12\n", &Limits::default()).expect("core tag");
        assert_eq!(map(&ok)[0].value.scalar(), Some(Scalar::Str("12")));
    }
}

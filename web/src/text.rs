//! Pure helpers over the document text: positions in the textarea (UTF-16),
//! format detection, names for new steps and exported files, the starter document.

use ax_core::Workflow;
use ax_core::parse::Format;
use ax_core::source::LineIndex;

/// The document new users start from.
pub const STARTER: &str = r#"# A workflow: steps send prompts to agents once their dependencies are done.
name: release-notes
description: Draft, review and publish release notes
inputs:
  version: {description: The version being released, default: "1.0.0"}
steps:
  - key: collect
    agent: researcher
    prompt: List the notable changes in version {{version}}.
  - key: draft
    agent: writer
    prompt: |
      Write release notes from these changes:
      {{collect.result}}
    dependencies: [collect]
  - key: review
    agent: reviewer
    prompt: 'Review the draft and list problems: {{draft.result}}'
    dependencies: [draft]
    retryPolicy: {maxRetries: 2, retryDelayMs: 500}
  - key: publish
    agent: writer
    prompt: Publish the final notes for {{version}}, fixing {{review.result}}.
    dependencies: [draft, review]
"#;

/// The format to edit in: by the document name's extension, else by content.
pub fn format_of(name: &str, text: &str) -> Format {
    Format::from_filename(name).unwrap_or_else(|| Format::sniff(text))
}

/// Append `x` with `decimals` (at most 4) digits after the point, like
/// `format!("{x:.1}")` but without linking the float formatting machinery
/// (halfway cases may round the other way in the last digit).
pub fn push_fixed(out: &mut String, x: f64, decimals: u32) {
    use std::fmt::Write;
    const SCALE: [u64; 5] = [1, 10, 100, 1_000, 10_000];
    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x.is_sign_negative() {
        out.push('-');
    }
    let scale = SCALE[decimals.min(4) as usize];
    // Saturating: far beyond what the page shows.
    let n = (x.abs() * scale as f64).round() as u64;
    let _ = write!(out, "{}", n / scale);
    if decimals > 0 {
        let frac = n % scale;
        out.push('.');
        let digits = frac.to_string();
        for _ in digits.len()..decimals.min(4) as usize {
            out.push('0');
        }
        out.push_str(&digits);
    }
}

/// `x` with `decimals` digits after the point (see [`push_fixed`]).
pub fn fixed(x: f64, decimals: u32) -> String {
    let mut s = String::new();
    push_fixed(&mut s, x, decimals);
    s
}

/// An SVG path from its commands and points: `M x,y C x,y x,y x,y` with one decimal.
pub fn svg_path(points: &[(char, f64, f64)]) -> String {
    let mut d = String::with_capacity(points.len() * 12);
    for (i, &(cmd, x, y)) in points.iter().enumerate() {
        if i > 0 {
            d.push(' ');
        }
        if cmd != ' ' {
            d.push(cmd);
        }
        push_fixed(&mut d, x, 1);
        d.push(',');
        push_fixed(&mut d, y, 1);
    }
    d
}

/// UTF-16 offset (what a textarea's selection counts) of a byte offset.
pub fn utf16_offset(text: &str, byte: usize) -> u32 {
    let mut b = byte.min(text.len());
    while !text.is_char_boundary(b) {
        b -= 1;
    }
    text[..b].encode_utf16().count() as u32
}

/// Byte offset of a UTF-16 offset.
pub fn byte_offset(text: &str, utf16: u32) -> usize {
    let mut units = 0u32;
    for (i, c) in text.char_indices() {
        if units >= utf16 {
            return i;
        }
        units += c.len_utf16() as u32;
    }
    text.len()
}

/// The editor selection (UTF-16 start, end) for a problem's 1-based line and
/// column range; an empty range selects the rest of the word at the start.
pub fn selection_for(text: &str, line: u32, column: u32, end: Option<(u32, u32)>) -> (u32, u32) {
    let o = Offsets::new(text);
    let (start, end) = o.range(line, column, end);
    (o.utf16(start), o.utf16(end))
}

/// Positions in one text, for many look-ups (every problem of a large
/// document): 1-based line and character column to UTF-16 offsets (what the
/// code editor counts) and back to bytes.
pub struct Offsets<'a> {
    index: LineIndex<'a>,
    /// Nothing to convert: bytes, characters and UTF-16 units coincide.
    ascii: bool,
}

impl<'a> Offsets<'a> {
    pub fn new(text: &'a str) -> Offsets<'a> {
        Offsets {
            index: LineIndex::new(text),
            ascii: text.is_ascii(),
        }
    }

    /// Byte offset of a 1-based line and column (characters).
    pub fn byte(&self, line: u32, column: u32) -> usize {
        self.index
            .offset_of(line as usize, column.saturating_sub(1) as usize)
    }

    /// UTF-16 offset of a byte offset.
    pub fn utf16(&self, byte: usize) -> u32 {
        if self.ascii {
            byte.min(self.index.text().len()) as u32
        } else {
            utf16_offset(self.index.text(), byte)
        }
    }

    /// Byte offset of a UTF-16 offset.
    pub fn byte_of_utf16(&self, utf16: u32) -> usize {
        if self.ascii {
            (utf16 as usize).min(self.index.text().len())
        } else {
            byte_offset(self.index.text(), utf16)
        }
    }

    /// The byte range of a problem: its start, and its end or the rest of the
    /// word at the start.
    pub fn range(&self, line: u32, column: u32, end: Option<(u32, u32)>) -> (usize, usize) {
        let text = self.index.text();
        let start = self.byte(line, column);
        let end = match end {
            Some((l, c)) if (l, c) > (line, column) => self.byte(l, c),
            _ => {
                let rest = &text[start..];
                start
                    + rest
                        .find(|c: char| c.is_whitespace() || c == ',' || c == ']' || c == '}')
                        .unwrap_or(rest.len())
            }
        };
        (start, end.max(start))
    }
}

/// 1-based line of a UTF-16 offset.
pub fn line_of_utf16(text: &str, utf16: u32) -> u32 {
    let b = byte_offset(text, utf16);
    text[..b].bytes().filter(|&c| c == b'\n').count() as u32 + 1
}

/// Number of lines (a final newline starts an empty last line).
pub fn line_count(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n').count() + 1
}

/// "1\n2\n…\nN" for the gutter.
pub fn line_numbers(n: usize) -> String {
    let mut s = String::with_capacity(n * 5);
    for i in 1..=n {
        if i > 1 {
            s.push('\n');
        }
        s.push_str(&i.to_string());
    }
    s
}

/// A step key not used yet: `base`, `base-2`, `base-3`…
pub fn unique_key(wf: Option<&Workflow>, base: &str) -> String {
    let taken = |k: &str| wf.is_some_and(|w| w.steps.iter().any(|s| s.key == k));
    if !taken(base) {
        return base.to_owned();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|k| !taken(k))
        .unwrap_or_else(|| base.to_owned())
}

/// The document name without its extension.
pub fn stem(name: &str) -> &str {
    match name.rfind('.') {
        Some(p) if p > 0 => &name[..p],
        _ => name,
    }
}

/// A name for a new or imported document that says its format.
pub fn name_with_extension(name: &str, text: &str) -> String {
    if Format::from_filename(name).is_some() {
        return name.to_owned();
    }
    let ext = match Format::sniff(text) {
        Format::Json => "json",
        Format::Yaml => "yaml",
    };
    format!("{}.{ext}", stem(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_like_format() {
        for &(x, d) in &[
            (0.0, 1),
            (1.25, 1),
            (-3.04, 1),
            (123.456, 1),
            (0.05, 0),
            (99.5, 0),
            (1.0, 4),
            (-0.0, 1),
            (12345.678, 2),
        ] {
            let ours = fixed(x, d);
            let std = format!("{x:.*}", d as usize);
            // Halfway cases may differ in the last digit; these are not halfway.
            if (x * 10f64.powi(d as i32)).fract().abs() != 0.5 {
                assert_eq!(ours, std, "{x} {d}");
            }
        }
        assert_eq!(
            svg_path(&[('M', 1.0, 2.26), ('C', 3.0, 4.0), (' ', 5.0, 6.0)]),
            "M1.0,2.3 C3.0,4.0 5.0,6.0"
        );
    }
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn utf16_positions_round_trip() {
        let t = "a: é\nb: 😀 x\n";
        let x = t.find('x').unwrap_or(0);
        let u = utf16_offset(t, x);
        assert_eq!(u, 11); // 😀 is two UTF-16 units
        assert_eq!(byte_offset(t, u), x);
        assert_eq!(line_of_utf16(t, u), 2);
        // Line 2, column 6 is `x` (columns count characters).
        assert_eq!(selection_for(t, 2, 6, None), (11, 12));
        assert_eq!(selection_for(t, 1, 4, Some((1, 5))), (3, 4));
    }

    #[test]
    fn names_and_keys() {
        assert_eq!(format_of("x.json", "a: 1"), Format::Json);
        assert_eq!(format_of("notes", "{\"a\": 1}"), Format::Json);
        assert_eq!(format_of("notes", "a: 1"), Format::Yaml);
        assert_eq!(name_with_extension("flow", "{}"), "flow.json");
        assert_eq!(name_with_extension("flow.yml", "{}"), "flow.yml");
        assert_eq!(stem("a.b.yaml"), "a.b");
        let wf = ax_core::analyze(STARTER, &ax_core::Options::default());
        assert!(wf.report.valid, "{:?}", wf.report);
        assert_eq!(unique_key(wf.workflow(), "draft"), "draft-2");
        assert_eq!(unique_key(wf.workflow(), "step"), "step");
        assert_eq!(line_numbers(3), "1\n2\n3");
        assert_eq!(line_count("a\nb\n"), 3);
    }
}

//! A YAML stream reader that keeps positions: each document becomes a JSON
//! value plus the line and column of every field, so findings can point at
//! the exact `image:` or probe they are about.
//!
//! Documents are split on `---` / `...` lines before parsing, so one broken
//! document is reported with its location and the others are still read.
//! Aliases are expanded with a bound (no "billion laughs"), nesting is
//! bounded, merge keys (`<<`) are honoured, and plain scalars are typed by
//! the YAML 1.2 core schema.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};
use serde_json::{Map, Number, Value};

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 200;
/// Most nodes one document may expand to (aliases included).
pub const MAX_NODES: usize = 2_000_000;

/// A position in the source: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub col: usize,
}

/// One document of a stream.
#[derive(Debug, Clone)]
pub struct Document {
    /// Position of the document's first node.
    pub pos: Pos,
    /// The content.
    pub value: Value,
    /// JSON pointer of every node, with its position, in document order.
    positions: Vec<(String, Pos)>,
}

impl Document {
    /// Where `pointer` is, or the nearest enclosing node that exists.
    pub fn locate(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some((_, pos)) = self.positions.iter().find(|(ptr, _)| ptr == p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return self.pos,
            }
        }
    }
}

/// A document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}", pos = format_args!("{}:{}", .pos.line, .pos.col))]
pub struct SyntaxError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

/// Reads the documents of `text` one at a time, so memory holds one parsed
/// document, not the stream. Empty documents (only comments) are skipped;
/// a broken one yields an error in its place.
pub fn read_stream(text: &str) -> impl Iterator<Item = Result<Document, SyntaxError>> + '_ {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    split_documents(text)
        .into_iter()
        .filter_map(|(first_line, chunk)| read_document(chunk, first_line).transpose())
        // An empty document (`---` followed by nothing) is no manifest.
        .filter(|doc| !matches!(doc, Ok(d) if d.value.is_null()))
}

/// Splits at lines that start a (`---`) or end (`...`) a document, keeping
/// directives (`%YAML`) with the document they precede. Returns the 0-based
/// line each chunk starts at.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut chunks = Vec::new();
    let mut start = 0; // byte offset of the current chunk
    let mut start_line = 0;
    let mut offset = 0;
    let mut directives_from: Option<(usize, usize)> = None;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = |m: &str| {
            bare == m
                || bare
                    .strip_prefix(m)
                    .is_some_and(|r| r.starts_with([' ', '\t']))
        };
        if bare.starts_with('%') {
            directives_from.get_or_insert((offset, line_no));
        } else if marker("---") {
            let (cut, cut_line) = directives_from.take().unwrap_or((offset, line_no));
            if cut > start {
                chunks.push((start_line, &text[start..cut]));
            }
            start = cut;
            start_line = cut_line;
        } else if marker("...") {
            let end = offset + line.len();
            chunks.push((start_line, &text[start..end]));
            start = end;
            start_line = line_no + 1;
            directives_from = None;
        } else if !bare.trim().is_empty() && !bare.trim_start().starts_with('#') {
            directives_from = None;
        }
        offset += line.len();
    }
    if start < text.len() {
        chunks.push((start_line, &text[start..]));
    }
    chunks
}

enum Frame {
    Seq {
        pointer: String,
        items: Vec<Value>,
    },
    Map {
        pointer: String,
        map: Map<String, Value>,
        /// The key awaiting its value, with its position.
        key: Option<(String, Pos)>,
        /// Keys that came from a merge (`<<`), which explicit keys override.
        merged: Vec<String>,
    },
}

struct Builder {
    line_offset: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    /// Anchor ids of the open collections, innermost last.
    open_anchors: Vec<usize>,
    positions: Vec<(String, Pos)>,
    nodes: usize,
    root: Option<(Value, Pos)>,
    root_pos: Option<Pos>,
}

fn count_nodes(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(count_nodes).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(count_nodes).sum::<usize>(),
        _ => 1,
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn read_document(chunk: &str, first_line: usize) -> Result<Option<Document>, SyntaxError> {
    let mut b = Builder {
        line_offset: first_line,
        stack: Vec::new(),
        anchors: HashMap::new(),
        open_anchors: Vec::new(),
        positions: Vec::new(),
        nodes: 0,
        root: None,
        root_pos: None,
    };
    for event in Parser::new_from_str(chunk) {
        let (event, span) = event.map_err(|e| b.scan_error(&e))?;
        b.on_event(event, span)?;
    }
    Ok(b.root.map(|(value, pos)| Document {
        pos,
        value,
        positions: b.positions,
    }))
}

impl Builder {
    fn pos(&self, span: Span) -> Pos {
        Pos {
            line: span.start.line() + self.line_offset,
            col: span.start.col() + 1,
        }
    }

    fn scan_error(&self, e: &ScanError) -> SyntaxError {
        SyntaxError {
            pos: Pos {
                line: e.marker().line() + self.line_offset,
                col: e.marker().col() + 1,
            },
            message: format!("invalid YAML: {}", e.info()),
        }
    }

    fn error(&self, span: Span, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos: self.pos(span),
            message: message.into(),
        }
    }

    /// The pointer the next node gets, or `None` when the next node is a
    /// mapping key.
    fn next_pointer(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq { pointer, items }) => Some(format!("{pointer}/{}", items.len())),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                pointer,
                key: Some((k, _)),
                ..
            }) => Some(format!("{pointer}/{}", escape(k))),
        }
    }

    /// The position of the pending mapping key, if the next node is a value.
    fn key_pos(&self) -> Option<Pos> {
        match self.stack.last() {
            Some(Frame::Map {
                key: Some((_, pos)),
                ..
            }) => Some(*pos),
            _ => None,
        }
    }

    fn count(&mut self, n: usize, span: Span) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(self.error(
                span,
                format!("document expands to more than {MAX_NODES} nodes (alias expansion?)"),
            ));
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let Some(pointer) = self.next_pointer() else {
                    // A mapping key.
                    let pos = self.pos(span);
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some((text.into_owned(), pos));
                    }
                    return Ok(());
                };
                self.count(1, span)?;
                let explicit_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !explicit_str {
                    plain_scalar(&text)
                } else {
                    Value::String(text.into_owned())
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                let pos = self.pos(span);
                self.positions.push((pointer, pos));
                self.attach(value, pos, span)
            }
            Event::Alias(id) => {
                let Some(pointer) = self.next_pointer() else {
                    return Err(self.error(span, "aliases as mapping keys are not supported"));
                };
                let Some(value) = self.anchors.get(&id).cloned() else {
                    return Err(self.error(span, "alias to an unknown anchor"));
                };
                self.count(count_nodes(&value), span)?;
                let pos = self.pos(span);
                self.positions.push((pointer, pos));
                self.attach(value, pos, span)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let is_seq = matches!(event, Event::SequenceStart(..));
                let Some(pointer) = self.next_pointer() else {
                    return Err(
                        self.error(span, "complex (collection) mapping keys are not supported")
                    );
                };
                if self.stack.len() >= MAX_DEPTH {
                    return Err(self.error(span, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                self.count(1, span)?;
                let pos = self.key_pos().unwrap_or_else(|| self.pos(span));
                if self.stack.is_empty() {
                    self.root_pos = Some(pos);
                }
                self.positions.push((pointer.clone(), pos));
                self.open_anchors.push(anchor);
                self.stack.push(if is_seq {
                    Frame::Seq {
                        pointer,
                        items: Vec::new(),
                    }
                } else {
                    Frame::Map {
                        pointer,
                        map: Map::new(),
                        key: None,
                        merged: Vec::new(),
                    }
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let anchor = self.open_anchors.pop().unwrap_or(0);
                let value = match self.stack.pop() {
                    Some(Frame::Seq { items, .. }) => Value::Array(items),
                    Some(Frame::Map { map, .. }) => Value::Object(map),
                    None => return Err(self.error(span, "unbalanced end of collection")),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                let pos = self.root_pos.unwrap_or_else(|| self.pos(span));
                self.attach(value, pos, span)
            }
            Event::DocumentStart(_) if self.root.is_some() => {
                Err(self.error(span, "a second document without a `---` line before it"))
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => Ok(()),
        }
    }

    /// Adds a finished node to its parent (or makes it the root).
    fn attach(&mut self, value: Value, pos: Pos, span: Span) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some((value, self.root_pos.unwrap_or(pos)));
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(value);
                Ok(())
            }
            Some(Frame::Map {
                map, key, merged, ..
            }) => {
                let Some((k, key_pos)) = key.take() else {
                    return Err(self.error(span, "mapping value without a key"));
                };
                if k == "<<" {
                    // Merge key: copy entries the mapping does not set itself.
                    let sources = match value {
                        Value::Object(m) => vec![m],
                        Value::Array(items) => items
                            .into_iter()
                            .filter_map(|v| match v {
                                Value::Object(m) => Some(m),
                                _ => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    for source in sources {
                        for (k, v) in source {
                            if !map.contains_key(&k) {
                                merged.push(k.clone());
                                map.insert(k, v);
                            }
                        }
                    }
                    return Ok(());
                }
                if let Some(i) = merged.iter().position(|m| *m == k) {
                    merged.swap_remove(i);
                } else if map.contains_key(&k) {
                    return Err(SyntaxError {
                        pos: key_pos,
                        message: format!("duplicate key {k:?}"),
                    });
                }
                map.insert(k, value);
                Ok(())
            }
        }
    }
}

/// Types a plain scalar by the YAML 1.2 core schema.
fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<i64>() {
            return Value::Number(n.into());
        }
        if let Ok(n) = text.parse::<u64>() {
            return Value::Number(n.into());
        }
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(n.into());
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(n) = i64::from_str_radix(oct, 8)
    {
        return Value::Number(n.into());
    }
    let looks_float = unsigned
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if looks_float && let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs(text: &str) -> Vec<Result<Document, SyntaxError>> {
        read_stream(text).collect()
    }

    fn one(text: &str) -> Document {
        let mut all = docs(text);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0).expect("valid")
    }

    #[test]
    fn positions_point_at_values_and_keys() {
        let d = one("a: 1\nspec:\n  containers:\n    - name: web\n      image: nginx\n");
        assert_eq!(
            d.locate("/spec/containers/0/image"),
            Pos { line: 5, col: 14 }
        );
        // A collection is located at its key.
        assert_eq!(d.locate("/spec/containers"), Pos { line: 3, col: 3 });
        // A missing field falls back to the nearest existing parent.
        assert_eq!(
            d.locate("/spec/containers/0/readinessProbe"),
            Pos { line: 4, col: 7 }
        );
        assert_eq!(d.pos, Pos { line: 1, col: 1 });
    }

    #[test]
    fn a_broken_document_does_not_hide_the_others() {
        let all = docs("a: 1\n---\nb: [1, 2\n---\n# comment only\n---\nc: 3\n");
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].as_ref().expect("first").value, json!({"a": 1}));
        let err = all[1].as_ref().expect_err("second is broken");
        assert_eq!(err.pos.line, 4, "{err}");
        let third = all[2].as_ref().expect("third");
        assert_eq!(third.value, json!({"c": 3}));
        assert_eq!(third.pos.line, 7);
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let d = one(
            "a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: '1'\ng: 0x1f\nh: yes\ni: 1e3\nj: !!str 5\nk: \"true\"\nl: 08\n",
        );
        assert_eq!(
            d.value,
            json!({"a": 1, "b": -2, "c": 1.5, "d": true, "e": null, "f": "1", "g": 31,
                   "h": "yes", "i": 1000.0, "j": "5", "k": "true", "l": 8})
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let d = one("base: &b {x: 1, y: 2}\nuse: *b\nmerged:\n  <<: *b\n  y: 3\n");
        assert_eq!(d.value["use"], json!({"x": 1, "y": 2}));
        assert_eq!(d.value["merged"], json!({"x": 1, "y": 3}));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let err = docs(&text).remove(0).expect_err("bomb");
        assert!(err.message.contains("expands to more than"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
        let err = docs(&text).remove(0).expect_err("too deep");
        assert!(err.message.contains("recursion limit"), "{err}");
        let block: String = (0..300).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        let err = docs(&block).remove(0).expect_err("too deep");
        assert!(err.message.contains("nesting deeper than 200"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = docs("a: 1\nb: 2\na: 3\n").remove(0).expect_err("duplicate");
        assert_eq!(err.pos, Pos { line: 3, col: 1 });
        assert!(err.message.contains("duplicate key \"a\""), "{err}");
    }

    #[test]
    fn json_bom_directives_and_document_end() {
        let d = one("\u{feff}{\"kind\": \"Pod\", \"n\": [1, 2]}");
        assert_eq!(d.value, json!({"kind": "Pod", "n": [1, 2]}));
        let all = docs("%YAML 1.2\n---\na: 1\n...\nb: 2\n");
        let values: Vec<Value> = all.into_iter().map(|d| d.expect("valid").value).collect();
        assert_eq!(values, vec![json!({"a": 1}), json!({"b": 2})]);
        assert!(docs("").is_empty());
        assert!(docs("# nothing\n---\n---\n").is_empty());
        let d = one("--- {a: 1}\n");
        assert_eq!(d.value, json!({"a": 1}));
    }

    #[test]
    fn keys_with_slashes_are_escaped_in_pointers() {
        let d = one("metadata:\n  annotations:\n    probity.dev/exempt: \"PRB104: x\"\n");
        assert_eq!(
            d.locate("/metadata/annotations/probity.dev~1exempt"),
            Pos { line: 3, col: 25 }
        );
    }
}

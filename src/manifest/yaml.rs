//! A YAML stream reader that keeps positions: each document becomes a JSON
//! value plus the line and column of every field, so findings can point at
//! the exact `image:` or probe they are about.
//!
//! Documents are split on `---` / `...` lines before parsing, so one broken
//! document is reported with its location and the others are still read.
//! Aliases are expanded with a bound (no "billion laughs"), nesting is
//! bounded, merge keys (`<<`) are honoured, and plain scalars are typed by
//! the YAML 1.2 core schema.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
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
    pointers: Pointers,
}

impl Document {
    /// Where `pointer` is, or the nearest enclosing node that exists.
    pub fn locate(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.pointers.find(p) {
                return pos;
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
    chunks(text).into_iter().filter_map(|chunk| chunk.read())
}

/// The text of one document of a stream, not yet read: a stream's chunks
/// can be read in any order, or in parallel.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// The 0-based line of the stream it starts at.
    first_line: usize,
    text: &'a str,
}

impl Chunk<'_> {
    /// The document, `None` for one that is empty (comments only, or
    /// `---` followed by nothing), or the error that stopped it.
    pub fn read(&self) -> Option<Result<Document, SyntaxError>> {
        match read_document(self.text, self.first_line) {
            Ok(Some(doc)) if doc.value.is_null() => None,
            other => other.transpose(),
        }
    }
}

/// Splits `text` into its documents' chunks, in order.
pub fn chunks(text: &str) -> Vec<Chunk<'_>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    split_documents(text)
        .into_iter()
        .map(|(first_line, text)| Chunk { first_line, text })
        .collect()
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

/// Pointers of a document's nodes, concatenated in one buffer: a pointer
/// per node would be an allocation per node.
#[derive(Debug, Clone, Default)]
struct Pointers {
    text: String,
    /// Each node's pointer (a range of `text`) and position.
    nodes: Vec<(u32, u32, Pos)>,
}

impl Pointers {
    fn push(&mut self, range: (u32, u32), pos: Pos) {
        self.nodes.push((range.0, range.1, pos));
    }

    fn find(&self, pointer: &str) -> Option<Pos> {
        self.nodes
            .iter()
            .find(|(start, end, _)| self.text.get(*start as usize..*end as usize) == Some(pointer))
            .map(|(_, _, pos)| *pos)
    }

    /// Appends `parent` followed by `/` and `segment` (escaped), returning
    /// the new pointer's range.
    fn child(&mut self, parent: (u32, u32), segment: Segment<'_>) -> (u32, u32) {
        let start = self.text.len();
        self.text
            .extend_from_within(parent.0 as usize..parent.1 as usize);
        self.text.push('/');
        match segment {
            Segment::Index(i) => {
                let _ = std::fmt::Write::write_fmt(&mut self.text, format_args!("{i}"));
            }
            Segment::Key(k) if !k.contains(['~', '/']) => self.text.push_str(k),
            Segment::Key(k) => {
                for c in k.chars() {
                    match c {
                        '~' => self.text.push_str("~0"),
                        '/' => self.text.push_str("~1"),
                        c => self.text.push(c),
                    }
                }
            }
        }
        // Documents are far below 4 GiB of pointers: the builder counts
        // nodes and the input is bounded.
        (
            u32::try_from(start).unwrap_or(u32::MAX),
            u32::try_from(self.text.len()).unwrap_or(u32::MAX),
        )
    }
}

enum Segment<'a> {
    Index(usize),
    Key(&'a str),
}

enum Frame {
    Seq {
        pointer: (u32, u32),
        items: Vec<Value>,
    },
    Map {
        pointer: (u32, u32),
        map: Map<String, Value>,
        /// The key awaiting its value, with its position.
        key: Option<(String, Pos)>,
        /// Keys that came from a merge (`<<`), which explicit keys override.
        merged: Vec<String>,
    },
}

/// Builds a [`Document`] from parser events. Positions are absolute (the
/// chunk's line offset already added).
pub(super) struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    /// Anchor ids of the open collections, innermost last.
    open_anchors: Vec<usize>,
    pointers: Pointers,
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

/// Reads one chunk of [`split_documents`]: the fast reader when it can,
/// saphyr for everything it declines (so every error comes from saphyr).
fn read_document(chunk: &str, first_line: usize) -> Result<Option<Document>, SyntaxError> {
    if let Some(doc) = super::fast::read(chunk, first_line) {
        return Ok(doc);
    }
    read_document_full(chunk, first_line)
}

/// Reads one chunk with saphyr, the complete YAML 1.2 parser.
fn read_document_full(chunk: &str, first_line: usize) -> Result<Option<Document>, SyntaxError> {
    let mut b = Builder::new();
    let pos = |span: Span| Pos {
        line: span.start.line() + first_line,
        col: span.start.col() + 1,
    };
    for event in Parser::new_from_str(chunk) {
        let (event, span) = event.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line() + first_line,
                col: e.marker().col() + 1,
            },
            message: format!("invalid YAML: {}", e.info()),
        })?;
        let at = pos(span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let explicit_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                b.scalar(
                    text,
                    style == ScalarStyle::Plain && !explicit_str,
                    anchor,
                    at,
                )?;
            }
            Event::Alias(id) => b.alias(id, at)?,
            Event::SequenceStart(anchor, _) => b.start(true, anchor, at)?,
            Event::MappingStart(anchor, _) => b.start(false, anchor, at)?,
            Event::SequenceEnd | Event::MappingEnd => b.end(at)?,
            Event::DocumentStart(_) => b.document_start(at)?,
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    Ok(b.finish())
}

/// Whether the fast reader and saphyr agree on `text`: the same documents,
/// values and positions, wherever the fast reader accepts a chunk. Returns
/// the first disagreement. For tests and fuzzing.
#[doc(hidden)]
pub fn cross_check(text: &str) -> Result<usize, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut accepted = 0;
    for (first_line, chunk) in split_documents(text) {
        let Some(fast) = super::fast::read(chunk, first_line) else {
            continue;
        };
        accepted += 1;
        let full = read_document_full(chunk, first_line)
            .map_err(|e| format!("fast reader accepted a chunk saphyr refuses ({e}):\n{chunk}"))?;
        /// A document as compared: its position, value and every node's
        /// pointer and position.
        type View<'d> = Option<(Pos, Value, Vec<(&'d str, Pos)>)>;
        fn view(d: &Option<Document>) -> View<'_> {
            d.as_ref().map(|d| {
                let nodes: Vec<(&str, Pos)> = d
                    .pointers
                    .nodes
                    .iter()
                    .map(|(s, e, p)| (&d.pointers.text[*s as usize..*e as usize], *p))
                    .collect();
                (d.pos, d.value.clone(), nodes)
            })
        }
        if view(&fast) != view(&full) {
            return Err(format!(
                "fast reader and saphyr disagree on:\n{chunk}\nfast: {:?}\nsaphyr: {:?}",
                view(&fast),
                view(&full)
            ));
        }
    }
    Ok(accepted)
}

fn error(pos: Pos, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        pos,
        message: message.into(),
    }
}

impl Builder {
    pub(super) fn new() -> Self {
        Self {
            stack: Vec::new(),
            anchors: HashMap::new(),
            open_anchors: Vec::new(),
            pointers: Pointers::default(),
            nodes: 0,
            root: None,
            root_pos: None,
        }
    }

    pub(super) fn finish(self) -> Option<Document> {
        self.root.map(|(value, pos)| Document {
            pos,
            value,
            pointers: self.pointers,
        })
    }

    /// The pointer the next node gets, or `None` when the next node is a
    /// mapping key.
    fn next_pointer(&mut self) -> Option<(u32, u32)> {
        match self.stack.last() {
            None => Some((0, 0)),
            Some(Frame::Seq { pointer, items }) => {
                Some(self.pointers.child(*pointer, Segment::Index(items.len())))
            }
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                pointer,
                key: Some((k, _)),
                ..
            }) => Some(self.pointers.child(*pointer, Segment::Key(k))),
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

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(error(
                pos,
                format!("document expands to more than {MAX_NODES} nodes (alias expansion?)"),
            ));
        }
        Ok(())
    }

    /// A scalar; `typed` for a plain one without `!!str` (typed by the core
    /// schema), `anchor` 0 for none.
    pub(super) fn scalar(
        &mut self,
        text: Cow<'_, str>,
        typed: bool,
        anchor: usize,
        pos: Pos,
    ) -> Result<(), SyntaxError> {
        if let Some(Frame::Map {
            key: key @ None, ..
        }) = self.stack.last_mut()
        {
            *key = Some((text.into_owned(), pos));
            return Ok(());
        }
        let pointer = self.next_pointer().unwrap_or_default();
        self.count(1, pos)?;
        let value = if typed {
            plain_scalar(text)
        } else {
            Value::String(text.into_owned())
        };
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        self.pointers.push(pointer, pos);
        self.attach(value, pos)
    }

    pub(super) fn alias(&mut self, id: usize, pos: Pos) -> Result<(), SyntaxError> {
        let Some(pointer) = self.next_pointer() else {
            return Err(error(pos, "aliases as mapping keys are not supported"));
        };
        let Some(value) = self.anchors.get(&id).cloned() else {
            return Err(error(pos, "alias to an unknown anchor"));
        };
        self.count(count_nodes(&value), pos)?;
        self.pointers.push(pointer, pos);
        self.attach(value, pos)
    }

    /// The start of a sequence (`seq`) or mapping.
    pub(super) fn start(&mut self, seq: bool, anchor: usize, pos: Pos) -> Result<(), SyntaxError> {
        let Some(pointer) = self.next_pointer() else {
            return Err(error(
                pos,
                "complex (collection) mapping keys are not supported",
            ));
        };
        if self.stack.len() >= MAX_DEPTH {
            return Err(error(
                pos,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.count(1, pos)?;
        let pos = self.key_pos().unwrap_or(pos);
        if self.stack.is_empty() {
            self.root_pos = Some(pos);
        }
        self.pointers.push(pointer, pos);
        self.open_anchors.push(anchor);
        self.stack.push(if seq {
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

    pub(super) fn end(&mut self, pos: Pos) -> Result<(), SyntaxError> {
        let anchor = self.open_anchors.pop().unwrap_or(0);
        let value = match self.stack.pop() {
            Some(Frame::Seq { items, .. }) => Value::Array(items),
            Some(Frame::Map { map, .. }) => Value::Object(map),
            None => return Err(error(pos, "unbalanced end of collection")),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        let pos = self.root_pos.unwrap_or(pos);
        self.attach(value, pos)
    }

    pub(super) fn document_start(&mut self, pos: Pos) -> Result<(), SyntaxError> {
        if self.root.is_some() {
            return Err(error(
                pos,
                "a second document without a `---` line before it",
            ));
        }
        Ok(())
    }

    /// Adds a finished node to its parent (or makes it the root).
    fn attach(&mut self, value: Value, pos: Pos) -> Result<(), SyntaxError> {
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
                    return Err(error(pos, "mapping value without a key"));
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
fn plain_scalar(text: Cow<'_, str>) -> Value {
    match &*text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(&text);
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
    Value::String(text.into_owned())
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

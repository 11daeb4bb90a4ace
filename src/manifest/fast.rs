//! A reader for the YAML nearly every manifest is written in: block
//! mappings and sequences, one-line flow collections, plain and one-line
//! quoted scalars, comments. It reads a document several times faster than
//! the full parser and feeds the same builder, so the document it makes is
//! the one saphyr would make (the tests and the fuzzer compare the two).
//!
//! Anything outside that subset (anchors, tags, block scalars, multi-line
//! scalars or flow collections, empty values, non-ASCII text, anything the
//! builder refuses) makes it decline, and the chunk is read again by saphyr,
//! so every error a user sees comes from the full parser.

use std::borrow::Cow;

use super::yaml::{Builder, Document, Pos};

/// `None` when the chunk is outside the subset; otherwise the document, or
/// `Some(None)` for a chunk with no content.
pub(super) fn read(chunk: &str, first_line: usize) -> Option<Option<Document>> {
    if !chunk.is_ascii() {
        return None;
    }
    let mut lines = Vec::new();
    let mut marker = false;
    for (i, raw) in chunk.split('\n').enumerate() {
        let text = raw.strip_suffix('\r').unwrap_or(raw);
        if text.contains(['\t', '\r']) {
            return None;
        }
        let content = text.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if text.starts_with("---") || text.starts_with("...") || text.starts_with('%') {
            // The chunk's own start marker, alone on its line; directives,
            // document ends and content after `---` are saphyr's.
            if text == "---" && lines.is_empty() && !marker {
                marker = true;
                continue;
            }
            return None;
        }
        lines.push(Line {
            no: first_line + i + 1,
            text: text.as_bytes(),
            indent: text.len() - content.len(),
        });
    }
    let Some(first) = lines.first() else {
        // Comments only: no document. After `---`, saphyr makes an empty
        // (null) one, which is its to make.
        return if marker { None } else { Some(None) };
    };
    if first.indent != 0 {
        return None;
    }
    let mut r = Reader {
        lines,
        at: 0,
        b: Builder::new(),
    };
    r.block(0)?;
    if r.at != r.lines.len() {
        return None;
    }
    Some(r.b.finish())
}

/// A line with content: its 1-based number, bytes and indentation.
struct Line<'a> {
    no: usize,
    text: &'a [u8],
    indent: usize,
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    /// The line being read.
    at: usize,
    b: Builder,
}

/// Whether `s` starts a block sequence entry.
fn is_dash(s: &[u8]) -> bool {
    s == b"-" || s.starts_with(b"- ")
}

/// Whether a plain scalar may start with `s` (conservatively: the YAML
/// indicators decline, except `-` before a letter or digit).
fn plain_start(s: &[u8]) -> bool {
    match s.first() {
        None => false,
        Some(b'-') => s.get(1).is_some_and(u8::is_ascii_alphanumeric),
        Some(c) => !b"?:,[]{}#&*!|>'\"%@` ".contains(c),
    }
}

/// The text of `s` as a `&str` (the chunk is ASCII, so every cut is on a
/// character boundary).
fn text(s: &[u8]) -> Option<&str> {
    std::str::from_utf8(s).ok()
}

/// Reads a quoted scalar at the start of `s`: its value and the length
/// taken, quotes included. Declines escapes it does not know and scalars
/// that do not close on the line.
fn quoted(s: &[u8]) -> Option<(Cow<'_, str>, usize)> {
    let quote = *s.first()?;
    let mut owned: Option<String> = None;
    let mut i = 1;
    let mut run = 1; // start of the bytes not yet copied to `owned`
    while i < s.len() {
        let c = s[i];
        if quote == b'\'' && c == b'\'' {
            if s.get(i + 1) == Some(&b'\'') {
                let o = owned.get_or_insert_with(String::new);
                o.push_str(text(&s[run..=i])?);
                i += 2;
                run = i;
                continue;
            }
            return Some((close(owned, &s[run..i])?, i + 1));
        }
        if quote == b'"' && c == b'"' {
            return Some((close(owned, &s[run..i])?, i + 1));
        }
        if quote == b'"' && c == b'\\' {
            let unescaped = match s.get(i + 1)? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'n' => '\n',
                b't' => '\t',
                b'r' => '\r',
                _ => return None,
            };
            let o = owned.get_or_insert_with(String::new);
            o.push_str(text(&s[run..i])?);
            o.push(unescaped);
            i += 2;
            run = i;
            continue;
        }
        i += 1;
    }
    None
}

fn close<'a>(owned: Option<String>, tail: &'a [u8]) -> Option<Cow<'a, str>> {
    Some(match owned {
        Some(mut o) => {
            o.push_str(text(tail)?);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(text(tail)?),
    })
}

/// Where the spaces from `i` end.
fn skip_spaces(s: &[u8], mut i: usize) -> usize {
    while s.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// Whether nothing but spaces and a comment follow `i`.
fn rest_is_blank(s: &[u8], i: usize) -> bool {
    let j = skip_spaces(s, i);
    j == s.len() || (j > i && s[j] == b'#')
}

impl<'a> Reader<'a> {
    fn pos(&self, col: usize) -> Pos {
        Pos {
            line: self.lines.get(self.at).map_or(0, |l| l.no),
            col: col + 1,
        }
    }

    fn line(&self) -> Option<&'a [u8]> {
        self.lines.get(self.at).map(|l| l.text)
    }

    /// A block collection whose first entry starts at `col` of the current
    /// line.
    fn block(&mut self, col: usize) -> Option<()> {
        let s = self.line()?.get(col..)?;
        if is_dash(s) {
            self.seq(col)
        } else if self.key(col).is_some() {
            self.map(col)
        } else {
            None
        }
    }

    /// A mapping key at `col` of the current line: the key, and the column
    /// after its `:`. Plain keys with characters that could mean something
    /// else decline.
    fn key(&self, col: usize) -> Option<(Cow<'a, str>, usize)> {
        let line = self.line()?;
        let s = line.get(col..)?;
        let colon_ends =
            |i: usize| line.get(i) == Some(&b':') && matches!(line.get(i + 1), None | Some(b' '));
        if matches!(s.first(), Some(b'"' | b'\'')) {
            let (key, len) = quoted(s)?;
            return colon_ends(col + len).then_some((key, col + len + 1));
        }
        if !plain_start(s) {
            return None;
        }
        for (i, &c) in s.iter().enumerate() {
            if c == b':' && colon_ends(col + i) {
                if s[i - 1] == b' ' {
                    return None;
                }
                return Some((Cow::Borrowed(text(&s[..i])?), col + i + 1));
            }
            if b"[]{},\"'#".contains(&c) {
                return None;
            }
        }
        None
    }

    /// A block mapping at `col`; its first key is on the current line.
    fn map(&mut self, col: usize) -> Option<()> {
        self.b.start(false, 0, self.pos(col)).ok()?;
        let mut first = true;
        while let Some(line) = self.lines.get(self.at) {
            if !first {
                if line.indent < col {
                    break;
                }
                if line.indent > col || is_dash(&line.text[col..]) {
                    return None;
                }
            }
            first = false;
            let (key, after) = self.key(col)?;
            let key_pos = self.pos(col);
            self.b.scalar(key, false, 0, key_pos).ok()?;
            let line = self.line()?;
            if rest_is_blank(line, after) {
                // The value is on the lines below: a nested collection (a
                // sequence may sit at the key's own indentation).
                self.at += 1;
                let next = self.lines.get(self.at)?;
                let nested = &next.text[next.indent..];
                if next.indent > col || (next.indent == col && is_dash(nested)) {
                    let indent = next.indent;
                    self.block(indent)?;
                } else {
                    return None;
                }
            } else if line.get(after) == Some(&b' ') {
                let start = skip_spaces(line, after);
                self.inline(start)?;
            } else {
                return None;
            }
        }
        let end = self.pos(col);
        self.b.end(end).ok()
    }

    /// A block sequence at `col`; its first `-` is on the current line.
    fn seq(&mut self, col: usize) -> Option<()> {
        self.b.start(true, 0, self.pos(col)).ok()?;
        let mut first = true;
        while let Some(line) = self.lines.get(self.at) {
            if !first {
                if line.indent < col {
                    break;
                }
                if line.indent > col {
                    return None;
                }
            }
            if !is_dash(&line.text[col..]) {
                if first {
                    return None;
                }
                break;
            }
            first = false;
            let item = skip_spaces(line.text, col + 1);
            if rest_is_blank(line.text, col + 1) {
                return None;
            }
            if is_dash(&line.text[item..]) {
                self.seq(item)?;
            } else if self.key(item).is_some() {
                self.map(item)?;
            } else {
                self.inline(item)?;
            }
        }
        let end = self.pos(col);
        self.b.end(end).ok()
    }

    /// A value that ends on this line, at `col`: a flow collection, a
    /// quoted or a plain scalar, then only a comment. Moves to the next line.
    fn inline(&mut self, col: usize) -> Option<()> {
        let line = self.line()?;
        let end = match line.get(col)? {
            b'{' | b'[' | b'"' | b'\'' => self.flow_node(col)?,
            _ => {
                // A plain scalar runs to the end of the line or a comment.
                let s = &line[col..];
                let len = s.windows(2).position(|w| w == b" #").unwrap_or(s.len());
                let value = s[..len].trim_ascii_end();
                if !plain_start(value)
                    || value.ends_with(b":")
                    || value.windows(2).any(|w| w == b": ")
                    || value.iter().any(|c| b"[]{}".contains(c))
                {
                    return None;
                }
                let pos = self.pos(col);
                self.b
                    .scalar(Cow::Borrowed(text(value)?), true, 0, pos)
                    .ok()?;
                col + len
            }
        };
        if !rest_is_blank(line, end) {
            return None;
        }
        self.at += 1;
        Some(())
    }

    /// A node inside (or opening) a flow collection, at `col`: returns the
    /// column after it.
    fn flow_node(&mut self, col: usize) -> Option<usize> {
        let line = self.line()?;
        let pos = self.pos(col);
        match line.get(col)? {
            open @ (b'{' | b'[') => {
                let seq = *open == b'[';
                let close = if seq { b']' } else { b'}' };
                self.b.start(seq, 0, pos).ok()?;
                let mut i = skip_spaces(line, col + 1);
                if line.get(i) == Some(&close) {
                    self.b.end(pos).ok()?;
                    return Some(i + 1);
                }
                loop {
                    if !seq {
                        i = self.flow_key(i)?;
                        i = skip_spaces(line, i);
                    }
                    i = self.flow_node(i)?;
                    i = skip_spaces(line, i);
                    match line.get(i)? {
                        b',' => {
                            // No trailing commas, no empty entries.
                            i = skip_spaces(line, i + 1);
                            if matches!(line.get(i), Some(b'}' | b']' | b',')) {
                                return None;
                            }
                        }
                        c if *c == close => {
                            self.b.end(pos).ok()?;
                            return Some(i + 1);
                        }
                        _ => return None,
                    }
                }
            }
            b'"' | b'\'' => {
                let (value, len) = quoted(&line[col..])?;
                self.b.scalar(value, false, 0, pos).ok()?;
                Some(col + len)
            }
            _ => {
                // A plain scalar in a flow collection ends at `,`, `]`, `}`.
                let s = &line[col..];
                let len = s.iter().position(|c| b",]}".contains(c)).unwrap_or(s.len());
                let value = s[..len].trim_ascii_end();
                if !plain_start(value)
                    || value.contains(&b':')
                    || value.iter().any(|c| b"[{#".contains(c))
                {
                    return None;
                }
                self.b
                    .scalar(Cow::Borrowed(text(value)?), true, 0, pos)
                    .ok()?;
                Some(col + value.len())
            }
        }
    }

    /// A key in a flow mapping and its `:`: returns the column after the
    /// `:`. A quoted key may touch its `:` (`"a":1`), a plain one needs a
    /// space after it.
    fn flow_key(&mut self, col: usize) -> Option<usize> {
        let line = self.line()?;
        let pos = self.pos(col);
        let s = line.get(col..)?;
        let (key, after) = if matches!(s.first(), Some(b'"' | b'\'')) {
            let (key, len) = quoted(s)?;
            if line.get(col + len) != Some(&b':') {
                return None;
            }
            (key, col + len + 1)
        } else {
            if !plain_start(s) {
                return None;
            }
            let i = s.iter().position(|c| b":,[]{}#".contains(c))?;
            if s[i] != b':' || s.get(i + 1) != Some(&b' ') || s[i - 1] == b' ' {
                return None;
            }
            (Cow::Borrowed(text(&s[..i])?), col + i + 1)
        };
        self.b.scalar(key, false, 0, pos).ok()?;
        Some(after)
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::cross_check;

    /// Chunks the fast reader takes, compared with saphyr node by node.
    const ACCEPTED: &[&str] = &[
        "a: 1\n",
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web, tier: backend}\n",
        "spec:\n  containers:\n    - name: web\n      image: nginx\n      ports:\n        - {name: http, containerPort: 8080}\n",
        "spec:\n  containers:\n  - name: web\n    image: \"nginx:1.2\"\n  restartPolicy: Never\n",
        "- a\n- - b\n  - c\n- {x: [1, 2, {y: z}]}\n",
        "a: 'it''s'\nb: \"q\\\"uote\\n\"\nc: x#y\nd: v # comment\n# full-line comment\ne: [ ]\nf: {}\n",
        "k: -1\nl: 1.5\nm: true\nn: ~\no: 0x1f\np: 08\nq: yes\n",
        "\"quoted key\": 1\n'single': 2\nurl: http://x/y\nwin: C:\\path\n",
        "items: [\"a\",'b' , c]\nmap: {\"k\":1, j: 'v'}\n",
        "a:\n  b:\n    c: d\n  e: f\ng: h\n",
        "x:\r\n  - y\r\n",
    ];

    /// Chunks it must leave to saphyr (or read exactly like it).
    const ANY: &[&str] = &[
        "a: b: c\n",
        "{\"a\": 1}\n",
        "a:\n",
        "a: |\n  text\n",
        "a: &x 1\nb: *x\n",
        "a: !!str 5\n",
        "a: [1,\n  2]\n",
        "a: plain\n  continued\n",
        "a: \"open\n  close\"\n",
        "- a\nb: c\n",
        "a: 1\n- b\n",
        "  a: 1\nb: 2\n",
        "a: 1\na: 2\n",
        "a: {b: 1, b: 2}\n",
        "a: [1, 2,]\n",
        "a: {b}\n",
        "a: caf\u{e9}\n",
        "a:\tb\n",
        "a : b\n",
        "? a\n: b\n",
        "--- a: 1\n",
        "%YAML 1.2\n---\na: 1\n",
        "a: \"\\x41\"\n",
        "a: 'x'y\n",
        "a: {b: c}d\n",
        "a: - b\n",
        "-\n  a: 1\n",
        "a:\n- b\n-\n",
        "a: [b: c]\n",
        "a: {b:c}\n",
        "a: 1 #c\n  b: 2\n",
        "<<: {a: 1}\nb: 2\n",
        "a:#b\n",
        "- a: 1\n   b: 2\n",
        "a: x # c\n\n\n# tail\n",
        "",
        "---\n# only a comment\n",
    ];

    #[test]
    fn the_fast_reader_agrees_with_saphyr() {
        for text in ACCEPTED {
            let taken = cross_check(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(taken, 1, "the fast reader declined:\n{text}");
        }
        for text in ANY {
            cross_check(text).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Manifests shaped like the lint benchmark's corpus.
    fn corpus(n: usize) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for i in 0..n {
            let kind = ["Deployment", "StatefulSet", "DaemonSet", "Job"][i % 4];
            let probes = match i % 3 {
                0 => "",
                1 => {
                    "          readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 10}\n          livenessProbe: {tcpSocket: {port: 8080}}\n"
                }
                _ => {
                    "          readinessProbe:\n            httpGet:\n              path: \"/health\"\n              port: 8080\n"
                }
            };
            let _ = write!(
                out,
                "---\n# app {i}\napiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: app-{i}\n  namespace: team-{ns}\n  labels: {{app: app-{i}, tier: backend}}\n  annotations:\n    probity.dev/exempt: \"PRB104: batch\"\nspec:\n  replicas: {i}\n  template:\n    spec:\n      containers:\n        - name: main\n          image: ghcr.io/acme/svc-{i}:1.{i}\n          args: [\"--port\", '8080', -v]\n          ports:\n            - {{name: http, containerPort: 8080}}\n          resources:\n            requests: {{cpu: 100m, memory: 128Mi}}\n{probes}        - name: sidecar\n          image: ghcr.io/acme/proxy:1.9@sha256:{i:064}\n          env:\n          - name: A\n            value: \"1\"\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: app-{i}\nspec:\n  selector: {{app: app-{i}}}\n  ports:\n    - {{port: 80, targetPort: http}}\n",
                ns = i % 13
            );
        }
        out
    }

    /// Random edits of the accepted chunks with the characters YAML gives
    /// meaning to: wherever the fast reader still takes one, saphyr must
    /// read it the same (deterministic, so a failure reproduces).
    #[test]
    fn mutated_manifests_read_the_same_both_ways() {
        const ALPHABET: &[u8] = b" -:#'\"{}[],&*!|>?%@`\\\n\ta0~.";
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base: Vec<String> = ACCEPTED
            .iter()
            .map(|s| (*s).to_owned())
            .chain(corpus(3).split("---\n").map(str::to_owned))
            .collect();
        let mut taken = 0;
        for _ in 0..20_000 {
            let mut text = base[next() as usize % base.len()].clone().into_bytes();
            for _ in 0..1 + next() % 3 {
                let at = next() as usize % (text.len() + 1);
                let c = ALPHABET[next() as usize % ALPHABET.len()];
                match next() % 3 {
                    0 => text.insert(at, c),
                    1 if at < text.len() => text[at] = c,
                    _ if at < text.len() => {
                        text.remove(at);
                    }
                    _ => {}
                }
            }
            let Ok(text) = String::from_utf8(text) else {
                continue;
            };
            taken += cross_check(&text).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(taken > 5_000, "the fast reader took only {taken} mutants");
    }

    #[test]
    fn the_fast_reader_takes_generated_manifests() {
        let corpus = corpus(200);
        let chunks = cross_check(&corpus).unwrap_or_else(|e| panic!("{e}"));
        assert!(chunks >= 200, "took {chunks} documents");
    }
}

//! The chart's values reference, generated from the comments of its
//! `values.yaml` (as helm-docs does), so the two cannot drift apart.
//!
//! The comment lines right above a key document it. A key holding a
//! scalar, a flow collection (`[]`, `{}`) or a block list is one row; so is
//! a key holding a block map when the map itself is documented (its value
//! is then one whole, such as `resources`); an undocumented map is a
//! section, and its keys are rows of their own. A row without a comment is
//! an error: every value a user can set is explained.
//!
//! The reader covers the YAML a values file is written in: block maps and
//! lists, one-line scalars and flow collections, comments on their own
//! lines. Anything else is an error naming the line.

use std::fmt::Write as _;

/// One value of the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Dotted path, `webhooks.failurePolicy`.
    pub key: String,
    /// `bool`, `int`, `string`, `list` or `object`.
    pub kind: &'static str,
    /// The default, as one line of flow YAML.
    pub default: String,
    /// The comment above it, joined into one paragraph.
    pub description: String,
}

/// A values file that does not follow the rules above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("values.yaml:{line}: {message}")]
pub struct Invalid {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug)]
enum Node {
    Scalar(String),
    Map(Vec<Entry>),
    Seq(Vec<Node>),
}

#[derive(Debug)]
struct Entry {
    key: String,
    line: usize,
    comment: Vec<String>,
    value: Node,
}

/// A content line: its number, indentation and text.
#[derive(Debug, Clone)]
struct Line {
    number: usize,
    indent: usize,
    text: String,
    /// The comment lines right above it (no blank line between), trimmed.
    comment: Vec<String>,
}

fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut comment = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() {
            comment.clear();
        } else if let Some(c) = trimmed.strip_prefix('#') {
            comment.push(c.trim().to_owned());
        } else {
            out.push(Line {
                number: i + 1,
                indent: raw.len() - trimmed.len(),
                text: trimmed.trim_end().to_owned(),
                comment: std::mem::take(&mut comment),
            });
        }
    }
    out
}

struct Reader {
    lines: Vec<Line>,
    at: usize,
}

impl Reader {
    fn peek(&self) -> Option<&Line> {
        self.lines.get(self.at)
    }

    /// The block starting at the next line, whose lines are indented
    /// `indent`.
    fn block(&mut self, indent: usize) -> Result<Node, Invalid> {
        match self.peek() {
            Some(l) if l.text == "-" || l.text.starts_with("- ") => self.seq(indent),
            _ => self.map(indent),
        }
    }

    fn map(&mut self, indent: usize) -> Result<Node, Invalid> {
        let mut entries = Vec::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return Err(invalid(&line, "unexpected indentation"));
            }
            let Some((key, rest)) = split_key(&line.text) else {
                return Err(invalid(&line, "expected `key: value`"));
            };
            self.at += 1;
            let value = if !rest.is_empty() {
                Node::Scalar(rest.to_owned())
            } else {
                match self.peek() {
                    Some(next) if next.indent > indent => {
                        let child = next.indent;
                        self.block(child)?
                    }
                    Some(next)
                        if next.indent == indent
                            && (next.text == "-" || next.text.starts_with("- ")) =>
                    {
                        self.seq(indent)?
                    }
                    _ => Node::Scalar(String::new()),
                }
            };
            entries.push(Entry {
                key: key.to_owned(),
                line: line.number,
                comment: line.comment,
                value,
            });
        }
        Ok(Node::Map(entries))
    }

    fn seq(&mut self, indent: usize) -> Result<Node, Invalid> {
        let mut items = Vec::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent != indent || !(line.text == "-" || line.text.starts_with("- ")) {
                if line.indent > indent {
                    return Err(invalid(&line, "unexpected indentation"));
                }
                break;
            }
            let item = line.text[1..].trim_start().to_owned();
            if item.is_empty() {
                return Err(invalid(&line, "write list items on the dash's line"));
            }
            if split_key(&item).is_some() {
                // `- key: value`: a map whose keys sit two columns in.
                self.lines[self.at] = Line {
                    indent: indent + 2,
                    text: item,
                    ..line
                };
                items.push(self.map(indent + 2)?);
            } else {
                self.at += 1;
                items.push(Node::Scalar(item));
            }
        }
        Ok(Node::Seq(items))
    }
}

fn invalid(line: &Line, message: &str) -> Invalid {
    Invalid {
        line: line.number,
        message: format!("{message}: {:?}", line.text),
    }
}

/// `key: rest` or `key:`, unless the text is a quoted scalar or a flow
/// collection.
fn split_key(text: &str) -> Option<(&str, &str)> {
    if text.starts_with(['"', '\'', '[', '{']) {
        return None;
    }
    let (key, rest) = match text.split_once(": ") {
        Some((key, rest)) => (key, rest.trim()),
        None => (text.strip_suffix(':')?, ""),
    };
    (!key.is_empty() && !key.contains(' ')).then_some((key, rest))
}

fn flow(node: &Node) -> String {
    match node {
        Node::Scalar(s) => s.clone(),
        Node::Seq(items) => format!(
            "[{}]",
            items.iter().map(flow).collect::<Vec<_>>().join(", ")
        ),
        Node::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|e| format!("{}: {}", e.key, flow(&e.value)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::Map(_) => "object",
        Node::Seq(_) => "list",
        Node::Scalar(s) if s.starts_with('[') => "list",
        Node::Scalar(s) if s.starts_with('{') => "object",
        Node::Scalar(s) if s == "true" || s == "false" => "bool",
        Node::Scalar(s) if !s.is_empty() && s.parse::<i64>().is_ok() => "int",
        Node::Scalar(_) => "string",
    }
}

fn collect(entries: &[Entry], prefix: &str, out: &mut Vec<Row>) -> Result<(), Invalid> {
    for entry in entries {
        let key = format!("{prefix}{}", entry.key);
        match &entry.value {
            Node::Map(children) if entry.comment.is_empty() && !children.is_empty() => {
                collect(children, &format!("{key}."), out)?;
            }
            value => {
                if entry.comment.is_empty() {
                    return Err(Invalid {
                        line: entry.line,
                        message: format!("{key} has no comment above it"),
                    });
                }
                out.push(Row {
                    key,
                    kind: kind(value),
                    default: flow(value),
                    description: entry
                        .comment
                        .iter()
                        .filter(|l| !l.is_empty())
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                });
            }
        }
    }
    Ok(())
}

/// The rows of `values` (the text of a values.yaml), in file order.
///
/// # Errors
///
/// When a line is outside the subset read here, or a value has no
/// comment.
pub fn rows(values: &str) -> Result<Vec<Row>, Invalid> {
    let mut reader = Reader {
        lines: lines(values),
        at: 0,
    };
    let Node::Map(entries) = reader.map(0)? else {
        return Ok(Vec::new());
    };
    if let Some(line) = reader.peek() {
        return Err(invalid(line, "not part of the top-level map"));
    }
    let mut out = Vec::new();
    collect(&entries, "", &mut out)?;
    Ok(out)
}

/// The line after which the chart README's values table is generated.
pub const MARKER: &str = "<!-- Generated from values.yaml by `make chart-docs` from here on: edit the comments there. -->";

/// `readme` with everything after [`MARKER`] replaced by the table of
/// `values`.
///
/// # Errors
///
/// As [`rows`]; also when `readme` has no marker line.
pub fn update(readme: &str, values: &str) -> Result<String, Invalid> {
    let Some(at) = readme.find(MARKER) else {
        return Err(Invalid {
            line: 0,
            message: format!("the chart README lacks the line {MARKER}"),
        });
    };
    let mut out = readme[..at + MARKER.len()].to_owned();
    out.push_str("\n\n| key | type | default | description |\n|---|---|---|---|\n");
    for row in rows(values)? {
        let default = if row.default.is_empty() {
            String::new()
        } else {
            format!("`{}`", cell(&row.default))
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {default} | {} |",
            row.key,
            row.kind,
            cell(&row.description)
        );
    }
    Ok(out)
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: &str = "# How many.
replicaCount: 2

image:
  # Where from.
  repository: ghcr.io/x/y
  # Pinned | not.
  digest: \"\"

# Whole: replaced when set.
resources:
  requests:
    cpu: 50m

networkPolicy:
  # Who may scrape.
  metricsFrom:
    - namespaceSelector:
        matchLabels:
          name: monitoring
    - ipBlock: {cidr: 10.0.0.0/8}
  # Flow list.
  extra: [a, b]
";

    #[test]
    fn rows_follow_the_comments() {
        let rows = rows(VALUES).expect("rows");
        let keys: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.key.as_str(), r.kind, r.default.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("replicaCount", "int", "2"),
                ("image.repository", "string", "ghcr.io/x/y"),
                ("image.digest", "string", "\"\""),
                ("resources", "object", "{requests: {cpu: 50m}}"),
                (
                    "networkPolicy.metricsFrom",
                    "list",
                    "[{namespaceSelector: {matchLabels: {name: monitoring}}}, {ipBlock: {cidr: 10.0.0.0/8}}]"
                ),
                ("networkPolicy.extra", "list", "[a, b]"),
            ]
        );
        let text = update(&format!("# chart\n\n{MARKER}\nold table\n"), VALUES).expect("readme");
        assert!(
            text.starts_with(&format!("# chart\n\n{MARKER}\n\n| key |")),
            "{text}"
        );
        assert!(!text.contains("old table"), "{text}");
        assert!(
            text.contains("| `image.digest` | string | `\"\"` | Pinned \\| not. |"),
            "{text}"
        );
        assert!(update("# chart\n", VALUES).is_err());
    }

    #[test]
    fn undocumented_values_and_odd_yaml_are_refused_with_their_line() {
        let err = rows("a: 1\n").expect_err("no comment");
        assert_eq!(err.to_string(), "values.yaml:1: a has no comment above it");
        let err = rows("# x\na:\n  b: 1\n    c: 2\n").expect_err("indent");
        assert_eq!(err.line, 4, "{err}");
        let err = rows("# x\na: |\n  text\n").expect_err("block scalar");
        assert_eq!(err.line, 3, "{err}");
        // A blank line cuts a comment from the key below it.
        let err = rows("# x\n\na: 1\n").expect_err("detached comment");
        assert_eq!(err.line, 3, "{err}");
    }
}

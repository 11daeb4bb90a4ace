//! Block-style YAML for generated manifests (`probity crd`): stable key
//! order, strings quoted only when a plain scalar would change meaning.

use serde_json::Value;

/// `value` as one YAML document, starting with `---`.
pub fn document(value: &Value) -> String {
    let mut out = String::from("---\n");
    node(value, 0, &mut out);
    out
}

/// Writes `value` as the content after a key or dash, at `indent`.
fn node(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                pad(indent, out);
                scalar_str(key, out);
                out.push(':');
                child_after_key(child, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                pad(indent, out);
                out.push('-');
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // First key on the dash line, the rest aligned under it.
                        let mut first = true;
                        for (key, child) in map {
                            if first {
                                out.push(' ');
                                first = false;
                            } else {
                                pad(indent + 2, out);
                            }
                            scalar_str(key, out);
                            out.push(':');
                            child_after_key(child, indent + 2, out);
                        }
                    }
                    Value::Array(inner) if !inner.is_empty() => {
                        out.push('\n');
                        node(item, indent + 2, out);
                    }
                    other => {
                        out.push(' ');
                        inline(other, out);
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            pad(indent, out);
            inline(other, out);
            out.push('\n');
        }
    }
}

fn child_after_key(child: &Value, indent: usize, out: &mut String) {
    match child {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            node(child, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            node(child, indent, out);
        }
        other => {
            out.push(' ');
            inline(other, out);
            out.push('\n');
        }
    }
}

fn pad(indent: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn inline(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => scalar_str(s, out),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

/// A string as a plain scalar when that reads back as the same string,
/// otherwise double-quoted (JSON escaping is valid YAML).
fn scalar_str(s: &str, out: &mut String) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        out.push_str(&Value::String(s.to_owned()).to_string());
    }
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let reserved = [
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "~",
    ];
    if reserved.iter().any(|r| s.eq_ignore_ascii_case(r)) {
        return false;
    }
    // Anything that could read as a number.
    if first.is_ascii_digit() || first == '-' || first == '+' || first == '.' {
        return false;
    }
    if s.ends_with(' ') || s.contains(": ") || s.contains(" #") {
        return false;
    }
    first.is_ascii_alphabetic()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-./()=,'\"".contains(c))
        && !s.contains('\'')
        && !s.contains('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_a_yaml_parser() {
        let value = json!({
            "apiVersion": "v1",
            "list": [{"a": 1, "b": [true, "x"]}, "plain", "needs: quote", "", "123", "yes"],
            "nested": {"empty": {}, "none": [], "n": null, "s": "a \"quoted\" word\nline"},
            "deep": [[1, 2], {"k": {"x": -1.5}}],
        });
        let text = document(&value);
        let docs: Vec<Value> = crate::manifest::yaml::read_stream(&text)
            .map(|d| d.map(|d| d.value))
            .collect::<Result<_, _>>()
            .expect("valid YAML");
        assert_eq!(docs, vec![value], "{text}");
    }

    #[test]
    fn plain_where_safe() {
        let text = document(&json!({"kind": "CustomResourceDefinition", "v": "1.0", "n": 1}));
        // `n` is a YAML 1.1 boolean, so even as a key it is quoted.
        assert_eq!(
            text,
            "---\nkind: CustomResourceDefinition\n\"n\": 1\nv: \"1.0\"\n"
        );
    }
}

//! Typed reads of JSON-shaped objects that name the exact field on error.

use serde_json::Value;

/// A field whose value does not have the type Kubernetes requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    /// JSON pointer of the field.
    pub pointer: String,
    /// What serde said.
    pub message: String,
}

/// Deserialises the value at `pointer`; `None` when absent or null.
pub fn at<T: serde::de::DeserializeOwned>(
    object: &Value,
    pointer: &str,
) -> Result<Option<T>, TypeError> {
    let Some(value) = object.pointer(pointer).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    // Fast path; the path-tracking deserializer runs only to locate an
    // error.
    if let Ok(parsed) = T::deserialize(value) {
        return Ok(Some(parsed));
    }
    serde_path_to_error::deserialize(value)
        .map(Some)
        .map_err(|e| TypeError {
            pointer: pointer_of(pointer, e.path()),
            message: e.inner().to_string(),
        })
}

/// `prefix` followed by `path` as a JSON pointer.
pub fn pointer_of(prefix: &str, path: &serde_path_to_error::Path) -> String {
    let mut at = prefix.to_owned();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => at.push_str(&format!("/{index}")),
            serde_path_to_error::Segment::Map { key } => {
                at.push('/');
                at.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    at
}

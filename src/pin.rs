//! `probity pin`: rewrite image references in manifest files to
//! `tag@digest`, in place, touching nothing but the image strings: comments,
//! key order, quoting and indentation stay as they were.
//!
//! GitOps-friendly pinning: the digest lands in Git, reviewed like any other
//! change, instead of the live spec being rewritten behind Git's back.

use crate::image::Reference;
use crate::manifest::yaml::{self, Pos, SyntaxError};
use crate::policy::workload::objects;
use crate::policy::{Classified, Workload};

/// An image reference in a file that may be pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Where the image value starts.
    pub pos: Pos,
    /// The image as written.
    pub image: String,
    /// It parsed, and carries no digest yet.
    pub reference: Reference,
}

/// Every unpinned image of every workload in `text`.
///
/// # Errors
///
/// The first document that does not parse, with its location.
pub fn sites(text: &str) -> Result<Vec<Site>, SyntaxError> {
    let mut out = Vec::new();
    for doc in yaml::read_stream(text) {
        let doc = doc?;
        for (prefix, object) in objects(&doc.value) {
            let Ok(Classified::Workload(workload)) = Workload::classify(object) else {
                continue;
            };
            for found in workload.unpinned_images() {
                out.push(Site {
                    pos: doc.locate(&format!("{prefix}{}", found.pointer())),
                    image: found.image.to_owned(),
                    reference: found.reference,
                });
            }
        }
    }
    Ok(out)
}

/// Why one site could not be rewritten in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {image}: {reason}", line = .pos.line, col = .pos.col)]
pub struct NotRewritten {
    /// Where.
    pub pos: Pos,
    /// The image.
    pub image: String,
    /// Why.
    pub reason: String,
}

/// `text` with each `(site, replacement)` written over the image string at
/// its position, quoted as it was. Images not found verbatim at their
/// position (a multi-line or escaped scalar) are left alone and reported.
pub fn rewrite(text: &str, edits: &[(Site, String)]) -> (String, Vec<NotRewritten>) {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    let mut failed = Vec::new();
    // Right to left within a line, so earlier columns stay valid.
    let mut ordered: Vec<&(Site, String)> = edits.iter().collect();
    ordered.sort_by_key(|e| std::cmp::Reverse(e.0.pos));
    for (site, replacement) in ordered {
        let fail = |reason: &str| NotRewritten {
            pos: site.pos,
            image: site.image.clone(),
            reason: reason.to_owned(),
        };
        let Some(line) = site.pos.line.checked_sub(1).and_then(|i| lines.get_mut(i)) else {
            failed.push(fail("position outside the file"));
            continue;
        };
        // Columns count characters.
        let Some(start) = line
            .char_indices()
            .nth(site.pos.col.saturating_sub(1))
            .map(|(i, _)| i)
        else {
            failed.push(fail("position outside the line"));
            continue;
        };
        let rest = &line[start..];
        let offset = match rest.chars().next() {
            Some(q @ ('"' | '\'')) if rest[1..].starts_with(&site.image) => {
                let after = &rest[1 + site.image.len()..];
                if !after.starts_with(q) {
                    failed.push(fail("quoted value continues past the image"));
                    continue;
                }
                start + 1
            }
            _ if rest.starts_with(&site.image) => start,
            _ => {
                failed.push(fail("not written on one line as a plain or quoted string"));
                continue;
            }
        };
        line.replace_range(offset..offset + site.image.len(), replacement);
    }
    (lines.concat(), failed)
}

/// A unified diff of two versions of `name`, line by line (no context).
pub fn diff(name: &str, before: &str, after: &str) -> String {
    let mut out = String::new();
    let old: Vec<&str> = before.lines().collect();
    let new: Vec<&str> = after.lines().collect();
    if old == new {
        return out;
    }
    out.push_str(&format!("--- a/{name}\n+++ b/{name}\n"));
    // Pinning replaces text within lines, so line counts match.
    for (i, (a, b)) in old.iter().zip(new.iter()).enumerate() {
        if a != b {
            out.push_str(&format!("@@ -{0},1 +{0},1 @@\n-{a}\n+{b}\n", i + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    const MANIFEST: &str = "\
# the web tier
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: \"ghcr.io/acme/migrate:3\"   # quoted
      containers:
        - name: web
          image: nginx:1.27 # plain, with a comment
        - name: sidecar
          image: 'envoy:v1@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: [{name: a, image: nginx:1.27}]}}
";

    #[test]
    fn finds_unpinned_images_with_positions() -> Result<(), SyntaxError> {
        let found = sites(MANIFEST)?;
        let described: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|s| (s.pos.line, s.pos.col, s.image.as_str()))
            .collect();
        assert_eq!(
            described,
            [
                (10, 18, "ghcr.io/acme/migrate:3"),
                (13, 18, "nginx:1.27"),
                (20, 89, "nginx:1.27"),
            ]
        );
        Ok(())
    }

    #[test]
    fn rewrites_only_the_image_strings() -> Result<(), SyntaxError> {
        let edits: Vec<(Site, String)> = sites(MANIFEST)?
            .into_iter()
            .map(|s| {
                let pinned = format!("{}@{DIGEST}", s.image);
                (s, pinned)
            })
            .collect();
        let (after, failed) = rewrite(MANIFEST, &edits);
        assert!(failed.is_empty(), "{failed:?}");
        let expected = MANIFEST
            .replace(
                "\"ghcr.io/acme/migrate:3\"",
                &format!("\"ghcr.io/acme/migrate:3@{DIGEST}\""),
            )
            .replace(
                "image: nginx:1.27 # plain",
                &format!("image: nginx:1.27@{DIGEST} # plain"),
            )
            .replace(
                "image: nginx:1.27}",
                &format!("image: nginx:1.27@{DIGEST}}}"),
            );
        assert_eq!(after, expected);
        let d = diff("k8s/web.yaml", MANIFEST, &after);
        assert!(
            d.starts_with("--- a/k8s/web.yaml\n+++ b/k8s/web.yaml\n@@ -10,1 +10,1 @@\n"),
            "{d}"
        );
        assert_eq!(d.matches("@@ -").count(), 3);
        Ok(())
    }

    #[test]
    fn escaped_scalars_are_reported_not_mangled() -> Result<(), SyntaxError> {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: \"nginx\\u003a1.27\"\n";
        let edits: Vec<(Site, String)> = sites(text)?
            .into_iter()
            .map(|s| (s, "x".to_owned()))
            .collect();
        let (after, failed) = rewrite(text, &edits);
        assert_eq!(after, text);
        assert_eq!(failed.len(), 1);
        Ok(())
    }
}

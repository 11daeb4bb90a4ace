//! `admission.k8s.io/v1` AdmissionReview: decoding requests (with the path
//! of whatever is wrong) and encoding responses that echo the request uid.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

/// The only AdmissionReview version the webhooks accept.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// A create.
    Create,
    /// An update.
    Update,
    /// A delete.
    Delete,
    /// A connect (exec, attach, port-forward).
    Connect,
}

/// Group, version and kind of the object in a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Gvk {
    /// API group, empty for the core group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// The parts of an admission request the webhooks use.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Identifies this request; the response must carry it back.
    pub uid: String,
    /// The kind of the object.
    #[serde(default)]
    pub kind: Gvk,
    /// The subresource, when one is being admitted (`scale`, `status`).
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The object's name (may be empty on CREATE with `generateName`).
    #[serde(default)]
    pub name: String,
    /// The object's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The operation.
    pub operation: Operation,
    /// The object as it would be stored (CREATE, UPDATE).
    #[serde(default)]
    pub object: Option<Value>,
    /// The object before the change (UPDATE, DELETE).
    #[serde(default)]
    pub old_object: Option<Value>,
    /// Whether the request is a dry run: evaluated, never persisted.
    #[serde(default)]
    pub dry_run: bool,
    /// Who sent it, as the API server authenticated them.
    #[serde(default)]
    pub user_info: UserInfo,
}

/// The authenticated sender of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UserInfo {
    /// The user name (`system:serviceaccount:kube-system:replicaset-controller`).
    #[serde(default)]
    pub username: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<Request>,
}

/// Why a body is not an AdmissionReview the webhooks can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON, or a field has the wrong type.
    #[error("malformed AdmissionReview at {path}: {message}")]
    Malformed {
        /// Path of the offending field (`.` for the document).
        path: String,
        /// What the parser said.
        message: String,
    },
    /// Not an `admission.k8s.io/v1` AdmissionReview.
    #[error(
        "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got {api_version:?} {kind:?}"
    )]
    WrongType {
        /// The apiVersion sent.
        api_version: String,
        /// The kind sent.
        kind: String,
    },
    /// No `request`, or a request without a uid.
    #[error("AdmissionReview has no request{}", if *.0 { " uid" } else { "" })]
    NoRequest(bool),
}

/// Decodes an AdmissionReview body into its request.
///
/// # Errors
///
/// When the body is not an `admission.k8s.io/v1` AdmissionReview with a
/// request carrying a uid; the error names the offending field.
pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let review: Review = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        DecodeError::Malformed {
            path,
            message: e.into_inner().to_string(),
        }
    })?;
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(DecodeError::WrongType {
            api_version: review.api_version,
            kind: review.kind,
        });
    }
    let request = review.request.ok_or(DecodeError::NoRequest(false))?;
    if request.uid.is_empty() {
        return Err(DecodeError::NoRequest(true));
    }
    Ok(request)
}

/// The answer to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Why it is denied (shown to the user by kubectl).
    pub message: Option<String>,
    /// Warnings the client shows (`Warning: ...`).
    pub warnings: Vec<String>,
    /// A JSON patch to apply (mutating webhook only).
    pub patch: Option<Value>,
    /// Audit annotations, recorded in the API server's audit log.
    pub audit: BTreeMap<String, String>,
}

impl Response {
    /// Admitted, nothing to say.
    pub fn allow() -> Self {
        Self {
            allowed: true,
            ..Self::default()
        }
    }

    /// Denied with `message`.
    pub fn deny(message: String) -> Self {
        Self {
            allowed: false,
            message: Some(message),
            ..Self::default()
        }
    }

    /// The AdmissionReview carrying this response for request `uid`.
    pub fn into_review(self, uid: &str) -> Value {
        let mut response = json!({"uid": uid, "allowed": self.allowed});
        if let Some(message) = self.message {
            let code = if self.allowed { 200 } else { 403 };
            response["status"] = json!({
                "code": code,
                "message": message,
                "reason": if self.allowed { "" } else { "Forbidden" },
            });
        }
        if !self.warnings.is_empty() {
            response["warnings"] = json!(self.warnings);
        }
        if let Some(patch) = self.patch {
            let bytes = patch.to_string();
            response["patchType"] = json!("JSONPatch");
            response["patch"] =
                json!(base64::engine::general_purpose::STANDARD.encode(bytes.as_bytes()));
        }
        if !self.audit.is_empty() {
            response["auditAnnotations"] = json!(self.audit);
        }
        json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap_or_default()
    }

    #[test]
    fn decodes_a_create() {
        let request = decode(&body(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "namespace": "ns", "operation": "CREATE", "userInfo": {"username": "me"},
                "object": {"kind": "Deployment"}, "dryRun": true,
            },
        })));
        let request = request.expect("valid review");
        assert_eq!(request.uid, "u1");
        assert_eq!(request.operation, Operation::Create);
        assert_eq!(request.kind.kind, "Deployment");
        assert!(request.dry_run);
    }

    #[test]
    fn malformed_reviews_name_what_is_wrong() {
        let err = decode(b"{not json").expect_err("not JSON");
        assert!(
            err.to_string().starts_with("malformed AdmissionReview at"),
            "{err}"
        );
        let err = decode(&body(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": "PATCH"},
        })))
        .expect_err("unknown operation");
        assert!(err.to_string().contains("request.operation"), "{err}");
        let err = decode(&body(&json!({
            "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": "CREATE"},
        })))
        .expect_err("v1beta1");
        assert!(matches!(err, DecodeError::WrongType { .. }), "{err}");
        let err = decode(&body(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "", "operation": "CREATE"},
        })))
        .expect_err("empty uid");
        assert_eq!(err.to_string(), "AdmissionReview has no request uid");
    }

    #[test]
    fn responses_echo_the_uid_and_encode_patches() {
        let mut r = Response::deny("no".to_owned());
        r.warnings.push("w".to_owned());
        let review = r.into_review("abc");
        assert_eq!(review["response"]["uid"], "abc");
        assert_eq!(review["response"]["allowed"], false);
        assert_eq!(review["response"]["status"]["code"], 403);
        assert_eq!(review["response"]["warnings"][0], "w");

        let mut r = Response::allow();
        r.patch = Some(json!([{"op": "replace", "path": "/a", "value": 1}]));
        let review = r.into_review("x");
        let encoded = review["response"]["patch"].as_str().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_default();
        let patch: Value = serde_json::from_slice(&decoded).unwrap_or_default();
        assert_eq!(patch[0]["path"], "/a");
        assert_eq!(review["response"]["patchType"], "JSONPatch");
    }
}

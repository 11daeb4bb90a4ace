//! `admission.k8s.io/v1` AdmissionReview: decoding requests (with the path
//! of whatever is wrong) and encoding responses that echo the request uid.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::policy::pod::{MAX_ELEMENTS, with_element_budget};
use crate::policy::{Classified, InvalidWorkload, Workload};

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

/// An object in a request, as the rules read it (decoded without building
/// a JSON tree, within [`MAX_ELEMENTS`]), or why it cannot be read.
pub type Object = Result<Classified, InvalidWorkload>;

/// The parts of an admission request the webhooks use.
#[derive(Debug, Clone)]
pub struct Request {
    /// Identifies this request; the response must carry it back.
    pub uid: String,
    /// The kind of the object.
    pub kind: Gvk,
    /// The subresource, when one is being admitted (`scale`, `status`).
    pub sub_resource: Option<String>,
    /// The object's name (may be empty on CREATE with `generateName`).
    pub name: String,
    /// The object's namespace.
    pub namespace: Option<String>,
    /// The operation.
    pub operation: Operation,
    /// The object as it would be stored (CREATE, UPDATE).
    pub object: Option<Object>,
    /// The object before the change (UPDATE, DELETE).
    pub old_object: Option<Object>,
    /// Whether the request is a dry run: evaluated, never persisted.
    pub dry_run: bool,
    /// Who sent it, as the API server authenticated them.
    pub user_info: UserInfo,
}

/// A request as sent: the objects still unread JSON text inside the body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest<'a> {
    uid: String,
    #[serde(default)]
    kind: Gvk,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    old_object: Option<&'a RawValue>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    user_info: UserInfo,
}

/// Reads an object from a JSON tree as [`decode`] reads it from text.
pub fn read_object(value: &Value) -> Object {
    with_element_budget(MAX_ELEMENTS, || Workload::classify_json(&value.to_string()))
}

/// Reads an object's text, bounded as a stranger's input; a workload
/// without a namespace or name gets the request's (a CREATE with
/// `generateName`, a namespaced request for an object that omits it).
fn object(raw: Option<&RawValue>, namespace: Option<&String>, name: &str) -> Option<Object> {
    let raw = raw.filter(|raw| raw.get() != "null")?;
    let mut object = with_element_budget(MAX_ELEMENTS, || Workload::classify_json(raw.get()));
    if let Ok(Classified::Workload(w)) = &mut object {
        if w.namespace.is_none() {
            w.namespace = namespace.cloned();
        }
        if w.name.is_empty() {
            name.clone_into(&mut w.name);
        }
    }
    Some(object)
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
struct Review<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<WireRequest<'a>>,
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

/// Decodes an AdmissionReview body into its request. The objects in it
/// are read as the rules need them: an unreadable object is not an
/// unreadable review (the webhook answers it, and says why).
///
/// # Errors
///
/// When the body is not an `admission.k8s.io/v1` AdmissionReview with a
/// request carrying a uid; the error names the offending field.
pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
    // Fast path; the path-tracking parse runs only to locate an error.
    let review: Review<'_> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(_) => {
            let de = &mut serde_json::Deserializer::from_slice(body);
            let tracked: Result<Review<'_>, _> = serde_path_to_error::deserialize(de);
            let message = match tracked {
                Ok(_) => "unreadable".to_owned(),
                Err(e) => {
                    let path = e.path().to_string();
                    return Err(DecodeError::Malformed {
                        path,
                        message: e.into_inner().to_string(),
                    });
                }
            };
            return Err(DecodeError::Malformed {
                path: ".".to_owned(),
                message,
            });
        }
    };
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(DecodeError::WrongType {
            api_version: review.api_version,
            kind: review.kind,
        });
    }
    let wire = review.request.ok_or(DecodeError::NoRequest(false))?;
    if wire.uid.is_empty() {
        return Err(DecodeError::NoRequest(true));
    }
    Ok(Request {
        object: object(wire.object, wire.namespace.as_ref(), &wire.name),
        old_object: object(wire.old_object, wire.namespace.as_ref(), &wire.name),
        uid: wire.uid,
        kind: wire.kind,
        sub_resource: wire.sub_resource,
        name: wire.name,
        namespace: wire.namespace,
        operation: wire.operation,
        dry_run: wire.dry_run,
        user_info: wire.user_info,
    })
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

    fn review_of(object: &str) -> Vec<u8> {
        format!(
            r#"{{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {{"uid": "u", "operation": "CREATE", "namespace": "ns",
                "name": "from-request", "object": {object}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn objects_are_read_typed_and_an_unreadable_one_is_no_unreadable_review() {
        let request = decode(&review_of(
            r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generateName": ""},
                "status": {"huge": [1, 2, 3]}, "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.27", "env": [{"name": "A"}]}]}}}}"#,
        ))
        .expect("a review");
        let Some(Ok(Classified::Workload(w))) = &request.object else {
            panic!("a workload: {:?}", request.object);
        };
        assert_eq!(w.pod.containers[0].image.as_deref(), Some("nginx:1.27"));
        assert_eq!(
            w.namespace.as_deref(),
            Some("ns"),
            "the request's namespace"
        );
        assert_eq!(w.name, "from-request", "the request's name");
        assert!(request.old_object.is_none());

        let request = decode(&review_of(
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "x"}]}]}}"#,
        ))
        .expect("still a review");
        let Some(Err(e)) = &request.object else {
            panic!("unreadable: {:?}", request.object);
        };
        assert_eq!(e.path, "/spec/containers/0/ports/0/containerPort");
        assert_eq!(e.name, "p");

        let request = decode(&review_of(
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "spec": {"containers": "not a list"}}"#,
        ))
        .expect("a review");
        assert!(
            matches!(&request.object, Some(Ok(Classified::OtherKind(k))) if k == "ConfigMap"),
            "other kinds are not read: {:?}",
            request.object
        );
    }

    #[test]
    fn a_hostile_object_is_bounded() {
        let containers =
            vec![r#"{"name": "c", "ports": [{"containerPort": 1}, {"containerPort": 2}]}"#; 6000]
                .join(",");
        let request = decode(&review_of(&format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p"}},
                "spec": {{"containers": [{containers}]}}}}"#
        )))
        .expect("a review");
        let Some(Err(e)) = &request.object else {
            panic!("over budget: {:?}", request.object.map(|o| o.is_ok()));
        };
        assert!(e.message.contains("list entries"), "{e}");

        // Within the budget, an error far in is located by a second pass
        // with the budget the first started with.
        let mut containers = vec![r#"{"name": "c"}"#; 10_000];
        containers.push(r#"{"name": "last", "image": 7}"#);
        let request = decode(&review_of(&format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p"}},
                "spec": {{"containers": [{}]}}}}"#,
            containers.join(",")
        )))
        .expect("a review");
        let Some(Err(e)) = &request.object else {
            panic!("unreadable: {:?}", request.object.map(|o| o.is_ok()));
        };
        assert_eq!(e.path, "/spec/containers/10000/image", "{e}");
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

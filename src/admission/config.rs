//! The Validating- and MutatingWebhookConfiguration the webhooks expect,
//! with safe defaults: kube-system and probity's own namespace excluded,
//! `sideEffects: None`, a small timeout, `matchPolicy: Equivalent`, and
//! `failurePolicy: Ignore` (the ValidatingAdmissionPolicy backstop holds
//! the static rules while the webhooks are down).

use serde_json::{Value, json};

/// Where the API server reaches the webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Service: `namespace/name` on `port`.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its port.
        port: u16,
    },
    /// A URL prefix (`https://127.0.0.1:8443`), for local runs.
    Url(String),
}

/// How the configurations are rendered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Name of both configuration objects.
    pub name: String,
    /// Where the webhooks are.
    pub endpoint: Endpoint,
    /// probity's own namespace, always excluded with kube-system.
    pub namespace: String,
    /// More namespaces the webhooks never see.
    pub exclude_namespaces: Vec<String>,
    /// `Ignore` or `Fail`.
    pub failure_policy: String,
    /// `timeoutSeconds` (1-30).
    pub timeout_seconds: u8,
    /// A PEM CA bundle to embed; empty leaves `caBundle` to the operator's
    /// self-managed certificates or cert-manager's CA injector.
    pub ca_bundle: Option<String>,
}

/// The resources both webhooks intercept: `CREATE` and `UPDATE` of every
/// workload kind probity judges, and updates of Pods' ephemeral containers.
pub fn rules() -> Value {
    json!([
        {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
         "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"], "scope": "Namespaced"},
        {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
         "resources": ["jobs", "cronjobs"], "scope": "Namespaced"},
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
         "resources": ["pods", "pods/ephemeralcontainers", "replicationcontrollers"], "scope": "Namespaced"},
    ])
}

/// The namespaces admission never judges: kube-system, probity's own
/// (`own`) and `extra`, each once, in that order. The webhooks'
/// namespace selectors and the backstop bindings use the same list, so an
/// exclusion holds whether or not the webhooks answer.
pub fn excluded_namespaces(own: &str, extra: &[String]) -> Vec<String> {
    let mut excluded: Vec<String> = Vec::with_capacity(extra.len() + 2);
    for ns in ["kube-system", own]
        .into_iter()
        .chain(extra.iter().map(String::as_str))
    {
        if !ns.is_empty() && !excluded.iter().any(|e| e == ns) {
            excluded.push(ns.to_owned());
        }
    }
    excluded
}

impl WebhookConfig {
    fn client_config(&self, path: &str) -> Value {
        let mut config = match &self.endpoint {
            Endpoint::Service {
                namespace,
                name,
                port,
            } => {
                json!({"service": {"namespace": namespace, "name": name, "path": path, "port": port}})
            }
            Endpoint::Url(base) => json!({"url": format!("{}{path}", base.trim_end_matches('/'))}),
        };
        if let Some(ca) = &self.ca_bundle {
            use base64::Engine as _;
            config["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
        }
        config
    }

    fn webhook(&self, name: &str, path: &str) -> Value {
        let excluded = excluded_namespaces(&self.namespace, &self.exclude_namespaces);
        json!({
            "name": name,
            "clientConfig": self.client_config(path),
            "rules": rules(),
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded,
            }]},
            "failurePolicy": self.failure_policy,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": self.timeout_seconds,
            "matchPolicy": "Equivalent",
        })
    }

    /// The ValidatingWebhookConfiguration.
    pub fn validating(&self) -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": self.name, "labels": {"app.kubernetes.io/name": "probity"}},
            "webhooks": [self.webhook("validate.probity.dev", "/validate")],
        })
    }

    /// The MutatingWebhookConfiguration (digest pinning; a no-op unless a
    /// policy sets `images.pin: Admission`).
    pub fn mutating(&self) -> Value {
        let mut webhook = self.webhook("mutate.probity.dev", "/mutate");
        webhook["reinvocationPolicy"] = json!("IfNeeded");
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": self.name, "labels": {"app.kubernetes.io/name": "probity"}},
            "webhooks": [webhook],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_exclude_system_namespaces_and_fail_open() {
        let config = WebhookConfig {
            name: "probity".to_owned(),
            endpoint: Endpoint::Service {
                namespace: "probity".to_owned(),
                name: "probity-webhook".to_owned(),
                port: 443,
            },
            namespace: "probity".to_owned(),
            exclude_namespaces: Vec::new(),
            failure_policy: "Ignore".to_owned(),
            timeout_seconds: 3,
            ca_bundle: None,
        };
        let v = config.validating();
        let hook = &v["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Ignore");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["matchPolicy"], "Equivalent");
        assert_eq!(hook["timeoutSeconds"], 3);
        assert_eq!(
            hook["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system", "probity"])
        );
        assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
        assert!(hook["clientConfig"].get("caBundle").is_none());
        let m = config.mutating();
        assert_eq!(
            m["webhooks"][0]["clientConfig"]["service"]["path"],
            "/mutate"
        );
    }

    #[test]
    fn exclusions_are_listed_once_after_the_system_ones() {
        assert_eq!(
            excluded_namespaces(
                "probity",
                &[
                    "team-a".to_owned(),
                    "probity".to_owned(),
                    String::new(),
                    "team-a".to_owned()
                ]
            ),
            ["kube-system", "probity", "team-a"]
        );
        assert_eq!(excluded_namespaces("kube-system", &[]), ["kube-system"]);
    }
}

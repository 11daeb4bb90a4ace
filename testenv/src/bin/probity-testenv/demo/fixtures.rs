//! The manifests and pod statuses the tour applies.

pub(super) const DIGEST: &str =
    "sha256:6b7e0cd3a8f1e5a4c9d2b3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4";
pub(super) const DIGEST_OTHER: &str =
    "sha256:0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e";

pub(super) const BASELINE: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {probity.dev/policy: enforce}
---
apiVersion: probity.dev/v1alpha1
kind: ClusterReadinessPolicy
metadata:
  name: baseline
spec:
  mode: Enforce
  namespaceSelector:
    matchLabels: {probity.dev/policy: enforce}
";

pub(super) const WEB_LATEST: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:latest
";

// (No `\` after the quote: it would eat the first line's indentation.)
pub(super) const ORDERS_TEMPLATE: &str = "        - name: orders
          image: ghcr.io/acme/orders:1.4.2@DIGEST
          ports:
            - {name: http, containerPort: 8080}
          startupProbe:
            httpGet: {path: /startupz, port: http}
            periodSeconds: 2
            failureThreshold: 30
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            httpGet: {path: /livez, port: http}
            periodSeconds: 10
            timeoutSeconds: 2
            failureThreshold: 6
";

pub(super) const ORDERS_HEAD: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
spec:
  replicas: 3
  selector:
    matchLabels: {app: orders}
  template:
    metadata:
      labels: {app: orders}
    spec:
      terminationGracePeriodSeconds: 30
      containers:
";

pub(super) fn orders_manifest() -> String {
    format!("{ORDERS_HEAD}{}", ORDERS_TEMPLATE.replace("DIGEST", DIGEST))
}

pub(super) fn orders_pods() -> String {
    let mut out = String::new();
    for pod in ["a", "b", "c"] {
        out.push_str(&format!(
            "---
apiVersion: v1
kind: Pod
metadata:
  name: orders-5d8f7b9c4-{pod}
  labels: {{app: orders, pod-template-hash: 5d8f7b9c4}}
  ownerReferences:
    - {{apiVersion: apps/v1, kind: ReplicaSet, name: orders-5d8f7b9c4, uid: 6f1c2e0a-0000-4000-8000-000000000001, controller: true}}
spec:
  containers:
{}",
            ORDERS_TEMPLATE.replace("DIGEST", DIGEST)
        ));
    }
    out
}

pub(super) fn pod_status(digest: &str) -> String {
    let status = serde_json::json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "orders", "image": format!("ghcr.io/acme/orders:1.4.2@{DIGEST}"),
        "imageID": format!("ghcr.io/acme/orders@{digest}"),
        "ready": true, "restartCount": 0, "started": true,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }]}});
    format!("{status:#}\n")
}

pub(super) const REPORT: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
---
apiVersion: probity.dev/v1alpha1
kind: ReadinessPolicy
metadata:
  name: report
  namespace: legacy
spec:
  mode: Audit
";

pub(super) const LEGACY_APPS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cache
spec:
  selector:
    matchLabels: {app: cache}
  template:
    metadata:
      labels: {app: cache}
    spec:
      containers:
        - name: redis
          image: redis:latest
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
        - name: api
          image: ghcr.io/acme/api:2.0
          readinessProbe:
            httpGet: {path: /healthz, port: 8080}
          livenessProbe:
            httpGet: {path: /healthz, port: 8080}
";

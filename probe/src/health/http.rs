//! The HTTP endpoints, in kube-apiserver's format: `/livez`, `/readyz`,
//! `/startupz`, `/<probe>/<check>`, `?verbose`, `?exclude=`.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::report::{CheckStatus, Probe, Report, evaluate};
use super::{Health, Inner};

impl Health {
    /// An axum [`Router`] serving `/livez`, `/readyz`, `/startupz`,
    /// `/<probe>/<check>` and the dependency inventory `/dependencies`
    /// (JSON), GET and HEAD. Merge it into the application's
    /// router or serve it alone on an admin port.
    ///
    /// A `Router` is a tower `Service`, so it also mounts anywhere a
    /// `Service<http::Request<_>>` fits:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use tower::ServiceExt as _;
    /// let health = probity_probe::health::Health::builder().build().expect("valid");
    /// let request = http::Request::get("/livez").body(axum::body::Body::empty()).expect("request");
    /// let response = health.router().oneshot(request).await.expect("infallible");
    /// assert_eq!(response.status(), 200);
    /// # }
    /// ```
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .route("/startupz", get(startupz))
            .route("/livez/{check}", get(livez_one))
            .route("/readyz/{check}", get(readyz_one))
            .route("/startupz/{check}", get(startupz_one))
            .with_state(self.clone())
    }

    /// `GET /dependencies`: every registered dependency edge (timeout,
    /// breaker rule, fallback) as JSON, flagging missing answers. Not part
    /// of [`router`](Self::router): the inventory describes the service's
    /// internals, so mount it where only operators reach it (an admin
    /// port).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let health = probity_probe::health::Health::builder().build().expect("valid");
    /// let admin: axum::Router = health.router().merge(health.dependencies_router());
    /// # let _ = admin;
    /// # }
    /// ```
    pub fn dependencies_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/dependencies", get(dependencies))
            .with_state(self.clone())
    }
}

type Args = (State<Health>, RawQuery, HeaderMap);

async fn livez((State(h), RawQuery(q), headers): Args) -> Response {
    respond(&h.inner, Probe::Liveness, None, q, &headers)
}
async fn readyz((State(h), RawQuery(q), headers): Args) -> Response {
    respond(&h.inner, Probe::Readiness, None, q, &headers)
}
async fn startupz((State(h), RawQuery(q), headers): Args) -> Response {
    respond(&h.inner, Probe::Startup, None, q, &headers)
}
async fn livez_one(Path(check): Path<String>, (State(h), RawQuery(q), headers): Args) -> Response {
    respond(&h.inner, Probe::Liveness, Some(&check), q, &headers)
}
async fn readyz_one(Path(check): Path<String>, (State(h), RawQuery(q), headers): Args) -> Response {
    respond(&h.inner, Probe::Readiness, Some(&check), q, &headers)
}
async fn startupz_one(
    Path(check): Path<String>,
    (State(h), RawQuery(q), headers): Args,
) -> Response {
    respond(&h.inner, Probe::Startup, Some(&check), q, &headers)
}

async fn dependencies(State(h): State<Health>) -> Response {
    let edges: Vec<serde_json::Value> = h
        .inner
        .dependencies
        .iter()
        .map(|d| d.to_json(h.inner.fleet_view(&d.name)))
        .collect();
    let flagged = h
        .inner
        .dependencies
        .iter()
        .filter(|d| !d.problems().is_empty())
        .count();
    let body = serde_json::json!({"dependencies": edges, "flagged": flagged});
    with_headers(StatusCode::OK, "application/json", body.to_string())
}

/// `?verbose` (any value, or none) and repeated `?exclude=name`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Query {
    pub(crate) verbose: bool,
    pub(crate) exclude: Vec<String>,
}

pub(crate) fn parse_query(raw: Option<&str>) -> Query {
    let mut query = Query::default();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "verbose" => query.verbose = true,
            "exclude" if !value.is_empty() => query.exclude.push(value.into_owned()),
            _ => {}
        }
    }
    query
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let media = media.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("application/json")
        })
}

fn respond(
    inner: &Inner,
    probe: Probe,
    only: Option<&str>,
    raw: Option<String>,
    headers: &HeaderMap,
) -> Response {
    let query = parse_query(raw.as_deref());
    let exclude: Vec<&str> = query.exclude.iter().map(String::as_str).collect();
    let report = evaluate(inner, probe, &exclude, only);
    if let Some(name) = only
        && report.checks.is_empty()
    {
        return with_headers(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("no {} check named {name:?}\n", probe.path_name()),
        );
    }
    for name in &report.unknown_excludes {
        // Any client can send `?exclude=`: each name is logged once, and
        // only the first few.
        if inner.note_unknown_exclude(name) {
            tracing::debug!(probe = probe.path_name(), check = %name, "cannot exclude unknown health check");
        }
    }
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if wants_json(headers) {
        return with_headers(
            status,
            "application/json",
            json(&report, inner.show_reasons),
        );
    }
    let body = if report.ok && !query.verbose {
        "ok".to_owned()
    } else {
        text(&report, inner.show_reasons)
    };
    with_headers(status, "text/plain; charset=utf-8", body)
}

fn with_headers(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The verbose text body, as kube-apiserver writes it.
pub(crate) fn text(report: &Report, show_reasons: bool) -> String {
    let mut out = String::new();
    for c in &report.checks {
        let reason = |r: &Option<String>| match (show_reasons, r) {
            (true, Some(r)) => r.clone(),
            _ => "reason withheld".to_owned(),
        };
        let _ = match c.status {
            CheckStatus::Ok => match &c.detail {
                Some(detail) => writeln!(out, "[+]{} ok ({detail})", c.name),
                None => writeln!(out, "[+]{} ok", c.name),
            },
            CheckStatus::Excluded => writeln!(out, "[+]{} excluded: ok", c.name),
            CheckStatus::Degraded => writeln!(out, "[+]{} degraded: {}", c.name, reason(&c.reason)),
            CheckStatus::Failed => writeln!(out, "[-]{} failed: {}", c.name, reason(&c.reason)),
        };
    }
    if !report.unknown_excludes.is_empty() {
        let names: Vec<String> = report
            .unknown_excludes
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        let _ = writeln!(
            out,
            "warn: some health checks cannot be excluded: no matches for {}",
            names.join(",")
        );
    }
    let verdict = if report.ok { "passed" } else { "failed" };
    let _ = writeln!(out, "{} check {verdict}", report.probe.path_name());
    out
}

/// The JSON body.
pub(crate) fn json(report: &Report, show_reasons: bool) -> String {
    let checks: Vec<serde_json::Value> = report
        .checks
        .iter()
        .map(|c| {
            let mut v = serde_json::json!({
                "name": c.name,
                "status": c.status.as_str(),
            });
            if let Some(detail) = &c.detail {
                v["detail"] = serde_json::json!(detail);
            }
            if let Some(age) = c.age {
                v["ageSeconds"] = serde_json::json!((age.as_secs_f64() * 1000.0).round() / 1000.0);
                v["consecutiveFailures"] = serde_json::json!(c.consecutive_failures);
            }
            if let Some(took) = c.duration {
                v["durationSeconds"] =
                    serde_json::json!((took.as_secs_f64() * 1000.0).round() / 1000.0);
            }
            if show_reasons && let Some(reason) = &c.reason {
                v["reason"] = serde_json::json!(reason);
            }
            v
        })
        .collect();
    let mut body = serde_json::json!({
        "probe": report.probe.path_name(),
        "status": if report.ok { "ok" } else { "failed" },
        "checks": checks,
    });
    if !report.unknown_excludes.is_empty() {
        body["unknownExcludes"] = serde_json::json!(report.unknown_excludes);
    }
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_excludes_are_logged_once_and_boundedly() {
        let health = crate::health::Health::builder().build().expect("valid");
        assert!(health.inner.note_unknown_exclude("nope"));
        assert!(!health.inner.note_unknown_exclude("nope"), "once per name");
        let fresh = (0..100)
            .filter(|i| health.inner.note_unknown_exclude(&format!("n{i}")))
            .count();
        assert_eq!(fresh, super::super::LOGGED_UNKNOWN_EXCLUDES - 1);
    }

    #[test]
    fn query_takes_verbose_in_any_form_and_repeated_excludes() {
        assert_eq!(parse_query(None), Query::default());
        let q = parse_query(Some("verbose&exclude=a&exclude=b%2Dc&exclude="));
        assert!(q.verbose);
        assert_eq!(q.exclude, ["a", "b-c"]);
        assert!(
            parse_query(Some("verbose=false")).verbose,
            "kube-apiserver treats presence as on"
        );
    }

    #[test]
    fn json_is_negotiated_from_accept_lists() {
        let mut h = HeaderMap::new();
        assert!(!wants_json(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/plain, application/json;q=0.9"),
        );
        assert!(wants_json(&h));
    }
}

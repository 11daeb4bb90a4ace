//! The registry client's bearer-token flow against a real registry:
//! Debian's docker-registry configured for token auth, with a small token
//! service in this test that issues ES256 JWTs for Basic credentials.
//! The client follows the `WWW-Authenticate: Bearer` challenge, presents
//! the credentials from a Docker config, and resolves the digest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use probity::image::Reference;
use probity::registry::{DockerConfig, Options, RegistryClient};
use probity_testenv::registry::{Registry, locate_or_skip};
use serde_json::json;

const SERVICE: &str = "probity-registry";
const ISSUER: &str = "probity-test-issuer";

struct Issuer {
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Issuer {
    /// A self-signed P-256 certificate (the registry's root bundle) and its
    /// key, for signing.
    fn new() -> anyhow::Result<(Self, String)> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("key: {e}"))?;
        Ok((
            Self {
                key: signer,
                cert_der: cert.der().to_vec(),
            },
            cert.pem(),
        ))
    }

    fn token(&self, subject: &str, scope: &str) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        // scope: repository:<name>:<actions>
        let mut parts = scope.splitn(3, ':');
        let (kind, name, actions) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let header = json!({
            "alg": "ES256", "typ": "JWT",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)],
        });
        let claims = json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{subject}"),
            "access": [{"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}],
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
        Ok(format!("{input}.{}", b64url(signature.as_ref())))
    }
}

async fn token_endpoint(
    State(issuer): State<std::sync::Arc<Issuer>>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:s3cret")
    );
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given != want || query.get("service").map(String::as_str) != Some(SERVICE) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"errors": [{"code": "UNAUTHORIZED"}]})),
        );
    }
    let scope = query.get("scope").cloned().unwrap_or_default();
    match issuer.token("ci", &scope) {
        Ok(token) => (StatusCode::OK, axum::Json(json!({"token": token}))),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e.to_string()})),
        ),
    }
}

/// The refresh token the stand-in identity provider accepts.
const REFRESH: &str = "refresh-3f1c";

/// OAuth2's refresh-token grant, as Docker sends an identity token: a form
/// POSTed to the realm, answered with an `access_token`.
async fn refresh_grant(
    State(issuer): State<std::sync::Arc<Issuer>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let field = |name: &str| form.get(name).map(String::as_str);
    let form_typed = headers.get("content-type").and_then(|v| v.to_str().ok())
        == Some("application/x-www-form-urlencoded");
    if !form_typed
        || field("grant_type") != Some("refresh_token")
        || field("refresh_token") != Some(REFRESH)
        || field("service") != Some(SERVICE)
        || field("client_id").is_none()
        || headers.contains_key("authorization")
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_grant"})),
        );
    }
    match issuer.token("ci", field("scope").unwrap_or_default()) {
        Ok(token) => (
            StatusCode::OK,
            axum::Json(json!({"access_token": token, "expires_in": 300})),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e.to_string()})),
        ),
    }
}

fn client(credentials: &str) -> anyhow::Result<RegistryClient> {
    Ok(RegistryClient::new(Options {
        cache_ttl: Duration::from_secs(60),
        insecure: Vec::new(),
        credentials: DockerConfig::parse(credentials.as_bytes(), "test config")?,
        ..Options::default()
    })?)
}

#[tokio::test]
async fn bearer_challenge_with_docker_config_credentials() -> anyhow::Result<()> {
    let Some(bin) = locate_or_skip() else {
        return Ok(());
    };
    let (issuer, root_pem) = Issuer::new()?;
    let issuer = std::sync::Arc::new(issuer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let token_addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/token",
            axum::routing::get(token_endpoint).post(refresh_grant),
        )
        .with_state(std::sync::Arc::clone(&issuer));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root.crt");
    std::fs::write(&root, root_pem)?;
    let auth = format!(
        "auth:\n  token:\n    realm: http://{token_addr}/token\n    service: {SERVICE}\n    \
         issuer: {ISSUER}\n    rootcertbundle: {}\n",
        root.display()
    );
    let registry = tokio::task::spawn_blocking(move || Registry::start_with(&bin, &auth)).await??;

    // Push with a push-scoped token, as CI would.
    let push = issuer.token("ci", "repository:team/api:pull,push")?;
    let digest = registry
        .push_as("team/api", "1.0", "token", Some(&format!("Bearer {push}")))
        .map_err(|e| {
            let log =
                std::fs::read_to_string(registry.dir().join("registry.log")).unwrap_or_default();
            anyhow::anyhow!("{e}\nregistry log:\n{log}")
        })?;

    let reference = Reference::parse(&format!("{}/team/api:1.0", registry.host))?;
    let host = &registry.host;
    let good = client(&format!(
        r#"{{"auths": {{"{host}": {{"username": "ci", "password": "s3cret"}}}}}}"#
    ))?;
    let resolved = good
        .digest(&reference)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(resolved.to_string(), digest);
    // A second resolution within the TTL is served from the cache.
    assert_eq!(
        good.digest(&reference)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_string(),
        digest
    );

    let wrong = client(&format!(
        r#"{{"auths": {{"{host}": {{"username": "ci", "password": "nope"}}}}}}"#
    ))?;
    let err = wrong.digest(&reference).await.expect_err("wrong password");
    assert!(err.reason.contains("token service"), "{err}");
    assert!(err.reason.contains("401"), "{err}");

    let anonymous = client("{}")?;
    let err = anonymous
        .digest(&reference)
        .await
        .expect_err("no credentials");
    assert!(err.reason.contains("401"), "{err}");

    // An identity token is exchanged with a refresh-token grant, never
    // sent as a password.
    let identity = client(&format!(
        r#"{{"auths": {{"{host}": {{"identitytoken": "{REFRESH}"}}}}}}"#
    ))?;
    let resolved = identity
        .digest(&reference)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(resolved.to_string(), digest);
    let revoked = client(&format!(
        r#"{{"auths": {{"{host}": {{"identitytoken": "revoked"}}}}}}"#
    ))?;
    let err = revoked.digest(&reference).await.expect_err("revoked token");
    assert!(err.reason.contains("refused the identity token"), "{err}");

    // `probity pin` on a workstation: the Docker config names credential
    // helpers, which it runs as Docker does.
    let helpers = dir.path().join("bin");
    std::fs::create_dir_all(&helpers)?;
    for (name, answer) in [
        (
            "probitytoken",
            format!(r#"{{"ServerURL":"{host}","Username":"<token>","Secret":"{REFRESH}"}}"#),
        ),
        (
            "probitybasic",
            format!(r#"{{"ServerURL":"{host}","Username":"ci","Secret":"s3cret"}}"#),
        ),
    ] {
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\nif [ \"$server\" = \"{host}\" ]; then\n  printf '%s' '{answer}'\nelse\n  echo 'credentials not found in native keychain'\n  exit 1\nfi\n"
        );
        let path = helpers.join(format!("docker-credential-{name}"));
        std::fs::write(&path, script)?;
        let mut permissions = std::fs::metadata(&path)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&path, permissions)?;
    }
    let manifest = dir.path().join("deploy.yaml");
    let path_env = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for config in [
        r#"{"credsStore": "probitytoken"}"#.to_owned(),
        format!(r#"{{"credsStore": "probitytoken", "credHelpers": {{"{host}": "probitybasic"}}}}"#),
        r#"{"credsStore": "probity-missing-helper"}"#.to_owned(),
    ] {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: api}}\nspec:\n  containers:\n  - name: api\n    image: {host}/team/api:1.0\n"
            ),
        )?;
        let docker = dir.path().join("docker");
        std::fs::create_dir_all(&docker)?;
        std::fs::write(docker.join("config.json"), &config)?;
        let mut pin = std::process::Command::new(env!("CARGO_BIN_EXE_probity"));
        pin.args(["pin"])
            .arg(&manifest)
            .env("DOCKER_CONFIG", &docker)
            .env("PATH", &path_env);
        // Off this thread: the token service answers on this runtime.
        let out = tokio::task::spawn_blocking(move || pin.output()).await??;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pinned = std::fs::read_to_string(&manifest)?;
        if config.contains("missing") {
            assert_eq!(out.status.code(), Some(1), "{config}: {said}");
            assert!(
                said.contains("docker-credential-probity-missing-helper: cannot run it"),
                "{config}: {said}"
            );
            assert!(!pinned.contains("@sha256:"), "{pinned}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{config}: {said}");
            assert!(
                pinned.contains(&format!("team/api:1.0@{digest}")),
                "{config}: {pinned}"
            );
        }
    }
    server.abort();
    Ok(())
}

#[tokio::test]
async fn a_registry_that_is_down_trips_its_breaker() -> anyhow::Result<()> {
    let Some(mut registry) = Registry::start_or_skip() else {
        return Ok(());
    };
    registry.push("team/api", "1.0", "x")?;
    let reference = Reference::parse(&format!("{}/team/api:1.0", registry.host))?;
    let client = client("{}")?;
    client
        .digest(&reference)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    registry.kill();
    // Cached answers keep working; a new tag has to ask, and fails fast.
    client
        .digest(&reference)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let other = Reference::parse(&format!("{}/team/api:2.0", registry.host))?;
    let mut reasons = Vec::new();
    for _ in 0..5 {
        reasons.push(client.digest(&other).await.expect_err("down").reason);
    }
    assert!(
        reasons[0].contains("connect") || reasons[0].contains("refused"),
        "{reasons:?}"
    );
    assert!(
        reasons[4].contains("is failing; not asked again"),
        "{reasons:?}"
    );
    Ok(())
}

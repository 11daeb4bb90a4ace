//! OCI distribution client: resolves `repo:tag` to the digest the registry
//! serves now (`HEAD /v2/<repo>/manifests/<tag>`, `Docker-Content-Digest`).
//!
//! - Accepts OCI and Docker manifests and indexes (a registry answers 404
//!   to a manifest request whose `Accept` it cannot satisfy).
//! - Anonymous access, `Basic` credentials, and the bearer-token challenge
//!   (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`); tokens
//!   are cached until they expire.
//! - Credentials from a Docker config file (`auths`: `auth` or
//!   `username`/`password`, `identitytoken`), and, where the caller allows
//!   it, from its credential helpers (`credsStore`, `credHelpers`). An
//!   identity token is a refresh token: it is exchanged at the token
//!   service with an OAuth2 `refresh_token` grant, never sent as a
//!   password.
//! - Plain HTTP only for loopback registries or ones explicitly allowed.
//! - Every call is bounded by the caller's `probity-probe` deadline, and
//!   each registry has a circuit breaker, so a registry that is down costs
//!   one fast failure rather than a timeout per admission.
//! - Resolved digests are cached for a TTL.

mod auth;
mod connect;
mod helper;
mod resolve;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use probity_probe::breaker::{CircuitBreaker, Verdict};
use tokio::time::Instant;

use auth::Challenge;
pub use auth::{Credential, DockerConfig, IDENTITY_TOKEN_USER};
pub use connect::{Reach, is_public};
pub use helper::HelperFailed;
pub use resolve::{Resolve, ResolveError};

use crate::image::{Digest, Reference};

/// Every manifest type a tag may point at.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Upper bound on one registry call when the caller set no deadline.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Below this much budget a lookup is not attempted.
const MIN_BUDGET: Duration = Duration::from_millis(50);
/// A registry that does not answer within this much is failing; with less,
/// the timeout says nothing about it.
const FAIR_BUDGET: Duration = Duration::from_secs(1);
/// Largest manifest read when a registry omits `Docker-Content-Digest`.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

type HttpClient = Client<hyper_rustls::HttpsConnector<connect::Guarded>, Full<Bytes>>;

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a resolved digest is reused.
    pub cache_ttl: Duration,
    /// Registries (`host[:port]`) that may be reached over plain HTTP,
    /// besides loopback ones.
    pub insecure: Vec<String>,
    /// Credentials by registry host.
    pub credentials: DockerConfig,
    /// Which addresses may be contacted (registries and token services).
    pub reach: Reach,
    /// Token services a registry may send its clients to, besides its own
    /// host: (registry, host). `docker.io` -> `auth.docker.io` is built in.
    pub token_hosts: Vec<(String, String)>,
    /// Answer with generic reasons ("registry X did not answer") and log
    /// the details, for reasons shown to someone other than the operator
    /// of the client (admission warnings, policy status).
    pub public_reasons: bool,
    /// Registries (`host[:port]`) that may be asked for any image, whatever
    /// the policies list (`--registry-allow`).
    pub allow: Vec<String>,
    /// Run the Docker config's credential helpers (`docker-credential-*`
    /// on `$PATH`), as `probity pin` on a workstation does; the operator
    /// reads mounted credentials only.
    pub credential_helpers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            insecure: Vec::new(),
            credentials: DockerConfig::default(),
            reach: Reach::Any,
            token_hosts: Vec::new(),
            public_reasons: false,
            allow: Vec::new(),
            credential_helpers: false,
        }
    }
}

/// Token services of well-known registries on another host.
const BUILTIN_TOKEN_HOSTS: [(&str, &str); 1] = [("docker.io", "auth.docker.io")];
/// Longest `realm` a registry may send.
const MAX_REALM_BYTES: usize = 2048;

/// Resolves tags to digests; cheap to share behind an `Arc`.
pub struct RegistryClient {
    http: HttpClient,
    options: Options,
    digests: Mutex<HashMap<String, (Digest, Instant)>>,
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
    breakers: Mutex<HashMap<String, (CircuitBreaker, Instant)>>,
    /// One lookup per tag at a time: later callers wait for its answer.
    inflight: Mutex<HashMap<String, Arc<Flight>>>,
    /// The credentials in use: `options.credentials`, or the file
    /// [`RegistryClient::reload_credentials`] watches.
    credentials: std::sync::RwLock<DockerConfig>,
    /// Credential helpers' answers by registry, reused for a while (a
    /// helper may unlock a keychain each time it runs).
    helper_answers: Mutex<HashMap<String, (Option<Credential>, Instant)>>,
}

/// How long a credential helper's answer is reused.
const HELPER_ANSWER_TTL: Duration = Duration::from_secs(300);

/// A tag being looked up, and the lookup's answer for those who waited.
type Flight = tokio::sync::Mutex<Option<(Result<Digest, ResolveError>, Instant)>>;

/// Entries kept in the digest cache (tags).
const MAX_DIGESTS: usize = 4096;
/// Entries kept in the token cache (registry and scope).
const MAX_TOKENS: usize = 1024;
/// Registries with a breaker of their own; closed idle ones are forgotten.
const MAX_BREAKERS: usize = 256;
/// A breaker unused this long, and closed, is forgotten first.
const BREAKER_IDLE: Duration = Duration::from_secs(600);
/// Longest token scope or token kept; longer ones are used once, not cached.
const MAX_SCOPE_BYTES: usize = 512;
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A waiter reuses the answer of the lookup it waited for when it is this
/// fresh (failures too: waiters must not each wait out a dead registry).
const SHARED_ANSWER: Duration = Duration::from_secs(1);

/// Inserts into a bounded cache: when full, expired entries go first
/// (`keep` says which stay), then the oldest.
fn bounded_insert<K: std::hash::Hash + Eq + Clone, V>(
    map: &mut HashMap<K, (V, Instant)>,
    key: K,
    value: (V, Instant),
    max: usize,
    keep: impl Fn(&Instant) -> bool,
) {
    if map.len() >= max && !map.contains_key(&key) {
        map.retain(|_, (_, at)| keep(at));
        if map.len() >= max {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
    }
    map.insert(key, value);
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("registry client: {0}")]
pub struct BuildError(String);

impl RegistryClient {
    /// A client trusting the platform's root certificates.
    ///
    /// # Errors
    ///
    /// When the TLS configuration cannot be built.
    pub fn new(options: Options) -> Result<Self, BuildError> {
        let credentials = options.credentials.clone();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            tracing::warn!(
                "no platform root certificates found; only plain-HTTP registries can be reached"
            );
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connect::Guarded::new(options.reach.clone()));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            http,
            options,
            digests: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            credentials: std::sync::RwLock::new(credentials),
            helper_answers: Mutex::new(HashMap::new()),
        })
    }

    fn breaker(&self, registry: &str) -> Option<CircuitBreaker> {
        use probity_probe::breaker::State;
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((b, used)) = breakers.get_mut(registry) {
            *used = Instant::now();
            return Some(b.clone());
        }
        let b = CircuitBreaker::builder()
            .count_window(10)
            .minimum_calls(3)
            .failure_rate(0.5)
            .open_for(Duration::from_secs(5), 2.0, Duration::from_secs(60))
            .build()
            .ok()?;
        if breakers.len() >= MAX_BREAKERS {
            // Forget closed breakers, idle ones first: an open one is the
            // memory of a failing registry and stays.
            breakers
                .retain(|_, (b, used)| b.state() != State::Closed || used.elapsed() < BREAKER_IDLE);
            if breakers.len() >= MAX_BREAKERS {
                breakers.retain(|_, (b, _)| b.state() != State::Closed);
            }
            if breakers.len() >= MAX_BREAKERS {
                // Every breaker is open: this registry goes unguarded
                // rather than unbounded.
                return Some(b);
            }
        }
        breakers.insert(registry.to_owned(), (b.clone(), Instant::now()));
        Some(b)
    }

    fn scheme(&self, registry: &str) -> &'static str {
        if is_loopback(registry) || self.options.insecure.iter().any(|r| r == registry) {
            "http"
        } else {
            "https"
        }
    }

    /// Re-reads the Docker config at `path` every `every` while the client
    /// lives, and uses the new credentials when the file changed (a
    /// mounted Secret is updated in place). A file that cannot be read or
    /// parsed keeps the credentials in use, with a warning.
    pub fn reload_credentials(
        self: &Arc<Self>,
        path: std::path::PathBuf,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let client = Arc::downgrade(self);
        let stamp = |path: &std::path::Path| {
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        // As the file is now: the credentials in use came from it.
        let mut last = stamp(&path);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(client) = client.upgrade() else {
                    return;
                };
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                last = now;
                match DockerConfig::read(&path) {
                    Ok(config) => {
                        *client
                            .credentials
                            .write()
                            .unwrap_or_else(PoisonError::into_inner) = config;
                        client
                            .tokens
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clear();
                        tracing::info!(path = %path.display(), "registry credentials reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "registry credentials not reloaded; keeping the ones in use");
                    }
                }
            }
        })
    }

    /// The digest `reference`'s tag points at now.
    ///
    /// # Errors
    ///
    /// When the registry is unreachable, refuses, has no such tag, its
    /// breaker is open, or the deadline passes.
    pub async fn digest(&self, reference: &Reference) -> Result<Digest, ResolveError> {
        let fail = |reason: String| ResolveError {
            image: reference.to_string(),
            reason,
        };
        let key = reference.to_string();
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let budget = probity_probe::deadline::remaining().unwrap_or(DEFAULT_TIMEOUT);
        let flight = Arc::clone(
            self.inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key.clone())
                .or_default(),
        );
        let answer = match tokio::time::timeout(budget, flight.lock()).await {
            Err(_) => Err(fail(format!(
                "registry {} did not answer within {} ms",
                reference.registry(),
                budget.as_millis()
            ))),
            Ok(mut shared) => match shared.as_ref() {
                Some((answer, at)) if at.elapsed() < SHARED_ANSWER => answer.clone(),
                _ => {
                    let answer = self.lookup(reference, &key).await;
                    // A failure of a short budget is the caller's, not an
                    // answer for those who wait with more time.
                    if answer.is_ok() || budget >= FAIR_BUDGET {
                        *shared = Some((answer.clone(), Instant::now()));
                    }
                    answer
                }
            },
        };
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's and ours: nobody else waits, so the entry can go.
        if Arc::strong_count(&flight) <= 2 {
            inflight.remove(&key);
        }
        answer
    }

    /// One lookup of `reference`, counted by its registry's breaker.
    async fn lookup(&self, reference: &Reference, key: &str) -> Result<Digest, ResolveError> {
        let fail = |reason: String| ResolveError {
            image: reference.to_string(),
            reason,
        };
        if let Some(hit) = self.cached(key) {
            return Ok(hit);
        }
        let registry = reference.registry().to_owned();
        let budget = probity_probe::deadline::remaining().unwrap_or(DEFAULT_TIMEOUT);
        if budget < MIN_BUDGET {
            // Another lookup spent the time: not the registry's fault, so
            // its breaker hears nothing.
            return Err(fail(format!(
                "no time left to ask registry {registry} ({} ms)",
                budget.as_millis()
            )));
        }
        let breaker = self.breaker(&registry);
        let permit = match &breaker {
            Some(b) => Some(b.try_acquire().map_err(|open| {
                fail(format!(
                    "registry {registry} is failing; not asked again for {} ms",
                    open.retry_after.as_millis()
                ))
            })?),
            None => None,
        };
        let outcome = tokio::time::timeout(budget, self.head_manifest(reference)).await;
        let (result, verdict) = match outcome {
            Ok(Ok(digest)) => (Ok(digest), Verdict::Success),
            Ok(Err(e)) => {
                let verdict = match e {
                    CallError::Down(_) => Verdict::Failure,
                    _ => Verdict::Ignore,
                };
                let reason = if self.options.public_reasons {
                    tracing::warn!(image = %reference, detail = %e.detail(), "registry lookup failed");
                    e.public(&registry, reference.tag().unwrap_or("latest"))
                } else {
                    e.detail().to_owned()
                };
                (Err(fail(reason)), verdict)
            }
            Err(_) => (
                Err(fail(format!(
                    "registry {registry} did not answer within {} ms",
                    budget.as_millis()
                ))),
                // Silence within a fair budget counts against the
                // registry; a caller that had little time left does not.
                if budget >= FAIR_BUDGET {
                    Verdict::Failure
                } else {
                    Verdict::Ignore
                },
            ),
        };
        if let Some(permit) = permit {
            permit.record(verdict);
        }
        if let Ok(digest) = &result {
            let mut cache = self.digests.lock().unwrap_or_else(PoisonError::into_inner);
            let ttl = self.options.cache_ttl;
            bounded_insert(
                &mut cache,
                key.to_owned(),
                (digest.clone(), Instant::now()),
                MAX_DIGESTS,
                |at| at.elapsed() < ttl,
            );
        }
        result
    }

    fn cached(&self, key: &str) -> Option<Digest> {
        let cache = self.digests.lock().unwrap_or_else(PoisonError::into_inner);
        let (digest, at) = cache.get(key)?;
        (at.elapsed() < self.options.cache_ttl).then(|| digest.clone())
    }

    async fn head_manifest(&self, reference: &Reference) -> Result<Digest, CallError> {
        let registry = reference.registry();
        let host = api_host(registry);
        let repository = reference.repository();
        let tag = reference.tag().unwrap_or("latest");
        let url = format!(
            "{}://{host}/v2/{repository}/manifests/{tag}",
            self.scheme(registry)
        );
        let scope = format!("repository:{repository}:pull");

        let mut authorization = self.token(registry, &scope).map(|t| format!("Bearer {t}"));
        for attempt in 0..2 {
            let response = self
                .send(Method::HEAD, &url, authorization.as_deref(), true)
                .await?;
            match response.status() {
                s if s.is_success() => {
                    return digest_of(&self.http, &url, authorization.as_deref(), &response).await;
                }
                StatusCode::UNAUTHORIZED if attempt == 0 => {
                    let challenge = response
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .map(Challenge::parse)
                        .ok_or_else(|| {
                            CallError::Refused(format!(
                                "{registry} answered 401 without a WWW-Authenticate challenge"
                            ))
                        })?;
                    // Asked for only now: a helper runs only for a
                    // registry that wants credentials.
                    let credential = self.credential(registry).await?;
                    authorization = Some(match challenge {
                        Challenge::Basic => {
                            let c = credential.as_ref().ok_or_else(|| {
                                CallError::Denied(format!(
                                    "{registry} requires credentials and none are configured"
                                ))
                            })?;
                            if !credentials_may_go_to(&url) {
                                return Err(CallError::Refused(format!(
                                    "{registry} asks for credentials over plain HTTP; they are \
                                     only sent over HTTPS (or to loopback)"
                                )));
                            }
                            if c.identity_token().is_some() {
                                return Err(CallError::Refused(format!(
                                    "{registry} asks for a password, and its credential is an \
                                     identity token (for a token service)"
                                )));
                            }
                            c.basic()
                        }
                        Challenge::Bearer {
                            realm,
                            service,
                            scope: offered,
                        } => {
                            let scope = offered.unwrap_or(scope.clone());
                            if scope.len() > MAX_SCOPE_BYTES {
                                return Err(CallError::Refused(format!(
                                    "{registry} asked for a token scope of {} bytes (at most {MAX_SCOPE_BYTES})",
                                    scope.len()
                                )));
                            }
                            self.check_realm(registry, &realm)?;
                            let token = self
                                .fetch_token(
                                    &realm,
                                    service.as_deref(),
                                    &scope,
                                    credential.as_ref(),
                                )
                                .await?;
                            if token.len() <= MAX_TOKEN_BYTES {
                                let mut tokens =
                                    self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
                                bounded_insert(
                                    &mut tokens,
                                    (registry.to_owned(), scope.clone()),
                                    (token.clone(), Instant::now() + Duration::from_secs(50)),
                                    MAX_TOKENS,
                                    |until| Instant::now() < *until,
                                );
                            }
                            format!("Bearer {token}")
                        }
                        Challenge::Other(scheme) => {
                            return Err(CallError::Refused(format!(
                                "{registry} asks for unsupported authentication {scheme:?}"
                            )));
                        }
                    });
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(CallError::Denied(format!(
                        "{registry} refused access to {repository} ({})",
                        response.status()
                    )));
                }
                StatusCode::NOT_FOUND => {
                    return Err(CallError::NotFound(format!(
                        "{registry} has no manifest {repository}:{tag}"
                    )));
                }
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    return Err(CallError::Down(format!("{registry} answered {s}")));
                }
                s => return Err(CallError::Refused(format!("{registry} answered {s}"))),
            }
        }
        Err(CallError::Refused(format!(
            "{registry} rejected the credentials it asked for"
        )))
    }

    /// Whether `registry` may send the client's credentials to `realm`:
    /// https (plain HTTP only for a registry that is itself reached over
    /// it), a bounded length, and the registry's own host or a token host
    /// configured for it.
    fn check_realm(&self, registry: &str, realm: &str) -> Result<(), CallError> {
        if realm.len() > MAX_REALM_BYTES {
            return Err(CallError::Refused(format!(
                "{registry} offered a token realm of {} bytes (at most {MAX_REALM_BYTES})",
                realm.len()
            )));
        }
        let uri: http::Uri = realm.parse().map_err(|_| {
            CallError::Refused(format!(
                "{registry} offered a token realm that is not a URL"
            ))
        })?;
        let scheme_ok = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => self.scheme(registry) == "http",
            _ => false,
        };
        if !scheme_ok {
            return Err(CallError::Refused(format!(
                "{registry} offered a token realm that is not https"
            )));
        }
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let own = [
            connect::host_of(registry),
            connect::host_of(api_host(registry)),
        ];
        let configured = self
            .options
            .token_hosts
            .iter()
            .map(|(r, h)| (r.as_str(), h.as_str()))
            .chain(BUILTIN_TOKEN_HOSTS)
            .filter(|(r, _)| *r == registry)
            .map(|(_, h)| h);
        if own
            .iter()
            .copied()
            .chain(configured)
            .any(|h| h.eq_ignore_ascii_case(host))
        {
            Ok(())
        } else {
            Err(CallError::Refused(format!(
                "{registry} sent its token request to {host}, which is neither the registry \
                 nor a token host configured for it (--registry-token-host)"
            )))
        }
    }

    fn token(&self, registry: &str, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let (token, until) = tokens.get(&(registry.to_owned(), scope.to_owned()))?;
        (Instant::now() < *until).then(|| token.clone())
    }

    /// The credential for `registry`: its credential helper's answer when
    /// helpers are allowed and one is configured (`auths` when it has
    /// none), else its `auths` entry.
    async fn credential(&self, registry: &str) -> Result<Option<Credential>, CallError> {
        let (stored, helper) = {
            let config = self
                .credentials
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let helper = self
                .options
                .credential_helpers
                .then(|| config.helper_for(registry).map(str::to_owned))
                .flatten();
            (config.for_registry(registry), helper)
        };
        let Some(helper) = helper else {
            return Ok(stored);
        };
        if let Some((answer, until)) = self
            .helper_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(registry)
            && Instant::now() < *until
        {
            return Ok(answer.clone().or(stored));
        }
        let answer = helper::get(&helper, registry)
            .await
            .map_err(|e| CallError::Refused(e.to_string()))?;
        bounded_insert(
            &mut self
                .helper_answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            registry.to_owned(),
            (answer.clone(), Instant::now() + HELPER_ANSWER_TTL),
            MAX_BREAKERS,
            |until| Instant::now() < *until,
        );
        Ok(answer.or(stored))
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credential: Option<&Credential>,
    ) -> Result<String, CallError> {
        if let Some(refresh) = credential.and_then(Credential::identity_token) {
            return self
                .exchange_identity_token(realm, service, scope, refresh)
                .await;
        }
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
            query.finish()
        };
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{query}");
        let authorization = credential
            .filter(|_| credentials_may_go_to(&url))
            .map(Credential::basic);
        let response = self
            .send(Method::GET, &url, authorization.as_deref(), false)
            .await?;
        token_answer(realm, response, "answered").await
    }

    /// An identity token is an OAuth2 refresh token: POSTed to the realm
    /// as a `refresh_token` grant, as Docker does; the answer's
    /// `access_token` is the bearer token.
    async fn exchange_identity_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        refresh: &str,
    ) -> Result<String, CallError> {
        if !credentials_may_go_to(realm) {
            return Err(CallError::Refused(format!(
                "token service {realm} is plain HTTP; an identity token is only sent over HTTPS \
                 (or to loopback)"
            )));
        }
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("client_id", "probity");
            if let Some(service) = service {
                form.append_pair("service", service);
            }
            form.append_pair("scope", scope);
            form.append_pair("refresh_token", refresh);
            form.finish()
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(realm)
            .header(
                header::USER_AGENT,
                concat!("probity/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| CallError::Refused(format!("invalid token realm {realm}: {e}")))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| CallError::Down(format!("{realm}: {}", error_chain(&e))))?;
        token_answer(realm, response, "refused the identity token with").await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        authorization: Option<&str>,
        manifest: bool,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CallError> {
        send(&self.http, method, url, authorization, manifest).await
    }
}

/// The token in a token service's answer (at most 64 KiB); a failure
/// status is reported as "token service REALM <refused> STATUS".
async fn token_answer(
    realm: &str,
    response: hyper::Response<hyper::body::Incoming>,
    refused: &str,
) -> Result<String, CallError> {
    let status = response.status();
    let body = read_limited(response, 64 * 1024).await?;
    if !status.is_success() {
        return Err(CallError::Refused(format!(
            "token service {realm} {refused} {status}"
        )));
    }
    auth::token_from(&body)
        .ok_or_else(|| CallError::Refused(format!("token service {realm} sent no token")))
}

async fn send(
    http: &HttpClient,
    method: Method,
    url: &str,
    authorization: Option<&str>,
    manifest: bool,
) -> Result<hyper::Response<hyper::body::Incoming>, CallError> {
    let mut request = Request::builder().method(method).uri(url).header(
        header::USER_AGENT,
        concat!("probity/", env!("CARGO_PKG_VERSION")),
    );
    if manifest {
        request = request.header(header::ACCEPT, MANIFEST_ACCEPT);
    }
    if let Some(a) = authorization {
        let value = HeaderValue::from_str(a)
            .map_err(|_| CallError::Refused("credentials are not a valid header".to_owned()))?;
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| CallError::Refused(format!("invalid registry URL {url}: {e}")))?;
    http.request(request)
        .await
        .map_err(|e| CallError::Down(format!("{url}: {}", error_chain(&e))))
}

async fn digest_of(
    http: &HttpClient,
    url: &str,
    authorization: Option<&str>,
    head: &hyper::Response<hyper::body::Incoming>,
) -> Result<Digest, CallError> {
    if let Some(value) = head
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        return Digest::parse(value.trim())
            .map_err(|e| CallError::Refused(format!("registry sent an invalid digest: {e}")));
    }
    // No header on HEAD: read the manifest and hash it, as a client would.
    let response = send(http, Method::GET, url, authorization, true).await?;
    if !response.status().is_success() {
        return Err(CallError::Refused(format!(
            "GET {url} answered {}",
            response.status()
        )));
    }
    let body = read_limited(response, MAX_MANIFEST_BYTES).await?;
    let hash = ring::digest::digest(&ring::digest::SHA256, &body);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Digest::parse(&format!("sha256:{hex}"))
        .map_err(|e| CallError::Refused(format!("hashing the manifest: {e}")))
}

async fn read_limited(
    response: hyper::Response<hyper::body::Incoming>,
    max: usize,
) -> Result<Vec<u8>, CallError> {
    let limited = http_body_util::Limited::new(response.into_body(), max);
    limited
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| CallError::Down(format!("reading the registry's answer: {e}")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How a call failed: the registry answered no (its health is fine), or
/// it is down (counts against its breaker).
enum CallError {
    /// The registry answered, but not with something usable.
    Refused(String),
    /// 401/403 after any authentication the client could do.
    Denied(String),
    /// No such manifest.
    NotFound(String),
    /// No answer, a server error or throttling.
    Down(String),
}

impl CallError {
    fn detail(&self) -> &str {
        match self {
            Self::Refused(d) | Self::Denied(d) | Self::NotFound(d) | Self::Down(d) => d,
        }
    }

    /// What a requester is told: nothing the registry wrote.
    fn public(&self, registry: &str, tag: &str) -> String {
        match self {
            Self::Down(_) => format!("registry {registry} did not answer"),
            Self::Denied(_) => format!("registry {registry} refused access"),
            Self::NotFound(_) => format!("registry {registry} has no tag {tag}"),
            Self::Refused(_) => format!("registry {registry} sent an answer probity cannot use"),
        }
    }
}

/// Credentials travel only over https, or to loopback (which no one else
/// on the network sees).
fn credentials_may_go_to(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    uri.scheme_str() == Some("https") || uri.host().is_some_and(is_loopback)
}

/// `docker.io` is served from `registry-1.docker.io`.
fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = connect::host_of(registry);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Resolve for RegistryClient {
    fn always_allowed(&self, registry: &str) -> bool {
        self.options
            .allow
            .iter()
            .any(|r| r.eq_ignore_ascii_case(registry))
    }

    fn cached(&self, reference: &Reference) -> Option<Digest> {
        RegistryClient::cached(self, &reference.to_string())
    }

    fn resolve<'a>(
        &'a self,
        reference: &'a Reference,
    ) -> BoxFuture<'a, Result<Digest, ResolveError>> {
        Box::pin(self.digest(reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback registry that accepts connections and never answers,
    /// counting them.
    async fn silent_registry() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
        (addr.to_string(), accepted)
    }

    /// A loopback registry that answers every manifest HEAD with a digest
    /// after `delay`, counting requests.
    async fn slow_registry(delay: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        let answer = "HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:\
                            aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\
                            Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                            Content-Length: 0\r\n\r\n";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr.to_string(), requests)
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_are_reloaded_when_the_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let write = |password: &str| {
            let json = format!(
                r#"{{"auths": {{"r.example": {{"username": "u", "password": "{password}"}}}}}}"#
            );
            std::fs::write(&path, json).expect("write");
        };
        write("one");
        let client = Arc::new(
            RegistryClient::new(Options {
                credentials: DockerConfig::read(&path).expect("config"),
                ..Options::default()
            })
            .expect("client"),
        );
        let task = client.reload_credentials(path.clone(), Duration::from_secs(5));
        let password = |c: &RegistryClient| {
            c.credentials
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .for_registry("r.example")
                .map(|c| c.password)
        };
        write("second");
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(5)).await;
            tokio::task::yield_now().await;
        }
        assert_eq!(password(&client).as_deref(), Some("second"));
        std::fs::write(&path, "not json").expect("write");
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(5)).await;
            tokio::task::yield_now().await;
        }
        assert_eq!(
            password(&client).as_deref(),
            Some("second"),
            "a broken file keeps the old ones"
        );
        drop(client);
        tokio::time::advance(Duration::from_secs(5)).await;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the watcher stops with the client")
            .expect("task");
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_tag_share_one_request() {
        let (registry, requests) = slow_registry(Duration::from_millis(300)).await;
        let client = Arc::new(RegistryClient::new(Options::default()).expect("client"));
        let reference = Reference::parse(&format!("{registry}/app:1")).expect("reference");
        let lookups = (0..20).map(|_| {
            let client = Arc::clone(&client);
            let reference = reference.clone();
            tokio::spawn(async move {
                probity_probe::deadline::scope(Duration::from_secs(5), client.digest(&reference))
                    .await
            })
        });
        let answers = futures::future::join_all(lookups).await;
        for answer in answers {
            let digest = answer.expect("task").expect("digest");
            assert!(digest.to_string().starts_with("sha256:aaaa"));
        }
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(
            client
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty(),
            "finished lookups leave nothing behind"
        );
    }

    #[test]
    fn bounded_caches_drop_expired_entries_then_the_oldest() {
        let mut map: HashMap<u32, ((), Instant)> = HashMap::new();
        let start = Instant::now();
        for i in 0..10 {
            bounded_insert(
                &mut map,
                i,
                ((), start + Duration::from_secs(u64::from(i))),
                4,
                |_| true,
            );
            assert!(map.len() <= 4);
        }
        let mut keys: Vec<u32> = map.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys, [6, 7, 8, 9], "the oldest went first");
        bounded_insert(&mut map, 10, ((), start), 4, |at| {
            *at > start + Duration::from_secs(7)
        });
        let mut keys: Vec<u32> = map.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys, [8, 9, 10], "expired entries went before any other");
    }

    /// A loopback registry that answers every request with a Bearer
    /// challenge naming `realm`.
    async fn challenging_registry(realm: String) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let realm = realm.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let answer = format!(
                            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",\
                             service=\"test\"\r\nContent-Length: 0\r\n\r\n"
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr.to_string()
    }

    #[tokio::test]
    async fn a_realm_elsewhere_is_never_contacted() {
        // The token service the registry points at: another loopback host.
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let elsewhere = listener.local_addr().expect("addr");
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((_s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let cases = [
            (
                format!("http://{elsewhere}/token"),
                "neither the registry nor a token host",
            ),
            ("ftp://example.com/token".to_owned(), "not https"),
            (
                format!("https://{}/token", "a".repeat(3000)),
                "token realm of",
            ),
        ];
        for (realm, expected) in cases {
            let registry = challenging_registry(realm.clone()).await;
            let client = RegistryClient::new(Options::default()).expect("client");
            let reference = Reference::parse(&format!("{registry}/app:1")).expect("reference");
            let err =
                probity_probe::deadline::scope(Duration::from_secs(5), client.digest(&reference))
                    .await
                    .expect_err("refused realm");
            assert!(err.reason.contains(expected), "{realm}: {}", err.reason);
        }
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);

        // Configured as the registry's token host, it is asked.
        let registry = challenging_registry(format!("http://{elsewhere}/token")).await;
        let client = RegistryClient::new(Options {
            token_hosts: vec![(registry.clone(), "127.0.0.2".to_owned())],
            ..Options::default()
        })
        .expect("client");
        let reference = Reference::parse(&format!("{registry}/app:1")).expect("reference");
        let _ =
            probity_probe::deadline::scope(Duration::from_millis(500), client.digest(&reference))
                .await;
        assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }

    #[tokio::test]
    async fn public_reasons_say_nothing_the_registry_wrote() {
        let registry = challenging_registry("ftp://evil.example/<script>".to_owned()).await;
        let client = RegistryClient::new(Options {
            public_reasons: true,
            ..Options::default()
        })
        .expect("client");
        let reference = Reference::parse(&format!("{registry}/app:1")).expect("reference");
        let err = probity_probe::deadline::scope(Duration::from_secs(5), client.digest(&reference))
            .await
            .expect_err("refused");
        assert_eq!(
            err.reason,
            format!("registry {registry} sent an answer probity cannot use")
        );
    }

    #[tokio::test]
    async fn short_budgets_never_trip_the_registry_breaker() {
        let (registry, accepted) = silent_registry().await;
        let client = RegistryClient::new(Options::default()).expect("client");
        let reference = Reference::parse(&format!("{registry}/app:1")).expect("reference");

        let err = probity_probe::deadline::scope(Duration::ZERO, client.digest(&reference))
            .await
            .expect_err("no budget");
        assert!(err.reason.contains("no time left"), "{}", err.reason);
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing was sent"
        );

        for _ in 0..6 {
            let err = probity_probe::deadline::scope(
                Duration::from_millis(100),
                client.digest(&reference),
            )
            .await
            .expect_err("silent registry");
            assert!(
                err.reason.contains("did not answer"),
                "a short budget's timeout does not open the breaker: {}",
                err.reason
            );
        }

        for _ in 0..3 {
            let _ = probity_probe::deadline::scope(
                Duration::from_millis(1_100),
                client.digest(&reference),
            )
            .await;
        }
        let err = probity_probe::deadline::scope(Duration::from_secs(2), client.digest(&reference))
            .await
            .expect_err("open");
        assert!(
            err.reason.contains("is failing"),
            "silence within a fair budget does: {}",
            err.reason
        );
    }

    #[test]
    fn loopback_registries_may_use_http() {
        for r in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "ghcr.io",
            "registry.internal:5000",
            "10.0.0.1:5000",
            "localhost.example",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}

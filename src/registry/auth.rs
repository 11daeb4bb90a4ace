//! Registry authentication: `WWW-Authenticate` challenges, Docker config
//! credentials, token responses.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

/// What a registry's 401 asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=...`.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`: fetch a token from realm.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Anything else.
    Other(String),
}

impl Challenge {
    /// Parses one challenge (the first, when several are sent).
    pub(crate) fn parse(header: &str) -> Self {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Self::Basic;
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Self::Other(scheme.to_owned());
        }
        let params = parse_params(params);
        match params.get("realm") {
            Some(realm) => Self::Bearer {
                realm: realm.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            },
            None => Self::Other("Bearer without realm".to_owned()),
        }
    }
}

/// `key="value", key=value` pairs; quoted values may hold commas.
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(key, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// A username and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The user name Docker gives an identity token (`identitytoken` in a
/// config, or a helper's answer): the secret is then a refresh token for
/// the registry's token service, never a password.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

impl Credential {
    /// The identity (refresh) token, when this is one.
    pub fn identity_token(&self) -> Option<&str> {
        (self.username == IDENTITY_TOKEN_USER).then_some(self.password.as_str())
    }

    /// The `Authorization` value for Basic authentication.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Credentials by registry, from a Docker config file
/// (`~/.docker/config.json`, or a `kubernetes.io/dockerconfigjson`
/// Secret's `.dockerconfigjson`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credential>,
    /// `credsStore`: the helper for every registry.
    store: Option<String>,
    /// `credHelpers`: a helper per registry.
    helpers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, RawAuth>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Why a Docker config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    /// The JSON is not a Docker config.
    #[error("{0}: {1}")]
    Parse(String, String),
}

impl DockerConfig {
    /// Parses a Docker config; `origin` names it in errors. An entry whose
    /// `auth` is not base64 `user:password` is skipped with a warning, so
    /// one bad entry does not take every registry's credentials away.
    ///
    /// # Errors
    ///
    /// When the JSON is not a Docker config.
    pub fn parse(json: &[u8], origin: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(json)
            .map_err(|e| ConfigError::Parse(origin.to_owned(), e.to_string()))?;
        let mut auths = BTreeMap::new();
        for (key, entry) in raw.auths {
            let registry = normalise_key(&key);
            let credential = if let Some(token) = entry.identitytoken.filter(|t| !t.is_empty()) {
                Credential {
                    username: IDENTITY_TOKEN_USER.to_owned(),
                    password: token,
                }
            } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
                Credential { username, password }
            } else if let Some(auth) = entry.auth {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                let Some((username, password)) = decoded.as_deref().and_then(|d| d.split_once(':'))
                else {
                    tracing::warn!(
                        config = origin,
                        registry = %key,
                        "skipping a credential whose auth is not base64 user:password"
                    );
                    continue;
                };
                Credential {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            } else {
                continue;
            };
            auths.insert(registry, credential);
        }
        let helper = |name: String, registry: &str| {
            if super::helper::valid_name(&name) {
                Some(name)
            } else {
                tracing::warn!(config = origin, registry, helper = %name, "skipping a credential helper that is not a plain program name");
                None
            }
        };
        let store = raw
            .creds_store
            .filter(|s| !s.is_empty())
            .and_then(|s| helper(s, "*"));
        let helpers = raw
            .cred_helpers
            .into_iter()
            .filter_map(|(key, name)| {
                let registry = normalise_key(&key);
                Some((registry.clone(), helper(name, &registry)?))
            })
            .collect();
        Ok(Self {
            auths,
            store,
            helpers,
        })
    }

    /// Reads a Docker config file.
    ///
    /// # Errors
    ///
    /// When it cannot be read or parsed.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ConfigError::Read(origin.clone(), e))?;
        Self::parse(&bytes, &origin)
    }

    /// The credential stored for `registry` (`ghcr.io`, `localhost:5000`)
    /// in `auths`.
    pub fn for_registry(&self, registry: &str) -> Option<Credential> {
        self.auths.get(registry).cloned()
    }

    /// The credential helper Docker would ask for `registry`:
    /// `credHelpers`' entry for it, else `credsStore`.
    pub fn helper_for(&self, registry: &str) -> Option<&str> {
        self.helpers
            .get(registry)
            .or(self.store.as_ref())
            .map(String::as_str)
    }
}

/// `https://index.docker.io/v1/` -> `docker.io`; `https://ghcr.io` ->
/// `ghcr.io`.
fn normalise_key(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        other => other.to_owned(),
    }
}

/// The token of a token-service answer (`token`, or OAuth2's
/// `access_token`).
pub(crate) fn token_from(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Challenge::Bearer {
                realm: "https://auth.example/token".to_owned(),
                service: Some("registry.example".to_owned()),
                scope: Some("repository:a/b:pull,push".to_owned()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry""#),
            Challenge::Basic
        );
        assert!(matches!(Challenge::parse("Negotiate"), Challenge::Other(_)));
        assert!(matches!(
            Challenge::parse("Bearer service=x"),
            Challenge::Other(_)
        ));
    }

    #[test]
    fn docker_config_credentials() -> Result<(), ConfigError> {
        let config = DockerConfig::parse(
            br#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
                "localhost:5000": {"username": "u", "password": "p"},
                "ghcr.io": {"identitytoken": "tok"},
                "empty.example": {}
            }}"#,
            "config.json",
        )?;
        let hub = config.for_registry("docker.io").map(|c| c.basic());
        assert_eq!(hub.as_deref(), Some("Basic dXNlcjpwYXNz"));
        assert_eq!(
            config.for_registry("localhost:5000").map(|c| c.password),
            Some("p".to_owned())
        );
        assert_eq!(
            config.for_registry("ghcr.io").map(|c| c.password),
            Some("tok".to_owned())
        );
        assert!(config.for_registry("empty.example").is_none());
        let partly_bad = DockerConfig::parse(
            br#"{"auths": {"x": {"auth": "!!"}, "y": {"auth": "bm9jb2xvbg=="}, "ok.example": {"username": "u", "password": "p"}}}"#,
            "c.json",
        )?;
        assert!(
            partly_bad.for_registry("x").is_none(),
            "not base64: skipped"
        );
        assert!(partly_bad.for_registry("y").is_none(), "no colon: skipped");
        assert!(
            partly_bad.for_registry("ok.example").is_some(),
            "the rest are kept"
        );
        assert!(
            DockerConfig::parse(b"[1]", "c.json").is_err(),
            "not a config at all"
        );
        Ok(())
    }

    #[test]
    fn credential_helpers_are_read_and_named_safely() -> Result<(), ConfigError> {
        let config = DockerConfig::parse(
            br#"{"credsStore": "desktop",
                 "credHelpers": {"123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login",
                                 "https://index.docker.io/v1/": "pass",
                                 "evil.example": "../../bin/sh"},
                 "auths": {"ghcr.io": {"identitytoken": "refresh"}}}"#,
            "config.json",
        )?;
        assert_eq!(
            config.helper_for("123.dkr.ecr.eu-west-1.amazonaws.com"),
            Some("ecr-login")
        );
        assert_eq!(config.helper_for("docker.io"), Some("pass"));
        assert_eq!(config.helper_for("quay.io"), Some("desktop"), "credsStore");
        assert_eq!(
            config.helper_for("evil.example"),
            Some("desktop"),
            "a path is no helper name"
        );
        let token = config.for_registry("ghcr.io").expect("auths entry");
        assert_eq!(token.identity_token(), Some("refresh"));
        assert_eq!(DockerConfig::default().helper_for("ghcr.io"), None);
        Ok(())
    }

    #[test]
    fn token_answers() {
        assert_eq!(token_from(br#"{"token": "a"}"#).as_deref(), Some("a"));
        assert_eq!(
            token_from(br#"{"access_token": "b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(token_from(br#"{"token": ""}"#), None);
        assert_eq!(token_from(b"nope"), None);
    }
}

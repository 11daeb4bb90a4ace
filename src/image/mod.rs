//! OCI / Docker image references, parsed exactly as the distribution
//! reference grammar and Docker's normalisation do:
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [domain "/"] path
//! domain     := host [":" port]        host: DNS name, IPv4, or "[" IPv6 "]"
//! path       := component ("/" component)*   component: [a-z0-9]+ ([._]|__|-+ [a-z0-9]+)*
//! tag        := [\w][\w.-]{0,127}
//! digest     := algorithm ":" hex      sha256 (64), sha384 (96), sha512 (128) lowercase hex
//! ```
//!
//! The first path component is a registry only when it contains `.` or `:`,
//! is `localhost`, or has an uppercase letter; otherwise the registry is
//! `docker.io`, and a single-component repository there gains `library/`.
//! So `registry:5000/app` has no tag, `nginx` is `docker.io/library/nginx`
//! with an implicit `latest`, and `app:1.2@sha256:…` keeps both.

use std::fmt;

/// The registry of references without one.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Longest accepted name (registry + `/` + repository).
pub const NAME_MAX_LEN: usize = 255;
/// Longest accepted tag.
pub const TAG_MAX_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// A content digest: `algorithm:hex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: String,
    hex: String,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReference {
    /// Nothing to parse.
    #[error("empty image reference")]
    Empty,
    /// The name is longer than 255 characters.
    #[error("repository name must not be longer than {NAME_MAX_LEN} characters")]
    NameTooLong,
    /// The repository has an uppercase letter.
    #[error("repository name must be lowercase")]
    Uppercase,
    /// A 64-character hex string is an image ID, not a name.
    #[error("a 64-character hexadecimal string is an image ID, not a repository name")]
    LooksLikeId,
    /// The registry host or port is malformed.
    #[error("invalid registry {0:?}")]
    Registry(String),
    /// The repository path is malformed.
    #[error("invalid repository path {0:?}: {1}")]
    Repository(String, &'static str),
    /// The tag is malformed.
    #[error("invalid tag {0:?}: tags are 1-128 of [A-Za-z0-9_.-], not starting with . or -")]
    Tag(String),
    /// The digest is malformed or of an unsupported algorithm.
    #[error("invalid digest {0:?}: {1}")]
    Digest(String, &'static str),
}

impl Reference {
    /// Parses and normalises `input`.
    ///
    /// # Errors
    ///
    /// [`InvalidReference`] names the part that does not follow the grammar.
    pub fn parse(input: &str) -> Result<Self, InvalidReference> {
        if input.is_empty() {
            return Err(InvalidReference::Empty);
        }
        if input.len() == 64 && input.bytes().all(is_lower_hex) {
            return Err(InvalidReference::LooksLikeId);
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((name_tag, digest)) => (name_tag, Some(Digest::parse(digest)?)),
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/'; any
        // earlier ':' separates a registry port.
        let after_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[after_slash..].rfind(':') {
            Some(i) => {
                let (name, tag) = name_tag.split_at(after_slash + i);
                (name, Some(&tag[1..]))
            }
            None => (name_tag, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(InvalidReference::Tag(tag.to_owned()));
        }
        let (registry, repository) = split_registry(name);
        if !valid_registry(registry) {
            return Err(InvalidReference::Registry(registry.to_owned()));
        }
        check_repository(repository)?;
        let registry = if registry == LEGACY_DEFAULT_REGISTRY {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{repository}")
        } else {
            repository.to_owned()
        };
        if registry.len() + 1 + repository.len() > NAME_MAX_LEN {
            return Err(InvalidReference::NameTooLong);
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry host, with its port if any (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag as written; `None` when absent, even though the runtime then
    /// pulls `latest` (see [`Self::is_latest`]).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, when the reference is pinned.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Pinned to content: carries a digest (with or without a tag).
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// Resolves to whatever `latest` points at now: the tag is `latest`, or
    /// there is neither tag nor digest. `app:latest@sha256:…` is pinned, and
    /// still reported as latest: the tag misleads readers.
    pub fn is_latest(&self) -> bool {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => tag == "latest",
            (None, digest) => digest.is_none(),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same reference pinned to `digest`, keeping its tag.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

/// Fully qualified form: `docker.io/library/nginx:1.27@sha256:…`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = InvalidReference;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Digest {
    /// Parses `algorithm:hex`; only sha256, sha384 and sha512 with their exact
    /// lowercase hex lengths are accepted, as container runtimes do.
    ///
    /// # Errors
    ///
    /// [`InvalidReference::Digest`] with the reason.
    pub fn parse(input: &str) -> Result<Self, InvalidReference> {
        let bad = |why| InvalidReference::Digest(input.to_owned(), why);
        let (algorithm, hex) = input
            .split_once(':')
            .ok_or_else(|| bad("expected algorithm:hex"))?;
        if !valid_algorithm(algorithm) {
            return Err(bad("malformed algorithm"));
        }
        let want = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(bad("unsupported algorithm (sha256, sha384, sha512)")),
        };
        if hex.len() != want {
            return Err(bad("wrong length for its algorithm"));
        }
        if !hex.bytes().all(is_lower_hex) {
            return Err(bad("hex must be lowercase 0-9a-f"));
        }
        Ok(Self {
            algorithm: algorithm.to_owned(),
            hex: hex.to_owned(),
        })
    }

    /// `sha256`, `sha384` or `sha512`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The lowercase hex encoding.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= TAG_MAX_LEN
                && is_word(*first)
                && rest.iter().all(|&b| is_word(b) || b == b'.' || b == b'-')
        }
        None => false,
    }
}

/// `[A-Za-z][A-Za-z0-9]*` components joined by one of `+ . - _`.
fn valid_algorithm(algorithm: &str) -> bool {
    algorithm.split(['+', '.', '-', '_']).all(|component| {
        let mut bytes = component.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric())
    })
}

/// Docker's rule for telling a registry from the first path component.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    }
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // [IPv6]:port
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = registry.starts_with('[')
        || host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        });
    port_ok && host_ok
}

fn check_repository(path: &str) -> Result<(), InvalidReference> {
    let bad = |why| InvalidReference::Repository(path.to_owned(), why);
    if path.is_empty() {
        return Err(bad("empty"));
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(InvalidReference::Uppercase);
    }
    for component in path.split('/') {
        check_component(component).map_err(bad)?;
    }
    Ok(())
}

/// `[a-z0-9]+ (([._]|__|-+) [a-z0-9]+)*`
fn check_component(component: &str) -> Result<(), &'static str> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return Err("empty path component");
    }
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("path components start and end with [a-z0-9]");
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err("separators are '.', '_', '__' or dashes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

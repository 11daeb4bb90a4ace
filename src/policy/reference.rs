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
mod tests {
    use super::*;

    const D256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// registry, repository, tag, pinned
    type Parts = (&'static str, &'static str, Option<&'static str>, bool);

    /// (input, the parts, or a fragment of the error message)
    fn cases() -> Vec<(String, Result<Parts, &'static str>)> {
        let ok = |r, p, t, d| Ok((r, p, t, d));
        vec![
            (
                "nginx".into(),
                ok("docker.io", "library/nginx", None, false),
            ),
            (
                "nginx:1.27".into(),
                ok("docker.io", "library/nginx", Some("1.27"), false),
            ),
            (
                "nginx:latest".into(),
                ok("docker.io", "library/nginx", Some("latest"), false),
            ),
            (
                "library/nginx".into(),
                ok("docker.io", "library/nginx", None, false),
            ),
            (
                "docker.io/nginx".into(),
                ok("docker.io", "library/nginx", None, false),
            ),
            (
                "index.docker.io/nginx".into(),
                ok("docker.io", "library/nginx", None, false),
            ),
            (
                "index.docker.io/team/app:v1".into(),
                ok("docker.io", "team/app", Some("v1"), false),
            ),
            ("team/app".into(), ok("docker.io", "team/app", None, false)),
            (
                "team/sub/app:v2".into(),
                ok("docker.io", "team/sub/app", Some("v2"), false),
            ),
            (
                "registry:5000/app".into(),
                ok("registry:5000", "app", None, false),
            ),
            (
                "registry:5000/app:5000".into(),
                ok("registry:5000", "app", Some("5000"), false),
            ),
            ("localhost/app".into(), ok("localhost", "app", None, false)),
            (
                "localhost:5000/app:dev".into(),
                ok("localhost:5000", "app", Some("dev"), false),
            ),
            // No slash: the part after ':' is a tag, not a port.
            (
                "localhost:5000".into(),
                ok("docker.io", "library/localhost", Some("5000"), false),
            ),
            (
                "ghcr.io/org/app:1.0".into(),
                ok("ghcr.io", "org/app", Some("1.0"), false),
            ),
            (
                "quay.io/org/app".into(),
                ok("quay.io", "org/app", None, false),
            ),
            (
                "127.0.0.1:5000/app".into(),
                ok("127.0.0.1:5000", "app", None, false),
            ),
            (
                "[::1]:5000/app:v1".into(),
                ok("[::1]:5000", "app", Some("v1"), false),
            ),
            (
                "[2001:db8::1]/app".into(),
                ok("[2001:db8::1]", "app", None, false),
            ),
            (
                "Example.COM/app".into(),
                ok("Example.COM", "app", None, false),
            ),
            (
                format!("app@{D256}"),
                ok("docker.io", "library/app", None, true),
            ),
            (
                format!("app:1.2@{D256}"),
                ok("docker.io", "library/app", Some("1.2"), true),
            ),
            (
                format!("registry:5000/app@{D256}"),
                ok("registry:5000", "app", None, true),
            ),
            (
                format!("registry:5000/app:v1@{D256}"),
                ok("registry:5000", "app", Some("v1"), true),
            ),
            (
                format!("app@sha512:{}", "a".repeat(128)),
                ok("docker.io", "library/app", None, true),
            ),
            (
                format!("app@sha384:{}", "0".repeat(96)),
                ok("docker.io", "library/app", None, true),
            ),
            (
                "a/b_c/d__e/f-g/h---i/j.k".into(),
                ok("docker.io", "a/b_c/d__e/f-g/h---i/j.k", None, false),
            ),
            (
                "app:_underscore".into(),
                ok("docker.io", "library/app", Some("_underscore"), false),
            ),
            (
                "app:V1.2-RC_3".into(),
                ok("docker.io", "library/app", Some("V1.2-RC_3"), false),
            ),
            (
                "my-registry.example.com:443/a/b:c".into(),
                ok("my-registry.example.com:443", "a/b", Some("c"), false),
            ),
            // Errors.
            (String::new(), Err("empty image reference")),
            ("NGINX".into(), Err("must be lowercase")),
            ("team/App".into(), Err("must be lowercase")),
            // An uppercase first component can only be a registry host.
            ("Team/app".into(), ok("Team", "app", None, false)),
            ("app:".into(), Err("invalid tag")),
            ("app:-bad".into(), Err("invalid tag")),
            ("app:.bad".into(), Err("invalid tag")),
            (format!("app:{}", "t".repeat(129)), Err("invalid tag")),
            ("app:tag:extra".into(), Err("invalid repository path")),
            ("app@sha256:abc".into(), Err("wrong length")),
            (format!("app@sha256:{}", "A".repeat(64)), Err("lowercase")),
            (
                format!("app@md5:{}", "a".repeat(32)),
                Err("unsupported algorithm"),
            ),
            ("app@".into(), Err("expected algorithm:hex")),
            (format!("app@{D256}@{D256}"), Err("invalid digest")),
            ("-app".into(), Err("start and end")),
            ("app-".into(), Err("start and end")),
            ("a..b".into(), Err("separators")),
            ("a___b".into(), Err("separators")),
            ("a//b".into(), Err("empty path component")),
            ("app/".into(), Err("empty path component")),
            ("registry:port/app".into(), Err("invalid registry")),
            ("-registry.io/app".into(), Err("invalid registry")),
            ("registry.io:/app".into(), Err("invalid registry")),
            ("[::1/app".into(), Err("invalid registry")),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
                Err("image ID"),
            ),
            ("app with space".into(), Err("invalid")),
            (
                format!("{}/{}", "a".repeat(200), "b".repeat(60)),
                Err("longer than 255"),
            ),
        ]
    }

    #[test]
    fn table() {
        let cases = cases();
        assert!(cases.len() >= 40);
        for (input, want) in cases {
            let got = Reference::parse(&input);
            match (want, got) {
                (Ok((registry, repository, tag, digest)), Ok(r)) => {
                    assert_eq!(r.registry(), registry, "{input}");
                    assert_eq!(r.repository(), repository, "{input}");
                    assert_eq!(r.tag(), tag, "{input}");
                    assert_eq!(r.is_pinned(), digest, "{input}");
                }
                (Err(fragment), Err(e)) => {
                    assert!(
                        e.to_string().contains(fragment),
                        "{input}: {e} lacks {fragment:?}"
                    );
                }
                (want, got) => panic!("{input}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn latest_and_pinned() {
        let r = |s: &str| Reference::parse(s).expect(s);
        assert!(r("nginx").is_latest());
        assert!(r("nginx:latest").is_latest());
        assert!(!r("nginx:1.27").is_latest());
        assert!(!r(&format!("nginx@{D256}")).is_latest());
        assert!(r(&format!("nginx:latest@{D256}")).is_latest());
        assert!(r(&format!("nginx:latest@{D256}")).is_pinned());
        assert!(!r("nginx:1.27").is_pinned());
        assert_eq!(r("nginx").to_string(), "docker.io/library/nginx");
        let long_tag = "t".repeat(TAG_MAX_LEN);
        assert_eq!(r(&format!("app:{long_tag}")).tag(), Some(long_tag.as_str()));
        assert_eq!(
            r(&format!("registry:5000/app:1.2@{D256}")).to_string(),
            format!("registry:5000/app:1.2@{D256}")
        );
        let pinned = r("ghcr.io/org/app:1.0").with_digest(Digest::parse(D256).expect("digest"));
        assert_eq!(pinned.to_string(), format!("ghcr.io/org/app:1.0@{D256}"));
    }

    mod roundtrip {
        use super::super::*;
        use proptest::prelude::*;

        fn component() -> impl Strategy<Value = String> {
            "[a-z0-9]{1,6}(([._]|__|-{1,3})[a-z0-9]{1,6}){0,2}"
        }

        fn registry() -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                Just(None),
                "[a-z0-9]{1,8}\\.[a-z]{2,5}".prop_map(Some),
                "[a-z0-9]{1,8}\\.[a-z]{2,5}:[0-9]{2,5}".prop_map(Some),
                Just(Some("localhost".to_owned())),
                "localhost:[0-9]{2,5}".prop_map(Some),
                "\\[[0-9a-f]{1,4}::[0-9a-f]{1,4}\\](:[0-9]{2,5})?".prop_map(Some),
            ]
        }

        fn reference() -> impl Strategy<Value = String> {
            (
                registry(),
                prop::collection::vec(component(), 1..4),
                prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
                prop::option::of("[0-9a-f]{64}"),
            )
                // Without a registry, a first component with '.' would be
                // read as one (and is not a valid host).
                .prop_filter(
                    "first component looks like a registry",
                    |(registry, path, _, _)| registry.is_some() || !path[0].contains('.'),
                )
                .prop_map(|(registry, path, tag, digest)| {
                    let mut s = registry.map(|r| format!("{r}/")).unwrap_or_default();
                    s.push_str(&path.join("/"));
                    if let Some(tag) = tag {
                        s.push(':');
                        s.push_str(&tag);
                    }
                    if let Some(hex) = digest {
                        s.push_str("@sha256:");
                        s.push_str(&hex);
                    }
                    s
                })
        }

        proptest! {
            #[test]
            fn parse_format_parse(input in reference()) {
                let parsed = Reference::parse(&input);
                prop_assert!(parsed.is_ok(), "{input}: {parsed:?}");
                let parsed = parsed.expect("checked");
                let again = Reference::parse(&parsed.to_string());
                prop_assert_eq!(again.as_ref(), Ok(&parsed), "{}", parsed);
            }

            #[test]
            fn never_panics(input in "\\PC{0,80}") {
                let _ = Reference::parse(&input);
            }
        }
    }
}

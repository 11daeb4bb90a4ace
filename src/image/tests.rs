//! Reference parsing and formatting, against the grammar and Docker's normalisation.

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

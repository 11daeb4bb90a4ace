//! The parts of a pod spec the rules read, decoded straight from JSON (an
//! AdmissionReview body, a manifest, a cached object) without building a
//! JSON tree: every other field is skipped as it is read. A container keeps
//! a digest of everything it says, read fields and skipped ones alike, so
//! an update can tell whether it changed a container.
//!
//! Decoding hostile input is bounded by [`with_element_budget`]: list
//! entries and labels beyond the budget fail the decode instead of growing
//! memory.

use std::cell::Cell;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::Deserialize;

use crate::image::{InvalidReference, Reference};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// List entries (containers, ports, volumes, command words, probe
/// headers) and labels one object may hold when decoded under
/// [`with_element_budget`]; a real pod spec has a few dozen.
pub const MAX_ELEMENTS: usize = 16_384;

thread_local! {
    static BUDGET: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `decode` with at most `elements` list entries and labels decoded
/// on this thread (decoding is synchronous, so the budget is exactly the
/// one object's). Without a budget, decoding is unbounded: for input the
/// operator trusts (its own caches) or bounded otherwise (`probity lint`).
pub fn with_element_budget<T>(elements: usize, decode: impl FnOnce() -> T) -> T {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.set(self.0);
        }
    }
    let _restore = Restore(BUDGET.replace(Some(elements)));
    decode()
}

/// Runs `decode` with the budget left as it is now, however much `decode`
/// spends: for a second pass over the same text.
pub(crate) fn again<T>(decode: impl FnOnce() -> T) -> T {
    match BUDGET.get() {
        Some(left) => with_element_budget(left, decode),
        None => decode(),
    }
}

/// Takes one element from the budget; an error once it is spent.
pub(crate) fn take_element<E: de::Error>() -> Result<(), E> {
    BUDGET.with(|budget| match budget.get() {
        None => Ok(()),
        Some(0) => Err(E::custom(format_args!(
            "more than {MAX_ELEMENTS} list entries and labels in one object"
        ))),
        Some(n) => {
            budget.set(Some(n - 1));
            Ok(())
        }
    })
}

/// A list that may be absent or `null`, decoded within the budget.
pub(crate) fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct List<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            loop {
                // Charge before decoding, so the budget also bounds what a
                // failing entry could allocate.
                take_element::<A::Error>()?;
                match seq.next_element()? {
                    Some(item) => out.push(item),
                    None => return Ok(out),
                }
            }
        }
    }
    deserializer.deserialize_option(List(std::marker::PhantomData))
}

/// A pod spec: its containers, in the lists Kubernetes keeps them in, and
/// its volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// `initContainers`.
    #[serde(default, deserialize_with = "list")]
    pub init_containers: Vec<Container>,
    /// `containers`.
    #[serde(default, deserialize_with = "list")]
    pub containers: Vec<Container>,
    /// `ephemeralContainers` (`kubectl debug`).
    #[serde(default, deserialize_with = "list")]
    pub ephemeral_containers: Vec<Container>,
    /// `volumes`.
    #[serde(default, deserialize_with = "list")]
    pub volumes: Vec<Volume>,
}

impl PodSpec {
    /// What a Pod must share with its controller's pod template to be
    /// judged through it: each init and app container's name, image and
    /// probes, in order. A Pod's `spec` and a template's `spec` come from
    /// the API server defaulted the same way.
    pub fn fingerprint(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        for list in [&self.init_containers, &self.containers] {
            list.len().hash(&mut hasher);
            for c in list {
                (&c.name, &c.image).hash(&mut hasher);
                (&c.readiness_probe, &c.liveness_probe, &c.startup_probe).hash(&mut hasher);
            }
        }
        hasher.finish()
    }
}

/// A container (init, app or ephemeral).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// `name`.
    pub name: String,
    /// `image`.
    pub image: Option<String>,
    /// `ports`.
    pub ports: Vec<ContainerPort>,
    /// `readinessProbe`.
    pub readiness_probe: Option<Probe>,
    /// `livenessProbe`.
    pub liveness_probe: Option<Probe>,
    /// `startupProbe`.
    pub startup_probe: Option<Probe>,
    /// A digest of every field of the container as written, independent of
    /// key order: equal for equal containers.
    pub digest: u64,
    /// `image`, parsed once as it is read (every policy's image rules use
    /// it); `None` when there is no image, or for a container built in code.
    pub reference: Option<Result<Reference, InvalidReference>>,
}

/// A declared container port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `containerPort`.
    pub container_port: i32,
}

/// A probe: its handler and timing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// `httpGet`.
    #[serde(default)]
    pub http_get: Option<HttpGet>,
    /// `tcpSocket`.
    #[serde(default)]
    pub tcp_socket: Option<TcpSocket>,
    /// `grpc`.
    #[serde(default)]
    pub grpc: Option<Grpc>,
    /// `exec`.
    #[serde(default)]
    pub exec: Option<Exec>,
    /// `initialDelaySeconds`.
    #[serde(default)]
    pub initial_delay_seconds: Option<i32>,
    /// `periodSeconds`.
    #[serde(default)]
    pub period_seconds: Option<i32>,
    /// `timeoutSeconds`.
    #[serde(default)]
    pub timeout_seconds: Option<i32>,
    /// `failureThreshold`.
    #[serde(default)]
    pub failure_threshold: Option<i32>,
    /// `successThreshold`.
    #[serde(default)]
    pub success_threshold: Option<i32>,
}

/// `httpGet`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    /// `path`.
    #[serde(default)]
    pub path: Option<String>,
    /// `port`.
    pub port: IntOrString,
    /// `host`.
    #[serde(default)]
    pub host: Option<String>,
    /// `scheme`.
    #[serde(default)]
    pub scheme: Option<String>,
}

/// `tcpSocket`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocket {
    /// `port`.
    pub port: IntOrString,
    /// `host`.
    #[serde(default)]
    pub host: Option<String>,
}

/// `grpc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grpc {
    /// `port`.
    pub port: i32,
    /// `service`.
    #[serde(default)]
    pub service: Option<String>,
}

/// `exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exec {
    /// `command`.
    #[serde(default, deserialize_with = "list")]
    pub command: Vec<String>,
}

/// A port given as a number or as the name of a declared port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntOrString {
    /// A number.
    Int(i32),
    /// A port name.
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        Self::Int(0)
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Port;
        impl Visitor<'_> for Port {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or name")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<IntOrString, E> {
                i32::try_from(n)
                    .map(IntOrString::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<IntOrString, E> {
                i32::try_from(n)
                    .map(IntOrString::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(s.to_owned()))
            }
        }
        deserializer.deserialize_any(Port)
    }
}

/// A volume; only image volumes matter to the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// `name`.
    pub name: String,
    /// `image`, for an image volume.
    #[serde(default)]
    pub image: Option<ImageVolume>,
}

/// `volumes[].image`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageVolume {
    /// `reference`.
    #[serde(default)]
    pub reference: Option<String>,
}

// === impl Container ===

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// One map entry's share of an order-independent digest.
fn entry(key: u64, value: u64) -> u64 {
    hash_of(&(key, value))
}

/// The share of a field the rules read: its name and typed value.
fn known(key: &'static str, value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    value.hash(&mut hasher);
    hasher.finish()
}

impl<'de> Deserialize<'de> for Container {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ContainerVisitor)
    }
}

struct ContainerVisitor;

/// A container's field, or the hash of a name the rules do not read.
enum Field {
    Name,
    Image,
    Ports,
    Readiness,
    Liveness,
    Startup,
    Other(u64),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Field, E> {
                Ok(match s {
                    "name" => Field::Name,
                    "image" => Field::Image,
                    "ports" => Field::Ports,
                    "readinessProbe" => Field::Readiness,
                    "livenessProbe" => Field::Liveness,
                    "startupProbe" => Field::Startup,
                    other => Field::Other(hash_of(&other)),
                })
            }
        }
        deserializer.deserialize_identifier(Name)
    }
}

impl<'de> Visitor<'de> for ContainerVisitor {
    type Value = Container;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a container")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Container, A::Error> {
        fn once<T, E: de::Error>(slot: &Option<T>, name: &'static str) -> Result<(), E> {
            match slot {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let mut name: Option<String> = None;
        let mut image: Option<Option<String>> = None;
        let mut ports: Option<Vec<ContainerPort>> = None;
        let mut probes: [Option<Option<Probe>>; 3] = [None, None, None];
        let mut digest = 0u64;
        while let Some(field) = map.next_key::<Field>()? {
            let share = match field {
                Field::Name => {
                    once(&name, "name")?;
                    let v: String = map.next_value()?;
                    let h = known("name", &v);
                    name = Some(v);
                    h
                }
                Field::Image => {
                    once(&image, "image")?;
                    let v: Option<String> = map.next_value()?;
                    let h = known("image", &v);
                    image = Some(v);
                    h
                }
                Field::Ports => {
                    once(&ports, "ports")?;
                    let v: Vec<ContainerPort> = map.next_value_seed(ListSeed::default())?;
                    let h = known("ports", &v);
                    ports = Some(v);
                    h
                }
                Field::Readiness | Field::Liveness | Field::Startup => {
                    let (i, key) = match field {
                        Field::Readiness => (0, "readinessProbe"),
                        Field::Liveness => (1, "livenessProbe"),
                        _ => (2, "startupProbe"),
                    };
                    once(&probes[i], key)?;
                    let v: Option<Probe> = map.next_value()?;
                    let h = known(key, &v);
                    probes[i] = Some(v);
                    h
                }
                Field::Other(key) => {
                    let value = map.next_value_seed(DigestSeed)?;
                    digest = digest.wrapping_add(entry(key, value));
                    continue;
                }
            };
            digest = digest.wrapping_add(share);
        }
        let [readiness, liveness, startup] = probes;
        let image = image.flatten();
        Ok(Container {
            reference: image.as_deref().map(Reference::parse),
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            image,
            ports: ports.unwrap_or_default(),
            readiness_probe: readiness.flatten(),
            liveness_probe: liveness.flatten(),
            startup_probe: startup.flatten(),
            digest,
        })
    }
}

/// [`list`] as a seed, for manual visitors.
struct ListSeed<T>(std::marker::PhantomData<T>);

impl<T> Default for ListSeed<T> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for ListSeed<T> {
    type Value = Vec<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        list(d)
    }
}

/// Reads any JSON value into a digest without keeping it: sequences in
/// order, maps regardless of key order. Nesting depth is the parser's
/// (serde_json stops at 128).
struct DigestSeed;

impl<'de> DeserializeSeed<'de> for DigestSeed {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

/// A map key's hash, read without allocating.
struct KeyDigest;

impl<'de> DeserializeSeed<'de> for KeyDigest {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyDigest {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        Ok(hash_of(&s))
    }
}

impl<'de> Visitor<'de> for DigestSeed {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<u64, E> {
        Ok(hash_of(&(1u8, v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        Ok(hash_of(&(2u8, v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(hash_of(&(3u8, v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Ok(hash_of(&(4u8, v.to_bits())))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        Ok(hash_of(&(5u8, v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(hash_of(&6u8))
    }
    fn visit_none<E: de::Error>(self) -> Result<u64, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut digest = hash_of(&7u8);
        while let Some(item) = seq.next_element_seed(DigestSeed)? {
            digest = hash_of(&(digest, item));
        }
        Ok(digest)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut digest = hash_of(&8u8);
        while let Some(key) = map.next_key_seed(KeyDigest)? {
            let value = map.next_value_seed(DigestSeed)?;
            digest = digest.wrapping_add(entry(key, value));
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn container(text: &str) -> Container {
        serde_json::from_str(text).expect("a container")
    }

    #[test]
    fn reads_what_the_rules_need_and_skips_the_rest() {
        let c = container(
            r#"{"name": "web", "image": "nginx:1.27", "env": [{"name": "A", "value": "1"}],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http",
                    "httpHeaders": [{"name": "X", "value": "y"}]}, "periodSeconds": 5},
                "livenessProbe": {"exec": {"command": ["true"]}}, "resources": {"limits": {"cpu": 1}}}"#,
        );
        assert_eq!(c.name, "web");
        assert_eq!(c.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(c.ports[0].container_port, 8080);
        let readiness = c.readiness_probe.as_ref().expect("readiness");
        assert_eq!(
            readiness.http_get.as_ref().map(|h| &h.port),
            Some(&IntOrString::String("http".to_owned()))
        );
        assert_eq!(readiness.period_seconds, Some(5));
        assert_eq!(
            c.liveness_probe.and_then(|p| p.exec).map(|e| e.command),
            Some(vec!["true".to_owned()])
        );
        assert!(c.startup_probe.is_none());
    }

    #[test]
    fn the_digest_covers_skipped_fields_and_ignores_key_order() {
        let a = container(r#"{"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}]}"#);
        let same =
            container(r#"{"env": [{"value": "1", "name": "A"}], "image": "x", "name": "c"}"#);
        let env_changed =
            container(r#"{"name": "c", "image": "x", "env": [{"name": "A", "value": "2"}]}"#);
        let image_changed =
            container(r#"{"name": "c", "image": "y", "env": [{"name": "A", "value": "1"}]}"#);
        assert_eq!(a.digest, same.digest);
        assert_ne!(a.digest, env_changed.digest);
        assert_ne!(a.digest, image_changed.digest);
        // The same digest from a JSON tree (the operator's caches, lint).
        let tree = json!({"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}]});
        let from_tree = Container::deserialize(&tree).expect("a container");
        assert_eq!(from_tree, a);
    }

    #[test]
    fn wrong_types_duplicates_and_missing_names_are_errors() {
        for bad in [
            r#"{"name": "c", "ports": [{"containerPort": "http"}]}"#,
            r#"{"name": "c", "image": "x", "image": "y"}"#,
            r#"{"image": "x"}"#,
            r#"{"name": "c", "readinessProbe": {"httpGet": {"port": 3000000000}}}"#,
        ] {
            assert!(serde_json::from_str::<Container>(bad).is_err(), "{bad}");
        }
        let nulls: PodSpec =
            serde_json::from_str(r#"{"containers": null, "volumes": null}"#).expect("nulls");
        assert!(nulls.containers.is_empty());
    }

    #[test]
    fn the_element_budget_bounds_lists_and_is_restored() {
        let many = format!(
            r#"{{"containers": [{}]}}"#,
            vec![r#"{"name": "c"}"#; 100].join(",")
        );
        let err = with_element_budget(50, || serde_json::from_str::<PodSpec>(&many))
            .expect_err("over budget");
        assert!(err.to_string().contains("list entries"), "{err}");
        let ok = with_element_budget(101, || serde_json::from_str::<PodSpec>(&many));
        assert_eq!(ok.map(|p| p.containers.len()).ok(), Some(100));
        // No budget outside.
        assert!(serde_json::from_str::<PodSpec>(&many).is_ok());
    }

    #[test]
    fn fingerprints_follow_names_images_and_probes_only() {
        let spec = |image: &str, env: &str| -> PodSpec {
            serde_json::from_value(json!({"containers": [{"name": "c", "image": image,
                "env": [{"name": env}], "readinessProbe": {"tcpSocket": {"port": 80}}}]}))
            .expect("spec")
        };
        assert_eq!(spec("a", "X").fingerprint(), spec("a", "Y").fingerprint());
        assert_ne!(spec("a", "X").fingerprint(), spec("b", "X").fingerprint());
    }
}

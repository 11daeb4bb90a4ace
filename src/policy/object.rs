//! An object as the rules read it, decoded in one pass from JSON text or a
//! JSON tree: `apiVersion`, `kind`, the metadata fields that matter
//! (names, labels, the exemption annotation, the controller reference) and
//! every place a pod spec can live. Everything else is skipped unread.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::pod::{self, Container, PodSpec, Volume};
use super::workload::EXEMPT_ANNOTATION;

/// `apiVersion`, `kind` and the two parts the rules read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Parts {
    #[serde(default)]
    pub(crate) api_version: Lenient,
    #[serde(default)]
    pub(crate) kind: Lenient,
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) metadata: Meta,
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) spec: Spec,
}

/// Only `apiVersion`, `kind` and the name: what an error report needs when
/// the rest does not decode.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Head {
    #[serde(default)]
    pub(crate) api_version: Lenient,
    #[serde(default)]
    pub(crate) kind: Lenient,
    #[serde(default)]
    pub(crate) metadata: Option<HeadMeta>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeadMeta {
    #[serde(default)]
    pub(crate) name: Lenient,
    #[serde(default)]
    pub(crate) generate_name: Lenient,
}

/// A string, or `None` for any other value: `kind: 3` in a Helm values file
/// makes it no Kubernetes object, not an error.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Lenient(pub(crate) Option<String>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Lenient, E> {
                Ok(Lenient(Some(s.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Lenient, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lenient, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Metadata, as far as the rules read it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) generate_name: Option<String>,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default, deserialize_with = "labels")]
    pub(crate) labels: BTreeMap<String, String>,
    /// The value of [`EXEMPT_ANNOTATION`]; other annotations are checked
    /// to be strings and dropped.
    #[serde(default, rename = "annotations", deserialize_with = "exemption")]
    pub(crate) exempt: Option<String>,
    /// The first ownerReference with `controller: true`.
    #[serde(default, rename = "ownerReferences", deserialize_with = "controller")]
    pub(crate) controller: Option<OwnerRef>,
}

/// An ownerReference.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OwnerRef {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    #[serde(default)]
    pub(crate) controller: Option<bool>,
}

/// Every place a pod spec lives: a Pod's `spec` itself, a template's
/// `spec.template`, a CronJob's `spec.jobTemplate.spec.template`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Spec {
    #[serde(default, deserialize_with = "pod::list")]
    pub(crate) init_containers: Vec<Container>,
    #[serde(default, deserialize_with = "pod::list")]
    pub(crate) containers: Vec<Container>,
    #[serde(default, deserialize_with = "pod::list")]
    pub(crate) ephemeral_containers: Vec<Container>,
    #[serde(default, deserialize_with = "pod::list")]
    pub(crate) volumes: Vec<Volume>,
    #[serde(default)]
    pub(crate) template: Option<Template>,
    #[serde(default)]
    pub(crate) job_template: Option<JobTemplate>,
}

impl Spec {
    /// The spec itself, read as a Pod's.
    pub(crate) fn into_pod(self) -> PodSpec {
        PodSpec {
            init_containers: self.init_containers,
            containers: self.containers,
            ephemeral_containers: self.ephemeral_containers,
            volumes: self.volumes,
        }
    }
}

/// A pod template.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Template {
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) metadata: Meta,
    #[serde(default, deserialize_with = "nullable")]
    pub(crate) spec: PodSpec,
}

/// A CronJob's job template.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobTemplate {
    #[serde(default)]
    pub(crate) spec: Option<JobSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobSpec {
    #[serde(default)]
    pub(crate) template: Option<Template>,
}

/// `null` read as the default.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Checks a value is a string without keeping it.
struct AnyString;

impl<'de> DeserializeSeed<'de> for AnyString {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for AnyString {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// A map key, compared with [`EXEMPT_ANNOTATION`] without keeping it.
struct IsExempt;

impl<'de> DeserializeSeed<'de> for IsExempt {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IsExempt {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an annotation name")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == EXEMPT_ANNOTATION)
    }
}

fn exemption<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut found = None;
            while let Some(exempt) = map.next_key_seed(IsExempt)? {
                if exempt {
                    found = Some(map.next_value::<String>()?);
                } else {
                    map.next_value_seed(AnyString)?;
                }
            }
            Ok(found)
        }
    }
    d.deserialize_option(V)
}

fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            loop {
                pod::take_element::<A::Error>()?;
                match map.next_entry::<String, String>()? {
                    Some((k, v)) => out.insert(k, v),
                    None => return Ok(out),
                };
            }
        }
    }
    d.deserialize_option(V)
}

fn controller<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OwnerRef>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<OwnerRef>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of ownerReferences")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            loop {
                pod::take_element::<A::Error>()?;
                match seq.next_element::<OwnerRef>()? {
                    Some(o) if found.is_none() && o.controller == Some(true) => found = Some(o),
                    Some(_) => {}
                    None => return Ok(found),
                }
            }
        }
    }
    d.deserialize_option(V)
}

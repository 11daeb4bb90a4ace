//! Runtime rules from pod status: PRB301 image-digest-drift and PRB303
//! synchronized-restarts. Pure: pods in, findings out.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::policy::rules::{IMAGE_DIGEST_DRIFT, RuleMeta, SYNCHRONIZED_RESTARTS, TAG_MOVED};

/// What the operator keeps of a pod: its revision and, per container, the
/// digest it runs and when it last restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodObservation {
    /// `metadata.name`.
    pub name: String,
    /// `pod-template-hash` or `controller-revision-hash`.
    pub revision: Option<String>,
    /// Main containers, in status order.
    pub containers: Vec<ContainerObservation>,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerObservation {
    /// The container name.
    pub name: String,
    /// `sha256:...` from `imageID`, when the kubelet reported one.
    pub digest: Option<String>,
    /// `restartCount`.
    pub restart_count: i32,
    /// When it last restarted, in Unix seconds: `lastState.terminated.finishedAt`,
    /// or when the operator saw `restartCount` grow.
    pub last_restart: Option<i64>,
}

/// The digest in a kubelet `imageID` (`docker.io/library/nginx@sha256:...`,
/// `docker-pullable://nginx@sha256:...`, or a bare `sha256:...`).
pub fn digest_of(image_id: &str) -> Option<String> {
    let at = image_id.rfind("sha256:")?;
    let digest = &image_id[at..];
    let hex = &digest["sha256:".len()..];
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_owned())
}

impl PodObservation {
    /// Reads a pod object. `previous` is the last observation of the same
    /// pod: a restart count that grew without a `finishedAt` is dated `now`.
    pub fn from_pod(pod: &Value, previous: Option<&Self>, now: i64) -> Self {
        let labels = pod.pointer("/metadata/labels");
        let revision = ["pod-template-hash", "controller-revision-hash"]
            .iter()
            .find_map(|k| labels.and_then(|l| l.get(*k)).and_then(Value::as_str))
            .map(str::to_owned);
        let statuses = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let containers = statuses
            .iter()
            .filter_map(|s| {
                let name = s.get("name")?.as_str()?.to_owned();
                let digest = s.get("imageID").and_then(Value::as_str).and_then(digest_of);
                let restart_count = s
                    .get("restartCount")
                    .and_then(Value::as_i64)
                    .and_then(|n| i32::try_from(n).ok())
                    .unwrap_or(0);
                let finished = s
                    .pointer("/lastState/terminated/finishedAt")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                    .map(|t| t.as_second());
                let before = previous.and_then(|p| p.containers.iter().find(|c| c.name == name));
                let last_restart = match (finished, before) {
                    (Some(t), _) => Some(t),
                    (None, Some(b)) if restart_count > b.restart_count => Some(now),
                    (None, Some(b)) => b.last_restart,
                    (None, None) => None,
                };
                Some(ContainerObservation {
                    name,
                    digest,
                    restart_count,
                    last_restart: if restart_count > 0 {
                        last_restart
                    } else {
                        None
                    },
                })
            })
            .collect();
        Self {
            name: pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            revision,
            containers,
        }
    }
}

/// A runtime finding about a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFinding {
    /// PRB301 or PRB303.
    pub rule: &'static RuleMeta,
    /// The container, for PRB301.
    pub container: Option<String>,
    /// The odd pods (PRB301) or the restarted ones (PRB303), sorted.
    pub pods: Vec<String>,
    /// One sentence naming them.
    pub message: String,
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min("sha256:".len() + 12)]
}

/// PRB302: the pods whose `container` runs a digest other than `current`,
/// the digest `image`'s tag resolves to now.
pub fn tag_moved<'a>(
    pods: impl IntoIterator<Item = &'a PodObservation>,
    container: &str,
    image: &str,
    current: &str,
) -> Option<RuntimeFinding> {
    let mut stale: Vec<(String, String)> = Vec::new();
    for pod in pods {
        for c in pod.containers.iter().filter(|c| c.name == container) {
            if let Some(digest) = c.digest.as_deref().filter(|d| *d != current) {
                stale.push((pod.name.clone(), digest.to_owned()));
            }
        }
    }
    if stale.is_empty() {
        return None;
    }
    stale.sort();
    let running: std::collections::BTreeSet<String> =
        stale.iter().map(|(_, d)| short(d).to_owned()).collect();
    let pods: Vec<String> = stale.into_iter().map(|(p, _)| p).collect();
    let message = format!(
        "tag {image} now points at {}, but {} run{} {}",
        short(current),
        pods.join(", "),
        if pods.len() == 1 { "s" } else { "" },
        running.into_iter().collect::<Vec<_>>().join(", "),
    );
    Some(RuntimeFinding {
        rule: TAG_MOVED,
        container: Some(container.to_owned()),
        pods,
        message,
    })
}

/// PRB301: within each revision, for each container, the pods whose digest
/// differs from the one most pods run (ties: the smallest digest is taken
/// as the norm, so the result is stable).
pub fn digest_drift<'a>(pods: impl IntoIterator<Item = &'a PodObservation>) -> Vec<RuntimeFinding> {
    // revision -> container -> digest -> pods
    let mut groups: BTreeMap<&str, BTreeMap<&str, BTreeMap<&str, Vec<&str>>>> = BTreeMap::new();
    for pod in pods {
        let revision = pod.revision.as_deref().unwrap_or("");
        for c in &pod.containers {
            if let Some(digest) = &c.digest {
                groups
                    .entry(revision)
                    .or_default()
                    .entry(&c.name)
                    .or_default()
                    .entry(digest)
                    .or_default()
                    .push(&pod.name);
            }
        }
    }
    let mut out = Vec::new();
    for (revision, containers) in groups {
        for (container, digests) in containers {
            if digests.len() < 2 {
                continue;
            }
            let Some((norm, norm_pods)) = digests
                .iter()
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)))
            else {
                continue;
            };
            let mut odd: Vec<String> = digests
                .iter()
                .filter(|(d, _)| *d != norm)
                .flat_map(|(d, pods)| pods.iter().map(move |p| format!("{p} ({})", short(d))))
                .collect();
            odd.sort();
            let mut names: Vec<String> = digests
                .iter()
                .filter(|(d, _)| *d != norm)
                .flat_map(|(_, pods)| pods.iter().map(|p| (*p).to_owned()))
                .collect();
            names.sort();
            let revision = if revision.is_empty() {
                String::new()
            } else {
                format!(" of revision {revision}")
            };
            out.push(RuntimeFinding {
                rule: IMAGE_DIGEST_DRIFT,
                container: Some(container.to_owned()),
                message: format!(
                    "{} {} a different image than the {} other pod(s){revision}, which run {}",
                    odd.join(", "),
                    if odd.len() == 1 { "runs" } else { "run" },
                    norm_pods.len(),
                    short(norm),
                ),
                pods: names,
            });
        }
    }
    out
}

/// PRB303: more than half of the pods (at least two) had a container
/// restart within `window_seconds` before `now`.
pub fn synchronized_restarts<'a>(
    pods: impl IntoIterator<Item = &'a PodObservation>,
    now: i64,
    window_seconds: i64,
) -> Option<RuntimeFinding> {
    let mut total = 0usize;
    let mut restarted = Vec::new();
    for pod in pods {
        total += 1;
        let recent = pod.containers.iter().any(|c| {
            c.last_restart
                .is_some_and(|t| t <= now && now - t <= window_seconds)
        });
        if recent {
            restarted.push(pod.name.clone());
        }
    }
    if restarted.len() < 2 || restarted.len() * 2 <= total {
        return None;
    }
    restarted.sort();
    Some(RuntimeFinding {
        rule: SYNCHRONIZED_RESTARTS,
        container: None,
        message: format!(
            "{} of {total} replicas restarted within {}: {}; liveness is probably checking a shared dependency",
            restarted.len(),
            human_window(window_seconds),
            restarted.join(", "),
        ),
        pods: restarted,
    })
}

fn human_window(seconds: i64) -> String {
    if seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const B: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn pod(name: &str, revision: &str, digest: &str) -> PodObservation {
        PodObservation::from_pod(
            &json!({
                "metadata": {"name": name, "labels": {"pod-template-hash": revision}},
                "status": {"containerStatuses": [
                    {"name": "app", "imageID": format!("docker.io/acme/app@{digest}"), "restartCount": 0},
                ]},
            }),
            None,
            0,
        )
    }

    #[test]
    fn tag_moved_names_the_pods_on_the_old_digest() {
        let pods = [pod("web-a", "1", A), pod("web-b", "1", B)];
        let finding = tag_moved(&pods, "app", "acme/app:1", B).expect("moved");
        assert_eq!(finding.rule.id, "PRB302");
        assert_eq!(finding.pods, ["web-a"]);
        assert!(finding.message.starts_with("tag acme/app:1 now points at sha256:222222222222, but web-a runs sha256:111111111111"), "{}", finding.message);
        assert!(tag_moved(&pods[1..], "app", "acme/app:1", B).is_none());
        assert!(tag_moved(&pods, "other", "acme/app:1", B).is_none());
    }

    #[test]
    fn digest_is_read_from_every_image_id_form() {
        assert_eq!(
            digest_of(&format!("docker-pullable://nginx@{A}")).as_deref(),
            Some(A)
        );
        assert_eq!(digest_of(A).as_deref(), Some(A));
        assert_eq!(digest_of("nginx:latest"), None);
        assert_eq!(digest_of("sha256:abc"), None);
    }

    #[test]
    fn the_odd_replica_is_named() {
        let pods = [
            pod("web-a", "h1", A),
            pod("web-b", "h1", A),
            pod("web-c", "h1", B),
        ];
        let found = digest_drift(&pods);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule.id, "PRB301");
        assert_eq!(found[0].pods, ["web-c"]);
        assert_eq!(found[0].container.as_deref(), Some("app"));
        assert!(
            found[0].message.contains("web-c (sha256:222222222222)"),
            "{}",
            found[0].message
        );
        assert!(
            found[0].message.contains("2 other pod(s) of revision h1"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn different_revisions_are_not_drift() {
        let pods = [pod("web-a", "h1", A), pod("web-b", "h2", B)];
        assert!(digest_drift(&pods).is_empty());
        let unknown = PodObservation {
            containers: vec![],
            ..pod("web-c", "h1", A)
        };
        assert!(digest_drift(&[pod("web-a", "h1", A), unknown]).is_empty());
    }

    #[test]
    fn a_tie_picks_a_stable_norm() {
        let one = digest_drift(&[pod("x", "h", A), pod("y", "h", B)]);
        let other = digest_drift(&[pod("y", "h", B), pod("x", "h", A)]);
        assert_eq!(one, other);
        assert_eq!(one[0].pods, ["y"]);
    }

    fn restarted(name: &str, count: i32, at: Option<&str>) -> Value {
        let mut status = json!({"name": "app", "restartCount": count});
        if let Some(at) = at {
            status["lastState"] = json!({"terminated": {"finishedAt": at, "exitCode": 137}});
        }
        json!({"metadata": {"name": name}, "status": {"containerStatuses": [status]}})
    }

    #[test]
    fn restarts_dated_by_finished_at_or_by_observation() {
        let t0: i64 = 1_700_000_000;
        let first = PodObservation::from_pod(&restarted("p", 0, None), None, t0);
        assert_eq!(first.containers[0].last_restart, None);
        let grew = PodObservation::from_pod(&restarted("p", 1, None), Some(&first), t0 + 30);
        assert_eq!(grew.containers[0].last_restart, Some(t0 + 30));
        let same = PodObservation::from_pod(&restarted("p", 1, None), Some(&grew), t0 + 90);
        assert_eq!(same.containers[0].last_restart, Some(t0 + 30));
        let dated = PodObservation::from_pod(
            &restarted("p", 2, Some("2023-11-14T22:13:20Z")),
            Some(&same),
            t0 + 120,
        );
        assert_eq!(dated.containers[0].last_restart, Some(1_700_000_000));
    }

    #[test]
    fn majority_restarting_together_fires() {
        let now = 1_700_000_000;
        let at = |name: &str, t: Option<i64>| PodObservation {
            name: name.into(),
            revision: None,
            containers: vec![ContainerObservation {
                name: "app".into(),
                digest: None,
                restart_count: i32::from(t.is_some()),
                last_restart: t,
            }],
        };
        let pods = [
            at("a", Some(now - 10)),
            at("b", Some(now - 200)),
            at("c", None),
        ];
        let found = synchronized_restarts(&pods, now, 300).expect("2 of 3 within 5m");
        assert_eq!(found.pods, ["a", "b"]);
        assert!(
            found
                .message
                .starts_with("2 of 3 replicas restarted within 5m"),
            "{}",
            found.message
        );
        // Outside the window, half, or a single pod: quiet.
        assert!(synchronized_restarts(&pods, now + 400, 300).is_none());
        assert!(synchronized_restarts(&pods[..1], now, 300).is_none());
        let half = [
            at("a", Some(now)),
            at("b", Some(now)),
            at("c", None),
            at("d", None),
        ];
        assert!(synchronized_restarts(&half, now, 300).is_none());
    }
}

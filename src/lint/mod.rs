//! `probity lint`: reads manifests, evaluates the policies with the shared
//! engine, and reports findings with their exact location.

pub mod policies;
pub mod report;
pub mod select;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::manifest::Input;
use crate::manifest::yaml::{self, Pos};
use crate::policy::{Classified, Finding, Workload, evaluate, workload};
use policies::Policy;

/// The object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Its kind.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// Its namespace, when the manifest sets one.
    pub namespace: Option<String>,
}

/// A finding at its place in a file.
#[derive(Debug, Clone)]
pub struct Located {
    /// The file (`<stdin>` for standard input).
    pub file: String,
    /// Where in it.
    pub pos: Pos,
    /// The workload.
    pub object: ObjectRef,
    /// The policy that produced it.
    pub policy: String,
    /// The finding.
    pub finding: Finding,
}

/// An input error or a note about a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: String,
    /// Where, when known.
    pub pos: Option<Pos>,
    /// What.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: {}", self.file, p.line, p.col, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Everything one run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Sources read.
    pub files: usize,
    /// Workloads judged.
    pub workloads: usize,
    /// Findings, in file order.
    pub findings: Vec<Located>,
    /// Input errors: unreadable files, broken documents, ill-typed fields.
    pub errors: Vec<Problem>,
    /// Documents skipped, and why.
    pub notes: Vec<Problem>,
    /// Every finding counted, also those [`lint_rendered`] wrote out.
    pub tally: Tally,
    /// Workloads each policy matched, by policy and namespace (`None`:
    /// the manifest sets none).
    pub matched: BTreeMap<String, BTreeMap<Option<String>, usize>>,
}

/// Findings counted by how much they count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Findings that are neither exempt nor warnings.
    pub violations: usize,
    /// Findings the workload exempts itself from.
    pub exempt: usize,
    /// Findings of rules whose severity is Warning.
    pub warnings: usize,
}

impl Tally {
    fn add(&mut self, findings: &[Located]) {
        for f in findings {
            if f.finding.exempt.is_some() {
                self.exempt += 1;
            } else if f.finding.severity == crate::policy::Severity::Warning {
                self.warnings += 1;
            } else {
                self.violations += 1;
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.violations += other.violations;
        self.exempt += other.exempt;
        self.warnings += other.warnings;
    }
}

impl Report {
    /// Findings that are neither exempt nor warnings.
    pub fn violations(&self) -> usize {
        self.tally.violations
    }

    /// What the run amounts to: input errors outrank violations.
    pub fn outcome(&self) -> Outcome {
        if !self.errors.is_empty() {
            Outcome::Errors
        } else if self.violations() > 0 {
            Outcome::Violations
        } else {
            Outcome::Clean
        }
    }
}

/// What a lint run amounts to (`probity lint` exits 0, 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing found.
    Clean,
    /// Findings that are not exempt.
    Violations,
    /// Some input could not be read or understood.
    Errors,
}

/// Lints `inputs` against `policies`. Documents are read and judged in
/// parallel, a batch at a time; the report lists everything in input order.
pub fn lint(inputs: &[Input], policies: &[Policy]) -> Report {
    let mut findings = Vec::new();
    let mut keep = |found: Vec<Located>| findings.extend(found);
    let mut report = run(inputs, policies, Emit::Keep(&mut keep));
    report.findings = findings;
    report
}

/// Renders findings as output text, one document's at a time, on the core
/// that found them.
pub type Render = dyn Fn(&[Located], &mut String) + Sync;

/// Like [`lint`], but writes the findings as `render` makes them, in input
/// order, as they are found, instead of keeping them: memory does not grow
/// with the findings, and rendering runs on every core. The report's
/// `findings` stays empty; its [`Tally`] counts them.
pub fn lint_rendered(
    inputs: &[Input],
    policies: &[Policy],
    render: &Render,
    write: &mut dyn FnMut(&str),
) -> Report {
    run(inputs, policies, Emit::Render(render, write))
}

/// Where findings go.
enum Emit<'e> {
    Keep(&'e mut dyn FnMut(Vec<Located>)),
    Render(&'e Render, &'e mut dyn FnMut(&str)),
}

/// An object's input and position: the order output follows.
type ObjectKey = (usize, Pos);

/// The pieces of a list that `marks` starts (each mark: a key and where
/// its piece starts), up to `len`.
fn pieces(
    marks: &[(ObjectKey, usize)],
    len: usize,
) -> impl Iterator<Item = (ObjectKey, std::ops::Range<usize>)> + '_ {
    let ends = marks.iter().skip(1).map(|(_, start)| *start).chain([len]);
    marks
        .iter()
        .zip(ends)
        .map(|((key, start), end)| (*key, *start..end))
}

fn run(inputs: &[Input], policies: &[Policy], mut emit: Emit<'_>) -> Report {
    let chunks: Vec<(usize, yaml::Chunk<'_>)> = inputs
        .iter()
        .enumerate()
        .flat_map(|(i, input)| yaml::chunks(&input.text).into_iter().map(move |c| (i, c)))
        .collect();
    let namespaces = if policies.iter().any(|p| p.namespace_selector.is_some()) {
        namespace_labels(&chunks)
    } else {
        BTreeMap::new()
    };
    let render = match &emit {
        Emit::Keep(_) => None,
        Emit::Render(render, _) => Some(*render),
    };
    let mut report = Report {
        files: inputs.len(),
        ..Report::default()
    };
    let mut owners = Owners::default();
    let mut deferred = Vec::new();
    // From the first document that waits for its owner on, findings are
    // held back, so the ones judged late can be put in their place.
    let mut holding = false;
    let mut held: Vec<Located> = Vec::new();
    let mut held_text: Vec<(ObjectKey, String)> = Vec::new();
    in_parallel(
        &chunks,
        |batch| {
            let mut part = Part::default();
            for (file_index, chunk) in batch {
                part.read(inputs, *file_index, chunk, policies, &namespaces);
            }
            part.finish(render);
            part
        },
        |part| {
            report.workloads += part.report.workloads;
            report.tally.merge(part.report.tally);
            report.errors.extend(part.report.errors);
            merge_matched(&mut report.matched, part.report.matched);
            report.notes.extend(part.report.notes);
            owners.0.extend(part.owners);
            holding |= !part.deferred.is_empty();
            deferred.extend(part.deferred);
            match &mut emit {
                Emit::Keep(_) if holding => held.extend(part.report.findings),
                Emit::Keep(each) => each(part.report.findings),
                Emit::Render(..) if holding => {
                    for (key, range) in pieces(&part.text_objects, part.text.len()) {
                        held_text.push((key, part.text[range].to_owned()));
                    }
                }
                Emit::Render(_, write) => write(&part.text),
            }
        },
    );
    // Objects that name a controller are judged through it only when the
    // inputs hold that owner (with the same UID, and for a Pod the same
    // containers); otherwise on their own.
    let mut late = Report::default();
    let mut late_objects: Vec<(ObjectKey, usize)> = Vec::new();
    for (file_index, doc, prefixes) in &deferred {
        let file = &inputs[*file_index].name;
        for prefix in prefixes {
            let Some(object) = doc.value.pointer(prefix) else {
                continue;
            };
            let Ok(Classified::Workload(workload)) = Workload::classify(object) else {
                continue;
            };
            match workload
                .controller
                .as_ref()
                .filter(|c| owners.stands_for(c, &workload))
            {
                Some(owner) => report.notes.push(Problem {
                    file: file.clone(),
                    pos: Some(doc.locate(prefix)),
                    message: format!(
                        "skipped {} {}: it is judged through its controller {owner}",
                        workload.kind.as_str(),
                        workload.name
                    ),
                }),
                None => {
                    late_objects.push(((*file_index, doc.locate(prefix)), late.findings.len()));
                    judge(
                        file,
                        doc,
                        prefix,
                        &workload,
                        policies,
                        &namespaces,
                        &mut late,
                    );
                }
            }
        }
    }
    report.workloads += late.workloads;
    report.tally.add(&late.findings);
    merge_matched(&mut report.matched, std::mem::take(&mut late.matched));
    if !holding {
        return report;
    }
    match emit {
        Emit::Keep(each) => {
            if !late.findings.is_empty() {
                held.extend(late.findings);
                let order: BTreeMap<&str, usize> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, input)| (input.name.as_str(), i))
                    .collect();
                held.sort_by_key(|f| (order.get(f.file.as_str()).copied(), f.pos));
            }
            each(held);
        }
        Emit::Render(render, write) => {
            for (key, range) in pieces(&late_objects, late.findings.len()) {
                if !range.is_empty() {
                    let mut text = String::new();
                    render(&late.findings[range], &mut text);
                    held_text.push((key, text));
                }
            }
            held_text.sort_by_key(|(key, _)| *key);
            for (_, text) in &held_text {
                write(text);
            }
        }
    }
    report
}

/// What one batch of documents found before the owners among all the
/// inputs are known.
#[derive(Debug, Default)]
struct Part {
    report: Report,
    owners: Vec<(OwnerKey, OwnerFacts)>,
    /// Documents with objects that name a controller, judged once the
    /// owners are known: the input, the document, the objects' pointers.
    deferred: Vec<(usize, yaml::Document, Vec<String>)>,
    /// Each object judged, and where its findings start in
    /// `report.findings`.
    objects: Vec<(ObjectKey, usize)>,
    /// When rendering: the findings as text (`report.findings` is then
    /// emptied on the thread that made them), and where each object's
    /// text starts.
    text: String,
    text_objects: Vec<(ObjectKey, usize)>,
}

impl Part {
    fn read(
        &mut self,
        inputs: &[Input],
        file_index: usize,
        chunk: &yaml::Chunk<'_>,
        policies: &[Policy],
        namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    ) {
        let file = &inputs[file_index].name;
        let doc = match chunk.read() {
            None => return,
            Some(Ok(doc)) => doc,
            Some(Err(e)) => {
                self.report.errors.push(Problem {
                    file: file.clone(),
                    pos: Some(e.pos),
                    message: e.message,
                });
                return;
            }
        };
        let mut controlled = Vec::new();
        for (prefix, object) in workload::objects(&doc.value) {
            let Some(workload) = classify(file, &doc, &prefix, object, &mut self.report) else {
                continue;
            };
            self.owners.extend(Owners::entry(&workload, object));
            if workload.controller.is_some() {
                controlled.push(prefix);
            } else {
                self.objects.push((
                    (file_index, doc.locate(&prefix)),
                    self.report.findings.len(),
                ));
                judge(
                    file,
                    &doc,
                    &prefix,
                    &workload,
                    policies,
                    namespaces,
                    &mut self.report,
                );
            }
        }
        if !controlled.is_empty() {
            self.deferred.push((file_index, doc, controlled));
        }
    }

    /// Counts the batch's findings and, when rendering, turns them into
    /// text here, so they are freed on the thread that allocated them.
    fn finish(&mut self, render: Option<&Render>) {
        self.report.tally.add(&self.report.findings);
        let Some(render) = render else {
            return;
        };
        let findings = std::mem::take(&mut self.report.findings);
        for (key, range) in pieces(&self.objects, findings.len()) {
            if !range.is_empty() {
                self.text_objects.push((key, self.text.len()));
                render(&findings[range], &mut self.text);
            }
        }
    }
}

/// Documents per unit of work: small enough to spread a file over the
/// cores, large enough that taking work costs nothing.
const BATCH: usize = 16;

/// `work` over `items` a batch at a time on every core (this thread one of
/// them), handing each batch's result to `consume` on this thread, in
/// order, as soon as it and the ones before it are done. Runs on this
/// thread alone when no other can be started.
fn in_parallel<'a, T: Sync, R: Send>(
    items: &'a [T],
    work: impl Fn(&'a [T]) -> R + Sync,
    mut consume: impl FnMut(R),
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, PoisonError};
    let batches: Vec<&'a [T]> = items.chunks(BATCH).collect();
    let done: Vec<Mutex<Option<R>>> = batches.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let take = |i: usize| {
        done.get(i)
            .and_then(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).take())
    };
    // Works one batch; false once there are none left.
    let step = || {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(batch) = batches.get(i) else {
            return false;
        };
        let result = work(batch);
        *done[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        true
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..cores.min(batches.len()))
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("probity-lint".to_owned())
                    .spawn_scoped(s, move || while step() {})
                    .ok()
            })
            .collect();
        let mut handed = 0;
        loop {
            let more = step();
            while let Some(result) = take(handed) {
                consume(result);
                handed += 1;
            }
            if !more {
                break;
            }
        }
        for helper in helpers {
            if let Err(panic) = helper.join() {
                std::panic::resume_unwind(panic);
            }
        }
        while let Some(result) = take(handed) {
            consume(result);
            handed += 1;
        }
    });
}

/// The workloads among the inputs that can own others, by kind, namespace
/// and name: their UID when the manifest has one, and the fingerprint of
/// their pod template's containers (`Workload::fingerprint`).
#[derive(Debug, Default)]
struct Owners(BTreeMap<OwnerKey, OwnerFacts>);

/// Kind, namespace (empty when the manifest sets none) and name.
type OwnerKey = (&'static str, String, String);

/// An owner's UID and its pod template's fingerprint.
type OwnerFacts = (Option<String>, Option<u64>);

impl Owners {
    fn key(kind: &str, namespace: Option<&String>, name: &str) -> Option<OwnerKey> {
        let kind = crate::policy::WorkloadKind::from_kind(kind)?.as_str();
        Some((
            kind,
            namespace.cloned().unwrap_or_default(),
            name.to_owned(),
        ))
    }

    /// The key and facts `workload` (`object`) records, unless it is a
    /// Pod, which owns nothing.
    fn entry(workload: &Workload, object: &Value) -> Option<(OwnerKey, OwnerFacts)> {
        if workload.kind == crate::policy::WorkloadKind::Pod {
            return None;
        }
        let key = Self::key(
            workload.kind.as_str(),
            workload.namespace.as_ref(),
            &workload.name,
        )?;
        let uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some((key, (uid, workload.fingerprint())))
    }

    /// Whether `owner`, named by `workload`, is among the inputs and may
    /// stand for it.
    fn stands_for(&self, owner: &crate::policy::Controller, workload: &Workload) -> bool {
        let Some(key) = Self::key(&owner.kind, workload.namespace.as_ref(), &owner.name) else {
            return false;
        };
        let Some((uid, template)) = self.0.get(&key) else {
            return false;
        };
        if uid.as_ref().is_some_and(|uid| *uid != owner.uid) {
            return false;
        }
        workload.kind != crate::policy::WorkloadKind::Pod
            || template.is_some() && *template == workload.fingerprint()
    }
}

/// The workload `object` is, or `None` after noting why it is skipped.
fn classify(
    file: &str,
    doc: &yaml::Document,
    prefix: &str,
    object: &Value,
    report: &mut Report,
) -> Option<Box<Workload>> {
    let at = |pointer: &str| Some(doc.locate(&format!("{prefix}{pointer}")));
    match Workload::classify(object) {
        Ok(Classified::Workload(w)) => Some(w),
        Ok(Classified::OtherKind(_)) => None,
        Ok(Classified::NotKubernetes) => {
            report.notes.push(Problem {
                file: file.to_owned(),
                pos: at(""),
                message:
                    "skipped a document that is not a Kubernetes object (no apiVersion and kind)"
                        .to_owned(),
            });
            None
        }
        Err(e) => {
            report.errors.push(Problem {
                file: file.to_owned(),
                pos: at(&e.path),
                message: format!("{e}"),
            });
            None
        }
    }
}

/// Evaluates every policy that applies to `workload` and records the
/// findings at their place in `doc`.
fn judge(
    file: &str,
    doc: &yaml::Document,
    prefix: &str,
    workload: &Workload,
    policies: &[Policy],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    report: &mut Report,
) {
    report.workloads += 1;
    let object_ref = ObjectRef {
        kind: workload.kind.as_str(),
        name: workload.name.clone(),
        namespace: workload.namespace.clone(),
    };
    let mut found: Vec<Located> = Vec::new();
    for policy in policies
        .iter()
        .filter(|p| p.applies_to(workload, namespaces))
    {
        count_matched(&mut report.matched, &policy.name, &workload.namespace);
        for finding in evaluate(&policy.spec, workload) {
            let duplicate = found.iter().any(|f| {
                f.finding.rule.id == finding.rule.id && f.finding.pointer == finding.pointer
            });
            if duplicate {
                continue;
            }
            found.push(Located {
                file: file.to_owned(),
                pos: doc.locate(&format!("{prefix}{}", finding.pointer)),
                object: object_ref.clone(),
                policy: policy.name.clone(),
                finding,
            });
        }
    }
    found.sort_by(|a, b| (a.pos, a.finding.rule.id).cmp(&(b.pos, b.finding.rule.id)));
    report.findings.extend(found);
}

/// Counts a workload `policy` matched in `namespace`, allocating only for
/// the first of each (this runs once per judged workload and policy).
fn count_matched(
    matched: &mut BTreeMap<String, BTreeMap<Option<String>, usize>>,
    policy: &str,
    namespace: &Option<String>,
) {
    let by_ns = match matched.get_mut(policy) {
        Some(by_ns) => by_ns,
        None => matched.entry(policy.to_owned()).or_default(),
    };
    match by_ns.get_mut(namespace) {
        Some(n) => *n += 1,
        None => {
            by_ns.insert(namespace.clone(), 1);
        }
    }
}

fn merge_matched(
    into: &mut BTreeMap<String, BTreeMap<Option<String>, usize>>,
    from: BTreeMap<String, BTreeMap<Option<String>, usize>>,
) {
    for (policy, by_ns) in from {
        let target = into.entry(policy).or_default();
        for (ns, n) in by_ns {
            *target.entry(ns).or_default() += n;
        }
    }
}

/// Labels of the Namespace objects among the inputs (the last one of a
/// name wins).
fn namespace_labels(
    chunks: &[(usize, yaml::Chunk<'_>)],
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut all = BTreeMap::new();
    in_parallel(
        chunks,
        |batch| {
            let mut out = Vec::new();
            for doc in batch.iter().filter_map(|(_, c)| c.read()?.ok()) {
                for (_, object) in workload::objects(&doc.value) {
                    if object.get("kind").and_then(Value::as_str) != Some("Namespace") {
                        continue;
                    }
                    let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str)
                    else {
                        continue;
                    };
                    let mut labels: BTreeMap<String, String> = object
                        .pointer("/metadata/labels")
                        .and_then(Value::as_object)
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                                .collect()
                        })
                        .unwrap_or_default();
                    labels.insert("kubernetes.io/metadata.name".to_owned(), name.to_owned());
                    out.push((name.to_owned(), labels));
                }
            }
            out
        },
        |found| all.extend(found),
    );
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Report {
        let inputs = [Input {
            name: "m.yaml".to_owned(),
            text: text.to_owned(),
            path: None,
        }];
        lint(&inputs, &[Policy::builtin()])
    }

    const RS: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-5d8f, uid: rs-1}
spec:
  template:
    spec:
      containers: [{name: app, image: \"nginx:latest\"}]
";

    fn pod(owner_kind: &str, owner_api: &str, uid: &str, image: &str) -> String {
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f-x
  ownerReferences: [{{apiVersion: {owner_api}, kind: {owner_kind}, name: web-5d8f, uid: {uid}, controller: true}}]
spec:
  containers: [{{name: app, image: \"{image}\"}}]
"
        )
    }

    fn judged_pods(report: &Report) -> usize {
        report
            .findings
            .iter()
            .filter(|f| f.object.kind == "Pod")
            .count()
    }

    #[test]
    fn a_pod_is_judged_through_its_owner_only_when_the_inputs_hold_it() {
        let with_owner = run(&format!(
            "{RS}---\n{}",
            pod("ReplicaSet", "apps/v1", "rs-1", "nginx:latest")
        ));
        assert_eq!(judged_pods(&with_owner), 0, "{:?}", with_owner.findings);
        assert!(
            with_owner.notes.iter().any(|n| n
                .message
                .contains("judged through its controller ReplicaSet/web-5d8f")),
            "{:?}",
            with_owner.notes
        );
        assert!(
            with_owner
                .findings
                .iter()
                .any(|f| f.object.kind == "ReplicaSet")
        );

        let alone = run(&pod("ReplicaSet", "apps/v1", "rs-1", "nginx:latest"));
        assert!(
            judged_pods(&alone) > 0,
            "no owner in the inputs: judged as a Pod"
        );

        let other_uid = run(&format!(
            "{RS}---\n{}",
            pod("ReplicaSet", "apps/v1", "rs-2", "nginx:latest")
        ));
        assert!(
            judged_pods(&other_uid) > 0,
            "an owner with another UID is not this one"
        );

        let other_image = run(&format!(
            "{RS}---\n{}",
            pod("ReplicaSet", "apps/v1", "rs-1", "evil:latest")
        ));
        assert!(
            judged_pods(&other_image) > 0,
            "containers that are not the template's are judged on their own"
        );

        let fake_kind = run(&format!(
            "{RS}---\n{}",
            pod("ConfigMap", "v1", "rs-1", "nginx:latest")
        ));
        assert!(judged_pods(&fake_kind) > 0, "a ConfigMap creates no Pods");
    }

    #[test]
    fn replication_controllers_stand_for_their_pods() {
        let rc = "apiVersion: v1
kind: ReplicationController
metadata: {name: web-5d8f, uid: rs-1}
spec:
  template:
    spec:
      containers: [{name: app, image: \"nginx:latest\"}]
";
        let report = run(&format!(
            "{rc}---\n{}",
            pod("ReplicationController", "v1", "rs-1", "nginx:latest")
        ));
        assert_eq!(judged_pods(&report), 0, "{:?}", report.findings);
    }

    /// Text written as it is found is the text of the kept report, also
    /// when a List holds an object judged late before one judged at once.
    #[test]
    fn rendered_output_follows_the_kept_order() {
        let owned = pod("ReplicaSet", "apps/v1", "gone", "nginx:latest");
        let owned: Value = serde_json::from_str(
            &serde_json::to_string(
                &yaml::read_stream(&owned)
                    .next()
                    .expect("doc")
                    .expect("pod")
                    .value,
            )
            .expect("json"),
        )
        .expect("value");
        let list = serde_json::json!({
            "apiVersion": "v1", "kind": "List",
            "items": [owned, serde_json::from_str::<Value>(
                r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                    "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:latest"}]}}}}"#,
            ).expect("deployment")],
        });
        let text = format!(
            "{RS}---\n{}\n---\n{}",
            serde_json::to_string_pretty(&list).expect("list"),
            pod("ReplicaSet", "apps/v1", "rs-1", "other:latest")
        );
        let inputs = [Input {
            name: "m.yaml".to_owned(),
            text,
            path: None,
        }];
        let policies = [Policy::builtin()];
        let kept = lint(&inputs, &policies);
        let mut expected = String::new();
        report::render_text(&kept.findings, &mut expected);
        let mut written = String::new();
        let streamed = lint_rendered(&inputs, &policies, &report::render_text, &mut |t| {
            written.push_str(t)
        });
        assert!(judged_pods(&kept) > 0, "{:?}", kept.findings);
        assert_eq!(written, expected);
        assert_eq!(streamed.tally, kept.tally);
        assert_eq!(streamed.workloads, kept.workloads);
    }

    #[test]
    fn findings_stay_in_file_order_when_owned_objects_are_judged_late() {
        let text = format!(
            "{}---\n{}",
            pod("ReplicaSet", "apps/v1", "rs-1", "nginx:latest"),
            RS.replace("web-5d8f", "other")
        );
        let report = run(&text);
        let lines: Vec<usize> = report.findings.iter().map(|f| f.pos.line).collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted);
        assert_eq!(report.findings.first().map(|f| f.object.kind), Some("Pod"));
    }
}

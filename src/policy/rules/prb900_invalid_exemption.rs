use std::collections::BTreeMap;

use super::{Finding, find, rule};

rule! {
    /// ## What it does
    /// Checks `probity.dev/exempt` annotations, on the workload or its pod
    /// template: `"PRB104,PRB107: reason"`, with clauses separated by `;`.
    /// Flags an exemption without a reason, one naming an unknown rule, and
    /// one naming a rule the policy does not let annotations exempt
    /// (`spec.exemptions.allowedRules`; by default the probe rules only).
    /// A flagged clause exempts nothing.
    ///
    /// ## Why it matters
    /// An exemption is a decision someone will have to revisit. Without the
    /// reason, nobody can tell whether it still holds; a misspelt rule id
    /// silently exempts nothing.
    ///
    /// ## Example
    /// ```yaml
    /// metadata:
    ///   annotations:
    ///     probity.dev/exempt: "PRB104"
    /// ```
    ///
    /// ## Fix
    /// Say why: `probity.dev/exempt: "PRB104: the sidecar has one endpoint; tracked in OPS-123"`.
    id: "PRB900",
    name: "invalid-exemption",
    help: "write probity.dev/exempt: \"PRB104,PRB107: why this workload is exempt\"",
}

/// Parses every exemption annotation, reporting bad ones into `out`, and
/// returns the rule ids exempted with their reasons. `allows` says which
/// rule ids the policy lets an annotation exempt.
pub(super) fn parse_all(
    annotations: &[(String, String)],
    allows: &dyn Fn(&str) -> bool,
    out: &mut Vec<Finding>,
) -> BTreeMap<&'static str, String> {
    let mut exempt = BTreeMap::new();
    for (pointer, value) in annotations {
        for clause in value.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            let (ids, reason) = clause.split_once(':').unwrap_or((clause, ""));
            let reason = reason.trim();
            let mut problem = None;
            let mut rules = Vec::new();
            for id in ids.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                match find(id) {
                    Some(rule) if rule.id != META.id && allows(rule.id) => rules.push(rule.id),
                    Some(rule) if rule.id != META.id => {
                        problem.get_or_insert(format!(
                            "this policy does not let an annotation exempt {} [{}] \
                             (spec.exemptions.allowedRules)",
                            rule.id, rule.name
                        ));
                    }
                    _ => {
                        problem.get_or_insert(format!("exemption names unknown rule {id:?}"));
                    }
                }
            }
            if reason.is_empty() {
                problem = Some(format!("exemption {clause:?} gives no reason"));
            }
            match problem {
                Some(message) => out.push(Finding {
                    rule: &META,
                    container: None,
                    message,
                    pointer: pointer.clone(),
                    exempt: None,
                    severity: crate::policy::spec::Severity::Error,
                }),
                None => {
                    for id in rules {
                        exempt.insert(id, reason.to_owned());
                    }
                }
            }
        }
    }
    exempt
}

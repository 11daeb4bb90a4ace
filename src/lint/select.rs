//! `--select` and `--ignore`: which rules a lint run evaluates, in ruff's
//! vocabulary. A selector is `ALL`, a rule id (`PRB104`), a prefix of ids
//! (`PRB1`: every probe rule) or a rule name (`image-latest-tag`), in any
//! case. Each rule follows the most specific selector that names it; on a
//! tie `--ignore` wins. Without `--select` every rule is selected.

use crate::policy::rules::{self, RuleMeta};
use crate::policy::spec::Severity;

use super::policies::Policy;

/// A selector that names no rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {selector:?} names no rule (`probity lint --explain all` lists them)")]
pub struct UnknownSelector {
    /// `--select` or `--ignore`.
    pub flag: &'static str,
    /// The selector as given.
    pub selector: String,
}

/// How specifically `selector` names `rule`: `None` when it does not;
/// otherwise longer is more specific (`ALL` 0, a prefix its length, an id
/// or a name above any prefix).
fn specificity(selector: &str, rule: &RuleMeta) -> Option<usize> {
    if selector.eq_ignore_ascii_case("ALL") {
        return Some(0);
    }
    if selector.eq_ignore_ascii_case(rule.id) || selector.eq_ignore_ascii_case(rule.name) {
        return Some(usize::MAX);
    }
    let prefix = rule
        .id
        .get(..selector.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(selector));
    prefix.then_some(selector.len())
}

fn most_specific(selectors: &[String], rule: &RuleMeta) -> Option<usize> {
    selectors.iter().filter_map(|s| specificity(s, rule)).max()
}

/// The rules `select` and `ignore` leave out.
///
/// # Errors
///
/// When a selector names no rule: a typo must not silently select nothing.
pub fn deselected(
    select: &[String],
    ignore: &[String],
) -> Result<Vec<&'static RuleMeta>, UnknownSelector> {
    for (flag, list) in [("--select", select), ("--ignore", ignore)] {
        if let Some(unknown) = list
            .iter()
            .find(|s| s.is_empty() || !rules::ALL.iter().any(|r| specificity(s, r).is_some()))
        {
            return Err(UnknownSelector {
                flag,
                selector: unknown.clone(),
            });
        }
    }
    Ok(rules::ALL
        .into_iter()
        .filter(|rule| {
            let selected = if select.is_empty() {
                Some(0)
            } else {
                most_specific(select, rule)
            };
            match (selected, most_specific(ignore, rule)) {
                (None, _) => true,
                (Some(s), Some(i)) => i >= s,
                (Some(_), None) => false,
            }
        })
        .collect())
}

/// Turns the `deselected` rules off in every policy.
pub fn apply(policies: &mut [Policy], deselected: &[&RuleMeta]) {
    for policy in policies {
        for rule in deselected {
            policy
                .spec
                .severity
                .insert(rule.id.to_owned(), Severity::Off);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(select: &[&str], ignore: &[&str]) -> Vec<&'static str> {
        let owned = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        deselected(&owned(select), &owned(ignore))
            .expect("known selectors")
            .iter()
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn the_most_specific_selector_wins() {
        assert!(off(&[], &[]).is_empty());
        assert_eq!(
            off(&["PRB00"], &[]).len(),
            rules::ALL.len() - 4,
            "the image rules only"
        );
        assert_eq!(off(&[], &["prb1"]).len(), 9, "every probe rule, any case");
        // --select PRB1 --ignore PRB108: the id is more specific.
        let probe_rules_but_one = off(&["PRB1"], &["PRB108"]);
        assert!(probe_rules_but_one.contains(&"PRB108"));
        assert!(!probe_rules_but_one.contains(&"PRB101"));
        // --select PRB108 --ignore PRB1: the id still wins.
        assert!(!off(&["PRB108"], &["PRB1"]).contains(&"PRB108"));
        assert!(off(&["PRB108"], &["PRB1"]).contains(&"PRB101"));
        // Names work like ids; a tie goes to --ignore.
        assert_eq!(off(&["ALL"], &["image-latest-tag"]), ["PRB001"]);
        assert_eq!(off(&["PRB001"], &["PRB001"]).len(), rules::ALL.len());
    }

    #[test]
    fn a_selector_naming_nothing_is_an_error() {
        let err = deselected(&["PRB9999".to_owned()], &[]).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "--select \"PRB9999\" names no rule (`probity lint --explain all` lists them)"
        );
        assert!(deselected(&[], &["latest".to_owned()]).is_err());
        assert!(deselected(&[String::new()], &[]).is_err());
    }
}

//! Kubernetes label selectors (`matchLabels` + `matchExpressions`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector the API server would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector: {0}")]
pub struct InvalidSelector(String);

/// Checks operators and values as the API server does.
///
/// # Errors
///
/// Names the offending expression.
pub fn validate(selector: &LabelSelector) -> Result<(), InvalidSelector> {
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(InvalidSelector(format!(
                    "{} {} needs at least one value",
                    expr.key, expr.operator
                )));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(InvalidSelector(format!(
                    "{} {} takes no values",
                    expr.key, expr.operator
                )));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(InvalidSelector(format!(
                    "unknown operator {other:?} for key {} (In, NotIn, Exists, DoesNotExist)",
                    expr.key
                )));
            }
        }
    }
    Ok(())
}

/// Whether `labels` satisfy `selector`. An empty selector matches
/// everything; an invalid one (see [`validate`]) matches nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if validate(selector).is_err() {
        return false;
    }
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    exact
        && selector.match_expressions.iter().flatten().all(|expr| {
            let values = expr.values.as_deref().unwrap_or_default();
            let value = labels.get(&expr.key);
            match expr.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: op.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["front", "edge"]),
                expr("legacy", "DoesNotExist", &[]),
                expr("env", "NotIn", &["dev"]),
            ]),
        };
        assert!(matches(&sel, &labels(&[("app", "web"), ("tier", "edge")])));
        assert!(!matches(&sel, &labels(&[("app", "web"), ("tier", "back")])));
        assert!(!matches(&sel, &labels(&[("app", "api"), ("tier", "edge")])));
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "edge"), ("legacy", "")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "edge"), ("env", "dev")])
        ));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn invalid_selectors_are_named_and_match_nothing() {
        let sel = LabelSelector {
            match_expressions: Some(vec![expr("app", "Equals", &["x"])]),
            ..LabelSelector::default()
        };
        let err = validate(&sel).expect_err("bad operator");
        assert!(
            err.to_string().contains("unknown operator \"Equals\""),
            "{err}"
        );
        assert!(!matches(&sel, &labels(&[("app", "x")])));
        let empty_in = LabelSelector {
            match_expressions: Some(vec![expr("app", "In", &[])]),
            ..LabelSelector::default()
        };
        assert!(validate(&empty_in).is_err());
    }
}

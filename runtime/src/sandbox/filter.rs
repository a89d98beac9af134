//! ListPodSandbox filters: id (exact or unique prefix), state, label selector.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use super::record::{SandboxRecord, SandboxState};

/// A ListPodSandbox filter; every field set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A full id or a prefix matching exactly one pod.
    pub id: Option<String>,
    pub state: Option<SandboxState>,
    /// Every key must be present with this value.
    pub labels: BTreeMap<String, String>,
}

/// Whether `labels` has every key of `selector` with the same value.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The records `filter` keeps, in the given order (records or shared ones).
pub fn apply<R: Borrow<SandboxRecord>>(filter: &Filter, records: Vec<R>) -> Vec<R> {
    let id = match &filter.id {
        Some(wanted) => {
            let ids = records.iter().map(|r| r.borrow().id.as_str());
            // A filter selects rather than looks up: an id naming no pod, or several,
            // selects none instead of failing the whole list.
            match crate::ids::resolve("filter.id", wanted, ids) {
                Ok(Some(id)) => Some(id),
                Ok(None) | Err(_) => return Vec::new(),
            }
        }
        None => None,
    };
    records
        .into_iter()
        .filter(|r| {
            let r = r.borrow();
            r.state != SandboxState::Creating
                && id.as_ref().is_none_or(|id| &r.id == id)
                && filter.state.is_none_or(|s| r.state == s)
                && labels_match(&filter.labels, &r.labels)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, state: SandboxState, labels: &[(&str, &str)]) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            state,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn label_selector() {
        let labels: BTreeMap<_, _> =
            [("app", "web"), ("tier", "fe")].map(|(k, v)| (k.into(), v.into())).into();
        let sel = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(labels_match(&sel(&[]), &labels));
        assert!(labels_match(&sel(&[("app", "web")]), &labels));
        assert!(labels_match(&sel(&[("app", "web"), ("tier", "fe")]), &labels));
        assert!(!labels_match(&sel(&[("app", "db")]), &labels));
        assert!(!labels_match(&sel(&[("zone", "a")]), &labels));
    }

    #[test]
    fn filters_combine_and_hide_pods_being_created() {
        let all = || {
            vec![
                rec("aaa1", SandboxState::Ready, &[("app", "web")]),
                rec("aaa2", SandboxState::NotReady, &[("app", "web")]),
                rec("bbb1", SandboxState::Ready, &[("app", "db")]),
                rec("ccc1", SandboxState::Creating, &[("app", "web")]),
            ]
        };
        let ids = |f: Filter| apply(&f, all()).into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(Filter::default()), ["aaa1", "aaa2", "bbb1"]);
        assert_eq!(ids(Filter { id: Some("bbb".into()), ..Default::default() }), ["bbb1"]);
        assert!(ids(Filter { id: Some("aaa".into()), ..Default::default() }).is_empty());
        assert_eq!(
            ids(Filter { state: Some(SandboxState::Ready), ..Default::default() }),
            ["aaa1", "bbb1"]
        );
        let web: BTreeMap<_, _> = [("app".to_string(), "web".to_string())].into();
        assert_eq!(ids(Filter { labels: web.clone(), ..Default::default() }), ["aaa1", "aaa2"]);
        assert_eq!(
            ids(Filter { labels: web, state: Some(SandboxState::NotReady), id: None }),
            ["aaa2"]
        );
    }
}

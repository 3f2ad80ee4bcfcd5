//! Routing derived from the downstream vmagents' stream aggregation rules
//! (route key `stream_aggr_file`).
//!
//! A vmagent aggregates exactly only if it sees every series of each output
//! group. So the router needs a routing key that is constant on every group
//! of every rule: two series one rule puts in one group must get one task.
//!
//! How: rules that can select the same series (their selectors are not
//! provably disjoint, see [`selectors_disjoint`]) are joined, transitively,
//! into components. A component's routing labels are those every one of its
//! rules keeps in its group key: the intersection of its `by` lists
//! (`__name__` included, as vmagent adds it) minus every label its `without`
//! rules list. A series is routed by the component of the first rule that
//! selects it: every rule that selects it is in that component, so two
//! series of any rule's group agree on all those labels and get one task.
//! Rules without `by` and `without` (one group per series) constrain
//! nothing and are skipped. A series no rule selects is routed as without
//! the file (`task_labels`, `task_labels_without` or all labels). The task
//! label itself is never hashed, so `by: [job, stream_task_id]` works;
//! empty values count as absent, as in PromQL.
//!
//! When a component's rules share no label, its routing key is empty and
//! every series it selects hashes to one task: correct aggregates, no
//! spread. [`Aggregation::report`] says so at start-up (and when only
//! `__name__` is shared); such series are also counted at run time.

pub mod rules;
pub mod selector;
mod selector_parser;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use rules::{AggrRule, Grouping, LoadError};
use selector::Selector;

use super::task_id::{labels_hash_iter, task_id, TaskIdConfig};
use crate::relabel::LabelPair;

/// Why a route's `stream_aggr_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AggregationError {
    /// The file cannot be read or its rules do not compile.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A rule matches on the task label.
    #[error("stream aggregation file {}: {source}", path.display())]
    TaskLabel {
        /// The file.
        path: PathBuf,
        /// The rule.
        source: TaskLabelMatch,
    },
}

/// A rule's `match` selects on the task label, which the router computes
/// from that very match.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rule {rule}: match selects on {task_label:?}, the task label the router computes from this match")]
pub struct TaskLabelMatch {
    /// The rule, `#2 (name)` or `#2`.
    pub rule: String,
    /// The route's task label name.
    pub task_label: String,
}

/// The compiled rules of one route's `stream_aggr_file`.
#[derive(Debug, Clone)]
pub struct Aggregation {
    rules: Vec<AggrRule>,
    /// Per rule: its component, or None for per-series rules.
    component_of: Vec<Option<usize>>,
    components: Vec<Component>,
    task_label: String,
}

/// Rules joined because they can select the same series, and the labels
/// all of them keep.
#[derive(Debug, Clone)]
pub struct Component {
    /// Rule indexes, in file order.
    pub rules: Vec<usize>,
    /// Intersection of the `by` lists (sorted), None when no rule has one.
    by: Option<Vec<String>>,
    /// Union of the `without` lists (sorted).
    without: Vec<String>,
}

impl Component {
    /// Whether label `name` is part of the routing key.
    pub fn keeps(&self, name: &str) -> bool {
        let listed = |l: &Vec<String>| l.binary_search_by(|k| k.as_str().cmp(name)).is_ok();
        self.by.as_ref().map_or(true, listed) && !listed(&self.without)
    }

    /// The routing key, e.g. `[__name__, job]` or `every label but [instance]`.
    pub fn describe(&self, task_label: &str) -> String {
        match &self.by {
            Some(by) => {
                let kept: Vec<&str> = by
                    .iter()
                    .map(String::as_str)
                    .filter(|l| self.keeps(l) && *l != task_label)
                    .collect();
                format!("[{}]", kept.join(", "))
            }
            None => format!("every label but [{}]", self.without.join(", ")),
        }
    }
}

/// How a series was routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// No grouping rule selected it: the route's own task labels decided.
    Unmatched,
    /// By its component's routing labels.
    Grouped,
    /// Its component's rules share no label the series has: hashed over the
    /// empty set, so every such series gets one task.
    Conflict,
}

/// One start-up finding of [`Aggregation::report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Routing cannot spread or cannot see something: log it as a warning.
    pub warning: bool,
    /// One sentence.
    pub text: String,
}

/// What [`Aggregation::explain`] found for one series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explain {
    /// Indexes of the rules that select the series.
    pub matched: Vec<usize>,
    /// The component routing it, when a grouping rule selected it.
    pub component: Option<usize>,
    /// The labels hashed into the task id (names), when routed by a component.
    pub routing_labels: Option<Vec<String>>,
}

impl Aggregation {
    /// Loads `path`; `task_label` is the route's task label name.
    pub fn load(path: &Path, task_label: &str) -> Result<Aggregation, AggregationError> {
        let rules = rules::load(path)?;
        Aggregation::new(rules, task_label).map_err(|source| AggregationError::TaskLabel {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Builds the components. Refuses a `match` on the task label, which
    /// the router computes from the match itself.
    pub fn new(rules: Vec<AggrRule>, task_label: &str) -> Result<Aggregation, TaskLabelMatch> {
        for rule in &rules {
            let on_task = rule
                .selectors
                .iter()
                .flat_map(|s| s.groups.iter().flatten())
                .any(|m| m.name == task_label);
            if on_task {
                return Err(TaskLabelMatch {
                    rule: rule.label(),
                    task_label: task_label.to_owned(),
                });
            }
        }
        let (component_of, components) = components(&rules);
        Ok(Aggregation {
            rules,
            component_of,
            components,
            task_label: task_label.to_owned(),
        })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[AggrRule] {
        &self.rules
    }

    /// The components of rules that can select the same series.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// The task of a series (`labels` sorted, relabeled, before the task
    /// label is stamped), and how it was decided. Allocates nothing; stops
    /// at the first grouping rule that selects the series.
    pub fn task_id<L: LabelPair>(&self, labels: &[L], fallback: &TaskIdConfig) -> (u32, Routed) {
        if fallback.task_count == 0 {
            return (0, Routed::Unmatched);
        }
        let Some(component) = self.component(labels) else {
            return (task_id(labels, fallback), Routed::Unmatched);
        };
        let mut kept = 0usize;
        let selected = self
            .routing_labels(labels, component)
            .inspect(|_| kept += 1);
        let hash = labels_hash_iter(selected);
        let routed = if kept == 0 && self.components[component].rules.len() > 1 {
            Routed::Conflict
        } else {
            Routed::Grouped
        };
        // Lossless: the remainder is below task_count, a u32.
        ((hash % u64::from(fallback.task_count)) as u32, routed)
    }

    /// The matched rules and routing labels of a series, for the relabel
    /// command and tests.
    pub fn explain<L: LabelPair>(&self, labels: &[L]) -> Explain {
        let matched: Vec<usize> = (0..self.rules.len())
            .filter(|&i| self.rules[i].matches(labels))
            .collect();
        let component = self.component(labels);
        Explain {
            matched,
            component,
            routing_labels: component.map(|c| {
                self.routing_labels(labels, c)
                    .map(|(n, _)| n.to_owned())
                    .collect()
            }),
        }
    }

    /// The component of the first grouping rule that selects the series.
    fn component<L: LabelPair>(&self, labels: &[L]) -> Option<usize> {
        self.rules
            .iter()
            .zip(&self.component_of)
            .find_map(|(rule, c)| c.filter(|_| rule.matches(labels)))
    }

    /// The labels the component keeps, in name order.
    fn routing_labels<'a, L: LabelPair>(
        &'a self,
        labels: &'a [L],
        component: usize,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let component = &self.components[component];
        labels
            .iter()
            .map(|l| (l.name(), l.value()))
            .filter(move |(name, value)| {
                !value.is_empty() && *name != self.task_label && component.keeps(name)
            })
    }

    /// Start-up findings, one sentence each: every component of two or more
    /// rules with its routing key, flagged when that key is empty (all its
    /// series on one task) or only `__name__`; and rules with
    /// `input_relabel_configs`, which routing does not apply.
    pub fn report(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        for rule in &self.rules {
            if rule.input_relabeling {
                out.push(Finding { warning: true, text: format!(
                    "rule {} has input_relabel_configs: routing uses the labels before them, so a rewrite of a grouping label there can split its groups over vmagents",
                    rule.label()
                )});
            }
        }
        for c in &self.components {
            if c.rules.len() < 2 {
                continue;
            }
            let names: Vec<String> = c
                .rules
                .iter()
                .map(|&i| {
                    format!(
                        "{} ({})",
                        self.rules[i].label(),
                        self.rules[i].grouping.describe()
                    )
                })
                .collect();
            let key = c.describe(&self.task_label);
            let head = format!(
                "rules {} can select the same series, so they are routed together by {key}",
                names.join(", ")
            );
            let verdict = match key.as_str() {
                "[]" => ": their grouping keys share no label, so every series they select goes to one task (correct aggregates, no spread)",
                "[__name__]" => ": they share only __name__, so every series of one metric goes to one task",
                _ => "",
            };
            out.push(Finding {
                warning: !verdict.is_empty(),
                text: format!("{head}{verdict}"),
            });
        }
        out
    }
}

/// Joins grouping rules that can select the same series (union-find over
/// pairs whose selectors are not provably disjoint).
fn components(rules: &[AggrRule]) -> (Vec<Option<usize>>, Vec<Component>) {
    let grouping: Vec<usize> = (0..rules.len())
        .filter(|&i| rules[i].grouping != Grouping::Series)
        .collect();
    let mut parent: Vec<usize> = (0..rules.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (n, &a) in grouping.iter().enumerate() {
        for &b in &grouping[n + 1..] {
            if !selectors_disjoint(&rules[a].selectors, &rules[b].selectors) {
                let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                parent[ra.max(rb)] = ra.min(rb);
            }
        }
    }
    let mut component_of = vec![None; rules.len()];
    let mut components: Vec<Component> = Vec::new();
    let mut by_root: Vec<Option<usize>> = vec![None; rules.len()];
    for &i in &grouping {
        let r = root(&mut parent, i);
        let c = *by_root[r].get_or_insert_with(|| {
            components.push(Component {
                rules: Vec::new(),
                by: None,
                without: Vec::new(),
            });
            components.len() - 1
        });
        component_of[i] = Some(c);
        let comp = &mut components[c];
        comp.rules.push(i);
        match &rules[i].grouping {
            Grouping::By(by) => {
                comp.by = Some(match comp.by.take() {
                    None => by.clone(),
                    Some(prev) => prev.into_iter().filter(|l| by.contains(l)).collect(),
                })
            }
            Grouping::Without(without) => {
                comp.without.extend(without.iter().cloned());
                comp.without.sort();
                comp.without.dedup();
            }
            Grouping::Series => {}
        }
    }
    (component_of, components)
}

/// Whether no series can match both lists (an empty list matches all).
/// Decided simply and soundly: two selectors are disjoint when one requires
/// `label="v"` and the other has a matcher on that label that `v` fails
/// (different metric names, say). Anything else counts as overlapping.
pub fn selectors_disjoint(a: &[Selector], b: &[Selector]) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    a.iter().all(|sa| {
        b.iter().all(|sb| {
            sa.groups.iter().all(|ga| {
                sb.groups
                    .iter()
                    .all(|gb| groups_disjoint(ga, gb) || groups_disjoint(gb, ga))
            })
        })
    })
}

/// One side requires `label="v"` and the other has a matcher on `label`
/// that `v` fails.
fn groups_disjoint(a: &[selector::Matcher], b: &[selector::Matcher]) -> bool {
    a.iter().any(|ma| {
        ma.equal_value()
            .is_some_and(|v| b.iter().any(|mb| mb.name == ma.name && !mb.matches(v)))
    })
}

//! Selector parsing and matching (PromQL semantics), rule parsing (vmagent's
//! grouping), and routing by the intersection of grouping keys.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::rules::{parse, Grouping};
use super::selector::Selector;
use super::*;
use crate::router::task_id::{labels_hash, TaskIdConfig};

fn ls(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn matches(text: &str, labels: &[(&str, &str)]) -> bool {
    sel(text).matches(&ls(labels))
}

#[test]
fn metric_name_and_braces_forms() {
    let up = [("__name__", "up"), ("job", "api")];
    assert!(matches("up", &up));
    assert!(!matches("down", &up));
    assert!(matches("up{}", &up));
    assert!(matches(r#"up{job="api"}"#, &up));
    assert!(matches(r#" up { job = "api" , } "#, &up));
    assert!(!matches(r#"up{job="web"}"#, &up));
    assert!(matches(r#"{__name__="up"}"#, &up));
    assert!(matches(r#"{__name__=~"a|up"}"#, &up));
    assert!(matches(r#"{__name__=~"a|b"}"#, &[("__name__", "a")]));
    assert!(matches(r#"{__name__=~"a|b"}"#, &[("__name__", "b")]));
    assert!(!matches(r#"{__name__=~"a|b"}"#, &[("__name__", "ab")]));
    assert!(matches("ns:rule:rate5m", &[("__name__", "ns:rule:rate5m")]));
    assert!(matches("{}", &up), "an empty selector selects everything");
}

#[test]
fn negative_matchers_and_absent_labels() {
    let s = [("__name__", "up"), ("job", "api")];
    assert!(matches(r#"up{job!="web"}"#, &s));
    assert!(!matches(r#"up{job!="api"}"#, &s));
    assert!(matches(r#"up{job!~"w.*"}"#, &s));
    assert!(!matches(r#"up{job!~"a.*"}"#, &s));
    // An absent label has the value "" (PromQL).
    assert!(matches(r#"up{env=""}"#, &s));
    assert!(matches(r#"up{env!~".+"}"#, &s));
    assert!(!matches(r#"up{env=~".+"}"#, &s));
    assert!(matches(r#"up{env!="prod"}"#, &s));
    assert!(!matches(r#"up{job=""}"#, &s));
}

#[test]
fn regexes_are_fully_anchored_go_syntax() {
    let s = [("__name__", "http_requests_total")];
    assert!(!matches(r#"{__name__=~"http"}"#, &s), "no substring match");
    assert!(matches(r#"{__name__=~"http.*"}"#, &s));
    assert!(!matches(r#"{__name__=~"requests"}"#, &s));
    assert!(matches(r#"{__name__=~"^http_requests_total$"}"#, &s));
    // Go's \d is ASCII-only, and (?s) lets . match a newline, as Prometheus does.
    assert!(!matches(r#"{v=~"\\d"}"#, &[("v", "٣")]));
    assert!(matches(r#"{v=~"a.b"}"#, &[("v", "a\nb")]));
}

#[test]
fn strings_escapes_and_utf8_names() {
    let s = [
        ("__name__", "x"),
        ("path", "a\"b\\c\n"),
        ("service.name", "checkout"),
    ];
    assert!(matches(r#"x{path="a\"b\\c\n"}"#, &s));
    assert!(matches(r#"x{path='a"b\\c\n'}"#, &s));
    assert!(
        matches("x{path=~`a.b.c\\s`}", &s),
        "raw string, regex escapes kept"
    );
    assert!(matches(r#"x{path="\x61\"b\u005cc\012"}"#, &s));
    assert!(matches(r#"{"service.name"="checkout"}"#, &s));
    assert!(matches(r#"{"x", "service.name"=~"check.*"}"#, &s));
    assert!(matches(r#"{"x"}"#, &s));
    assert!(!matches(r#"{"y"}"#, &s));
    assert!(matches(r#"{"ünïcode"="é"}"#, &[("ünïcode", "é")]));
}

#[test]
fn victoriametrics_or_groups() {
    assert!(matches(r#"{job="a" or job="b"}"#, &[("job", "b")]));
    assert!(!matches(r#"{job="a" or job="b"}"#, &[("job", "c")]));
    assert!(matches(
        r#"up{job="a" or env="p"}"#,
        &[("__name__", "up"), ("env", "p")]
    ));
    assert!(!matches(
        r#"up{job="a" or env="p"}"#,
        &[("__name__", "x"), ("env", "p")]
    ));
}

#[test]
fn bad_selectors_say_what_and_where() {
    for (text, want) in [
        ("", "expected a metric name"),
        ("up{", "missing '}'"),
        (r#"up{job="a""#, "missing '}'"),
        (r#"up{job=a}"#, "expected a quoted value"),
        (r#"up{job=="a"}"#, "expected a quoted value"),
        (r#"up{job<"a"}"#, "expected one of"),
        (r#"up{job="a"} x"#, "unexpected text"),
        (r#"up{job="a}"#, "unterminated string"),
        (r#"up{job=~"("}"#, "bad regex"),
        (r#"up{job="\q"}"#, "unknown escape"),
        (r#"up{__name__="x"}"#, "given twice"),
        (r#"{job="a" job="b"}"#, "expected ','"),
        (r#"{job="a" or}"#, "after 'or'"),
        (r#"{1job="a"}"#, "expected a label name"),
        (r#"{""="a"}"#, "empty label name"),
    ] {
        let err = Selector::parse(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn rules_follow_vmagent_grouping() {
    let rules = parse(
        r#"
- name: jobs
  match: 'http_requests_total'
  interval: 30s
  by: [job, job]
  outputs: [total]
  dedup_interval: 10s
  keep_metric_names: false
  staleness_interval: 2m
- match: ['a', '{__name__=~"b|c"}']
  interval: 1m
  without: [instance, pod]
  outputs: [sum_samples, count_samples]
  drop_input_labels: [replica]
- interval: 1m
  outputs: [count_series]
- interval: 1m
  by: [job, replica]
  drop_input_labels: [replica]
  outputs: [last]
  input_relabel_configs:
    - target_label: job
      replacement: x
"#,
    )
    .unwrap();
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0].name.as_deref(), Some("jobs"));
    assert_eq!(
        rules[0].grouping,
        Grouping::By(vec!["__name__".into(), "job".into()])
    );
    assert_eq!(rules[1].selectors.len(), 2);
    assert_eq!(
        rules[1].grouping,
        Grouping::Without(vec!["instance".into(), "pod".into(), "replica".into()])
    );
    assert!(rules[2].selectors.is_empty(), "no match: every series");
    assert_eq!(rules[2].grouping, Grouping::Series);
    assert_eq!(
        rules[3].grouping,
        Grouping::By(vec!["__name__".into(), "job".into()])
    );
    assert!(rules[3].input_relabeling && !rules[0].input_relabeling);
    assert!(parse("").unwrap().is_empty());
}

#[test]
fn bad_rules_name_the_rule() {
    for (yaml, want) in [
        ("- interval: 1m\n  outputs: [total]\n  match: 'up{'\n", "rule #0: match:"),
        (
            "- interval: 1m\n  outputs: [total]\n- name: two\n  interval: 1m\n  outputs: [total]\n  by: [a]\n  without: [b]\n",
            "rule #1 (two): by and without",
        ),
        ("- outputs: [total]\n", "rule #0: missing interval"),
        ("- interval: 1m\n", "rule #0: outputs lists nothing"),
        ("- interval: 1m\n  outputs: total\n", "rule #0: "),
        ("interval: 1m\n", "not a YAML list"),
    ] {
        let err = parse(yaml).unwrap_err().to_string();
        assert!(err.contains(want), "{yaml}: {err}");
    }
    let err = Aggregation::new(
        parse("- interval: 1m\n  outputs: [total]\n  match: '{stream_task_id=\"1\"}'\n").unwrap(),
        "stream_task_id",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("rule #0") && err.contains("task label"),
        "{err}"
    );
}

fn aggregation(yaml: &str) -> Aggregation {
    Aggregation::new(parse(yaml).unwrap(), "stream_task_id").unwrap()
}

const TWO_RULES: &str = r#"
- match: 'http_requests_total'
  interval: 30s
  by: [job, path]
  outputs: [total]
- match: '{__name__=~"http_requests_total|rpc_total"}'
  interval: 30s
  without: [instance, path]
  outputs: [sum_samples]
"#;

#[test]
fn routing_labels_are_the_intersection() {
    let a = aggregation(TWO_RULES);
    let both = ls(&[
        ("__name__", "http_requests_total"),
        ("job", "api"),
        ("path", "/x"),
        ("instance", "h:1"),
        ("env", "prod"),
    ]);
    // by [__name__, job, path] ∩ (labels − {instance, path}) = {__name__, job}.
    assert_eq!(
        a.explain(&both),
        Explain {
            matched: vec![0, 1],
            component: Some(0),
            routing_labels: Some(vec!["__name__".into(), "job".into()]),
        }
    );
    // Only the without rule selects rpc_total, but it shares a component
    // with the by rule, so rpc_total is routed by the same key: a group of
    // the without rule (which may hold both metrics' series) stays whole.
    let rpc = ls(&[
        ("__name__", "rpc_total"),
        ("job", "api"),
        ("instance", "h:1"),
        ("env", "p"),
    ]);
    assert_eq!(a.explain(&rpc).matched, vec![1]);
    assert_eq!(
        a.explain(&rpc).routing_labels,
        Some(vec!["__name__".into(), "job".into()])
    );
    let other = ls(&[("__name__", "up"), ("job", "api")]);
    assert_eq!(
        a.explain(&other),
        Explain {
            matched: vec![],
            component: None,
            routing_labels: None
        }
    );

    // The task id is the Prometheus hash of exactly those labels.
    let cfg = TaskIdConfig::new(64);
    let want = labels_hash(&ls(&[("__name__", "http_requests_total"), ("job", "api")])) % 64;
    assert_eq!(a.task_id(&both, &cfg), (want as u32, Routed::Grouped));
    // Unmatched series fall back to the route's task labels.
    let by_job = TaskIdConfig {
        task_labels: Some(vec!["job".into()]),
        ..TaskIdConfig::new(64)
    };
    assert_eq!(
        a.task_id(&other, &by_job),
        (task_id(&other, &by_job), Routed::Unmatched)
    );
}

#[test]
fn the_task_label_and_empty_values_are_never_hashed() {
    let a = aggregation("- interval: 1m\n  outputs: [total]\n  by: [job, stream_task_id, env]\n");
    let cfg = TaskIdConfig::new(16);
    let plain = ls(&[("__name__", "up"), ("job", "a"), ("instance", "1")]);
    let stamped = ls(&[
        ("__name__", "up"),
        ("job", "a"),
        ("instance", "2"),
        ("stream_task_id", "9"),
        ("env", ""),
    ]);
    assert_eq!(a.task_id(&plain, &cfg), a.task_id(&stamped, &cfg));
    assert_eq!(
        a.explain(&stamped).routing_labels,
        Some(vec!["__name__".into(), "job".into()])
    );
}

#[test]
fn components_their_keys_and_the_report() {
    let yaml = r#"
- name: x-by-job
  match: 'x'
  interval: 1m
  by: [job]
  outputs: [total]
- name: y-by-path
  match: 'y'
  interval: 1m
  by: [path]
  outputs: [total]
- name: xz-by-path
  match: '{__name__=~"x|z"}'
  interval: 1m
  by: [path]
  outputs: [total]
- name: w-without
  match: 'w'
  interval: 1m
  without: [__name__, job]
  outputs: [total]
- name: w-by-job
  match: '{job=~".+", __name__="w"}'
  interval: 1m
  by: [job]
  outputs: [total]
- name: per-series
  interval: 1m
  outputs: [total]
"#;
    let a = aggregation(yaml);
    let rules_of: Vec<Vec<usize>> = a.components().iter().map(|c| c.rules.clone()).collect();
    // The per-series rule matches everything but constrains nothing.
    assert_eq!(rules_of, vec![vec![0, 2], vec![1], vec![3, 4]]);
    let cfg = TaskIdConfig::new(64);
    // x: {__name__, job} ∩ {__name__, path} = {__name__}.
    let x = ls(&[("__name__", "x"), ("job", "a"), ("path", "/")]);
    assert_eq!(a.explain(&x).routing_labels, Some(vec!["__name__".into()]));
    assert_eq!(a.task_id(&x, &cfg).1, Routed::Grouped);
    // w: {__name__, job} minus {__name__, job} = {}: one task for all.
    let w = ls(&[("__name__", "w"), ("job", "a"), ("path", "/")]);
    assert_eq!(a.explain(&w).routing_labels, Some(vec![]));
    assert_eq!(
        a.task_id(&w, &cfg),
        ((labels_hash(&[]) % 64) as u32, Routed::Conflict)
    );
    // Only the per-series rule: routed as without the file.
    let v = ls(&[("__name__", "v"), ("job", "a")]);
    assert_eq!(a.task_id(&v, &cfg), (task_id(&v, &cfg), Routed::Unmatched));

    let report = a.report();
    assert!(report.iter().all(|f| f.warning));
    assert_eq!(report.len(), 2, "{report:#?}");
    assert!(
        report[0].text.contains("#0 (x-by-job)")
            && report[0].text.contains("#2 (xz-by-path)")
            && report[0].text.contains("by [__name__]")
            && report[0].text.contains("only __name__"),
        "{report:#?}"
    );
    assert!(
        report[1].text.contains("#3 (w-without)")
            && report[1].text.contains("#4 (w-by-job)")
            && report[1].text.contains("by []")
            && report[1].text.contains("one task"),
        "{report:#?}"
    );
}

#[test]
fn selectors_provably_disjoint() {
    let d = |a: &str, b: &str| selectors_disjoint(&[sel(a)], &[sel(b)]);
    assert!(d("a", "b"));
    assert!(d("a", r#"{__name__=~"b|c"}"#));
    assert!(!d("b", r#"{__name__=~"b|c"}"#));
    assert!(d(r#"a{job="x"}"#, r#"{job!="x"}"#));
    assert!(!d(r#"a{job="x"}"#, r#"{env="x"}"#));
    assert!(!d(r#"{job="a" or job="b"}"#, r#"{job="b"}"#));
    assert!(d(r#"{job="a" or job="c"}"#, r#"{job="b"}"#));
    assert!(!selectors_disjoint(&[], &[sel("a")]));
}

// ---- properties ----

/// A label set with a name from a small alphabet, so selectors hit often.
fn labels() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::sample::select(vec!["a", "b", "ab", "up"]),
        prop::collection::btree_map(
            prop::sample::select(vec!["job", "instance", "path", "env", "stream_task_id"]),
            prop_oneof![Just(""), Just("x"), Just("y"), Just("xy")],
            0..5,
        ),
    )
        .prop_map(|(name, rest): (&str, BTreeMap<&str, &str>)| {
            let mut v: Vec<(String, String)> = rest
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            v.push(("__name__".into(), name.into()));
            v.sort();
            v
        })
}

/// An independent matcher: the selector as (name, op, value) triples
/// evaluated with plain string and anchored-regex logic.
fn matcher() -> impl Strategy<Value = (String, &'static str, String)> {
    (
        prop::sample::select(vec!["__name__", "job", "env", "missing"]),
        prop::sample::select(vec!["=", "!=", "=~", "!~"]),
        prop::sample::select(vec!["", "x", "a|b", "x.*", ".+", "up", "a"]),
    )
        .prop_map(|(n, op, v)| (n.to_string(), op, v.to_string()))
}

fn expected(matchers: &[(String, &str, String)], labels: &[(String, String)]) -> bool {
    matchers.iter().all(|(name, op, value)| {
        let got = labels
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str());
        // Full match of the alternatives used above, spelled out by hand.
        let full = |re: &str, s: &str| match re {
            "" => s.is_empty(),
            "x" | "up" | "a" => s == re,
            "a|b" => s == "a" || s == "b",
            "x.*" => s.starts_with('x'),
            ".+" => !s.is_empty(),
            _ => unreachable!(),
        };
        match *op {
            "=" => got == value,
            "!=" => got != value,
            "=~" => full(value, got),
            _ => !full(value, got),
        }
    })
}

/// Groups of the by/without rule a series belongs to, as vmagent forms them.
fn group_key(grouping: &Grouping, labels: &[(String, String)]) -> Vec<(String, String)> {
    labels
        .iter()
        .filter(|(n, _)| grouping.keeps(n))
        .cloned()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// The string comparison of literal alternations agrees with the regex
    /// engine, for patterns in that form and near it.
    #[test]
    fn literal_patterns_agree_with_the_regex_engine(
        alts in prop::collection::vec(("[ab_:]{0,3}", prop::sample::select(vec!["", ".*", ".+", "*", "\\d"])), 1..4),
        value in "[ab_:\n]{0,5}",
    ) {
        let pattern: Vec<String> = alts.iter().map(|(l, s)| format!("{l}{s}")).collect();
        let pattern = pattern.join("|");
        let regex = regex::Regex::new(&format!("^(?s:{pattern})$"));
        match (selector::Pattern::new(&pattern), regex) {
            (Ok(p), Ok(re)) => prop_assert_eq!(p.is_match(&value), re.is_match(&value), "{}", pattern),
            (Err(_), Err(_)) => {}
            (p, re) => prop_assert!(false, "{pattern}: {:?} vs {:?}", p.is_ok(), re.is_ok()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn selector_matches_like_promql(
        matchers in prop::collection::vec(matcher(), 0..4),
        labels in labels(),
    ) {
        let text = format!(
            "{{{}}}",
            matchers.iter().map(|(n, op, v)| format!("{n}{op}{v:?}")).collect::<Vec<_>>().join(", ")
        );
        prop_assert_eq!(sel(&text).matches(&labels), expected(&matchers, &labels), "{}", text);
    }

    /// The promise: for every rule, two series it puts in one group get
    /// one task, whatever other rules select them.
    #[test]
    fn every_group_of_every_rule_gets_one_task(
        rules in prop::collection::vec(rule_yaml(), 1..5),
        series in prop::collection::vec(labels(), 2..12),
        task_count in 1u32..50,
    ) {
        let aggr = aggregation(&rules.concat());
        let cfg = TaskIdConfig::new(task_count);
        for rule in aggr.rules() {
            let members: Vec<&Vec<(String, String)>> = series.iter().filter(|s| rule.matches(s)).collect();
            for a in &members {
                for b in &members {
                    if rule.grouping != Grouping::Series
                        && group_key(&rule.grouping, a) == group_key(&rule.grouping, b)
                    {
                        prop_assert_eq!(aggr.task_id(a, &cfg).0, aggr.task_id(b, &cfg).0, "{:?} {:?}", a, b);
                    }
                }
            }
        }
        // Routing labels are in every matched grouping rule's key.
        for s in &series {
            let e = aggr.explain(s);
            if let Some(labels) = e.routing_labels {
                for i in e.matched {
                    let g = &aggr.rules()[i].grouping;
                    prop_assert!(labels.iter().all(|l| g.keeps(l)));
                }
            }
        }
    }
}

/// A rule with a selector from a small pool and a random grouping.
fn rule_yaml() -> impl Strategy<Value = String> {
    let selectors = prop::sample::select(vec![
        "",
        "a",
        "b",
        "'{__name__=~\"a|b\"}'",
        "'{job=\"x\"}'",
        "'{job!=\"y\"}'",
        "'up{env=\"\"}'",
        "'{job=\"x\" or env=\"y\"}'",
    ]);
    let labels = prop::collection::vec(
        prop::sample::select(vec![
            "__name__",
            "job",
            "instance",
            "path",
            "env",
            "stream_task_id",
        ]),
        0..3,
    );
    (
        selectors,
        prop::sample::select(vec!["by", "without"]),
        labels,
    )
        .prop_map(|(m, kind, l)| {
            let m = if m.is_empty() {
                String::new()
            } else {
                format!("  match: {m}\n")
            };
            let g = if l.is_empty() {
                String::new()
            } else {
                format!("  {kind}: [{}]\n", l.join(", "))
            };
            format!("- interval: 1m\n  outputs: [total]\n{m}{g}")
        })
}

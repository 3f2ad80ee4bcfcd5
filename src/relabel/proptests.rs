//! Property tests: relabeling any label set with any action never panics,
//! keeps its output sorted, unique and free of empty values, and is
//! deterministic; arbitrary rule files are an error, never a panic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;
use crate::remote_write::Label;

type Labels = Vec<(String, String)>;

/// `cases` runs, no regression files written into the source tree.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Rule sets covering every action, with templates, Go regex classes and
/// rules that can produce invalid or empty names.
const RULE_SETS: &[&str] = &[
    // replace: templates in target and replacement, missing groups, `$$`,
    // unset regex, fixed values.
    r#"
- source_labels: [job, instance]
  separator: ":"
  regex: "(.*):(.*)"
  target_label: "${1}_x"
  replacement: "$2-$1"
- source_labels: [a]
  target_label: b
  replacement: "v$1"
- target_label: env
  replacement: prod
- source_labels: [b, nope]
  regex: "(?i)(A)(.*);"
  target_label: c
  replacement: "${2}${1}${missing}$$9"
- source_labels: [__name__]
  regex: '(\w+)\d*\b.*'
  target_label: "$1"
  replacement: "$0"
- source_labels: [env]
  regex: ".*"
  target_label: job
  replacement: ""
"#,
    // keep / drop.
    r#"
- source_labels: [job]
  regex: "a.*|"
  action: keep
- source_labels: [env, b]
  regex: 'x;.*|\s+;.*'
  action: drop
"#,
    r#"
- source_labels: [__name__]
  regex: "a|b|__name__"
  action: drop
"#,
    // keepequal / dropequal.
    r#"
- source_labels: [a]
  target_label: b
  action: keepequal
"#,
    r#"
- source_labels: [job, a]
  target_label: instance
  action: dropequal
"#,
    // hashmod, then a keep on its result.
    r#"
- source_labels: [job, instance]
  modulus: 7
  target_label: shard
  action: hashmod
- source_labels: [shard]
  regex: "[0-3]"
  action: keep
- source_labels: [a]
  modulus: 18446744073709551615
  target_label: a
  action: hashmod
"#,
    // labelmap, including mappings to empty and colliding names.
    r#"
- regex: "__meta_(.*)"
  replacement: "meta_$1"
  action: labelmap
- regex: "(.)(.*)"
  replacement: "${2}"
  action: labelmap
- regex: "(.*)"
  replacement: "same"
  action: labelmap
"#,
    // labeldrop / labelkeep.
    r#"
- regex: "__.*"
  action: labeldrop
- regex: "[a-z_]+|1bad"
  action: labelkeep
"#,
    r#"
- regex: "job|instance"
  action: labelkeep
"#,
    // lowercase / uppercase (Go's Unicode case mapping).
    r#"
- source_labels: [job]
  target_label: job_lower
  action: lowercase
- source_labels: [job, env]
  separator: ""
  target_label: JOB
  action: Uppercase
- source_labels: [JOB]
  target_label: job
  action: LOWERCASE
"#,
    // Everything in one chain.
    r#"
- source_labels: [__name__]
  target_label: name_copy
- regex: "__meta_(.*)"
  replacement: "m_$1"
  action: labelmap
- source_labels: [job]
  modulus: 3
  target_label: h
  action: hashmod
- source_labels: [job]
  target_label: u
  action: uppercase
- source_labels: [u]
  target_label: l
  action: lowercase
- source_labels: [h]
  regex: "2"
  action: drop
- source_labels: [l]
  target_label: job
  action: dropequal
- regex: "u|h"
  action: labeldrop
- source_labels: [name_copy]
  target_label: __name__
  action: keepequal
- regex: ".+"
  action: labelkeep
"#,
];

/// [`RULE_SETS`] compiled once (regex compilation dominates in debug builds).
fn compiled() -> &'static [Rules] {
    static RULES: std::sync::OnceLock<Vec<Rules>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        RULE_SETS
            .iter()
            .map(|yaml| Rules::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")))
            .collect()
    })
}

/// Names from a small alphabet so that rules match, with some invalid ones.
fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "__name__",
        "job",
        "instance",
        "a",
        "b",
        "c",
        "env",
        "le",
        "shard",
        "__meta_pod",
        "__meta_",
        "JOB",
        "1bad",
        "bad-name",
        "",
        "ä",
        "stream_task_id",
    ])
    .prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,12}",
        1 => Just(String::new()),
        1 => prop::sample::select(vec!["a", "A", "x", "prod", "a:b", "İ", "ẞ", " ", "0"]).prop_map(str::to_owned),
    ]
}

/// Unique names, sorted or (sometimes) shuffled: `process` sorts first.
fn label_set() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(name(), value(), 0..8)
        .prop_map(|m: BTreeMap<String, String>| m.into_iter().collect::<Labels>())
        .prop_flat_map(|sorted| {
            let shuffled = Just(sorted.clone()).prop_shuffle();
            prop_oneof![3 => Just(sorted), 1 => shuffled]
        })
}

/// What `process` promises on return.
fn check_output(kept: bool, out: &Labels) -> Result<(), TestCaseError> {
    if !kept {
        prop_assert!(out.is_empty(), "dropped series left labels {out:?}");
        return Ok(());
    }
    prop_assert!(!out.is_empty(), "kept series has no labels");
    prop_assert!(
        out.windows(2).all(|w| w[0].0 < w[1].0),
        "names not sorted and unique: {out:?}"
    );
    prop_assert!(
        out.iter().all(|(_, v)| !v.is_empty()),
        "empty value in {out:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(500))]

    /// Every rule set on any label set: no panic, output invariants, same
    /// result twice, and the same result on remote-write `Label`s (what the
    /// router relabels in place).
    #[test]
    fn process_keeps_invariants(input in label_set()) {
        for (i, rules) in compiled().iter().enumerate() {
            let mut out = input.clone();
            let kept = rules.process(&mut out);
            check_output(kept, &out).map_err(|e| TestCaseError::fail(format!("rule set {i}: {e}")))?;

            let mut again = input.clone();
            prop_assert_eq!(rules.process(&mut again), kept, "rule set {}", i);
            prop_assert_eq!(&again, &out, "rule set {}", i);

            let mut as_labels: Vec<Label> =
                input.iter().map(|(n, v)| Label::new(n.clone(), v.clone())).collect();
            prop_assert_eq!(rules.process_any(&mut as_labels), kept, "rule set {}", i);
            let as_pairs: Labels = as_labels.into_iter().map(|l| (l.name, l.value)).collect();
            prop_assert_eq!(&as_pairs, &out, "rule set {}", i);
        }
    }

    /// Many label sets through every rule set, one [`Scratch`] for all of
    /// them (spare strings, capture positions and the list of set labels
    /// kept from series to series and rule set to rule set, the strings of
    /// each result handed back): the same results as fresh buffers give.
    #[test]
    fn reused_buffers_change_no_result(inputs in prop::collection::vec(label_set(), 1..8)) {
        let mut scratch = Scratch::default();
        for input in &inputs {
            for (i, rules) in compiled().iter().enumerate() {
                let mut fresh = input.clone();
                let kept = rules.process(&mut fresh);
                let mut reused = input.clone();
                prop_assert_eq!(rules.process_with(&mut reused, &mut scratch), kept, "rule set {}", i);
                prop_assert_eq!(&reused, &fresh, "rule set {}", i);
                for (name, value) in reused {
                    scratch.give(name);
                    scratch.give(value);
                }
            }
        }
    }

    /// Arbitrary text as a rule file: an error or rules, never a panic.
    #[test]
    fn arbitrary_yaml_never_panics(yaml in ".{0,200}") {
        if let Ok(rules) = Rules::from_yaml(&yaml) {
            let mut labels = vec![("job".to_string(), "x".to_string())];
            let kept = rules.process(&mut labels);
            check_output(kept, &labels)?;
        }
    }

    /// Rule files assembled from real keys with hostile values (Go regex
    /// syntax soup, templates, odd actions and moduli): compile to an error
    /// or to rules that keep the output invariants.
    #[test]
    fn generated_rule_files_never_panic(
        rules in prop::collection::vec(rule_yaml(), 1..3),
        input in label_set(),
    ) {
        let yaml = rules.concat();
        match Rules::from_yaml(&yaml) {
            Ok(rules) => {
                let mut out = input.clone();
                let kept = rules.process(&mut out);
                check_output(kept, &out)?;
                let mut again = input;
                prop_assert_eq!(rules.process(&mut again), kept);
                prop_assert_eq!(again, out);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

/// A YAML string scalar (double-quoted, escaped) holding `s`.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// One rule as YAML: an action and any subset of the other keys.
fn rule_yaml() -> impl Strategy<Value = String> {
    let action = prop_oneof![
        9 => prop::sample::select(vec![
            "replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap",
            "labeldrop", "labelkeep", "lowercase", "uppercase", "ReplAce",
        ]),
        1 => prop::sample::select(vec!["bogus", ""]),
    ];
    let regex = prop_oneof![
        1 => r"[\\()\[\]{}|.*+?^$a-cA:=<>,PpQEzkdDwWsSbB0-9!-]{0,12}",
        1 => prop::sample::select(vec![
            r"(.*)", r"\d+", r"[[:alpha:]]+", r"\pL", r"\p{Greek}", r"(?P<x>a)", r"(?<x>a)",
            r"\Qa.b\E", r"\C", r"\z", r"(?U)a+", r"[^\x00-\x{10FFFF}]", r"\8", r"a{1001}",
            r"(?i)ǅ", r"\b", "", "[", "(", ")",
        ])
        .prop_map(str::to_owned),
    ];
    let template = prop_oneof![
        2 => r"[a-c_][$a-c{}_0-9]{0,9}",
        1 => r"[$a-c{}_0-9]{0,10}",
        1 => prop::sample::select(vec!["$1", "${1}", "$0", "${name}", "$", "${", "$$", "a$1b", "${1x}", "$99999999999999999999"])
            .prop_map(str::to_owned),
    ];
    let names = prop::collection::vec(
        prop_oneof![
            9 => prop::sample::select(vec!["job", "a", "b", "__name__", "shard"]),
            1 => prop::sample::select(vec!["1bad", ""]),
        ],
        0..3,
    );
    (
        action,
        prop::option::weighted(0.6, names),
        prop::option::weighted(0.2, ".{0,3}"),
        prop::option::weighted(0.6, regex),
        prop::option::weighted(0.3, prop_oneof![Just(0u64), 1u64..10, Just(u64::MAX)]),
        prop::option::weighted(0.8, template.clone()),
        prop::option::weighted(0.3, template),
    )
        .prop_map(
            |(action, sources, separator, regex, modulus, target, replacement)| {
                let mut out = format!("- action: {}\n", quoted(action));
                if let Some(sources) = sources {
                    let list: Vec<String> = sources.iter().map(|s| quoted(s)).collect();
                    out += &format!("  source_labels: [{}]\n", list.join(", "));
                }
                if let Some(s) = separator {
                    out += &format!("  separator: {}\n", quoted(&s));
                }
                if let Some(r) = regex {
                    out += &format!("  regex: {}\n", quoted(&r));
                }
                if let Some(m) = modulus {
                    out += &format!("  modulus: {m}\n");
                }
                if let Some(t) = target {
                    out += &format!("  target_label: {}\n", quoted(&t));
                }
                if let Some(r) = replacement {
                    out += &format!("  replacement: {}\n", quoted(&r));
                }
                out
            },
        )
}

/// Guard against the fixed rule sets silently failing to compile or never
/// keeping anything (which would make the properties vacuous).
#[test]
fn rule_sets_compile_and_cover_every_action() {
    let rules = compiled();
    for action in Action::ALL {
        assert!(
            rules
                .iter()
                .flat_map(|r| r.rules())
                .any(|r| r.action() == action),
            "no rule set uses {action}"
        );
    }
}

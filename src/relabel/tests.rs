//! Relabel engine tests. The first group ports Prometheus'
//! `model/relabel/relabel_test.go` (TestRelabel, TestRelabelValidate, the
//! benchmark configs); the rest cover edge cases of Prometheus' semantics.

use super::*;

type Labels = Vec<(String, String)>;

fn ls(items: &[(&str, &str)]) -> Labels {
    let mut v: Labels = items
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

/// Compiles `yaml` and runs it on `input`; None if the series is dropped.
fn run(yaml: &str, input: &[(&str, &str)]) -> Option<Labels> {
    let rules = Rules::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let mut labels = ls(input);
    if rules.process(&mut labels) {
        Some(labels)
    } else {
        assert!(labels.is_empty());
        None
    }
}

/// The validation error message for a single-rule YAML.
fn compile_err(yaml: &str) -> String {
    match Rules::from_yaml(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(RelabelError::InvalidRule { index, error }) => {
            assert_eq!(index, 0);
            error.to_string()
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

const ABC: &[(&str, &str)] = &[("a", "foo"), ("b", "bar"), ("c", "baz")];

// ---- Ported from Prometheus TestRelabel ----

#[test]
fn upstream_replace_with_braced_group() {
    let yaml = r#"
- source_labels: [a]
  regex: f(.*)
  target_label: d
  replacement: ch${1}-ch${1}
"#;
    let mut want = ABC.to_vec();
    want.push(("d", "choo-choo"));
    assert_eq!(run(yaml, ABC), Some(ls(&want)));
}

#[test]
fn upstream_replace_chained_multiple_sources() {
    let yaml = r#"
- source_labels: [a, b]
  regex: f(.*);(.*)r
  target_label: a
  replacement: b${1}${2}m
- source_labels: [c, a]
  regex: (b).*b(.*)ba(.*)
  target_label: d
  replacement: $1$2$2$3
"#;
    assert_eq!(
        run(yaml, ABC),
        Some(ls(&[
            ("a", "boobam"),
            ("b", "bar"),
            ("c", "baz"),
            ("d", "boooom")
        ]))
    );
}

#[test]
fn upstream_drop_stops_processing() {
    let yaml = r#"
- source_labels: [a]
  regex: .*o.*
  action: drop
- source_labels: [a]
  regex: f(.*)
  target_label: d
  replacement: ch$1-ch$1
"#;
    assert_eq!(run(yaml, &[("a", "foo")]), None);
    assert_eq!(run(yaml, &[("a", "foo"), ("b", "bar")]), None);
}

#[test]
fn upstream_replace_inner_group() {
    let yaml = "- {source_labels: [a], regex: '.*(b).*', target_label: d, replacement: $1}\n";
    assert_eq!(
        run(yaml, &[("a", "abc")]),
        Some(ls(&[("a", "abc"), ("d", "b")]))
    );
}

#[test]
fn upstream_drop_regex_is_anchored() {
    let no_match = "- {source_labels: [a], regex: no-match, action: drop}\n";
    assert_eq!(run(no_match, &[("a", "foo")]), Some(ls(&[("a", "foo")])));
    // "f|o" must match the whole value, so "foo" survives.
    let partial = "- {source_labels: [a], regex: 'f|o', action: drop}\n";
    assert_eq!(run(partial, &[("a", "foo")]), Some(ls(&[("a", "foo")])));
}

#[test]
fn upstream_keep() {
    let no_match = "- {source_labels: [a], regex: no-match, action: keep}\n";
    assert_eq!(run(no_match, &[("a", "foo")]), None);
    let matching = "- {source_labels: [a], regex: f.*, action: keep}\n";
    assert_eq!(run(matching, &[("a", "foo")]), Some(ls(&[("a", "foo")])));
}

#[test]
fn upstream_no_replacement_without_match() {
    let yaml = "- {source_labels: [a], regex: f, target_label: b, replacement: bar}\n";
    assert_eq!(run(yaml, &[("a", "boo")]), Some(ls(&[("a", "boo")])));
}

#[test]
fn upstream_blank_replacement_deletes_label() {
    let yaml = "- {source_labels: [a], regex: (f).*, target_label: $1, replacement: $2}\n";
    assert_eq!(
        run(yaml, &[("a", "foo"), ("f", "baz")]),
        Some(ls(&[("a", "foo")]))
    );
}

#[test]
fn upstream_hashmod() {
    let yaml = "- {source_labels: [c], target_label: d, action: hashmod, modulus: 1000}\n";
    let mut want = ABC.to_vec();
    want.push(("d", "976"));
    assert_eq!(run(yaml, ABC), Some(ls(&want)));

    let yaml = "- {source_labels: [a], target_label: b, action: hashmod, modulus: 1000}\n";
    assert_eq!(
        run(yaml, &[("a", "foo\nbar")]),
        Some(ls(&[("a", "foo\nbar"), ("b", "734")]))
    );
}

#[test]
fn upstream_labelmap() {
    let yaml = "- {regex: '(b.*)', replacement: 'bar_${1}', action: labelmap}\n";
    assert_eq!(
        run(yaml, &[("a", "foo"), ("b1", "bar"), ("b2", "baz")]),
        Some(ls(&[
            ("a", "foo"),
            ("b1", "bar"),
            ("b2", "baz"),
            ("bar_b1", "bar"),
            ("bar_b2", "baz"),
        ]))
    );

    let yaml = "- {regex: '__meta_(my.*)', replacement: '${1}', action: labelmap}\n";
    let input = [
        ("a", "foo"),
        ("__meta_my_bar", "aaa"),
        ("__meta_my_baz", "bbb"),
        ("__meta_other", "ccc"),
    ];
    let mut want = input.to_vec();
    want.extend([("my_bar", "aaa"), ("my_baz", "bbb")]);
    assert_eq!(run(yaml, &input), Some(ls(&want)));
}

#[test]
fn upstream_templated_target_label() {
    let valid = "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${2}', target_label: '${1}'}\n";
    assert_eq!(
        run(valid, &[("a", "some-name-value")]),
        Some(ls(&[("a", "some-name-value"), ("name", "value")]))
    );

    // ${3} does not exist: empty replacement deletes the (absent) target.
    let empty_value = "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${3}', target_label: '${1}'}\n";
    assert_eq!(
        run(empty_value, &[("a", "some-name-value")]),
        Some(ls(&[("a", "some-name-value")]))
    );

    // Targets expanding to "" or "-0" are invalid names: rules skipped.
    let invalid_targets = r#"
- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}
- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}
- {source_labels: [a], regex: 'some-([^-]+)(-[^,]+)', replacement: '${1}', target_label: '${3}'}
"#;
    assert_eq!(
        run(invalid_targets, &[("a", "some-name-0")]),
        Some(ls(&[("a", "some-name-0")]))
    );
}

#[test]
fn upstream_real_life_tags() {
    let yaml = r#"
- source_labels: [__meta_sd_tags]
  regex: "(?:.+,|^)path:(/[^,]+).*"
  replacement: "${1}"
  target_label: __metrics_path__
- source_labels: [__meta_sd_tags]
  regex: "(?:.+,|^)job:([^,]+).*"
  replacement: "${1}"
  target_label: job
- source_labels: [__meta_sd_tags]
  regex: "(?:.+,|^)label:([^=]+)=([^,]+).*"
  replacement: "${2}"
  target_label: "${1}"
"#;
    let tags = "path:/secret,job:some-job,label:foo=bar";
    assert_eq!(
        run(yaml, &[("__meta_sd_tags", tags)]),
        Some(ls(&[
            ("__meta_sd_tags", tags),
            ("__metrics_path__", "/secret"),
            ("job", "some-job"),
            ("foo", "bar"),
        ]))
    );
}

#[test]
fn upstream_issue_12283_labeldrop_then_readd() {
    let yaml = r#"
- regex: "^__meta_kubernetes_pod_container_port_name$"
  action: labeldrop
- source_labels: [__meta_kubernetes_pod_annotation_XXX_metrics_port]
  regex: "(.+)"
  replacement: metrics
  target_label: __meta_kubernetes_pod_container_port_name
- source_labels: [__meta_kubernetes_pod_container_port_name]
  regex: "^metrics$"
  action: keep
"#;
    let input = [
        ("__meta_kubernetes_pod_container_port_name", "foo"),
        ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
    ];
    assert_eq!(
        run(yaml, &input),
        Some(ls(&[
            ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
            ("__meta_kubernetes_pod_container_port_name", "metrics"),
        ]))
    );
}

#[test]
fn upstream_labelkeep_and_labeldrop() {
    let input = [("a", "foo"), ("b1", "bar"), ("b2", "baz")];
    assert_eq!(
        run("- {regex: '(b.*)', action: labelkeep}\n", &input),
        Some(ls(&[("b1", "bar"), ("b2", "baz")]))
    );
    assert_eq!(
        run("- {regex: '(b.*)', action: labeldrop}\n", &input),
        Some(ls(&[("a", "foo")]))
    );
}

#[test]
fn upstream_uppercase_lowercase() {
    let yaml = r#"
- {source_labels: [foo], action: uppercase, target_label: foo_uppercase}
- {source_labels: [foo], action: lowercase, target_label: foo_lowercase}
"#;
    assert_eq!(
        run(yaml, &[("foo", "bAr123Foo")]),
        Some(ls(&[
            ("foo", "bAr123Foo"),
            ("foo_lowercase", "bar123foo"),
            ("foo_uppercase", "BAR123FOO"),
        ]))
    );
}

#[test]
fn upstream_keepequal_dropequal() {
    let input = [
        ("__tmp_port", "1234"),
        ("__port1", "1234"),
        ("__port2", "5678"),
    ];
    let rule = |action: &str, target: &str| {
        format!("- {{source_labels: [__tmp_port], action: {action}, target_label: {target}}}\n")
    };
    assert_eq!(run(&rule("keepequal", "__port1"), &input), Some(ls(&input)));
    assert_eq!(run(&rule("dropequal", "__port1"), &input), None);
    assert_eq!(run(&rule("dropequal", "__port2"), &input), Some(ls(&input)));
    assert_eq!(run(&rule("keepequal", "__port2"), &input), None);
}

#[test]
fn upstream_dot_matches_newline() {
    let yaml = "- {source_labels: [a], regex: 'line1.*line2', target_label: d, replacement: 'match${1}'}\n";
    let input = [("a", "line1\nline2"), ("b", "bar"), ("c", "baz")];
    let mut want = input.to_vec();
    want.push(("d", "match"));
    assert_eq!(run(yaml, &input), Some(ls(&want)));
}

#[test]
fn upstream_named_groups_in_target_and_replacement() {
    let yaml = r#"
- source_labels: [a]
  regex: "(line1).*(?<second>line2)"
  target_label: "label1_${1}"
  replacement: "val_${second}"
- source_labels: [a]
  regex: "(line1).*(?<second>line2)"
  target_label: "label2_$1"
  replacement: "val_$second"
"#;
    let input = [("a", "line1\nline2"), ("b", "bar"), ("c", "baz")];
    let mut want = input.to_vec();
    want.extend([("label1_line1", "val_line2"), ("label2_line1", "val_line2")]);
    assert_eq!(run(yaml, &input), Some(ls(&want)));
}

#[test]
fn upstream_type_and_unit_labels() {
    let yaml = "- {source_labels: [__name__], regex: '.*_total$', target_label: __type__, replacement: counter}\n";
    assert_eq!(
        run(yaml, &[("__name__", "http_requests_total")]),
        Some(ls(&[
            ("__name__", "http_requests_total"),
            ("__type__", "counter")
        ]))
    );
    let yaml = "- {source_labels: [__name__], regex: '.*_bytes$', target_label: __unit__, replacement: bytes}\n";
    assert_eq!(
        run(yaml, &[("__name__", "disk_usage_bytes")]),
        Some(ls(&[
            ("__name__", "disk_usage_bytes"),
            ("__unit__", "bytes")
        ]))
    );
}

#[test]
fn upstream_utf8_names_are_rejected_under_legacy_validation() {
    let msg = compile_err("- {source_labels: [utf-8.label], regex: x, target_label: d}\n");
    assert_eq!(msg, r#""utf-8.label" is not a valid label name"#);
    let msg = compile_err("- {source_labels: [a], target_label: utf-8.label}\n");
    assert_eq!(
        msg,
        r#""utf-8.label" is invalid 'target_label' for replace action"#
    );
    let msg = compile_err("- {source_labels: [a], target_label: 'utf-8.label${1}'}\n");
    assert_eq!(
        msg,
        r#""utf-8.label${1}" is invalid 'target_label' for replace action"#
    );
}

/// Prometheus 3 with UTF-8 validation (the router's default) takes UTF-8
/// names wherever legacy validation refused them, and a replace whose
/// expanded target is UTF-8 sets it; only empty names stay invalid.
#[test]
fn utf8_names_are_accepted_under_utf8_validation() {
    use crate::remote_write::NameValidation;
    let compile =
        |yaml: &str, names| Rules::compile_with(&config::parse_configs(yaml).unwrap(), names);
    let yaml = "\
- {source_labels: [service.name], regex: '(.+)', target_label: 'svc.${1}', replacement: yes}
- {source_labels: [service.name], target_label: otel.service}
- {action: labelmap, regex: 'k8s\\.(.+)', replacement: 'kube.$1'}
- {action: lowercase, source_labels: [Up.Name], target_label: low.name}
- {action: hashmod, source_labels: [service.name], modulus: 4, target_label: shard.id}
";
    assert!(compile(yaml, NameValidation::Legacy).is_err());
    let rules = compile(yaml, NameValidation::Utf8).unwrap();
    let mut labels = ls(&[
        ("__name__", "up"),
        ("service.name", "checkout"),
        ("k8s.pod", "p1"),
        ("Up.Name", "ÀB"),
    ]);
    assert!(rules.process(&mut labels));
    let get = |name: &str| {
        labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("svc.checkout"), Some("yes"));
    assert_eq!(get("otel.service"), Some("checkout"));
    assert_eq!(get("kube.pod"), Some("p1"));
    assert_eq!(get("low.name"), Some("àb"));
    assert!(get("shard.id").is_some());
    for bad in [
        "- {source_labels: [''], target_label: x}\n",
        "- {source_labels: [a], target_label: ''}\n",
        "- {action: labelmap, regex: x, replacement: ''}\n",
    ] {
        assert!(compile(bad, NameValidation::Utf8).is_err(), "{bad}");
    }
    // A template expanding to an empty name is skipped, as in Prometheus.
    let rules = compile(
        "- {source_labels: [a], regex: '(.*)', target_label: '${1}', replacement: v}\n",
        NameValidation::Utf8,
    )
    .unwrap();
    let mut labels = ls(&[("a", ""), ("b", "1")]);
    assert!(rules.process(&mut labels));
    assert_eq!(labels, ls(&[("b", "1")]));
    // Under legacy validation a UTF-8 expansion is skipped.
    let yaml = "- {source_labels: [a], regex: '(.*)', target_label: 'x${1}', replacement: v}\n";
    let mut labels = ls(&[("a", ".b")]);
    assert!(compile(yaml, NameValidation::Legacy)
        .unwrap()
        .process(&mut labels));
    assert_eq!(labels, ls(&[("a", ".b")]));
    assert!(compile(yaml, NameValidation::Utf8)
        .unwrap()
        .process(&mut labels));
    assert_eq!(labels, ls(&[("a", ".b"), ("x.b", "v")]));
}

/// Prometheus BenchmarkRelabel "example" config (from conf.good.yml).
#[test]
fn upstream_benchmark_example_config() {
    let yaml = r#"
- source_labels: [job, __meta_dns_name]
  regex: "(.*)some-[regex]"
  target_label: job
  replacement: foo-${1}
  # action defaults to 'replace'
- source_labels: [abc]
  target_label: cde
- replacement: static
  target_label: abc
- regex:
  replacement: static
  target_label: abc
"#;
    let input = [
        ("__meta_dns_name", "example-some-x.com"),
        ("abc", "def"),
        ("job", "foo"),
    ];
    assert_eq!(
        run(yaml, &input),
        Some(ls(&[
            ("__meta_dns_name", "example-some-x.com"),
            ("abc", "static"),
            ("cde", "def"),
            ("job", "foo"),
        ]))
    );
    // The first rule does match when the value ends in "some-" + [regex].
    assert_eq!(
        run(yaml, &[("__meta_dns_name", "x.some-e"), ("job", "j")]),
        Some(ls(&[
            ("__meta_dns_name", "x.some-e"),
            ("abc", "static"),
            ("job", "foo-j;x."),
        ]))
    );
}

const K8S_RULES: &str = r#"
- source_labels: [__meta_kubernetes_pod_container_port_name]
  regex: .*-metrics
  action: keep
- source_labels: [__meta_kubernetes_pod_label_name]
  action: drop
  regex: ""
- source_labels: [__meta_kubernetes_pod_phase]
  regex: Succeeded|Failed
  action: drop
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
  regex: "false"
  action: drop
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme]
  target_label: __scheme__
  regex: (https?)
  replacement: $1
  action: replace
- source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
  target_label: __metrics_path__
  regex: (.+)
  replacement: $1
  action: replace
- source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
  target_label: __address__
  regex: (.+?)(\:\d+)?;(\d+)
  replacement: $1:$3
  action: replace
- regex: __meta_kubernetes_pod_annotation_prometheus_io_param_(.+)
  replacement: __param_$1
  action: labelmap
- regex: __meta_kubernetes_pod_label_prometheus_io_label_(.+)
  action: labelmap
- regex: __meta_kubernetes_pod_annotation_prometheus_io_label_(.+)
  action: labelmap
- source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_label_name]
  separator: /
  target_label: job
  replacement: $1
  action: replace
- source_labels: [__meta_kubernetes_namespace]
  target_label: namespace
  action: replace
- source_labels: [__meta_kubernetes_pod_name]
  target_label: pod
  action: replace
- source_labels: [__meta_kubernetes_pod_container_name]
  target_label: container
  action: replace
- source_labels: [__meta_kubernetes_pod_name, __meta_kubernetes_pod_container_name, __meta_kubernetes_pod_container_port_name]
  separator: ':'
  target_label: instance
  action: replace
- target_label: cluster
  replacement: dev-us-central-0
- source_labels: [__meta_kubernetes_namespace]
  regex: hosted-grafana
  action: drop
- source_labels: [__address__]
  target_label: __tmp_hash
  modulus: 3
  action: hashmod
- source_labels: [__tmp_hash]
  regex: ^0$
  action: keep
- regex: __tmp_hash
  action: labeldrop
"#;

const K8S_LABELS: &[(&str, &str)] = &[
    ("__address__", "10.132.183.40:80"),
    ("__meta_kubernetes_namespace", "loki-boltdb-shipper"),
    ("__meta_kubernetes_pod_container_name", "promtail"),
    ("__meta_kubernetes_pod_container_port_name", "http-metrics"),
    (
        "__meta_kubernetes_pod_label_name",
        "promtail-loki-boltdb-shipper",
    ),
    (
        "__meta_kubernetes_pod_name",
        "promtail-loki-boltdb-shipper-jgtr7",
    ),
    ("__meta_kubernetes_pod_phase", "Running"),
    ("__metrics_path__", "/metrics"),
    ("job", "kubernetes-pods"),
];

/// Prometheus BenchmarkRelabel "kubernetes" config (label set trimmed).
#[test]
fn upstream_benchmark_kubernetes_config() {
    // md5("10.132.183.40:80") tail mod 3 is 1, so the keep of ^0$ drops it.
    assert_eq!(run(K8S_RULES, K8S_LABELS), None);

    let keep_one = K8S_RULES.replace("regex: ^0$", "regex: ^1$");
    let mut want: Vec<(&str, &str)> = K8S_LABELS
        .iter()
        .copied()
        .filter(|(n, _)| *n != "job")
        .collect();
    want.extend([
        ("job", "loki-boltdb-shipper/promtail-loki-boltdb-shipper"),
        ("namespace", "loki-boltdb-shipper"),
        ("pod", "promtail-loki-boltdb-shipper-jgtr7"),
        ("container", "promtail"),
        (
            "instance",
            "promtail-loki-boltdb-shipper-jgtr7:promtail:http-metrics",
        ),
        ("cluster", "dev-us-central-0"),
    ]);
    assert_eq!(run(&keep_one, K8S_LABELS), Some(ls(&want)));
}

/// Prometheus BenchmarkRelabel "static label pair" config.
#[test]
fn upstream_benchmark_static_label_pairs() {
    let yaml = r#"
- replacement: wwwwww
  target_label: wwwwww
- replacement: yyyyyyyyyyyy
  target_label: xxxxxxxxx
- replacement: xxxxxxxxx
  target_label: yyyyyyyyyyyy
- source_labels: ["something"]
  target_label: with_source_labels
  replacement: value
- replacement: dropped
  target_label: ${0}
- replacement: ${0}
  target_label: dropped
"#;
    assert_eq!(
        run(yaml, &[("job", "foo")]),
        Some(ls(&[
            ("job", "foo"),
            ("with_source_labels", "value"),
            ("wwwwww", "wwwwww"),
            ("xxxxxxxxx", "yyyyyyyyyyyy"),
            ("yyyyyyyyyyyy", "xxxxxxxxx"),
        ]))
    );
}

// ---- Ported from Prometheus TestRelabelValidate (legacy validation) ----

fn validate_err(cfg: RelabelConfig) -> String {
    match Rules::compile(&[cfg]) {
        Err(RelabelError::InvalidRule { error, .. }) => error.to_string(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn upstream_validate_cases() {
    let empty_action = RelabelConfig {
        action: String::new(),
        ..RelabelConfig::default()
    };
    assert_eq!(validate_err(empty_action), "relabel action cannot be empty");

    assert_eq!(
        validate_err(RelabelConfig::default()),
        "relabel configuration for replace action requires 'target_label' value"
    );
    let lowercase = RelabelConfig {
        action: "lowercase".into(),
        ..RelabelConfig::default()
    };
    assert_eq!(
        validate_err(lowercase.clone()),
        "relabel configuration for lowercase action requires 'target_label' value"
    );
    assert_eq!(
        validate_err(RelabelConfig {
            target_label: "${3}".into(),
            ..lowercase
        }),
        r#""${3}" is invalid 'target_label' for lowercase action"#
    );

    let templated = |target: &str| RelabelConfig {
        source_labels: Some(vec!["a".into()]),
        regex: Some("some-([^-]+)-([^,]+)".into()),
        replacement: "${1}".into(),
        target_label: target.into(),
        ..RelabelConfig::default()
    };
    assert!(Rules::compile(&[templated("${3}")]).is_ok());
    assert_eq!(
        validate_err(templated("0${3}")),
        r#""0${3}" is invalid 'target_label' for replace action"#
    );
    assert_eq!(
        validate_err(templated("-${3}")),
        r#""-${3}" is invalid 'target_label' for replace action"#
    );

    for (regex, replacement) in [
        ("__meta_kubernetes_pod_label_(strimzi_io_.+)", "$1"),
        ("__meta_(.+)", "${1}"),
    ] {
        let cfg = RelabelConfig {
            regex: Some(regex.into()),
            action: "labelmap".into(),
            replacement: replacement.into(),
            ..RelabelConfig::default()
        };
        assert!(Rules::compile(&[cfg]).is_ok());
    }
}

// ---- Further validation ----

#[test]
fn validation_errors_per_action() {
    let cases = [
        ("- {action: foo}", r#"unknown relabel action "foo""#),
        ("- {action: hashmod, target_label: t}", "relabel configuration for hashmod requires non-zero modulus"),
        ("- {action: hashmod, modulus: 2}", "relabel configuration for hashmod action requires 'target_label' value"),
        ("- {action: hashmod, modulus: 2, target_label: 'a-b'}", r#""a-b" is invalid 'target_label' for hashmod action"#),
        ("- {action: hashmod, modulus: 2, target_label: '$1'}", r#""$1" is invalid 'target_label' for hashmod action"#),
        ("- {action: uppercase}", "relabel configuration for uppercase action requires 'target_label' value"),
        ("- {action: uppercase, target_label: x, replacement: y}", "'replacement' can not be set for uppercase action"),
        ("- {action: keepequal}", "relabel configuration for keepequal action requires 'target_label' value"),
        ("- {action: dropequal, target_label: '1x'}", r#""1x" is invalid 'target_label' for dropequal action"#),
        ("- {action: dropequal, target_label: x, replacement: y}", "'replacement' can not be set for dropequal action"),
        ("- {action: keepequal, target_label: x, regex: y}", "keepequal action requires only 'source_labels' and `target_label`, and no other fields"),
        // Even the default regex counts as "set" when written explicitly.
        ("- {action: keepequal, target_label: x, regex: '(.*)'}", "keepequal action requires only 'source_labels' and `target_label`, and no other fields"),
        ("- {action: dropequal, target_label: x, separator: ','}", "dropequal action requires only 'source_labels' and `target_label`, and no other fields"),
        ("- {action: dropequal, target_label: x, modulus: 3}", "dropequal action requires only 'source_labels' and `target_label`, and no other fields"),
        ("- {action: labeldrop, regex: x, source_labels: [a]}", "labeldrop action requires only 'regex', and no other fields"),
        ("- {action: labeldrop, regex: x, source_labels: []}", "labeldrop action requires only 'regex', and no other fields"),
        ("- {action: labelkeep, regex: x, target_label: t}", "labelkeep action requires only 'regex', and no other fields"),
        ("- {action: labelkeep, regex: x, separator: ','}", "labelkeep action requires only 'regex', and no other fields"),
        ("- {action: labelkeep, regex: x, replacement: r}", "labelkeep action requires only 'regex', and no other fields"),
        ("- {action: labelkeep, regex: x, modulus: 1}", "labelkeep action requires only 'regex', and no other fields"),
        ("- {action: labelmap, regex: x, replacement: '-$1'}", r#""-$1" is invalid 'replacement' for labelmap action"#),
        ("- {action: labelmap, regex: x, replacement: ''}", r#""" is invalid 'replacement' for labelmap action"#),
        ("- {target_label: 'a b'}", r#""a b" is invalid 'target_label' for replace action"#),
        ("- {target_label: 'a${'}", r#""a${" is invalid 'target_label' for replace action"#),
        ("- {source_labels: ['1a'], target_label: x}", r#""1a" is not a valid label name"#),
        ("- {source_labels: [''], target_label: x}", r#""" is not a valid label name"#),
    ];
    for (yaml, want) in cases {
        assert_eq!(compile_err(yaml), want, "{yaml}");
    }
}

#[test]
fn valid_configs_for_every_action() {
    let yaml = r#"
- {source_labels: [a], target_label: t}
- {source_labels: [a], regex: x, action: keep}
- {source_labels: [a], regex: x, action: drop}
- {source_labels: [a], target_label: t, action: keepequal}
- {source_labels: [a], target_label: t, action: dropequal, separator: ';', replacement: '$1'}
- {source_labels: [a], target_label: t, action: hashmod, modulus: 4}
- {regex: 'x(.*)', action: labelmap}
- {regex: x, action: labeldrop}
- {regex: x, action: labelkeep}
- {source_labels: [a], target_label: t, action: lowercase}
- {source_labels: [a], target_label: t, action: uppercase}
"#;
    let rules = Rules::from_yaml(yaml).unwrap();
    let actions: Vec<Action> = rules.rules().iter().map(Rule::action).collect();
    assert_eq!(actions, Action::ALL.to_vec());
    assert_eq!(rules.len(), 11);
    assert!(!rules.is_empty());
}

#[test]
fn bad_regex_is_reported_with_position() {
    let yaml = "- {target_label: ok}\n- {source_labels: [a], regex: '(unclosed', action: keep}\n";
    match Rules::from_yaml(yaml) {
        Err(RelabelError::InvalidRule { index, error }) => {
            assert_eq!(index, 1);
            let message = error.to_string();
            assert!(
                message.starts_with(r#"invalid regex "(unclosed""#),
                "{message}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = Rules::from_yaml(yaml).unwrap_err().to_string();
    assert!(err.starts_with("relabel rule 1: invalid regex"), "{err}");
}

#[test]
fn go_only_regex_syntax_is_rejected() {
    let msg = compile_err("- {source_labels: [a], regex: '(?x)a b', action: keep}\n");
    assert!(msg.contains("invalid or unsupported Perl syntax"), "{msg}");
    let msg = compile_err("- {source_labels: [a], regex: 'a{1001}', action: keep}\n");
    assert!(msg.contains("invalid repeat count"), "{msg}");
}

#[test]
fn yaml_errors_are_parse_errors() {
    assert!(matches!(
        Rules::from_yaml("- {target_label: x, bogus: 1}"),
        Err(RelabelError::Parse(_))
    ));
    assert!(matches!(
        Rules::from_yaml("- {modulus: -1, action: hashmod, target_label: x}"),
        Err(RelabelError::Parse(_))
    ));
}

// ---- Semantics beyond the upstream cases ----

#[test]
fn empty_rules_keep_labels_and_drop_empty_sets() {
    let rules = Rules::from_yaml("").unwrap();
    assert!(rules.is_empty());
    let mut labels = ls(&[("a", "1")]);
    assert!(rules.process(&mut labels));
    assert_eq!(labels, ls(&[("a", "1")]));
    let mut empty = Vec::new();
    assert!(!rules.process(&mut empty));
}

#[test]
fn empty_values_count_as_absent_and_are_removed() {
    assert_eq!(run("", &[("a", ""), ("b", "1")]), Some(ls(&[("b", "1")])));
    assert_eq!(run("", &[("a", "")]), None);
    // keepequal: absent target and absent source are both "".
    let yaml = "- {source_labels: [missing], target_label: also_missing, action: keepequal}\n";
    assert_eq!(run(yaml, &[("a", "1")]), Some(ls(&[("a", "1")])));
}

#[test]
fn dropping_every_label_drops_the_series() {
    assert_eq!(
        run("- {regex: '.*', action: labeldrop}\n", &[("a", "1")]),
        None
    );
    assert_eq!(
        run("- {regex: 'zzz', action: labelkeep}\n", &[("a", "1")]),
        None
    );
    let delete = "- {source_labels: [a], target_label: a, replacement: ''}\n";
    assert_eq!(run(delete, &[("a", "1")]), None);
}

#[test]
fn output_is_sorted_and_unsorted_input_is_accepted() {
    let rules = Rules::from_yaml("- {target_label: b, replacement: x}\n").unwrap();
    let mut labels = vec![
        ("z".to_string(), "1".to_string()),
        ("a".to_string(), "2".to_string()),
    ];
    assert!(rules.process(&mut labels));
    assert_eq!(labels, ls(&[("a", "2"), ("b", "x"), ("z", "1")]));
}

#[test]
fn source_values_are_joined_with_separator() {
    let yaml = "- {source_labels: [a, missing, c], separator: '|', target_label: j}\n";
    assert_eq!(
        run(yaml, &[("a", "1"), ("c", "3")]),
        Some(ls(&[("a", "1"), ("c", "3"), ("j", "1||3")]))
    );
    // Without source labels the joined value is "".
    let yaml = "- {regex: '', target_label: j, replacement: empty}\n";
    assert_eq!(
        run(yaml, &[("a", "1")]),
        Some(ls(&[("a", "1"), ("j", "empty")]))
    );
}

#[test]
fn null_regex_is_the_empty_regex() {
    let yaml = "- {source_labels: [a], regex: null, action: keep}\n";
    assert_eq!(run(yaml, &[("a", "x")]), None);
    assert_eq!(run(yaml, &[("b", "x")]), Some(ls(&[("b", "x")])));
}

#[test]
fn replace_expansion_follows_go_rules() {
    let rule = |replacement: &str| {
        format!("- {{source_labels: [a], regex: '(.*)', target_label: t, replacement: '{replacement}'}}\n")
    };
    let input = [("a", "foo"), ("t", "old")];
    // `$1x` names a group "1x", which does not exist: empty, label deleted.
    assert_eq!(run(&rule("$1x"), &input), Some(ls(&[("a", "foo")])));
    assert_eq!(
        run(&rule("${1}x"), &input),
        Some(ls(&[("a", "foo"), ("t", "foox")]))
    );
    assert_eq!(
        run(&rule("$$1"), &input),
        Some(ls(&[("a", "foo"), ("t", "$1")]))
    );
    assert_eq!(
        run(&rule("$1-$2"), &input),
        Some(ls(&[("a", "foo"), ("t", "foo-")]))
    );
    assert_eq!(run(&rule("$01"), &input), Some(ls(&[("a", "foo")])));
    assert_eq!(
        run(&rule("cost: $"), &input),
        Some(ls(&[("a", "foo"), ("t", "cost: $")]))
    );
}

#[test]
fn replace_skips_invalid_expanded_target() {
    let yaml = "- {source_labels: [a], target_label: '$1', replacement: v}\n";
    assert_eq!(run(yaml, &[("a", "1abc")]), Some(ls(&[("a", "1abc")])));
    assert_eq!(
        run(yaml, &[("a", "ok")]),
        Some(ls(&[("a", "ok"), ("ok", "v")]))
    );
    // A target template expanding to "" is also invalid.
    assert_eq!(run(yaml, &[("b", "x")]), Some(ls(&[("b", "x")])));
}

#[test]
fn replace_overwrites_and_later_rules_see_new_values() {
    let yaml = r#"
- {source_labels: [a], target_label: a, regex: '(.*)', replacement: 'new_$1'}
- {source_labels: [a], target_label: b}
"#;
    assert_eq!(
        run(yaml, &[("a", "x")]),
        Some(ls(&[("a", "new_x"), ("b", "new_x")]))
    );
}

#[test]
fn hashmod_values() {
    let yaml =
        "- {source_labels: [a], target_label: h, action: hashmod, modulus: 18446744073709551615}\n";
    // Reference values computed from MD5 independently (last 8 bytes, BE).
    assert_eq!(
        run(yaml, &[("a", "baz")]),
        Some(ls(&[("a", "baz"), ("h", "16450797887570275976")]))
    );
    let yaml = "- {source_labels: [a], target_label: h, action: hashmod, modulus: 1000}\n";
    assert_eq!(
        run(yaml, &[("a", "hello")]),
        Some(ls(&[("a", "hello"), ("h", "402")]))
    );
    // Absent source label hashes the empty string.
    assert_eq!(
        run(yaml, &[("b", "x")]),
        Some(ls(&[("b", "x"), ("h", "958")]))
    );
}

#[test]
fn labelmap_order_matches_prometheus_builder() {
    // Rule 1 overwrites `a`, so Range visits base `b` first and then the
    // added `a`; both map to `c` and the last one visited wins.
    let yaml = r#"
- {target_label: a, replacement: x}
- {regex: '(a|b)', replacement: c, action: labelmap}
"#;
    assert_eq!(
        run(yaml, &[("a", "1"), ("b", "2")]),
        Some(ls(&[("a", "x"), ("b", "2"), ("c", "x")]))
    );
    // Untouched labels: name order, so `b` wins over `a`.
    let yaml = "- {regex: '(a|b)', replacement: c, action: labelmap}\n";
    assert_eq!(
        run(yaml, &[("a", "1"), ("b", "2")]),
        Some(ls(&[("a", "1"), ("b", "2"), ("c", "2")]))
    );
}

#[test]
fn labelmap_uses_snapshot_and_overwrites() {
    // Mapping onto an existing label overwrites it; mapped labels are not
    // revisited within the same rule.
    let yaml = "- {regex: 'tmp_(.*)', replacement: '$1', action: labelmap}\n";
    assert_eq!(
        run(yaml, &[("tmp_a", "new"), ("a", "old"), ("tmp_tmp_b", "v")]),
        Some(ls(&[
            ("tmp_a", "new"),
            ("a", "new"),
            ("tmp_tmp_b", "v"),
            ("tmp_b", "v")
        ]))
    );
}

#[test]
fn labelmap_sets_names_that_are_not_valid_label_names() {
    // Prometheus only validates the template, not the expanded name.
    let yaml = "- {regex: '__meta_(.*)', replacement: '$1', action: labelmap}\n";
    assert_eq!(
        run(yaml, &[("__meta_9x", "v")]),
        Some(ls(&[("9x", "v"), ("__meta_9x", "v")]))
    );
}

#[test]
fn labeldrop_then_replace_reads_deleted_as_empty() {
    let yaml = r#"
- {regex: a, action: labeldrop}
- {source_labels: [a], target_label: b, replacement: 'was=$1'}
"#;
    assert_eq!(
        run(yaml, &[("a", "1"), ("c", "3")]),
        Some(ls(&[("b", "was="), ("c", "3")]))
    );
}

#[test]
fn case_actions_use_go_mapping() {
    let yaml = r#"
- {source_labels: [v], target_label: lower, action: lowercase}
- {source_labels: [v], target_label: upper, action: uppercase}
"#;
    assert_eq!(
        run(yaml, &[("v", "ΟΔΟΣ straße")]),
        Some(ls(&[
            ("lower", "οδοσ straße"),
            ("upper", "ΟΔΟΣ STRAßE"),
            ("v", "ΟΔΟΣ straße"),
        ]))
    );
    // An empty result deletes the target, like any Set with "".
    assert_eq!(run(yaml, &[("t", "1")]), Some(ls(&[("t", "1")])));
}

#[test]
fn regex_dialect_is_go() {
    let keep = |regex: &str| format!("- {{source_labels: [v], regex: '{regex}', action: keep}}\n");
    // Go's \d and \w are ASCII-only.
    assert_eq!(
        run(&keep(r"\d+"), &[("v", "123")]),
        Some(ls(&[("v", "123")]))
    );
    assert_eq!(run(&keep(r"\d+"), &[("v", "١٢٣")]), None);
    assert_eq!(run(&keep(r"\w+"), &[("v", "café")]), None);
    // Go reads `{` that is not a repeat as a literal.
    assert_eq!(
        run(&keep("a{b"), &[("v", "a{b")]),
        Some(ls(&[("v", "a{b")]))
    );
    // `&&` is literal inside a Go class.
    assert_eq!(
        run(&keep("[a&&b]+"), &[("v", "a&b")]),
        Some(ls(&[("v", "a&b")]))
    );
    // Case-insensitive flag.
    assert_eq!(
        run(&keep("(?i)abc"), &[("v", "AbC")]),
        Some(ls(&[("v", "AbC")]))
    );
}

#[test]
fn action_names_are_case_insensitive() {
    assert_eq!(
        run(
            "- {source_labels: [a], regex: x, action: DROP}\n",
            &[("a", "x")]
        ),
        None
    );
}

// ---- Fast paths must agree with the general ones ----

/// Patterns made only of words, `word.*` prefixes and `|` are matched by
/// string comparison; wrapping them in a group forces the regex engine,
/// which must agree.
#[test]
fn plain_word_patterns_match_like_the_regex() {
    let input = [
        ("a", "x"),
        ("ab", "x"),
        ("b", "x"),
        ("c_1", "x"),
        ("job", "a"),
    ];
    let patterns = [
        "a", "a|b", "a|", "c_1|ab", "abc", "", "a.*", "b.*|c_.*", "ab|c.*", ".*", "a.*|", "a.*.*",
        "a.+", "a..*",
    ];
    for pattern in patterns {
        for action in ["labeldrop", "labelkeep"] {
            let plain = format!("- action: {action}\n  regex: '{pattern}'\n");
            let grouped = format!("- action: {action}\n  regex: '(?:{pattern})'\n");
            assert_eq!(
                run(&plain, &input),
                run(&grouped, &input),
                "{action} {pattern:?}"
            );
        }
        for action in ["keep", "drop"] {
            for value in ["a", "b", "", "ab", "a|b", "a\nb", "aé", "éa", "c_", "ca"] {
                let input = [("job", value)];
                let plain =
                    format!("- action: {action}\n  source_labels: [job]\n  regex: '{pattern}'\n");
                let grouped = format!(
                    "- action: {action}\n  source_labels: [job]\n  regex: '(?:{pattern})'\n"
                );
                assert_eq!(
                    run(&plain, &input),
                    run(&grouped, &input),
                    "{action} {pattern:?} {value:?}"
                );
            }
        }
    }
}

/// `replace` with the default regex and replacement copies the joined
/// source labels as they are, as the regex engine does with a group around
/// `(.*)`: any value, also with newlines, and "" deletes the target.
#[test]
fn replace_copying_the_source_matches_the_regex() {
    for value in ["h:1", "", "a\nb", "é"] {
        let input = [("a", value), ("b", "x"), ("host", "old")];
        for (regex, replacement) in [("", ""), ("  regex: '(.*)'\n", "  replacement: '$1'\n")] {
            let fast = format!(
                "- source_labels: [a, b]\n  separator: '/'\n  target_label: host\n{regex}{replacement}"
            );
            let general = "- source_labels: [a, b]\n  separator: '/'\n  target_label: host\n  regex: '(?:(.*))'\n";
            assert_eq!(run(&fast, &input), run(general, &input), "{value:?} {fast}");
        }
        let only_a = "- source_labels: [a]\n  target_label: host\n";
        let expected = if value.is_empty() {
            ls(&[("b", "x")])
        } else {
            ls(&[("a", value), ("b", "x"), ("host", value)])
        };
        assert_eq!(run(only_a, &input), Some(expected), "{value:?}");
    }
}

/// `replace` without `$` references only checks for a match; with them it
/// expands the capture groups.
#[test]
fn replace_with_and_without_references() {
    let input = [("instance", "host-1:9100")];
    let literal = "- source_labels: [instance]\n  regex: '.+:(\\d+)'\n  target_label: scraped\n  replacement: 'yes'\n";
    assert_eq!(
        run(literal, &input),
        Some(ls(&[("instance", "host-1:9100"), ("scraped", "yes")]))
    );
    let no_match = "- source_labels: [instance]\n  regex: 'nope'\n  target_label: scraped\n  replacement: 'yes'\n";
    assert_eq!(run(no_match, &input), Some(ls(&input)));
    let empty =
        "- source_labels: [instance]\n  regex: '.*'\n  target_label: instance\n  replacement: ''\n";
    assert_eq!(
        run(empty, &input),
        None,
        "an empty replacement deletes the target"
    );
    let captures = "- source_labels: [instance]\n  regex: '([^:]+):(\\d+)'\n  target_label: 'port_$2'\n  replacement: '$1'\n";
    assert_eq!(
        run(captures, &input),
        Some(ls(&[("instance", "host-1:9100"), ("port_9100", "host-1")]))
    );
}

/// The router relabels remote-write labels directly; the result must equal
/// relabeling `(name, value)` pairs.
#[test]
fn remote_write_labels_relabel_like_pairs() {
    use crate::remote_write::proto::v1::Label;
    let yaml = "\
- source_labels: [instance]
  regex: '([^:]+):\\d+'
  target_label: host
- action: labeldrop
  regex: container
- target_label: job
  replacement: changed
- action: labelmap
  regex: 'e(.*)'
  replacement: 'copy_$1'
";
    let rules = Rules::from_yaml(yaml).unwrap();
    let input = [
        ("container", "c"),
        ("empty", ""),
        ("env", "prod"),
        ("instance", "h:1"),
        ("job", "j"),
    ];
    let mut pairs = ls(&input);
    let mut labels: Vec<Label> = input.iter().map(|(n, v)| Label::new(*n, *v)).collect();
    assert!(rules.process(&mut pairs));
    assert!(rules.process_any(&mut labels));
    let labels: Labels = labels.into_iter().map(|l| (l.name, l.value)).collect();
    assert_eq!(labels, pairs);
    assert_eq!(
        pairs,
        ls(&[
            ("copy_nv", "prod"),
            ("env", "prod"),
            ("host", "h"),
            ("instance", "h:1"),
            ("job", "changed")
        ])
    );
}

/// One [`Scratch`] through two rule lists whose first rules capture
/// different groups: each list gets capture positions made for its own
/// regex, so the results are those of fresh buffers.
#[test]
fn a_scratch_shared_by_two_rule_lists_keeps_their_captures_apart() {
    let one = Rules::from_yaml(
        "- {source_labels: [a], regex: '(.)(.*)', target_label: t, replacement: '$2'}",
    )
    .unwrap();
    let other = Rules::from_yaml(
        "- {source_labels: [a], regex: '(.)(.)(.)(.)(.)', target_label: t, replacement: '$5$4'}",
    )
    .unwrap();
    let input = ls(&[("__name__", "m"), ("a", "vwxyz")]);
    let mut scratch = Scratch::default();
    for rules in [&one, &other, &one, &other] {
        let mut fresh = input.clone();
        rules.process(&mut fresh);
        assert_ne!(fresh, input, "the rule sets t");
        let mut reused = input.clone();
        rules.process_with(&mut reused, &mut scratch);
        assert_eq!(reused, fresh);
    }
}

//! Bad configuration is refused at start-up with a message naming the key.

use crate::common::{show, streamroute, write_file};

fn run_with(config: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "bad.toml", config);
    let output = streamroute(&["--config", path.to_str().expect("utf-8"), "run"], env);
    (output.status.code(), show(&output))
}

#[test]
fn unknown_key_is_named() {
    let (code, out) = run_with("[kafka]\nbootstrap = \"x:1\"\n", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("kafka.bootstrap: unknown key"), "{out}");
}

#[test]
fn unknown_section_is_named() {
    let (code, out) = run_with("[gatway]\nlisten = \"127.0.0.1:1\"\n", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("gatway: unknown key"), "{out}");
}

#[test]
fn bad_value_is_named() {
    let (code, out) = run_with("[run]\nshutdown_grace = \"ten seconds\"\n", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("run.shutdown_grace"), "{out}");
}

#[test]
fn owned_librdkafka_property_is_refused() {
    let (code, out) = run_with("[kafka.properties]\nacks = \"1\"\n", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("kafka.properties.acks: is set by streamroute itself"),
        "{out}"
    );
}

#[test]
fn every_invalid_value_is_reported_at_once_including_from_env() {
    let (code, out) = run_with(
        "[topics]\ningress = \"bad topic\"\n",
        &[("STREAMROUTE_GATEWAY__MAX_IN_FLIGHT", "0")],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("topics.ingress: topic name 'bad topic' holds ' '"),
        "{out}"
    );
    assert!(
        out.contains("gateway.max_in_flight: must be greater than zero"),
        "{out}"
    );
}

#[test]
fn missing_config_file_is_an_error() {
    let output = streamroute(&["--config", "/nonexistent/streamroute.toml", "run"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}

#[test]
fn a_bad_windows_setting_names_its_dotted_key() {
    let (code, out) = run_with(
        "[egress.windows]\ndelay = \"10s\"\ngap_factor = 0.5\non_late = \"topic\"\n",
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("egress.windows.gap_factor: must be a number greater than 1"),
        "{out}"
    );
    assert!(
        out.contains("egress.windows.late_topic: must be set when on_late = \"topic\""),
        "{out}"
    );
}

#[test]
fn bad_stream_aggr_file_and_route_keys_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let aggr = write_file(
        dir.path(),
        "aggr.yml",
        "- name: ok\n  interval: 1m\n  outputs: [total]\n  by: [job]\n\
         - name: jobs\n  interval: 1m\n  outputs: [total]\n  match: ['up', 'http_requests_total{code=~\"5..\"']\n",
    );
    let (code, out) = run_with(
        &format!(
            "[[router.routes]]\nname = \"main\"\ntopic = \"t\"\ntask_count = 8\n\
             stream_aggr_file = \"{}\"\ntask_labels = [\"job\"]\ntask_labels_without = [\"instance\"]\n",
            aggr.display()
        ),
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("router.routes[0].stream_aggr_file: stream aggregation file")
            && out.contains("aggr.yml: rule #1 (jobs): match: missing '}'"),
        "{out}"
    );
    assert!(
        out.contains(
            "router.routes[0].task_labels_without: cannot be combined with routes[0].task_labels"
        ),
        "{out}"
    );
}

#[test]
fn the_router_role_without_a_route_is_refused_naming_router_routes() {
    let (code, out) = run_with("[run]\nroles = [\"gateway\", \"router\"]\n", &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("router.routes: no route is configured"),
        "{out}"
    );
}

#[test]
fn every_problem_of_a_file_is_named_at_once() {
    let (code, out) = run_with(
        "[[router.routes]]\nname = \"a\"\ntopic = \"t\"\ntaskcount = 8\npartition_label = [\"x\"]\n\
         [gateway]\nmax_in_flight = \"many\"\n",
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    for key in [
        "router.routes[0].taskcount: unknown key",
        "router.routes[0].partition_label: unknown key",
        "gateway.max_in_flight: invalid type",
    ] {
        assert!(out.contains(key), "{key} missing in {out}");
    }
}

//! `streamroute check config|rules`: every problem named by its key, exit
//! 0 or 1; the cluster checks against the real broker.

use crate::common::{create_topic, show, streamroute, unique, write_file};

fn check(args: &[&str]) -> (Option<i32>, String) {
    let output = streamroute(args, &[]);
    (output.status.code(), show(&output))
}

#[test]
fn offline_check_reports_every_problem_with_its_key_and_every_bad_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Rule #0 and #2 of the file are bad (a regex that does not compile,
    // hashmod without modulus), #1 is fine.
    let rules = write_file(
        dir.path(),
        "rules.yml",
        "- action: replace\n  source_labels: [a]\n  regex: \"(\"\n  target_label: b\n\
         - action: keep\n  source_labels: [job]\n  regex: node\n\
         - action: hashmod\n  source_labels: [a]\n  target_label: x\n",
    );
    let aggr = write_file(
        dir.path(),
        "aggr.yml",
        "- interval: 1m\n  outputs: [total]\n  match: 'up{job=}'\n",
    );
    let config = write_file(
        dir.path(),
        "bad.toml",
        &format!(
            "[run]\nshutdown_grace = \"0s\"\n\n[egress]\npartitions = \"3-1\"\n\n\
             [[router.routes]]\nname = \"a\"\ntopic = \"t.a\"\ntask_count = 4\nrelabel_file = {rules:?}\n\
             relabel_configs = [{{ action = \"drop\", regex = \"[\" }}]\n\n\
             [[router.routes]]\nname = \"b\"\ntopic = \"t.b\"\ntask_count = 4\nstream_aggr_file = {aggr:?}\n"
        ),
    );
    let (code, out) = check(&[
        "check",
        "config",
        config.to_str().expect("utf-8"),
        "--offline",
    ]);
    assert_eq!(code, Some(1), "{out}");
    for expected in [
        "run.shutdown_grace: must be greater than zero",
        "egress.partitions: range \"3-1\" is empty",
        "router.routes[0].relabel_configs[0]: invalid regex",
        "router.routes[0].relabel_file: ",
        "rules.yml rule #0: invalid regex",
        "rules.yml rule #2: relabel configuration for hashmod requires non-zero modulus",
        "router.routes[1].stream_aggr_file: ",
        "FAILED: 6 problem(s)",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert!(!out.contains("rule #1"), "{out}");

    let (code, out) = check(&["check", "rules", rules.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("rule #0: invalid regex"), "{out}");
    assert!(out.contains("rule #2: "), "{out}");
    assert!(out.contains("FAILED: 2 problem(s)"), "{out}");
}

#[test]
fn unknown_keys_and_good_files_pass_or_fail_with_exit_0_or_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write_file(dir.path(), "bad.toml", "[kafka]\nbootstrap = \"x:1\"\n");
    let (code, out) = check(&["check", "config", bad.to_str().expect("utf-8"), "--offline"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("kafka.bootstrap: unknown key"), "{out}");

    let rules = write_file(
        dir.path(),
        "ok.yml",
        "- action: keep\n  source_labels: [job]\n  regex: node\n",
    );
    let (code, out) = check(&["check", "rules", rules.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("SUCCESS: 1 rule(s) found"), "{out}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let (code, out) = check(&["check", "config", example, "--offline"]);
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test]
async fn online_check_compares_topics_and_egress_targets_with_the_cluster() {
    let (ingress, dead, tasks) = (unique("chk-in"), unique("chk-dl"), unique("chk-tasks"));
    for (topic, partitions) in [(&ingress, 1), (&dead, 1), (&tasks, 4)] {
        create_topic(topic, partitions).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |egress: &str| {
        format!(
            "[topics]\ningress = {ingress:?}\ndead_letter = {dead:?}\n\n\
             [[router.routes]]\nname = \"default\"\ntopic = {tasks:?}\ntask_count = 8\n\n\
             [egress]\ntopic = {tasks:?}\n{egress}\n"
        )
    };
    let run = |name: &str, text: String| {
        let path = write_file(dir.path(), name, &text);
        check(&["check", "config", path.to_str().expect("utf-8")])
    };

    let good =
        config("target = [\"http://a:1/w\", \"http://b:1/w\", \"http://c:1/w\", \"http://d:1/w\"]");
    let (code, out) = run("good.toml", good);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("topics and partitions match the cluster"),
        "{out}"
    );

    // 4 partitions, 3 URLs; partitions 5 and 6 do not exist.
    let short = config(
        "partitions = \"0-3,5,6\"\ntarget = [\"http://a:1/w\", \"http://b:1/w\", \"http://c:1/w\"]",
    );
    let (code, out) = run("short.toml", short);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "egress.partitions: partition(s) 5, 6 do not exist: {tasks} has 4 partition(s), 0 to 3"
        )),
        "{out}"
    );
    // Validation (offline) already names the list too short for partition 3.
    assert!(
        out.contains("egress.target: lists 3 URL(s) but partition 3 is owned"),
        "{out}"
    );

    // With "all", only the cluster knows there are 4 partitions.
    let all = config("target = [\"http://a:1/w\", \"http://b:1/w\", \"http://c:1/w\"]");
    let (code, out) = run("all.toml", all);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("egress.target: lists 3 URL(s) but {tasks} has 4 partition(s): no URL for partition(s) 3")), "{out}");
    assert!(out.contains("FAILED: 1 problem(s)"), "{out}");

    let missing = unique("chk-missing");
    let text = config("").replace(
        &format!("topic = {tasks:?}\ntask_count"),
        &format!("topic = {missing:?}\ntask_count"),
    );
    let (code, out) = run("missing.toml", text);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "router.routes[0].topic: topic {missing} does not exist"
        )),
        "{out}"
    );

    // The same file offline passes: nothing asks the cluster.
    let path = write_file(dir.path(), "offline.toml", &config("partitions = \"0-9\""));
    let (code, out) = check(&[
        "check",
        "config",
        path.to_str().expect("utf-8"),
        "--offline",
    ]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn an_unreachable_cluster_is_a_problem_unless_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::common::free_port();
    let path = write_file(
        dir.path(),
        "c.toml",
        &format!("[kafka]\nbootstrap_servers = \"127.0.0.1:{port}\"\nrequest_timeout = \"2s\"\n"),
    );
    let output = streamroute(
        &["check", "config", path.to_str().expect("utf-8")],
        &[(
            "STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS",
            &format!("127.0.0.1:{port}"),
        )],
    );
    let out = show(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("kafka.bootstrap_servers: the cluster at"),
        "{out}"
    );
    assert!(out.contains("--offline"), "{out}");
}

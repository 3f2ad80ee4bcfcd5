//! `streamroute relabel`: the user-facing rule debugger, through the binary.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{binary, write_file};

fn relabel(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(binary())
        .arg("relabel")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn one_json_line_out_per_line_in_with_null_for_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = write_file(
        dir.path(),
        "rules.yml",
        "- source_labels: [__name__]\n  regex: 'go_.*'\n  action: drop\n\
         - source_labels: [instance]\n  regex: '(.+):\\d+'\n  target_label: host\n\
         - action: labeldrop\n  regex: instance\n",
    );
    let input = "{\"__name__\":\"up\",\"instance\":\"a:9100\"}\n{\"__name__\":\"go_gc\"}\n{\"__name__\":\"x\"}\n";
    let (ok, out, err) = relabel(&["--rules", rules.to_str().expect("utf-8")], input);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "{\"__name__\":\"up\",\"host\":\"a\"}\nnull\n{\"__name__\":\"x\"}\n"
    );
}

#[test]
fn task_count_and_partitions_wrap_the_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = write_file(dir.path(), "rules.yml", "[]\n");
    let (ok, out, err) = relabel(
        &[
            "--rules",
            rules.to_str().expect("utf-8"),
            "--task-count",
            "8",
            "--task-labels",
            "job",
            "--task-label-name",
            "shard",
            "--partitions",
            "4",
        ],
        "{\"__name__\":\"a\",\"job\":\"api\"}\n{\"__name__\":\"b\",\"job\":\"api\"}\n",
    );
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 2);
    // Same job, same task: the task comes from the job label alone.
    assert_eq!(lines[0]["labels"]["shard"], lines[1]["labels"]["shard"]);
    assert_eq!(lines[0]["partition"], lines[1]["partition"]);
    let shard: u32 = lines[0]["labels"]["shard"]
        .as_str()
        .expect("string")
        .parse()
        .expect("decimal");
    assert!(shard < 8);
    assert!(lines[0]["partition"].as_u64().expect("number") < 4);
}

#[test]
fn an_invalid_rule_names_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = write_file(dir.path(), "rules.yml", "- action: keep\n  source_labels: [a]\n- action: replace\n  regex: '('\n  target_label: x\n");
    let (ok, _, err) = relabel(&["--rules", rules.to_str().expect("utf-8")], "");
    assert!(!ok);
    assert!(err.contains("relabel rule 1"), "{err}");
}

#[test]
fn a_configured_route_relabels_and_stamps_like_the_router() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_file(
        dir.path(),
        "c.toml",
        "[[router.routes]]\nname = \"r\"\ntopic = \"t\"\ntask_count = 4\n\
         [[router.routes.relabel_configs]]\nsource_labels = [\"__name__\"]\nregex = \"x\"\naction = \"drop\"\n",
    );
    let rules = write_file(
        dir.path(),
        "rules.yml",
        "- source_labels: [__name__]\n  regex: x\n  action: drop\n",
    );
    let input = "{\"__name__\":\"x\"}\n{\"__name__\":\"y\",\"a\":\"b\"}\n";
    let (ok, by_route, err) = relabel(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--route",
            "r",
            "--partitions",
            "3",
        ],
        input,
    );
    assert!(ok, "{err}");
    let (ok, by_rules, err) = relabel(
        &[
            "--rules",
            rules.to_str().expect("utf-8"),
            "--task-count",
            "4",
            "--partitions",
            "3",
        ],
        input,
    );
    assert!(ok, "{err}");
    assert_eq!(by_route, by_rules);
    assert!(
        by_route
            .starts_with("null\n{\"labels\":{\"__name__\":\"y\",\"a\":\"b\",\"stream_task_id\":"),
        "{by_route}"
    );
    let (ok, _, err) = relabel(
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--route",
            "nope",
        ],
        "",
    );
    assert!(!ok);
    assert!(err.contains("no route \"nope\""), "{err}");
}

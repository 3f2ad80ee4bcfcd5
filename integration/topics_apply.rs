//! `streamroute topics apply|check` against the live broker.

use rdkafka::admin::{AdminOptions, NewPartitions};

use crate::common::{admin, show, streamroute, unique, wait_for_partitions, write_file};

fn topic_file(name: &str, partitions: u32) -> String {
    format!(
        "name = \"{name}\"\npartitions = {partitions}\nreplication_factor = 1\n[config]\n\"retention.ms\" = \"3600000\"\n\"compression.type\" = \"producer\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_twice_changes_nothing_the_second_time_and_raises_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (unique("apply-a"), unique("apply-b"));
    write_file(dir.path(), "a.toml", &topic_file(&a, 2));
    write_file(dir.path(), "b.toml", &topic_file(&b, 1));
    let d = dir.path().to_str().expect("utf-8 path");

    let first = streamroute(&["topics", "apply", "--dir", d], &[]);
    assert!(first.status.success(), "{}", show(&first));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains(&format!("create topic {a} (partitions=2")),
        "{}",
        show(&first)
    );
    assert!(
        out.contains(&format!("create topic {b} (partitions=1")),
        "{}",
        show(&first)
    );

    let second = streamroute(&["topics", "apply", "--dir", d], &[]);
    assert!(second.status.success(), "{}", show(&second));
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).trim(),
        "no change: 2 topic(s) up to date"
    );

    let check = streamroute(&["topics", "check", "--dir", d], &[]);
    assert_eq!(check.status.code(), Some(0), "{}", show(&check));

    // The file asks for more partitions: apply raises the count.
    write_file(dir.path(), "b.toml", &topic_file(&b, 3));
    let raise = streamroute(&["topics", "apply", "--dir", d], &[]);
    assert!(raise.status.success(), "{}", show(&raise));
    assert!(
        String::from_utf8_lossy(&raise.stdout)
            .contains(&format!("raise partitions of topic {b} from 1 to 3")),
        "{}",
        show(&raise)
    );
    wait_for_partitions(&b, 3).await;
    let check = streamroute(&["topics", "check", "--dir", d], &[]);
    assert_eq!(check.status.code(), Some(0), "{}", show(&check));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_fails_after_someone_adds_a_partition_by_hand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = unique("check");
    write_file(dir.path(), "t.toml", &topic_file(&name, 1));
    let d = dir.path().to_str().expect("utf-8 path");
    let apply = streamroute(&["topics", "apply", "--dir", d], &[]);
    assert!(apply.status.success(), "{}", show(&apply));

    let partitions = NewPartitions::new(&name, 2);
    let results = admin()
        .create_partitions([&partitions], &AdminOptions::new())
        .await
        .expect("create_partitions");
    for r in results {
        r.expect("partition added");
    }
    wait_for_partitions(&name, 2).await;

    let check = streamroute(&["topics", "check", "--dir", d], &[]);
    assert_eq!(check.status.code(), Some(1), "{}", show(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains(&format!(
            "drift: topic {name}: has 2 partitions, the file says 1"
        )),
        "{}",
        show(&check)
    );

    // apply never removes anything: it reports the drift and leaves it.
    let apply = streamroute(&["topics", "apply", "--dir", d], &[]);
    assert!(apply.status.success(), "{}", show(&apply));
    assert!(
        String::from_utf8_lossy(&apply.stdout).contains("has 2 partitions"),
        "{}",
        show(&apply)
    );
}

#[test]
fn apply_reports_a_config_drift_without_changing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = unique("config-drift");
    write_file(dir.path(), "t.toml", &topic_file(&name, 1));
    let d = dir.path().to_str().expect("utf-8 path");
    assert!(streamroute(&["topics", "apply", "--dir", d], &[])
        .status
        .success());
    write_file(
        dir.path(),
        "t.toml",
        &topic_file(&name, 1).replace("3600000", "7200000"),
    );
    let check = streamroute(&["topics", "check", "--dir", d], &[]);
    assert_eq!(check.status.code(), Some(1), "{}", show(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout)
            .contains("config retention.ms is 3600000, the file says 7200000"),
        "{}",
        show(&check)
    );
}

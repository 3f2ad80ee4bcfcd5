use std::time::Duration;

use super::*;

fn p(topic: &str, partition: i32, next_offset: i64) -> Position {
    Position {
        topic: topic.into(),
        partition,
        next_offset,
    }
}

#[test]
fn the_position_is_the_offset_after_the_last_delivered_record() {
    assert_eq!(next_offset_after(0), 1);
    assert_eq!(next_offset_after(41), 42);
}

#[tokio::test]
async fn positions_survive_reopening_and_are_listed_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let state = State::open(dir.path(), Duration::ZERO).expect("open");
        assert_eq!(state.get("t", 0).expect("get"), None);
        state
            .set_batch(&[p("t", 1, 10), p("t", 0, 5), p("a.b", 3, 7)])
            .await
            .expect("set");
        state.set_batch(&[p("t", 0, 6)]).await.expect("set");
    }
    let state = State::open(dir.path(), Duration::from_millis(100)).expect("reopen");
    assert_eq!(state.get("t", 0).expect("get"), Some(6));
    let all: Vec<_> = state
        .all()
        .expect("all")
        .into_iter()
        .map(|p| (p.topic, p.partition, p.next_offset))
        .collect();
    assert_eq!(
        all,
        [
            ("a.b".to_string(), 3, 7),
            ("t".to_string(), 0, 6),
            ("t".to_string(), 1, 10)
        ]
    );
}

#[tokio::test]
async fn an_interrupted_snapshot_is_removed_before_opening() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let state = State::open(dir.path(), Duration::ZERO).expect("open");
        state.set_batch(&[p("t", 0, 42)]).await.expect("set");
    }
    // What a full disk leaves: sled sorts it after every real snapshot.
    let leftover = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&leftover, b"").expect("leftover");
    let state = State::open(dir.path(), Duration::ZERO).expect("opens despite the leftover");
    assert_eq!(state.get("t", 0).expect("get"), Some(42));
    assert!(!leftover.exists());
}

#[tokio::test]
async fn durable_positions_are_only_those_flushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = State::open(dir.path(), Duration::from_secs(1)).expect("open");
    state.set_batch(&[p("t", 0, 5)]).await.expect("set");
    assert!(state.durable().is_empty(), "not flushed yet");
    state.flush().await.expect("flush");
    assert_eq!(state.durable().get(&("t".to_string(), 0)), Some(&5));
}

#[tokio::test]
async fn a_folder_deleted_under_an_open_state_is_recreated_with_the_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    let state = State::open(&path, Duration::ZERO).expect("open");
    state.set_batch(&[p("t", 0, 7)]).await.expect("set");
    assert!(!state.close_if_lost(), "nothing lost yet");
    std::fs::remove_dir_all(&path).expect("delete");
    assert!(state.close_if_lost());
    state.reopen().expect("reopen");
    drop(state);
    // sled's background threads let go of the folder's lock a moment
    // after the last handle is dropped (egress retries the same way).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let state = loop {
        match State::open(&path, Duration::ZERO) {
            Ok(state) => break state,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("open again: {e:?}"),
        }
    };
    assert_eq!(state.get("t", 0).expect("get"), Some(7));
}

#[tokio::test]
async fn a_closed_state_refuses_writes_and_reopening_writes_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = State::closed(dir.path(), Duration::ZERO);
    assert!(matches!(
        state.set_batch(&[p("t", 0, 9)]).await,
        Err(StateError::Unavailable { .. })
    ));
    assert!(!state.is_open());
    state.reopen().expect("reopen");
    assert_eq!(
        state.get("t", 0).expect("get"),
        Some(9),
        "the refused write is kept and written on reopen"
    );
    assert_eq!(state.durable().get(&("t".to_string(), 0)), Some(&9));
}

#[tokio::test]
async fn a_position_and_its_windows_are_written_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let state = State::open(dir.path(), Duration::ZERO).expect("open");
        let (mut w, mut g) = (sled::Batch::default(), sled::Batch::default());
        let prefix = partition_key("t", 2);
        w.insert([prefix.as_slice(), b"S1"].concat(), &b"one"[..]);
        g.insert([prefix.as_slice(), b"G"].concat(), &b"gap"[..]);
        state
            .set_with_windows(&p("t", 2, 12), &w, &g)
            .await
            .expect("set");
        assert_eq!(state.durable().get(&("t".to_string(), 2)), Some(&12));
    }
    let state = State::open(dir.path(), Duration::ZERO).expect("reopen");
    assert_eq!(state.get("t", 2).expect("get"), Some(12));
    let prefix = partition_key("t", 2);
    let windows = state.scan(Tree::Windows, &prefix).expect("scan");
    assert_eq!(
        windows,
        [([prefix.as_slice(), b"S1"].concat(), b"one".to_vec())]
    );
    assert_eq!(state.scan(Tree::Gaps, &prefix).expect("scan").len(), 1);
    assert!(state
        .scan(Tree::Windows, &partition_key("t", 3))
        .expect("scan")
        .is_empty());
}

/// Tree keys name their topic and partition; `split_partition_key` reads
/// back what `partition_key` wrote, and refuses what it did not.
#[test]
fn partition_keys_split_back_into_topic_and_partition() {
    for (topic, partition) in [
        ("streamroute.tasks.default", 0),
        ("t", 7),
        ("a.b-c_d", i32::MAX),
    ] {
        assert_eq!(
            split_partition_key(&partition_key(topic, partition)),
            Some((topic.to_string(), partition))
        );
    }
    assert_eq!(split_partition_key(b"t"), None, "shorter than a partition");
    assert_eq!(split_partition_key(b"t\x01\0\0\0\0"), None, "no separator");
}

/// `apply` writes its batch to the named tree only: inserts and removes
/// are there afterwards, the other tree is untouched.
#[test]
fn apply_writes_the_batch_to_its_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = State::open(dir.path(), Duration::ZERO).expect("open");
    let prefix = partition_key("t", 0);
    let k = |n: u8| [prefix.as_slice(), &[n]].concat();
    let mut batch = sled::Batch::default();
    batch.insert(k(1), b"one".to_vec());
    batch.insert(k(2), b"two".to_vec());
    state.apply(Tree::Gaps, batch).expect("apply");
    let mut batch = sled::Batch::default();
    batch.remove(k(1));
    state.apply(Tree::Gaps, batch).expect("apply");
    assert_eq!(
        state.scan(Tree::Gaps, &prefix).expect("scan"),
        vec![(k(2), b"two".to_vec())]
    );
    assert_eq!(state.scan(Tree::Windows, &prefix).expect("scan"), vec![]);
}

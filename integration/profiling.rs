//! `GET /debug/pprof/profile` of a running `streamroute gateway`: with
//! `run.pprof = true` a 2 s profile taken under load is a pprof protobuf
//! (decoded here with prost against profile.proto's field numbers, and read
//! by `go tool pprof`), behind `gateway.auth` like `/metrics`; off (the
//! default) it is 404.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::common::{create_topic, http_get, http_post, unique};
use crate::egress::{recent_ms, request};
use crate::gateway_hostile::Gateway;

/// The parts of pprof's `profile.proto` the test reads (field numbers as
/// in github.com/google/pprof/proto/profile.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(int64, tag = "12")]
    period: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
}

/// GETs `url` with `headers`: status and the body's bytes.
async fn get_bytes(url: &str, headers: &[(&str, &str)]) -> (u16, bytes::Bytes) {
    let mut request = hyper::Request::get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("in time")
        .expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}

/// `streamroute gateway` with `config` (TOML) on a fresh ingress topic.
async fn gateway(config: &str, authorization: Option<&str>) -> Gateway {
    let ingress = unique("prof-in");
    create_topic(&ingress, 1).await;
    Gateway::start(&ingress, config, authorization).await
}

/// The Go binary: `GO`, else `go` on PATH, else /usr/local/go/bin/go (as
/// scripts/vm-modern.sh, which needs it to build VictoriaMetrics).
fn go_bin() -> PathBuf {
    if let Some(go) = std::env::var_os("GO") {
        return go.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("go"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/local/go/bin/go"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_profile_taken_under_load_is_a_pprof_protobuf_behind_gateway_auth() {
    let token = "prof-secret";
    let bearer = format!("Bearer {token}");
    let run = gateway(
        &format!("[run]\npprof = true\n[[gateway.auth]]\ntype = \"bearer\"\ntoken = \"{token}\"\n"),
        Some(&bearer),
    )
    .await;
    let auth = [("authorization", bearer.as_str())];
    let url = format!("http://{}/debug/pprof/profile", run.addr);

    let (status, _) = get_bytes(&format!("{url}?seconds=1"), &[]).await;
    assert_eq!(status, 401, "without credentials, as /metrics");
    for bad in ["0", "61", "x"] {
        let (status, body) = get_bytes(&format!("{url}?seconds={bad}"), &auth).await;
        assert_eq!(status, 400, "seconds={bad}: {body:?}");
    }

    // Writes keep the gateway busy while the profile is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, write) = (stop.clone(), format!("http://{}/api/v1/write", run.addr));
        let bearer = bearer.clone();
        tokio::spawn(async move {
            let name = format!("sr_it_prof_{}", uuid::Uuid::new_v4().simple());
            let body = crate::gateway::snappy(&request(&name, 0, 500, recent_ms()));
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                let headers = [("content-encoding", "snappy"), ("authorization", &bearer)];
                let r = http_post(&write, &headers, body.clone())
                    .await
                    .expect("post");
                assert_eq!(r.status, 204, "{}", r.body);
                written += 1;
            }
            written
        })
    };
    let started = Instant::now();
    let (status, body) = get_bytes(&format!("{url}?seconds=2"), &auth).await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let written = load.await.expect("load");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );

    let profile = <Profile as prost::Message>::decode(body.clone()).expect("pprof protobuf");
    let s = |i: i64| profile.string_table[i as usize].as_str();
    assert_eq!(s(0), "", "string_table[0] is the empty string");
    let types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    assert_eq!(profile.period, 1_000_000_000 / 99, "99 Hz");
    let duration = Duration::from_nanos(profile.duration_nanos as u64);
    assert!(
        duration >= Duration::from_secs(2) && duration < Duration::from_secs(4),
        "{duration:?}"
    );
    let samples: i64 = profile.sample.iter().map(|x| x.value[0]).sum();
    assert!(samples > 0, "no samples in 2 s of {written} writes");
    let names: Vec<&str> = profile.function.iter().map(|f| s(f.name)).collect();
    assert!(
        names.iter().any(|n| n.starts_with("streamroute::gateway")),
        "no gateway function among {} sampled in {written} writes: {names:?}",
        names.len()
    );
    // Each sample's leaf is the function the signal interrupted, not the
    // profiler's unwinder.
    let function = |id: u64| {
        let location = profile
            .location
            .iter()
            .find(|l| l.id == id)
            .expect("location");
        let line = location.line.last().expect("line");
        let f = profile.function.iter().find(|f| f.id == line.function_id);
        s(f.expect("function").name)
    };
    let profiler_leaves: BTreeSet<&str> = profile
        .sample
        .iter()
        .filter_map(|x| x.location_id.first().map(|id| function(*id)))
        .filter(|n| n.starts_with("backtrace::") || n.contains("pprof::"))
        .collect();
    assert!(profiler_leaves.is_empty(), "{profiler_leaves:?}");

    // The consumer it is for reads it too.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cpu.pb");
    std::fs::write(&file, &body).expect("write profile");
    let go = go_bin();
    let top = Command::new(&go)
        .args(["tool", "pprof", "-top", "-symbolize=none"])
        .arg(&file)
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (Go is needed, as for scripts/vm-modern.sh)",
                go.display()
            )
        });
    let out = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "go tool pprof: {}\n{out}",
        String::from_utf8_lossy(&top.stderr)
    );
    assert!(out.contains("streamroute::"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_run_pprof_there_is_no_profile_endpoint() {
    let run = gateway("", None).await;
    let r = http_get(&format!(
        "http://{}/debug/pprof/profile?seconds=1",
        run.addr
    ))
    .await
    .expect("get");
    assert_eq!(r.status, 404, "{}", r.body);
}

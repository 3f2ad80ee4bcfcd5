//! The gateway serving HTTPS (`gateway.tls`): remote write over TLS reaches
//! the ingress topic, plain HTTP on the same port gets no answer, and a bad
//! certificate file is a config error naming its key.

use std::path::{Path, PathBuf};

use crate::common::{
    create_topic, http_get, https_post, read_topic, show, streamroute, unique, write_file,
};
use crate::gateway::{decode_record, request, snappy, start_gateway};

/// A self-signed certificate for 127.0.0.1 and its key, written to `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("self-signed certificate");
    let cert = write_file(dir, "server.crt", &generated.cert.pem());
    let key = write_file(dir, "server.key", &generated.signing_key.serialize_pem());
    (cert, key)
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_over_https_reaches_the_ingress_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let topic = unique("ingress");
    create_topic(&topic, 1).await;
    let mut gateway = start_gateway(
        &topic,
        &[
            ("STREAMROUTE_GATEWAY__TLS__CERT_FILE", path_str(&cert)),
            ("STREAMROUTE_GATEWAY__TLS__KEY_FILE", path_str(&key)),
        ],
    )
    .await;

    let req = request(10, "tls");
    let headers = [
        ("content-encoding", "snappy"),
        ("content-type", "application/x-protobuf"),
    ];
    let response = https_post(gateway.addr, &cert, "/api/v1/write", &headers, snappy(&req))
        .await
        .expect("post over https");
    assert_eq!(response.status, 204, "{}", response.body);
    let records = read_topic(&topic);
    assert_eq!(records.len(), 1);
    assert_eq!(decode_record(&records[0]).1, req);

    // The TLS port speaks nothing but TLS.
    let plain = http_get(&format!("http://{}/-/ready", gateway.addr)).await;
    assert!(
        plain.is_err(),
        "plain HTTP got an answer: status {:?}",
        plain.map(|r| r.status).ok()
    );

    // Graceful shutdown works with TLS connections too.
    let status = gateway.terminate();
    assert!(status.success(), "exit status {status}:\n{}", gateway.log());
}

#[test]
fn a_missing_certificate_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key) = self_signed(dir.path());
    let absent = dir.path().join("absent.crt");
    let output = streamroute(
        &["gateway"],
        &[
            ("STREAMROUTE_GATEWAY__TLS__CERT_FILE", &path_str(&absent)),
            ("STREAMROUTE_GATEWAY__TLS__KEY_FILE", &path_str(&key)),
        ],
    );
    let out = show(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "gateway.tls.cert_file: cannot read {}",
            absent.display()
        )),
        "{out}"
    );
}

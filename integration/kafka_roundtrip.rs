//! The test bed itself: records produced to the live broker come back.

use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::common::{bootstrap, create_topic, unique};

#[tokio::test(flavor = "multi_thread")]
async fn records_produced_to_the_live_broker_are_consumed_in_order() {
    let topic = unique("roundtrip");
    create_topic(&topic, 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for i in 0..50 {
        let payload = format!("record-{i}");
        producer
            .send(
                FutureRecord::<str, str>::to(&topic)
                    .payload(&payload)
                    .key("k"),
                Duration::from_secs(10),
            )
            .await
            .expect("kafka acknowledged the record");
    }
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("group"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut got = Vec::new();
    let mut stream = consumer.stream();
    while got.len() < 50 {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a record within 30 s")
            .expect("stream open")
            .expect("no consumer error");
        got.push(String::from_utf8(message.payload().expect("payload").to_vec()).expect("utf-8"));
    }
    let want: Vec<String> = (0..50).map(|i| format!("record-{i}")).collect();
    assert_eq!(got, want);
}

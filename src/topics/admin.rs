//! Reads topics from the cluster and carries out a [`Plan`] with rdkafka's
//! AdminClient.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::{plan, Change, ObservedTopic, Plan, TopicSpec, TopicsError};
use crate::kafka::KafkaConfig;

/// An admin connection to the cluster.
pub struct TopicAdmin {
    client: AdminClient<DefaultClientContext>,
    timeout: Duration,
}

fn kafka_err(context: &str, e: impl std::fmt::Display) -> TopicsError {
    TopicsError::Kafka(format!("{context}: {e}"))
}

impl TopicAdmin {
    /// Connects (lazily, as librdkafka does) to the configured cluster.
    pub fn new(kafka: &KafkaConfig) -> Result<TopicAdmin, TopicsError> {
        let client = kafka
            .client_config("admin")
            .create()
            .map_err(|e| kafka_err("cannot create admin client", e))?;
        Ok(TopicAdmin {
            client,
            timeout: kafka.request_timeout,
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// What the cluster has for each spec's topic (None when missing).
    pub async fn observe(
        &self,
        specs: &[TopicSpec],
    ) -> Result<BTreeMap<String, ObservedTopic>, TopicsError> {
        let metadata = {
            let client = self.client.inner();
            let timeout = self.timeout;
            // fetch_metadata blocks; keep it off the async workers.
            tokio::task::block_in_place(|| client.fetch_metadata(None, timeout))
                .map_err(|e| kafka_err("cannot read cluster metadata", e))?
        };
        let mut out = BTreeMap::new();
        let wanted: Vec<&TopicSpec> = specs
            .iter()
            .filter(|s| metadata.topics().iter().any(|t| t.name() == s.name))
            .collect();
        let resources: Vec<ResourceSpecifier> = wanted
            .iter()
            .map(|s| ResourceSpecifier::Topic(&s.name))
            .collect();
        let configs = if resources.is_empty() {
            Vec::new()
        } else {
            self.client
                .describe_configs(&resources, &self.options())
                .await
                .map_err(|e| kafka_err("cannot describe topic configs", e))?
        };
        for (spec, result) in wanted.iter().zip(configs) {
            let resource = result
                .map_err(|e| kafka_err(&format!("cannot describe topic {}", spec.name), e))?;
            let topic = metadata
                .topics()
                .iter()
                .find(|t| t.name() == spec.name)
                .ok_or_else(|| kafka_err("topic vanished while reading it", &spec.name))?;
            let replication_factor = topic
                .partitions()
                .iter()
                .find(|p| p.id() == 0)
                .map(|p| p.replicas().len() as u16)
                .unwrap_or(0);
            let config = spec
                .config
                .keys()
                .map(|k| (k.clone(), resource.get(k).and_then(|e| e.value.clone())))
                .collect();
            out.insert(
                spec.name.clone(),
                ObservedTopic {
                    partitions: topic.partitions().len() as u32,
                    replication_factor,
                    config,
                },
            );
        }
        Ok(out)
    }

    /// Compares the specs with the cluster.
    pub async fn plan(&self, specs: &[TopicSpec]) -> Result<Plan, TopicsError> {
        let observed = self.observe(specs).await?;
        Ok(plan(specs, |name| observed.get(name).cloned()))
    }

    /// Makes one change.
    pub async fn apply(&self, change: &Change) -> Result<(), TopicsError> {
        match change {
            Change::Create(spec) => {
                let mut topic = NewTopic::new(
                    &spec.name,
                    spec.partitions as i32,
                    TopicReplication::Fixed(i32::from(spec.replication_factor)),
                );
                for (key, value) in &spec.config {
                    topic = topic.set(key, value);
                }
                let results = self
                    .client
                    .create_topics([&topic], &self.options())
                    .await
                    .map_err(|e| kafka_err("create topics", e))?;
                for result in results {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => {
                            return Err(kafka_err(&format!("cannot create topic {name}"), code))
                        }
                    }
                }
            }
            Change::AddPartitions { topic, to, .. } => {
                let partitions = NewPartitions::new(topic, *to as usize);
                let results = self
                    .client
                    .create_partitions([&partitions], &self.options())
                    .await
                    .map_err(|e| kafka_err("create partitions", e))?;
                for result in results {
                    if let Err((name, code)) = result {
                        return Err(kafka_err(
                            &format!("cannot raise partitions of {name}"),
                            code,
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits until the cluster's metadata shows every spec at least as
    /// created, so a second `apply` right after the first sees no change.
    pub async fn wait_until_visible(&self, specs: &[TopicSpec]) -> Result<(), TopicsError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let plan = self.plan(specs).await?;
            if plan.changes.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TopicsError::Kafka(format!(
                    "changes not visible in metadata after {:?}: {}",
                    self.timeout,
                    plan.changes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

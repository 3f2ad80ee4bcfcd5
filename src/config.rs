//! Configuration: built-in defaults, then a TOML file (`--config`), then
//! environment variables `STREAMROUTE_…` with `__` for nesting
//! (`STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS`). Unknown keys are an error.
//!
//! Every struct sits next to the code that uses it; this file only holds the
//! top level and the start-up validation. `validate` reports every problem at
//! once, each a [`Problem`] naming its dotted key: each section checks itself
//! (keys relative to it) and this file puts them under the section's name
//! and checks the rules that span sections.
//!
//! May depend on: every role's and building block's config section (this
//! file sits above them; none of them imports it), `problem`. An absent
//! `router.limits` is filled in with `gateway.limits` here, at load.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::egress::EgressConfig;
use crate::gateway::GatewayConfig;
use crate::kafka::KafkaConfig;
pub use crate::problem::Problem;
use crate::problem::Problems;
use crate::router::RouterConfig;
use crate::telemetry::LogConfig;
use crate::tls::TlsConfig;
use crate::topics::TopicsConfig;

/// The whole configuration of one streamroute process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// Kafka cluster and client settings shared by every role.
    pub kafka: KafkaConfig,
    /// Topic names and the folder holding the topic files.
    pub topics: TopicsConfig,
    /// `streamroute run`: which roles run in this one process and where they serve.
    pub run: RunConfig,
    /// The gateway role (remote write in, ingress topic out).
    pub gateway: GatewayConfig,
    /// The router role.
    pub router: RouterConfig,
    /// The egress role.
    pub egress: EgressConfig,
}

/// Settings for `streamroute run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The roles this process runs: any of `gateway`, `router`, `egress`.
    pub roles: Vec<Role>,
    /// The one address that serves every role's endpoints (`/metrics`,
    /// `/-/healthy`, `/-/ready` and the gateway's write paths).
    pub listen: SocketAddr,
    /// How long roles may drain after SIGINT/SIGTERM before the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// When set, `run.listen` serves HTTPS with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Serve CPU profiles on `GET /debug/pprof/profile?seconds=N`
    /// (`src/profiling.rs`).
    pub pprof: bool,
}

/// A role of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Remote write in, ingress topic out.
    Gateway,
    /// Ingress topic in, task topics out.
    Router,
    /// Task topic partitions out to vmagent.
    Egress,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Gateway => "gateway",
            Role::Router => "router",
            Role::Egress => "egress",
        })
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            roles: vec![Role::Gateway, Role::Router, Role::Egress],
            listen: SocketAddr::from(([127, 0, 0, 1], 9201)),
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            pprof: false,
        }
    }
}

/// Everything wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or did not match the expected shape.
    #[error("config error: {0}")]
    Load(String),
    /// The values were read but some are invalid.
    #[error("config error:{}", render(.0))]
    Invalid(Vec<Problem>),
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("\n  {}: {}", p.key, p.reason))
        .collect()
}

impl Config {
    /// Loads defaults, then `file` if given, then `STREAMROUTE_*` variables,
    /// and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = Config::load_unvalidated(file)?;
        config.validate()?;
        // What the gateway accepted the router takes, unless told otherwise.
        if config.router.limits.is_none() {
            config.router.limits = Some(config.gateway.limits.clone());
        }
        Ok(config)
    }

    /// Like [`Config::load`] without [`Config::validate`]: for
    /// `streamroute check config`, which reports more than validation does.
    pub fn load_unvalidated(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // STREAMROUTE_CONFIG_FILE names the file (see cli.rs); it is not a key.
        figment = figment.merge(
            Env::prefixed("STREAMROUTE_")
                .ignore(&["config_file"])
                .split("__"),
        );
        let mut config: Config = figment
            .extract()
            .map_err(|first| ConfigError::Load(every_load_error(&figment, first)))?;
        if let Some(folder) = file.and_then(Path::parent) {
            config.resolve_paths(folder);
        }
        Ok(config)
    }

    /// Makes every relative path (files, folders, the egress state) relative
    /// to `folder`, the config file's folder, as Prometheus does: started
    /// from another working directory, the process reads the same files and
    /// the same state. Paths inside `kafka.properties` go to librdkafka as
    /// they are.
    fn resolve_paths(&mut self, folder: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = folder.join(&*path);
            }
        };
        resolve(&mut self.topics.dir);
        resolve(&mut self.egress.state_dir);
        if let Some(path) = &mut self.egress.tls_ca_file {
            resolve(path);
        }
        for tls in [&mut self.run.tls, &mut self.gateway.tls]
            .into_iter()
            .flatten()
        {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
        }
        for route in &mut self.router.routes {
            for path in [&mut route.relabel_file, &mut route.stream_aggr_file]
                .into_iter()
                .flatten()
            {
                resolve(path);
            }
        }
    }

    /// Checks every rule, including those that compare two fields, and
    /// returns all problems together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut out = Problems::default();
        out.extend_within("log", self.log.problems());
        out.extend_within("kafka", self.kafka.problems());
        out.extend_within("topics", self.topics.problems());
        if self.run.roles.is_empty() {
            out.push(
                "run.roles",
                "lists no role; name at least one of gateway, router, egress",
            );
        }
        if self.run.shutdown_grace.is_zero() {
            out.push("run.shutdown_grace", "must be greater than zero");
        } else if self.run.shutdown_grace > Duration::from_secs(10 * 60) {
            // Service managers kill long before; the roles would not drain anyway.
            out.push("run.shutdown_grace", "must be at most 10m");
        }
        if self.kafka.request_timeout > Duration::from_secs(10 * 60) {
            out.push("kafka.request_timeout", "must be at most 10m");
        }
        if let Some(tls) = &self.run.tls {
            out.extend_within("run.tls", tls.problems());
        }
        out.extend_within("gateway", self.gateway.problems());
        // Absent, router.limits is gateway.limits, checked just above.
        if let Some(limits) = &self.router.limits {
            out.extend_within(
                "router.limits",
                crate::gateway::config::limits_problems(limits),
            );
        }
        out.extend_within("router", self.router.problems(self.router_names()));
        if self
            .router
            .routes
            .iter()
            .any(|r| r.topic == self.topics.ingress || r.topic == self.topics.dead_letter)
        {
            out.push(
                "router.routes",
                "a route's topic must differ from topics.ingress and topics.dead_letter",
            );
        }
        out.extend_within("egress", self.egress.problems());
        if self.egress.topic == self.topics.ingress || self.egress.topic == self.topics.dead_letter
        {
            out.push(
                "egress.topic",
                "must differ from topics.ingress and topics.dead_letter",
            );
        }
        let listens = [
            ("gateway.listen", self.gateway.listen),
            ("router.listen", self.router.listen),
            ("egress.listen", self.egress.listen),
        ];
        for (i, (key, addr)) in listens.iter().enumerate() {
            if let Some((other, _)) = listens[..i]
                .iter()
                .find(|(_, a)| a == addr && addr.port() != 0)
            {
                out.push(*key, format!("{addr} is already used by {other}"));
            }
        }
        let problems = out.into_vec();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The label-name rule the router's relabel rules are checked under:
    /// `router.limits`', else (before [`Config::load`] fills it in) the
    /// gateway's.
    pub fn router_names(&self) -> crate::remote_write::NameValidation {
        self.router
            .limits
            .as_ref()
            .unwrap_or(&self.gateway.limits)
            .name_validation
    }
}

/// Most errors in a file at once: serde stops at the first unknown key or
/// bad value, so each offending key is removed from the merged sources and
/// the extraction repeated (at most [`MAX_LOAD_ERRORS`] times). Keys are
/// named as validation names them (`router.routes[0].task_count`), with the
/// source that set them.
fn every_load_error(figment: &Figment, first: figment::Error) -> String {
    let mut messages = Vec::new();
    let Ok(mut merged) = figment.extract::<figment::value::Value>() else {
        return describe_figment(figment, first);
    };
    let mut error = first;
    for _ in 0..MAX_LOAD_ERRORS {
        let paths: Vec<Vec<String>> = error.clone().into_iter().map(|e| e.path).collect();
        messages.push(describe_figment(figment, error));
        let mut removed = false;
        for path in &paths {
            removed |= remove(&mut merged, path);
        }
        if !removed {
            break;
        }
        match Figment::from(Serialized::defaults(&merged)).extract::<Config>() {
            Ok(_) => break,
            Err(next) => error = next,
        }
    }
    messages.join("\n  ")
}

/// How many load errors one file reports at most.
const MAX_LOAD_ERRORS: usize = 50;

/// Removes the key at `path` (indexes of arrays as numbers); true if it was there.
fn remove(value: &mut figment::value::Value, path: &[String]) -> bool {
    use figment::value::Value;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for key in parents {
        at = match at {
            Value::Dict(_, dict) => match dict.get_mut(key) {
                Some(next) => next,
                None => return false,
            },
            Value::Array(_, items) => {
                match key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(next) => next,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    match at {
        Value::Dict(_, dict) => dict.remove(last).is_some(),
        Value::Array(_, items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// A figment path as validation writes keys: `router.routes[0].task_count`.
fn dotted(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

/// figment's messages already name the key; make the common ones read
/// well, and name the source (file or environment) that set the key.
fn describe_figment(figment: &Figment, error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = dotted(&e.path);
            // The re-extractions of every_load_error carry no source; the
            // original sources know which one set the key.
            let source = (1..=e.path.len())
                .rev()
                .find_map(|n| figment.find_metadata(&e.path[..n].join(".")))
                .or(e.metadata.as_ref())
                .map(|m| match &m.source {
                    Some(figment::Source::File(path)) => format!("{} {}", m.name, path.display()),
                    _ => m.name.to_string(),
                })
                .unwrap_or_default();
            let source = if source.is_empty() {
                String::new()
            } else {
                format!(" ({source})")
            };
            let what = match &e.kind {
                figment::error::Kind::UnknownField(field, _) => {
                    // The path already ends with the unknown field.
                    let full = if key.is_empty() {
                        field.as_str()
                    } else {
                        key.as_str()
                    };
                    return format!("{full}: unknown key{source}");
                }
                kind => kind.to_string(),
            };
            if key.is_empty() {
                format!("{what}{source}")
            } else {
                format!("{key}: {what}{source}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default()
            .validate()
            .expect("defaults must validate");
    }

    #[test]
    fn every_unknown_key_and_bad_value_of_a_file_is_named_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[gateway]\nmax_in_flight = \"many\"\nbogus = 1\n\
             [[router.routes]]\nname = \"a\"\ntopic = \"t\"\ntask_count = 8\n\
             taskcount = 8\npartition_label = [\"x\"]\n\
             [[router.routes]]\nname = \"b\"\ntopic = \"u\"\ntask_count = \"eight\"\n",
        )
        .unwrap();
        let Err(ConfigError::Load(message)) = Config::load(Some(&path)) else {
            panic!("expected a load error")
        };
        for key in [
            "gateway.max_in_flight: invalid type",
            "gateway.bogus: unknown key",
            "router.routes[0].taskcount: unknown key",
            "router.routes[0].partition_label: unknown key",
            "router.routes[1].task_count: invalid type",
        ] {
            assert!(message.contains(key), "{key} is not named in: {message}");
        }
        assert!(message.contains("bad.toml"), "the file is named: {message}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("conf");
        std::fs::create_dir(&folder).unwrap();
        let path = folder.join("sr.toml");
        std::fs::write(
            &path,
            "[egress]\nstate_dir = \"state\"\ntls_ca_file = \"/abs/ca.pem\"\n\
             [[router.routes]]\nname = \"a\"\ntopic = \"t\"\ntask_count = 8\n\
             relabel_file = \"rules/a.yml\"\n",
        )
        .unwrap();
        let config = Config::load_unvalidated(Some(&path)).unwrap();
        assert_eq!(config.egress.state_dir, folder.join("state"));
        assert_eq!(config.topics.dir, folder.join("topics"), "defaults too");
        assert_eq!(
            config.router.routes[0].relabel_file.as_deref(),
            Some(folder.join("rules/a.yml").as_path())
        );
        assert_eq!(
            config.egress.tls_ca_file.as_deref(),
            Some(Path::new("/abs/ca.pem")),
            "absolute paths stay"
        );
    }

    /// The keys serde accepts for `T`, read from its `deny_unknown_fields`
    /// error ("unknown field `…`, expected one of `a`, `b`"), so a new
    /// field needs no list to be kept by hand.
    fn accepted_keys<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
        let error = serde_json::from_str::<T>(r#"{"__no_such_key__": 0}"#)
            .expect_err("unknown keys are refused")
            .to_string();
        let expected = error
            .split("expected")
            .nth(1)
            .expect("serde lists the keys");
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    }

    /// config/example.toml as section → keys, counting commented-out keys
    /// (`# key = …`) and sub-tables (`[section.key]`, also commented).
    fn example_keys() -> std::collections::BTreeMap<String, Vec<String>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut sections = std::collections::BTreeMap::<String, Vec<String>>::new();
        let mut section = String::new();
        for line in text.lines() {
            let line = line.strip_prefix("# ").unwrap_or(line).trim_end();
            if let Some(header) = line.strip_prefix('[') {
                let name = header.trim_start_matches('[').trim_end_matches(']');
                if name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.".contains(c))
                {
                    section = name.to_string();
                    if let Some((parent, key)) = section.rsplit_once('.') {
                        sections.entry(parent.into()).or_default().push(key.into());
                    } else {
                        sections
                            .entry(String::new())
                            .or_default()
                            .push(section.clone());
                    }
                    continue;
                }
            }
            if let Some((key, _)) = line.split_once(" = ") {
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    sections
                        .entry(section.clone())
                        .or_default()
                        .push(key.into());
                }
            }
        }
        sections
    }

    #[test]
    fn example_toml_documents_every_key_of_every_section() {
        use crate::egress::config::BasicAuth;
        use crate::egress::windows::config::WindowsConfig;
        use crate::remote_write::Limits;
        use crate::router::config::RouteConfig;
        let example = example_keys();
        let sections: Vec<(&str, Vec<String>)> = vec![
            ("", accepted_keys::<Config>()),
            ("log", accepted_keys::<LogConfig>()),
            ("kafka", accepted_keys::<KafkaConfig>()),
            ("topics", accepted_keys::<TopicsConfig>()),
            ("run", accepted_keys::<RunConfig>()),
            ("run.tls", accepted_keys::<TlsConfig>()),
            ("gateway", accepted_keys::<GatewayConfig>()),
            ("gateway.tls", accepted_keys::<TlsConfig>()),
            ("gateway.limits", accepted_keys::<Limits>()),
            ("router", accepted_keys::<RouterConfig>()),
            ("router.limits", accepted_keys::<Limits>()),
            ("router.routes", accepted_keys::<RouteConfig>()),
            ("egress", accepted_keys::<EgressConfig>()),
            ("egress.basic_auth", accepted_keys::<BasicAuth>()),
            ("egress.windows", accepted_keys::<WindowsConfig>()),
        ];
        let mut missing = Vec::new();
        for (section, keys) in &sections {
            assert!(!keys.is_empty(), "no keys read for [{section}]");
            for key in keys {
                if !example.get(*section).is_some_and(|k| k.contains(key)) {
                    missing.push(format!("[{section}] {key}"));
                }
            }
        }
        assert!(missing.is_empty(), "config/example.toml lacks: {missing:?}");
    }

    #[test]
    fn router_limits_are_the_gateway_s_unless_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sr.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(Some(&path))
        };
        let gateway =
            "[gateway.limits]\nmax_labels_per_series = 10\nname_validation = \"legacy\"\n";
        let config = load(gateway).unwrap();
        assert_eq!(config.router.limits.as_ref(), Some(&config.gateway.limits));
        assert_eq!(config.router.limits().max_labels_per_series, 10);

        let config = load(&format!(
            "{gateway}[router.limits]\nmax_labels_per_series = 20\n"
        ))
        .unwrap();
        assert_eq!(config.gateway.limits.max_labels_per_series, 10);
        let router = config.router.limits();
        assert_eq!(router.max_labels_per_series, 20);
        assert_eq!(
            router.name_validation,
            crate::remote_write::NameValidation::Utf8,
            "a section set is taken whole, its other keys at their defaults"
        );

        let Err(ConfigError::Invalid(problems)) =
            load("[router.limits]\nmax_series_per_request = 0\n")
        else {
            panic!("expected problems")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["router.limits.max_series_per_request"]);
    }

    #[test]
    fn validation_names_every_bad_key() {
        let mut config = Config::default();
        config.topics.dead_letter = config.topics.ingress.clone();
        config.run.roles.clear();
        config.router.listen = config.gateway.listen;
        let Err(ConfigError::Invalid(problems)) = config.validate() else {
            panic!("expected problems")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["topics.dead_letter", "run.roles", "router.listen"]);
    }
}

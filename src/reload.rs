//! Hot reload: SIGHUP and `POST /-/reload` re-read the config file.
//!
//! What changes without a restart: the routes' relabel rules
//! (`relabel_configs`, `relabel_file`) and `stream_aggr_file`, egress
//! targets, auth and headers, gateway auth and limits (and the router's
//! limits), and the log level. A config that does not load or validate,
//! or whose rules do not compile, is refused as a whole: the running one
//! stays, the error is logged, counted and returned. Every other key that
//! changed needs a restart: it is reported by name and not applied.
//!
//! Each role reads what it may reload from a [`Live`] value at its own
//! safe point: the router between transactions (a transaction never mixes
//! old and new rules), egress between requests, the gateway per request.
//!
//! Depends on: `config` (loading, validation), `router::route` (compiling
//! rules), `telemetry` (the log filter), `live`. The roles depend on
//! `live` only, not on this module.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::egress::EgressConfig;
use crate::gateway::GatewayConfig;
pub use crate::live::Live;
use crate::router::route::Route;
use crate::router::Rules;

/// Reload outcomes (`result` = `success` | `failure`).
pub const RELOADS: &str = "streamroute_config_reloads_total";
/// 1 when the last reload applied, 0 when it was refused (as Prometheus' `prometheus_config_last_reload_successful`).
pub const LAST_RELOAD_SUCCESSFUL: &str = "streamroute_config_last_reload_successful";
/// Unix time of the last reload that applied (start-up counts as one).
pub const LAST_RELOAD_SUCCESS_TIMESTAMP: &str =
    "streamroute_config_last_reload_success_timestamp_seconds";

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The process was started without a config file: nothing to re-read.
    #[error("no config file to reload (started without --config / STREAMROUTE_CONFIG_FILE)")]
    NoFile,
    /// The file does not load or validate.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A route's rules do not compile.
    #[error("router.routes[{index}] ({route}): {reason}")]
    Route {
        index: usize,
        route: String,
        reason: String,
    },
    /// Another reload is running.
    #[error("a reload is already running")]
    Busy,
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Reloadable keys that changed (dotted, as in the config file).
    pub changed: Vec<String>,
    /// Keys that changed but need a restart; not applied.
    pub restart_needed: Vec<String>,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.changed.is_empty() {
            writeln!(
                f,
                "config reloaded: no reloadable key changed (relabel and stream_aggr files were read again)"
            )?;
        } else {
            writeln!(f, "config reloaded; applied: {}", self.changed.join(", "))?;
        }
        if !self.restart_needed.is_empty() {
            writeln!(
                f,
                "changed but need a restart (not applied): {}",
                self.restart_needed.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Re-reads the config file and hands the reloadable parts to the roles.
pub struct Reloader {
    file: Option<PathBuf>,
    /// The config the process started with: restart-only keys are compared with it.
    started: Arc<Config>,
    /// The config in effect: `started` with the reloadable parts of the last good reload.
    config: Mutex<Arc<Config>>,
    /// What each role reads.
    gateway: Live<GatewayConfig>,
    rules: Live<Rules>,
    egress: Live<EgressConfig>,
    running: Mutex<()>,
}

fn rules_of(config: &Config, routes: Vec<Route>) -> Rules {
    Rules {
        routes: Arc::new(routes),
        limits: config.router.limits(),
    }
}

impl Reloader {
    /// `routes` are `config`'s routes compiled (the router's start-up check).
    pub fn new(file: Option<PathBuf>, config: Arc<Config>, routes: Vec<Route>) -> Reloader {
        metrics::gauge!(LAST_RELOAD_SUCCESSFUL).set(1.0);
        metrics::gauge!(LAST_RELOAD_SUCCESS_TIMESTAMP).set(unix_now());
        for result in ["success", "failure"] {
            metrics::counter!(RELOADS, "result" => result).increment(0);
        }
        Reloader {
            file,
            gateway: Live::new(config.gateway.clone()),
            rules: Live::new(rules_of(&config, routes)),
            egress: Live::new(config.egress.clone()),
            config: Mutex::new(config.clone()),
            started: config,
            running: Mutex::new(()),
        }
    }

    /// The gateway section in effect (auth and limits reload).
    pub fn gateway(&self) -> Live<GatewayConfig> {
        self.gateway.clone()
    }

    /// The router's compiled routes and limits in effect.
    pub fn rules(&self) -> Live<Rules> {
        self.rules.clone()
    }

    /// The egress section in effect (targets, auth and headers reload).
    pub fn egress(&self) -> Live<EgressConfig> {
        self.egress.clone()
    }

    /// Reloads, logging and counting the outcome.
    pub fn reload(&self) -> Result<Applied, ReloadError> {
        let Ok(_one) = self.running.try_lock() else {
            return Err(ReloadError::Busy);
        };
        let result = self.try_reload();
        match &result {
            Ok(applied) => {
                metrics::counter!(RELOADS, "result" => "success").increment(1);
                metrics::gauge!(LAST_RELOAD_SUCCESSFUL).set(1.0);
                metrics::gauge!(LAST_RELOAD_SUCCESS_TIMESTAMP).set(unix_now());
                info!(changed = ?applied.changed, "config reloaded");
                if !applied.restart_needed.is_empty() {
                    warn!(keys = ?applied.restart_needed, "config keys changed that need a restart; not applied");
                }
            }
            Err(e) => {
                metrics::counter!(RELOADS, "result" => "failure").increment(1);
                metrics::gauge!(LAST_RELOAD_SUCCESSFUL).set(0.0);
                error!(error = %e, "config reload refused; the running config stays");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<Applied, ReloadError> {
        let file = self.file.as_deref().ok_or(ReloadError::NoFile)?;
        let new = Config::load(Some(file))?;
        let mut current = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let running = current.clone();
        let next = with_reloadable(&running, &new);
        let routes = compile_routes(&next)?;
        let applied = Applied {
            changed: changed_keys(&running, &next),
            restart_needed: changed_keys(&with_reloadable(&self.started, &new), &new),
        };
        if let Some(level) = (next.log.level != running.log.level).then(|| next.log.level.clone()) {
            crate::telemetry::set_log_level(&level);
        }
        let changed = |section: &str| applied.changed.iter().any(|k| k.starts_with(section));
        if changed("gateway.") {
            self.gateway.set(next.gateway.clone());
        }
        if changed("egress.") {
            self.egress.set(next.egress.clone());
        }
        // Always: a relabel_file or stream_aggr_file may have changed on
        // disk under the same name.
        self.rules.set(rules_of(&next, routes));
        *current = Arc::new(next);
        Ok(applied)
    }
}

/// Compiles `config`'s routes as the router does at start-up.
pub fn compile_routes(config: &Config) -> Result<Vec<Route>, ReloadError> {
    let names = config.router.limits().name_validation;
    config
        .router
        .routes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            Route::compile(r, names).map_err(|reason| ReloadError::Route {
                index,
                route: r.name.clone(),
                reason: reason.to_string(),
            })
        })
        .collect()
}

/// `running` with the reloadable parts of `new`. Routes take new rules
/// only where the route list keeps its names and topics; a route added,
/// removed or renamed needs a restart.
pub fn with_reloadable(running: &Config, new: &Config) -> Config {
    let mut next = running.clone();
    next.log.level = new.log.level.clone();
    next.gateway.auth = new.gateway.auth.clone();
    next.gateway.limits = new.gateway.limits.clone();
    next.router.limits = new.router.limits.clone();
    let same_routes = running.router.routes.len() == new.router.routes.len()
        && running
            .router
            .routes
            .iter()
            .zip(&new.router.routes)
            .all(|(a, b)| a.name == b.name && a.topic == b.topic);
    if same_routes {
        for (route, new) in next.router.routes.iter_mut().zip(&new.router.routes) {
            route.relabel_configs = new.relabel_configs.clone();
            route.relabel_file = new.relabel_file.clone();
            route.stream_aggr_file = new.stream_aggr_file.clone();
        }
    }
    next.egress.target = new.egress.target.clone();
    next.egress.basic_auth = new.egress.basic_auth.clone();
    next.egress.bearer_token = new.egress.bearer_token.clone();
    next.egress.headers = new.egress.headers.clone();
    next
}

/// The dotted keys (`router.routes[0].relabel_configs`) whose values
/// differ between `a` and `b`, at the depth of a config key: a changed
/// rule list is one key, not one per field.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(a).unwrap_or(Value::Null),
        serde_json::to_value(b).unwrap_or(Value::Null),
    );
    let mut out = BTreeSet::new();
    diff("", &a, &b, &mut out);
    out.into_iter().collect()
}

fn diff(key: &str, a: &Value, b: &Value, out: &mut BTreeSet<String>) {
    if a == b {
        return;
    }
    let join = |k: &str| {
        if key.is_empty() {
            k.to_string()
        } else {
            format!("{key}.{k}")
        }
    };
    match (a, b) {
        // Sections and tables: one level down.
        (Value::Object(x), Value::Object(y)) if !is_leaf(key) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                diff(
                    &join(k),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        // The route list: per route, when it keeps its length.
        (Value::Array(x), Value::Array(y)) if key == "router.routes" && x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                diff(&format!("{key}[{i}]"), x, y, out);
            }
        }
        _ => {
            out.insert(key.to_string());
        }
    }
}

/// Keys whose value is compared whole although it is a table.
fn is_leaf(key: &str) -> bool {
    matches!(key, "kafka.properties" | "egress.headers")
}

impl crate::http::Reload for Reloader {
    fn reload(&self) -> hyper::Response<crate::http::Body> {
        use hyper::StatusCode;
        match Reloader::reload(self) {
            Ok(applied) => crate::http::text(StatusCode::OK, applied.to_string()),
            Err(e) => crate::http::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("config reload refused, the running config stays: {e}\n"),
            ),
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `toml` from one fixed folder, so that relative paths resolve
    /// alike in every config a test compares.
    fn config(toml: &str) -> Config {
        let dir = std::env::temp_dir().join("streamroute-reload-tests");
        std::fs::create_dir_all(&dir).expect("folder");
        let path = dir.join(format!("{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, toml).expect("write");
        let config = Config::load(Some(&path)).expect("valid config");
        let _ = std::fs::remove_file(&path);
        config
    }

    const BASE: &str = r#"
[[router.routes]]
name = "main"
topic = "tasks"
task_count = 4
relabel_configs = [{ action = "drop", source_labels = ["job"], regex = "a" }]
"#;

    #[test]
    fn a_rule_change_is_reloadable_and_a_topic_change_needs_a_restart() {
        let started = config(BASE);
        let new = config(
            &(BASE
                .replace("regex = \"a\"", "regex = \"b\"")
                .replace("task_count = 4", "task_count = 8")
                + "[egress]\ntarget = \"http://other:8429/api/v1/write\"\nstate_dir = \"/tmp/other\"\n"),
        );
        let next = with_reloadable(&started, &new);
        assert_eq!(
            changed_keys(&started, &next),
            ["egress.target", "router.routes[0].relabel_configs"]
        );
        assert_eq!(
            changed_keys(&next, &new),
            ["egress.state_dir", "router.routes[0].task_count"]
        );
        assert_eq!(next.router.routes[0].task_count, 4);
    }

    #[test]
    fn a_renamed_route_keeps_its_old_rules_until_a_restart() {
        let started = config(BASE);
        let new = config(
            &BASE
                .replace("name = \"main\"", "name = \"other\"")
                .replace("regex = \"a\"", "regex = \"b\""),
        );
        let next = with_reloadable(&started, &new);
        assert!(changed_keys(&started, &next).is_empty());
        assert_eq!(
            changed_keys(&next, &new),
            ["router.routes[0].name", "router.routes[0].relabel_configs"]
        );
    }

    #[test]
    fn gateway_auth_and_log_level_are_reloadable() {
        let started = config(BASE);
        let new = config(
            &(String::from("[log]\nlevel = \"debug\"\n[gateway]\nauth = [{ type = \"bearer\", token = \"s3cret-token-1234\" }]\n") + BASE),
        );
        let next = with_reloadable(&started, &new);
        assert_eq!(changed_keys(&started, &next), ["gateway.auth", "log.level"]);
        assert!(changed_keys(&next, &new).is_empty());
    }
}

//! Wires the roles together: loads the config, owns the shutdown token and
//! the task set, and maps outcomes to exit codes (0 ok, 1 failed or drift,
//! 2 bad usage or config).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::{Cli, Command};
use crate::config::{Config, Role};
use crate::gateway::Gateway;
use crate::http::{Handler, Readiness, Server};
use crate::tls::TlsConfig;

mod error;
mod tasks;

pub use error::AppError;
pub use tasks::shutdown_on_signal;
use tasks::{drain, reload_on_sighup, supervise};

/// Runs a parsed command line to completion.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Version => {
            println!(
                "streamroute {} (revision {})",
                crate::metrics::VERSION,
                crate::metrics::REVISION
            );
            Ok(())
        }
        Command::Relabel(args) => {
            crate::commands::relabel::run(&args, cli.config.as_deref()).map_err(AppError::from)
        }
        // Checks a file of its own; exits 1 (not 2) on problems, like promtool.
        Command::Check(args) => return crate::commands::check::run(&args),
        command => with_runtime(cli.config.as_deref(), command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamroute: {e}");
            e.exit_code()
        }
    }
}

fn with_runtime(config_file: Option<&std::path::Path>, command: Command) -> Result<(), AppError> {
    let config = Config::load(config_file)?;
    crate::telemetry::init_logging(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Other(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(async move {
        let config = Arc::new(config);
        match command {
            Command::Run => {
                let (roles, listen) = (config.run.roles.clone(), config.run.listen);
                run_roles(
                    config.clone(),
                    &roles,
                    listen,
                    config.run.tls.as_ref(),
                    shutdown_on_signal(),
                    config_file.map(std::path::Path::to_path_buf),
                )
                .await
            }
            Command::Gateway => {
                run_roles(
                    config.clone(),
                    &[Role::Gateway],
                    config.gateway.listen,
                    config.gateway.tls.as_ref(),
                    shutdown_on_signal(),
                    config_file.map(std::path::Path::to_path_buf),
                )
                .await
            }
            Command::Router => {
                run_roles(
                    config.clone(),
                    &[Role::Router],
                    config.router.listen,
                    None,
                    shutdown_on_signal(),
                    config_file.map(std::path::Path::to_path_buf),
                )
                .await
            }
            Command::Egress => {
                run_roles(
                    config.clone(),
                    &[Role::Egress],
                    config.egress.listen,
                    None,
                    shutdown_on_signal(),
                    config_file.map(std::path::Path::to_path_buf),
                )
                .await
            }
            Command::Topics(args) => {
                crate::commands::topics::run(&config.kafka, &config.topics.dir, &args)
                    .await
                    .map_err(AppError::from)
            }
            // Records as large as the gateway writes to the same topic.
            Command::Produce(args) => crate::commands::produce::run(
                &config.kafka,
                &config.topics.ingress,
                config.gateway.max_decoded_bytes,
                &args,
            )
            .await
            .map(|_| ())
            .map_err(AppError::from),
            Command::Inspect(args) => {
                crate::commands::inspect::run(&args, &config.egress.state_dir)
                    .map_err(AppError::from)
            }
            Command::Version | Command::Relabel(_) | Command::Check(_) => Ok(()),
        }
    });
    // Roles already drained within run.shutdown_grace; do not wait on a
    // blocking thread stuck in a Kafka call any longer than this.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Runs `roles` in this process, serving their endpoints on `listen` (HTTPS
/// when `tls` is given), until `shutdown` is cancelled.
///
/// A role that fails is logged, counted, reported not ready and started
/// again after a backoff, while the other roles keep running: a router or
/// egress that cannot reach Kafka or open its state never takes the
/// gateway down. On shutdown the roles drain in data-flow order: the
/// listener and gateway first (no new writes, the producer flushed), then
/// the router (its last transaction commits), then egress (which delivers
/// up to the partitions' ends, so that last commit too). All of it within
/// `run.shutdown_grace`; what egress has not delivered by then is sent at
/// the next start.
pub async fn run_roles(
    config: Arc<Config>,
    roles: &[Role],
    listen: SocketAddr,
    tls: Option<&TlsConfig>,
    shutdown: CancellationToken,
    config_file: Option<std::path::PathBuf>,
) -> Result<(), AppError> {
    if roles.contains(&Role::Router) && config.router.routes.is_empty() {
        return Err(AppError::Config(crate::config::ConfigError::Invalid(vec![
            crate::config::Problem {
                key: "router.routes".into(),
                reason: "no route is configured: the router role needs at least one \
                         [[router.routes]] (see config/example.toml), or leave \"router\" out of run.roles"
                    .into(),
            },
        ])));
    }
    let metrics = crate::telemetry::metrics_handle();
    metrics::gauge!(crate::metrics::PROCESS_START).set(unix_now());
    let readiness = Readiness::default();
    // What every role gets besides its own section.
    let shared = crate::shared::Shared {
        kafka: config.kafka.clone(),
        topics: config.topics.clone(),
        readiness: readiness.clone(),
        shutdown_grace: config.run.shutdown_grace,
    };
    let grace = config.run.shutdown_grace;
    // Hot reload (SIGHUP, POST /-/reload): the roles read what may change
    // from the reloader's live values.
    let routes = if roles.contains(&Role::Router) {
        crate::reload::compile_routes(&config).map_err(|e| AppError::Other(e.to_string()))?
    } else {
        Vec::new()
    };
    let reloader = Arc::new(crate::reload::Reloader::new(
        config_file,
        config.clone(),
        routes,
    ));

    let mut handler: Option<Arc<dyn Handler>> = None;
    let mut gateway = None;
    if roles.contains(&Role::Gateway) {
        let g = Gateway::new(
            &config.gateway,
            &config.kafka,
            &config.topics.ingress,
            readiness.clone(),
        )?
        .with_live(reloader.gateway());
        let g = Arc::new(g);
        handler = Some(g.clone());
        gateway = Some(g);
    }
    // The egress role serves its recent gaps on the same listener.
    let gaps = roles
        .contains(&Role::Egress)
        .then(crate::egress::gaps::GapsSource::default);
    if let Some(source) = &gaps {
        let api = crate::egress::gaps::GapsApi::new(source.clone(), handler.take());
        handler = Some(Arc::new(api));
    }
    // Validation already loaded these files; this fails only if they
    // changed since.
    let acceptor = tls
        .map(crate::tls::load_acceptor)
        .transpose()
        .map_err(|e| AppError::Other(format!("cannot set up TLS for {listen}: {e}")))?;
    // Compiled once up front so that a bad route is a start-up error, not
    // a restart loop.
    if roles.contains(&Role::Router) {
        crate::router::Router::new(Arc::new(config.router.clone()), shared.clone())?;
        // At 0 from the start, so that the first abort is an increase.
        for outcome in ["committed", "aborted"] {
            metrics::counter!(crate::router::metrics::TRANSACTIONS, "outcome" => outcome)
                .increment(0);
        }
    }
    let reload: Arc<dyn crate::http::Reload> = reloader.clone();
    let server = Server::bind(
        listen,
        metrics,
        readiness.clone(),
        handler,
        Some(reload),
        acceptor,
        config.run.pprof,
    )
    .await
    .map_err(|source| AppError::Bind {
        addr: listen,
        source,
    })?;
    info!(addr = %listen, roles = ?roles, "streamroute started");
    tokio::spawn(reload_on_sighup(reloader.clone()));

    // One stop token per stage, cancelled in data-flow order below.
    let (gateway_stop, router_stop, egress_stop) = (
        CancellationToken::new(),
        CancellationToken::new(),
        CancellationToken::new(),
    );
    // When the router and egress stop draining (see the end of this function).
    let (router_hard_stop, egress_hard_stop) = (CancellationToken::new(), CancellationToken::new());
    let server_stop = CancellationToken::new();
    let server_task = tokio::spawn(server.serve(server_stop.clone(), grace));
    let gateway_task = gateway.clone().map(|g| {
        let stop = gateway_stop.clone();
        tokio::spawn(supervise(
            "gateway",
            readiness.clone(),
            stop.clone(),
            move || {
                let (g, stop) = (g.clone(), stop.clone());
                async move { g.run(stop).await.map_err(AppError::from) }
            },
        ))
    });
    let router_task = roles.contains(&Role::Router).then(|| {
        let (router, ready, stop) = (
            Arc::new(config.router.clone()),
            shared.clone(),
            router_stop.clone(),
        );
        let hard_stop = router_hard_stop.clone();
        let live = reloader.clone();
        tokio::spawn(supervise(
            "router",
            readiness.clone(),
            stop.clone(),
            move || {
                let (router, ready, stop) = (router.clone(), ready.clone(), stop.clone());
                let (hard_stop, live) = (hard_stop.clone(), live.clone());
                async move {
                    crate::router::Router::new(router, ready)?
                        .with_hard_stop(hard_stop)
                        .with_live(live.rules())
                        .run(stop)
                        .await
                        .map_err(AppError::from)
                }
            },
        ))
    });
    let egress_task = roles.contains(&Role::Egress).then(|| {
        let (egress, ready, stop) = (
            Arc::new(config.egress.clone()),
            shared.clone(),
            egress_stop.clone(),
        );
        let hard_stop = egress_hard_stop.clone();
        let live = reloader.egress();
        tokio::spawn(supervise(
            "egress",
            readiness.clone(),
            stop.clone(),
            move || {
                let (egress, ready, stop) = (egress.clone(), ready.clone(), stop.clone());
                let (gaps, hard_stop, live) = (gaps.clone(), hard_stop.clone(), live.clone());
                async move {
                    crate::egress::Egress::new(egress, ready)
                        .with_gaps(gaps)
                        .with_hard_stop(hard_stop)
                        .with_live(live)
                        .run(stop)
                        .await
                        .map_err(AppError::from)
                }
            },
        ))
    });

    shutdown.cancelled().await;
    let deadline = tokio::time::Instant::now() + grace;
    let mut first_error = None;
    // 1. Intake: the listener stops accepting, in-flight writes finish.
    server_stop.cancel();
    gateway_stop.cancel();
    let _ = tokio::time::timeout_at(deadline, server_task).await;
    drain("gateway", gateway_task, deadline, &mut first_error).await;
    if let Some(g) = &gateway {
        g.close(deadline.saturating_duration_since(tokio::time::Instant::now()));
    }
    // 2. The router reads the ingress partitions to their ends, which now
    //    hold every acknowledged write, and commits (`router/drain.rs`);
    //    it gets half of what is left of the grace, egress the rest.
    router_stop.cancel();
    let now = tokio::time::Instant::now();
    let router_deadline = now + deadline.saturating_duration_since(now) / 2;
    let hard_stop = router_hard_stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(router_deadline).await;
        hard_stop.cancel();
    });
    drain("router", router_task, deadline, &mut first_error).await;
    // 3. Egress delivers up to the partitions' ends, which now hold that
    //    last commit (`egress/drain.rs`), then stops; at the deadline it
    //    stops wherever it is and the rest is sent at the next start.
    egress_stop.cancel();
    let hard_stop = egress_hard_stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline).await;
        hard_stop.cancel();
    });
    drain(
        "egress",
        egress_task,
        deadline + Duration::from_secs(4),
        &mut first_error,
    )
    .await;
    info!("streamroute stopped");
    first_error.map_or(Ok(()), Err)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

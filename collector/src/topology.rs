//! The whole pipeline in one place: what is created, how stages connect, and the order of
//! shutdown. Read this first.
//!
//! ```text
//! OTLP/gRPC ─┐
//! OTLP/HTTP ─┴─▶ IngestHandle: decode (Arrow) ─▶ redact ─▶ WAL writer ─▶ catalog ◀─ SQL / API / console
//!                                                   │  │       └─▶ compactor ─▶ Parquet ─▶ retention
//!                                                   │  └─▶ findings ─▶ WAL (`redactions`)
//!                                                   └─▶ detector thread ─▶ alerts ─▶ redact ─▶ WAL (`alerts`)
//!                                                        ▲                     └─▶ sinks: outbox ─▶ webhooks
//!                                                        │                               └─▶ WAL (`dead_letters`)
//!                     API triage ─ snapshots, resolve ───┘   acknowledge/resolve ─▶ WAL (`alert_actions`)
//! ```
//! Shutdown: stop accepting, finish in-flight requests (their appends are still served), let
//! the detector finish its queue and write its alerts, let webhook requests in flight finish
//! (the rest stays in the outbox), then close storage: the WAL writer drains its queue and
//! fsyncs, queued compactions finish.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use vigil_core::Redactor;

use crate::api;
use crate::auth::Auth;
use crate::config::Config;
use crate::detection::{self, DetectorStage};
use crate::detector_state::StateFile;
use crate::metrics::Metrics;
use crate::pipeline::IngestHandle;
use crate::query::QueryEngine;
use crate::receiver;
use crate::reload::Reloadable;
use crate::sinks::SinkStage;
use crate::storage::Storage;
use crate::storage::crypto::FileSealer;
use crate::storage::crypto::Keyring;
use crate::tls::{Tls, TlsConnectInfo};

/// Where the listeners actually bound (ports may have been 0 in the config).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
}

/// A running pipeline.
pub struct Topology {
    pub addrs: BoundAddrs,
    pub metrics: Metrics,
    config: Config,
    storage: Storage,
    detector: DetectorStage,
    sinks: SinkStage,
    stop: watch::Sender<bool>,
    servers: JoinSet<anyhow::Result<()>>,
}

impl Topology {
    /// Recovers storage, binds every listener and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let metrics = Metrics::new().context("cannot register metrics")?;

        let storage_keys = Keyring::load(&config.storage.encryption)
            .context("cannot load the storage keyring ([storage.encryption])")?;
        let storage = {
            let (s, r, q, k, m) = (
                config.storage.clone(),
                config.retention.clone(),
                config.ingest.max_in_flight_requests,
                storage_keys.clone(),
                metrics.clone(),
            );
            tokio::task::spawn_blocking(move || Storage::open(&s, &r, q, k, m))
                .await
                .context("storage start-up task failed")?
                .with_context(|| {
                    format!(
                        "cannot open data directory {}",
                        config.storage.data_dir.display()
                    )
                })?
        };
        let redactor = build_redactor(&config)?;
        let auth = Auth::new(&config.auth, metrics.clone())?;
        let tls = Tls::new(&config.server.tls)?;
        warn_if_exposed(&config, auth.enabled(), tls.is_some());
        let rules = detection::load_rules(&config.detector).map_err(|problems| {
            anyhow::anyhow!("invalid detection rules:\n  - {}", problems.join("\n  - "))
        })?;

        let grpc = bind(config.server.grpc_addr, "server.grpc_addr").await?;
        let http = bind(config.server.http_addr, "server.http_addr").await?;
        let api = bind(config.server.api_addr, "server.api_addr").await?;
        let addrs = BoundAddrs {
            grpc: grpc.local_addr()?,
            http: http.local_addr()?,
            api: api.local_addr()?,
        };

        let scheme = if tls.is_some() { "https" } else { "http" };
        // Files beside WAL and Parquet (outboxes, detector state) are sealed like them.
        let sealer = FileSealer::new(storage_keys.clone());
        let sinks = SinkStage::start(
            &config.alerts,
            &format!("{scheme}://{}", addrs.api),
            &config.storage.data_dir,
            redactor.clone(),
            storage.appender(),
            metrics.clone(),
            sealer.clone(),
        )?;
        let detector = DetectorStage::start(
            &config.detector,
            rules,
            redactor.clone(),
            storage.appender(),
            sinks.sinks(),
            metrics.clone(),
            StateFile::new(&config.storage.data_dir, sealer.clone()),
        )?;
        let ingest = IngestHandle::new(
            storage.appender(),
            detector.handle(),
            redactor.clone(),
            metrics.clone(),
            &config.ingest,
        );
        let engine = Arc::new(
            QueryEngine::new(storage.catalog(), config.query.clone())?
                .with_storage_keys(storage_keys.clone()),
        );
        detection::check_sql_rules(&config.detector.sql, &engine)
            .await
            .map_err(|p| {
                anyhow::anyhow!("invalid scheduled sql rules:\n  - {}", p.join("\n  - "))
            })?;

        let (stop, stopped) = watch::channel(false);
        let mut servers = JoinSet::new();
        {
            let routes = receiver::grpc_routes(
                ingest.clone(),
                &config.ingest,
                metrics.clone(),
                auth.clone(),
            );
            let stopped = stopped.clone();
            let server = tonic::transport::Server::builder().add_routes(routes);
            match &tls {
                Some(tls) => {
                    let incoming = tls.listen(grpc, "grpc")?.into_stream();
                    servers.spawn(serve_grpc(server, incoming, stopped))
                }
                None => servers.spawn(serve_grpc(server, TcpListenerStream::new(grpc), stopped)),
            };
        }
        let http_app = receiver::http_router(
            ingest.clone(),
            &config.ingest,
            metrics.clone(),
            auth.clone(),
        );
        spawn_http(&mut servers, http, http_app, tls.as_ref(), &stopped, "http")?;
        detection::spawn_sql_rules(
            &config.detector.sql,
            engine.clone(),
            detector.handle(),
            stopped.clone(),
            &mut servers,
        );
        let reloadable = Reloadable {
            auth: auth.clone(),
            tls: tls.clone(),
            storage_keys: storage_keys.clone(),
        };
        let api_app = api::router(api::ApiParts {
            engine,
            ingest,
            detector: detector.handle(),
            appender: storage.appender(),
            redactor,
            metrics: metrics.clone(),
            auth: auth.clone(),
            reload: reloadable.clone(),
        });
        spawn_http(&mut servers, api, api_app, tls.as_ref(), &stopped, "api")?;
        if let Some(tls) = &tls {
            servers.spawn(tls.clone().watch(stopped.clone()));
        }
        servers.spawn(reload_on_sighup(reloadable, stopped));

        tracing::info!(grpc = %addrs.grpc, http = %addrs.http, api = %addrs.api, "vigil is listening");
        Ok(Self {
            addrs,
            metrics,
            config,
            storage,
            detector,
            sinks,
            stop,
            servers,
        })
    }

    /// Graceful stop: no new requests, in-flight ones finish (bounded by
    /// `server.shutdown_timeout`), then everything queued is written and synced.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        tracing::info!("shutting down: no longer accepting requests");
        let _ = self.stop.send(true);
        let drain = async {
            while let Some(r) = self.servers.join_next().await {
                match r {
                    Ok(Err(e)) => tracing::error!(error = %e, "server stopped with an error"),
                    Err(e) => tracing::error!(error = %e, "server task failed"),
                    Ok(Ok(())) => {}
                }
            }
        };
        if tokio::time::timeout(self.config.server.shutdown_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish in time; closing storage anyway");
            self.servers.abort_all();
        }
        let detector = self.detector;
        tokio::task::spawn_blocking(move || detector.close())
            .await
            .context("detector close task failed")?;
        self.sinks.close(self.config.server.shutdown_timeout).await;
        let storage = self.storage;
        tokio::task::spawn_blocking(move || storage.close())
            .await
            .context("storage close task failed")?;
        tracing::info!("shutdown complete");
        Ok(())
    }

    /// Runs until `shutdown` resolves or a server fails, then stops gracefully.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            () = shutdown => {}
            Some(r) = self.servers.join_next() => {
                let err = match r {
                    Ok(Ok(())) => anyhow::anyhow!("a server stopped unexpectedly"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::Error::new(e).context("a server task failed"),
                };
                self.shutdown().await?;
                return Err(err);
            }
        }
        self.shutdown().await
    }
}

async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({name})"))
}

/// SIGHUP re-reads the API key file, the TLS files and the storage keyring (rotation without
/// a restart). A file with problems leaves what is in use unchanged.
async fn reload_on_sighup(
    reloadable: Reloadable,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let stop = wait_stop(stopped);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            _ = hup.recv() => {
                tracing::info!("received SIGHUP: reloading API keys, TLS files and storage keys");
                let reloaded = reloadable.reload();
                if let Some(Err(e)) = &reloaded.keys {
                    tracing::error!(error = %e, "cannot reload API keys; the keys in use stay valid");
                }
                if let Some(Err(e)) = &reloaded.tls {
                    tracing::error!(error = %e, "cannot reload TLS files; the certificate in use stays");
                }
                match &reloaded.storage_key {
                    Some(Ok(active)) => tracing::info!(active, "storage keyring reloaded"),
                    Some(Err(e)) => tracing::error!(
                        error = %e,
                        "cannot reload the storage keyring; the keys in use stay"
                    ),
                    None => {}
                }
            }
        }
    }
}

async fn wait_stop(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stopped.wait_for(|s| *s).await;
}

/// Serves `app` on `listener`, over TLS when configured.
fn spawn_http(
    servers: &mut JoinSet<anyhow::Result<()>>,
    listener: TcpListener,
    app: axum::Router,
    tls: Option<&Tls>,
    stopped: &watch::Receiver<bool>,
    name: &'static str,
) -> anyhow::Result<()> {
    let stop = wait_stop(stopped.clone());
    match tls {
        // Requests learn their connection's client certificate (mTLS identities).
        Some(tls) => {
            let listener = tls.listen(listener, name)?;
            let app = app.into_make_service_with_connect_info::<TlsConnectInfo>();
            servers.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
                    .with_context(|| format!("{name} server failed"))
            })
        }
        None => servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .with_context(|| format!("{name} server failed"))
        }),
    };
    Ok(())
}

async fn serve_grpc<I, IO, IE>(
    server: tonic::transport::server::Router,
    incoming: I,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    server
        .serve_with_incoming_shutdown(incoming, wait_stop(stopped))
        .await
        .context("otlp/grpc server failed")
}

/// Says loudly what is unprotected: auth or TLS off, and listeners that are reachable from
/// other hosts anyway (`server.allow_insecure`).
fn warn_if_exposed(config: &Config, auth: bool, tls: bool) {
    let server = &config.server;
    let exposed: Vec<String> = [server.grpc_addr, server.http_addr, server.api_addr]
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(ToString::to_string)
        .collect();
    let secured = auth && tls;
    if !exposed.is_empty() && !secured {
        tracing::warn!(listeners = %exposed.join(", "), auth, tls,
            "INSECURE: listeners reachable from other hosts without both TLS and \
             authentication (server.allow_insecure = true)");
    } else if !auth {
        tracing::warn!(
            "authentication is off (no auth.keys_file): every listener is on \
            loopback, and anyone on this host can send, query and administer"
        );
    }
}

/// The redaction stage, with its hash key (read after the data directory is locked, since a
/// generated key lives there).
fn build_redactor(config: &Config) -> anyhow::Result<Redactor> {
    let redaction = &config.redaction;
    if !redaction.enabled {
        tracing::warn!(
            "redaction is DISABLED (redaction.enabled = false): PII and secrets are stored as sent"
        );
        return Ok(Redactor::disabled());
    }
    let key = crate::secrets::redaction_key(redaction, &config.storage.data_dir)
        .context("cannot load the redaction hash key")?;
    Redactor::new(redaction, key).context("invalid [redaction] config")
}

//! TLS on the listeners (rustls): one certificate for all three, mutual TLS per listener, and
//! certificate, key and client CA re-read from disk when they change (checked every
//! `reload_interval` and on SIGHUP), so a rotated certificate needs no restart.
//!
//! Handshakes run concurrently, each with a deadline, off the accept loop: a client that
//! connects and stalls cannot hold up anyone else.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The listeners, as named in `server.tls.mtls`.
pub const LISTENERS: [&str; 3] = ["grpc", "http", "api"];

/// Time a client has to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain served on every listener. Setting it (with `key_file`) turns
    /// TLS on for all of them.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates, for the listeners in `mtls`.
    pub client_ca_file: Option<PathBuf>,
    /// Listeners (`grpc`, `http`, `api`) that require a client certificate signed by
    /// `client_ca_file`.
    pub mtls: Vec<String>,
    /// How often the files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            mtls: Vec::new(),
            reload_interval: Duration::from_secs(30),
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }

    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                problems.push("server.tls: set both cert_file and key_file".to_owned());
            }
            _ => {}
        }
        for l in &self.mtls {
            if !LISTENERS.contains(&l.as_str()) {
                problems.push(format!(
                    "server.tls.mtls: unknown listener {l:?}; listeners are grpc, http, api"
                ));
            }
        }
        if !self.mtls.is_empty() && self.client_ca_file.is_none() {
            problems.push("server.tls.mtls needs server.tls.client_ca_file".to_owned());
        }
        if !self.mtls.is_empty() && !self.enabled() {
            problems.push("server.tls.mtls needs cert_file and key_file".to_owned());
        }
        if self.reload_interval.is_zero() {
            problems.push("server.tls.reload_interval must be greater than 0".to_owned());
        }
        if problems.is_empty()
            && self.enabled()
            && let Err(e) = Configs::load(self)
        {
            problems.push(format!("server.tls: {e}"));
        }
        problems
    }
}

/// The rustls configurations in use, rebuilt together when a file changes.
#[derive(Clone)]
struct Configs {
    plain: Arc<rustls::ServerConfig>,
    /// Requires a client certificate; `None` without a client CA.
    mutual: Option<Arc<rustls::ServerConfig>>,
}

impl Configs {
    fn load(config: &TlsConfig) -> Result<Self, String> {
        let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
            return Err("cert_file and key_file are required".to_owned());
        };
        let certs = read_certs(cert_file)?;
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| format!("cannot read a private key from {}: {e}", key_file.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS protocol versions: {e}"))
        };
        let alpn = |mut c: rustls::ServerConfig| {
            // gRPC needs HTTP/2; the HTTP listeners speak both.
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Arc::new(c)
        };
        let plain = builder()?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("certificate and key do not match or are unusable: {e}"))?;
        let mutual = match &config.client_ca_file {
            None => None,
            Some(ca_file) => {
                let mut roots = RootCertStore::empty();
                for ca in read_certs(ca_file)? {
                    roots.add(ca).map_err(|e| {
                        format!("{}: unusable CA certificate: {e}", ca_file.display())
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| format!("client CA {}: {e}", ca_file.display()))?;
                let c = builder()?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(certs, key)
                    .map_err(|e| {
                        format!("certificate and key do not match or are unusable: {e}")
                    })?;
                Some(alpn(c))
            }
        };
        Ok(Self {
            plain: alpn(plain),
            mutual,
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// TLS for the listeners, shared by all of them; reloads when its files change.
#[derive(Clone)]
pub struct Tls {
    config: Arc<TlsConfig>,
    current: Arc<RwLock<Configs>>,
    stamps: Arc<Mutex<Vec<Option<SystemTime>>>>,
}

impl Tls {
    /// `None` when TLS is not configured.
    pub fn new(config: &TlsConfig) -> anyhow::Result<Option<Self>> {
        if !config.enabled() {
            return Ok(None);
        }
        let configs = Configs::load(config).map_err(|e| anyhow::anyhow!("server.tls: {e}"))?;
        Ok(Some(Self {
            stamps: Arc::new(Mutex::new(stamps(config))),
            config: Arc::new(config.clone()),
            current: Arc::new(RwLock::new(configs)),
        }))
    }

    /// Whether `listener` requires client certificates.
    pub fn is_mutual(&self, listener: &str) -> bool {
        self.config.mtls.iter().any(|l| l == listener)
    }

    /// `None` for a mutual listener without a client CA (validation refuses that config):
    /// never fall back to accepting clients without a certificate.
    fn acceptor(&self, mutual: bool) -> Option<TlsAcceptor> {
        let current = self.current.read();
        let config = if mutual {
            Arc::clone(current.mutual.as_ref()?)
        } else {
            Arc::clone(&current.plain)
        };
        Some(TlsAcceptor::from(config))
    }

    /// Re-reads the files now. On a problem the configuration in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let configs = Configs::load(&self.config)?;
        *self.current.write() = configs;
        *self.stamps.lock() = stamps(&self.config);
        tracing::info!("TLS certificate, key and client CA reloaded");
        Ok(())
    }

    /// Reloads when a file's modification time changed since the last load.
    fn reload_if_changed(&self) {
        if *self.stamps.lock() == stamps(&self.config) {
            return;
        }
        if let Err(e) = self.reload() {
            tracing::error!(error = %e, "cannot reload TLS files; the certificate in use stays");
        }
    }

    /// Checks the files every `reload_interval` until stopped.
    pub async fn watch(self, mut stopped: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.config.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return Ok(()),
                _ = tick.tick() => self.reload_if_changed(),
            }
        }
    }

    /// Starts accepting TLS connections on `tcp`: handshakes run concurrently, each with a
    /// deadline; failed handshakes are logged at debug level and dropped.
    pub fn listen(&self, tcp: TcpListener, listener: &'static str) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let tls = self.clone();
        let mutual = self.is_mutual(listener);
        tokio::spawn(async move {
            let limit = Arc::new(Semaphore::new(MAX_HANDSHAKES));
            loop {
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                    return;
                };
                let (stream, remote) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(listener, error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(acceptor) = tls.acceptor(mutual) else {
                    tracing::error!(
                        listener,
                        "mutual TLS without a client CA: connection refused"
                    );
                    continue;
                };
                let conn_tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = conn_tx.send(TlsConn { stream, remote }).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(listener, %remote, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(listener, %remote, "TLS handshake timed out");
                        }
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { rx, local })
    }
}

fn stamps(config: &TlsConfig) -> Vec<Option<SystemTime>> {
    [&config.cert_file, &config.key_file, &config.client_ca_file]
        .into_iter()
        .map(|f| {
            f.as_ref()
                .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        })
        .collect()
}

/// Accepted, handshaken TLS connections of one listener.
pub struct TlsListener {
    rx: mpsc::Receiver<TlsConn>,
    local: SocketAddr,
}

impl TlsListener {
    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<TlsConn>> {
        futures::stream::unfold(self.rx, |mut rx| async move {
            rx.recv().await.map(|c| (Ok(c), rx))
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsConn, SocketAddr) {
        match self.rx.recv().await {
            Some(conn) => {
                let remote = conn.remote;
                (conn, remote)
            }
            // The accept task ended (only at shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// One TLS connection.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    remote: SocketAddr,
}

/// What requests learn about their TLS connection (tonic puts it in `request.extensions()`,
/// axum as `ConnectInfo<TlsConnectInfo>`).
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub remote: SocketAddr,
    /// The leaf certificate the client presented, verified against the client CA (mutual
    /// TLS listeners only).
    pub client_certificate: Option<Arc<CertificateDer<'static>>>,
}

impl TlsConn {
    fn connect_info(&self) -> TlsConnectInfo {
        let client_certificate = self
            .stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[CertificateDer<'static>]>::first)
            .map(|leaf| Arc::new(leaf.clone()));
        TlsConnectInfo {
            remote: self.remote,
            client_certificate,
        }
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        TlsConn::connect_info(self)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsConnectInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.io().connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_every_problem() {
        let config = TlsConfig {
            cert_file: Some("/nonexistent/server.pem".into()),
            key_file: None,
            client_ca_file: None,
            mtls: vec!["grpc".into(), "smtp".into()],
            reload_interval: Duration::ZERO,
        };
        let problems = config.validate().join("\n");
        for expected in [
            "set both cert_file and key_file",
            "unknown listener \"smtp\"",
            "mtls needs server.tls.client_ca_file",
            "reload_interval must be greater than 0",
        ] {
            assert!(
                problems.contains(expected),
                "{expected} missing from:\n{problems}"
            );
        }
        let unreadable = TlsConfig {
            cert_file: Some("/nonexistent/server.pem".into()),
            key_file: Some("/nonexistent/server.key".into()),
            ..TlsConfig::default()
        };
        let problems = unreadable.validate().join("\n");
        assert!(
            problems.contains("cannot read certificates from /nonexistent/server.pem"),
            "{problems}"
        );
        assert!(TlsConfig::default().validate().is_empty());
        assert!(!TlsConfig::default().enabled());
    }
}

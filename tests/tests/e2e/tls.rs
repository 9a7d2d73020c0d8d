//! TLS end to end: every listener speaks TLS with certificates made here, mutual TLS refuses
//! clients without a certificate from the client CA, and a rotated certificate is served
//! without a restart.

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::auth::entry;
use crate::harness::{Vigil, eventually};
use crate::otlp::{logs_request, now_ns};

/// A certificate authority that signs server and client certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its private key, as PEM.
struct Pair {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn sign(&self, common_name: &str, names: &[&str]) -> Pair {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        self.sign_params(common_name, CertificateParams::new(names).unwrap())
    }

    /// A workload certificate whose only subject alternative name is a URI (SPIFFE style).
    fn sign_uri(&self, uri: &str) -> Pair {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        self.sign_params("workload", params)
    }

    fn sign_params(&self, common_name: &str, mut params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

fn write_server_files(dir: &Path, server: &Pair, client_ca: &Ca) {
    std::fs::write(dir.join("server.pem"), &server.cert).unwrap();
    std::fs::write(dir.join("server.key"), &server.key).unwrap();
    std::fs::write(dir.join("clients-ca.pem"), &client_ca.pem).unwrap();
}

fn tls_config(dir: &Path, mtls: &[&str]) -> String {
    let path = |f: &str| dir.join(f).display().to_string();
    format!(
        "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\nmtls = {mtls:?}\n\
         reload_interval = \"200ms\"\n",
        path("server.pem"),
        path("server.key"),
        path("clients-ca.pem"),
    )
}

fn https_client(ca: &Ca, identity: Option<&Pair>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .https_only(true);
    if let Some(id) = identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(format!("{}{}", id.cert, id.key).as_bytes()).unwrap(),
        );
    }
    builder.build().unwrap()
}

/// `POST /api/v1/query` over TLS, with a bearer key if given.
async fn https_query(vigil: &Vigil, ca: &Ca, key: Option<&str>, sql: &str) -> serde_json::Value {
    let mut request = https_client(ca, None)
        .post(format!(
            "https://localhost:{}/api/v1/query",
            vigil.addrs.api.port()
        ))
        .json(&serde_json::json!({ "sql": sql }));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().json().await.unwrap()
}

async fn post_logs(client: &reqwest::Client, url: &str, n: usize) -> Result<u16, reqwest::Error> {
    post_logs_as(client, url, "checkout", None, n)
        .await
        .map(|(status, _)| status)
}

/// Sends `n` records of `service`; returns the status and how many records were rejected.
async fn post_logs_as(
    client: &reqwest::Client,
    url: &str,
    service: &str,
    key: Option<&str>,
    n: usize,
) -> Result<(u16, i64), reqwest::Error> {
    let mut request = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(logs_request(service, "tls", n, now_ns()).encode_to_vec());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    let rejected = ExportLogsServiceResponse::decode(body)
        .ok()
        .and_then(|r| r.partial_success)
        .map_or(0, |p| p.rejected_log_records);
    Ok((status, rejected))
}

async fn grpc_export(vigil: &Vigil, ca: &Ca, identity: Option<&Pair>) -> Result<(), tonic::Status> {
    grpc_export_as(vigil, ca, identity, None).await
}

/// Exports 2 `checkout` records over OTLP/gRPC, with a bearer key if given.
async fn grpc_export_as(
    vigil: &Vigil,
    ca: &Ca,
    identity: Option<&Pair>,
    key: Option<&str>,
) -> Result<(), tonic::Status> {
    let unavailable = |e: tonic::transport::Error| tonic::Status::unavailable(e.to_string());
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", vigil.addrs.grpc.port()))
        .unwrap()
        .tls_config(tls)
        .map_err(unavailable)?
        .connect()
        .await
        .map_err(unavailable)?;
    let mut request = tonic::Request::new(logs_request("checkout", "tls-grpc", 2, now_ns()));
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    LogsServiceClient::new(channel)
        .export(request)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_speaks_tls_and_mtls_refuses_clients_without_a_ca_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("vigil test server CA");
    let client_ca = Ca::new("vigil test client CA");
    write_server_files(
        dir.path(),
        &server_ca.sign("vigil", &["localhost", "127.0.0.1"]),
        &client_ca,
    );
    let vigil = Vigil::start(&tls_config(dir.path(), &["grpc"]));
    let http = format!("https://localhost:{}/v1/logs", vigil.addrs.http.port());

    // OTLP/HTTP over TLS; plain HTTP on the same port gets no answer.
    assert_eq!(
        post_logs(&https_client(&server_ca, None), &http, 3)
            .await
            .unwrap(),
        200
    );
    let plain = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/logs",
            vigil.addrs.http.port()
        ))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that does not trust the server's CA refuses it.
    let untrusting = reqwest::Client::new();
    assert!(post_logs(&untrusting, &http, 1).await.is_err());

    // OTLP/gRPC requires a client certificate signed by the client CA.
    let client = client_ca.sign("checkout", &["checkout"]);
    grpc_export(&vigil, &server_ca, Some(&client))
        .await
        .unwrap();
    assert!(
        grpc_export(&vigil, &server_ca, None).await.is_err(),
        "no client certificate"
    );
    let rogue = Ca::new("someone else's CA").sign("checkout", &["checkout"]);
    assert!(
        grpc_export(&vigil, &server_ca, Some(&rogue)).await.is_err(),
        "a certificate from another CA"
    );

    // The API over TLS: the accepted exports, and only those, are stored.
    let answer = https_query(&vigil, &server_ca, None, "SELECT count(*) FROM logs").await;
    assert_eq!(answer["rows"], serde_json::json!([[5]]));
}

/// The certificate the server presents to a fresh handshake.
fn served_certificate(port: u16, ca_pem: &str) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates().unwrap()[0].clone().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("vigil test CA");
    let first = ca.sign("vigil-2026-a", &["localhost"]);
    write_server_files(dir.path(), &first, &ca);
    let vigil = Vigil::start(&tls_config(dir.path(), &[]));
    let port = vigil.addrs.api.port();
    let served = |pem: String| async move {
        tokio::task::spawn_blocking(move || served_certificate(port, &pem))
            .await
            .unwrap()
    };
    assert_eq!(served(ca.pem.clone()).await, first.der);

    // The files change on disk (as cert-manager or certbot would do): new handshakes get the
    // new certificate, and connections keep being served.
    let second = ca.sign("vigil-2026-b", &["localhost"]);
    write_server_files(dir.path(), &second, &ca);
    eventually(
        Duration::from_secs(20),
        "the new certificate is served",
        || async { served(ca.pem.clone()).await == second.der },
    )
    .await;
    let client = https_client(&ca, None);
    let status = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    // A broken file is not taken: the certificate in use stays.
    std::fs::write(dir.path().join("server.pem"), "not a certificate").unwrap();
    eventually(
        Duration::from_secs(20),
        "the broken file is noticed and refused",
        || async { vigil.log_text().contains("cannot reload TLS files") },
    )
    .await;
    let still = served(ca.pem.clone()).await;
    assert_eq!(still, second.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_binds_the_service_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("vigil test server CA");
    let client_ca = Ca::new("vigil test workload CA");
    write_server_files(
        dir.path(),
        &server_ca.sign("vigil", &["localhost"]),
        &client_ca,
    );
    const ANALYST: &str = "vgl_e2e_cert_test_analyst_0000000000000000000";
    const PAYMENTS: &str = "vgl_e2e_cert_test_payments_ingest_0000000000";
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        entry("analyst", ANALYST, &["query"], None)
            + &entry("payments", PAYMENTS, &["ingest"], Some(&["payments"])),
    )
    .unwrap();
    let config = format!(
        "{}[auth]\nkeys_file = {:?}\n[auth.client_certs]\nname = \"uri\"\n\
         pattern = '^spiffe://vigil\\.test/sa/(?P<service>[a-z-]+)$'\n",
        tls_config(dir.path(), &["grpc", "http"]),
        keys.display().to_string()
    );
    let vigil = Vigil::start(&config);
    let http = format!("https://localhost:{}/v1/logs", vigil.addrs.http.port());
    let checkout = client_ca.sign_uri("spiffe://vigil.test/sa/checkout");
    let as_checkout = https_client(&server_ca, Some(&checkout));

    // The certificate alone authenticates, for the service it names and no other.
    assert_eq!(
        post_logs_as(&as_checkout, &http, "checkout", None, 4)
            .await
            .unwrap(),
        (200, 0)
    );
    assert_eq!(
        post_logs_as(&as_checkout, &http, "payments", None, 3)
            .await
            .unwrap(),
        (200, 3),
        "checkout's certificate sent payments' records"
    );
    // A certificate from the right CA that names no service is refused.
    let nameless = client_ca.sign("someone", &["someone.example"]);
    let refused = post_logs_as(
        &https_client(&server_ca, Some(&nameless)),
        &http,
        "checkout",
        None,
        1,
    )
    .await
    .unwrap();
    assert_eq!(refused.0, 401);

    // Over gRPC: a key bound to payments on checkout's connection may act for neither.
    grpc_export_as(&vigil, &server_ca, Some(&checkout), None)
        .await
        .unwrap();
    let err = grpc_export_as(&vigil, &server_ca, Some(&checkout), Some(PAYMENTS))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("not bound"), "{err}");

    // Only checkout's records were stored: 4 over HTTP, 2 over gRPC.
    let sql = "SELECT service, count(*) AS n FROM logs GROUP BY service ORDER BY service";
    let answer = https_query(&vigil, &server_ca, Some(ANALYST), sql).await;
    assert_eq!(
        answer["rows"],
        serde_json::json!([["checkout", 6]]),
        "{answer}"
    );
}

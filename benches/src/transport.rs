//! The OTLP client side of the load generator: pre-encoded request payloads, one sender per
//! connection (gRPC over tonic or HTTP/protobuf over reqwest), and the classification of every
//! answer into ok / partial / throttled / error.

use std::error::Error as _;
use std::io::Write as _;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::{BufMut as _, Bytes};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use tonic::Code;
use tonic::codec::{Codec, CompressionEncoding, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::corpus::{self, CorpusConfig};
use crate::{Error, Signal, Transport};

const LOGS_GRPC_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
const TRACES_GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// One request ready to go on the wire, and how many records (log records or spans) it holds.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    /// Protobuf bytes; for HTTP already gzip'd when compression is on (gRPC compresses per
    /// message itself).
    pub body: Bytes,
    pub records: u64,
}

/// Builds the corpus for `signal` and encodes each request for `transport`. CPU-heavy: call it
/// off the async runtime.
pub(crate) fn encode_payloads(
    signal: Signal,
    transport: Transport,
    gzip: bool,
    config: &CorpusConfig,
    base_time_ns: u64,
) -> Result<Vec<Payload>, Error> {
    let encoded: Vec<(Vec<u8>, usize)> = match signal {
        Signal::Logs => corpus::logs_requests(config, base_time_ns)
            .iter()
            .map(|r| (r.encode_to_vec(), corpus::count_log_records(r)))
            .collect(),
        Signal::Traces => corpus::trace_requests(config, base_time_ns)
            .iter()
            .map(|r| (r.encode_to_vec(), corpus::count_spans(r)))
            .collect(),
    };
    encoded
        .into_iter()
        .map(|(bytes, records)| {
            let body = if gzip && transport == Transport::Http {
                gzip_bytes(&bytes).map_err(Error::Compress)?
            } else {
                bytes
            };
            Ok(Payload {
                body: Bytes::from(body),
                records: records as u64,
            })
        })
        .collect()
}

fn gzip_bytes(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// How the server answered one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Accepted in full.
    Ok,
    /// Accepted, but `partial_success` reports `rejected` records.
    Partial { rejected: u64 },
    /// Refused as overload: gRPC UNAVAILABLE / RESOURCE_EXHAUSTED, HTTP 429 / 503.
    Throttled,
    /// Anything else. `transport` is true when no answer came back at all (connect failure,
    /// reset, timeout).
    Error { transport: bool, message: String },
}

/// The response message of an OTLP export, whichever the signal.
trait ExportResponse: Message + Default + Send + Sync + 'static {
    fn rejected(&self) -> i64;
}

impl ExportResponse for ExportLogsServiceResponse {
    fn rejected(&self) -> i64 {
        self.partial_success
            .as_ref()
            .map_or(0, |p| p.rejected_log_records)
    }
}

impl ExportResponse for ExportTraceServiceResponse {
    fn rejected(&self) -> i64 {
        self.partial_success
            .as_ref()
            .map_or(0, |p| p.rejected_spans)
    }
}

fn accepted<R: ExportResponse>(response: &R) -> Outcome {
    match u64::try_from(response.rejected()) {
        Ok(rejected) if rejected > 0 => Outcome::Partial { rejected },
        _ => Outcome::Ok,
    }
}

/// Sends pre-encoded requests to one endpoint. Cloning is cheap and shares the connection
/// (gRPC: one HTTP/2 channel; HTTP: reqwest's connection pool).
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    signal: Signal,
    kind: SenderKind,
}

#[derive(Debug, Clone)]
enum SenderKind {
    Grpc(tonic::client::Grpc<Channel>),
    Http {
        client: reqwest::Client,
        url: String,
        gzip: bool,
    },
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub(crate) struct Connect<'a> {
    pub signal: Signal,
    pub transport: Transport,
    pub endpoint: &'a str,
    pub gzip: bool,
    pub timeout: Duration,
    pub connections: usize,
    pub concurrency: usize,
}

impl Sender {
    /// Opens the connections: `connections` gRPC channels (connected eagerly, so a server that
    /// is not listening fails here with a clear error), or one pooled HTTP client.
    pub(crate) async fn connect(connect: &Connect<'_>) -> Result<Vec<Self>, Error> {
        match connect.transport {
            Transport::Grpc => {
                let endpoint = Endpoint::from_shared(connect.endpoint.to_owned())
                    .map_err(|source| Error::Endpoint {
                        endpoint: connect.endpoint.to_owned(),
                        source,
                    })?
                    .timeout(connect.timeout)
                    .connect_timeout(connect.timeout)
                    .tcp_nodelay(true);
                let mut senders = Vec::with_capacity(connect.connections);
                for _ in 0..connect.connections {
                    let channel = endpoint.connect().await.map_err(|source| Error::Connect {
                        endpoint: connect.endpoint.to_owned(),
                        source,
                    })?;
                    let mut grpc = tonic::client::Grpc::new(channel);
                    if connect.gzip {
                        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                    }
                    senders.push(Self {
                        signal: connect.signal,
                        kind: SenderKind::Grpc(grpc),
                    });
                }
                Ok(senders)
            }
            Transport::Http => {
                let client = reqwest::Client::builder()
                    .timeout(connect.timeout)
                    .connect_timeout(connect.timeout)
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(connect.concurrency)
                    .no_proxy()
                    .build()
                    .map_err(Error::HttpClient)?;
                let path = match connect.signal {
                    Signal::Logs => "v1/logs",
                    Signal::Traces => "v1/traces",
                };
                let url = format!("{}/{path}", connect.endpoint.trim_end_matches('/'));
                Ok(vec![Self {
                    signal: connect.signal,
                    kind: SenderKind::Http {
                        client,
                        url,
                        gzip: connect.gzip,
                    },
                }])
            }
        }
    }

    /// Sends one request and waits for the server's answer.
    pub(crate) async fn send(&mut self, body: Bytes) -> Outcome {
        match (&mut self.kind, self.signal) {
            (SenderKind::Grpc(grpc), Signal::Logs) => {
                grpc_export::<ExportLogsServiceResponse>(grpc, LOGS_GRPC_PATH, body).await
            }
            (SenderKind::Grpc(grpc), Signal::Traces) => {
                grpc_export::<ExportTraceServiceResponse>(grpc, TRACES_GRPC_PATH, body).await
            }
            (SenderKind::Http { client, url, gzip }, Signal::Logs) => {
                http_export::<ExportLogsServiceResponse>(client, url, *gzip, body).await
            }
            (SenderKind::Http { client, url, gzip }, Signal::Traces) => {
                http_export::<ExportTraceServiceResponse>(client, url, *gzip, body).await
            }
        }
    }
}

async fn grpc_export<R: ExportResponse>(
    grpc: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    body: Bytes,
) -> Outcome {
    if let Err(error) = grpc.ready().await {
        return Outcome::Error {
            transport: true,
            message: error_chain(&error),
        };
    }
    let codec = PreEncoded::<R>(PhantomData);
    match grpc
        .unary(
            tonic::Request::new(body),
            PathAndQuery::from_static(path),
            codec,
        )
        .await
    {
        Ok(response) => accepted(response.get_ref()),
        Err(status) => classify_grpc_status(&status),
    }
}

/// A status the server sent (no local `source`) with UNAVAILABLE or RESOURCE_EXHAUSTED is a
/// throttle; the same codes produced locally by tonic for a dead connection are errors.
fn classify_grpc_status(status: &tonic::Status) -> Outcome {
    let transport = status.source().is_some();
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted if !transport => Outcome::Throttled,
        code => Outcome::Error {
            transport,
            message: if transport {
                format!("grpc {code:?}: {}", error_chain(status))
            } else {
                format!("grpc {code:?}: {}", status.message())
            },
        },
    }
}

async fn http_export<R: ExportResponse>(
    client: &reqwest::Client,
    url: &str,
    gzip: bool,
    body: Bytes,
) -> Outcome {
    let mut request = client
        .post(url)
        .header(CONTENT_TYPE, "application/x-protobuf")
        .body(body);
    if gzip {
        request = request.header(CONTENT_ENCODING, "gzip");
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            return Outcome::Error {
                transport: true,
                message: format!("http: {}", error_chain(&error)),
            };
        }
    };
    let status = response.status();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) => {
            return Outcome::Error {
                transport: true,
                message: format!("http {status}: reading body: {}", error_chain(&error)),
            };
        }
    };
    if status.is_success() {
        // An undecodable 2xx body still means "accepted"; an empty one decodes to no rejects.
        R::decode(body).map_or(Outcome::Ok, |response| accepted(&response))
    } else if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        Outcome::Throttled
    } else {
        let text = String::from_utf8_lossy(&body);
        let snippet: String = text.chars().take(200).collect();
        Outcome::Error {
            transport: false,
            message: format!("http {status}: {snippet}"),
        }
    }
}

/// An error and all its causes on one line: `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// gRPC codec that writes already-encoded protobuf bytes and decodes the typed response, so the
/// load generator spends no CPU cloning and re-encoding requests. The bytes on the wire are
/// exactly what the generated `LogsServiceClient` / `TraceServiceClient` would send.
struct PreEncoded<R>(PhantomData<R>);

impl<R: ExportResponse> Codec for PreEncoded<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = BytesEncoder;
    type Decoder = tonic_prost::ProstDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_from_the_server_are_classified() {
        assert_eq!(
            classify_grpc_status(&tonic::Status::unavailable("busy")),
            Outcome::Throttled
        );
        assert_eq!(
            classify_grpc_status(&tonic::Status::resource_exhausted("full")),
            Outcome::Throttled
        );
        assert!(matches!(
            classify_grpc_status(&tonic::Status::invalid_argument("bad")),
            Outcome::Error {
                transport: false,
                ..
            }
        ));
    }

    #[test]
    fn a_local_unavailable_is_a_transport_error_not_a_throttle() {
        let mut status = tonic::Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(
            classify_grpc_status(&status),
            Outcome::Error {
                transport: true,
                ..
            }
        ));
    }

    #[test]
    fn partial_success_counts_rejected_records() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
        let response = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "too old".into(),
            }),
        };
        assert_eq!(accepted(&response), Outcome::Partial { rejected: 3 });
        assert_eq!(accepted(&ExportLogsServiceResponse::default()), Outcome::Ok);
    }

    #[test]
    fn http_payloads_are_gzipped_only_when_asked() {
        use std::io::Read as _;
        let config = CorpusConfig {
            services: 2,
            records_per_request: 10,
            requests: 2,
            seed: 1,
            ..CorpusConfig::default()
        };
        let plain = encode_payloads(Signal::Logs, Transport::Http, false, &config, 0).unwrap();
        let gzipped = encode_payloads(Signal::Logs, Transport::Http, true, &config, 0).unwrap();
        let grpc = encode_payloads(Signal::Logs, Transport::Grpc, true, &config, 0).unwrap();
        for ((plain, gzipped), grpc) in plain.iter().zip(&gzipped).zip(&grpc) {
            assert_eq!(plain.records, 10);
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&gzipped.body[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, plain.body);
            assert_eq!(grpc.body, plain.body, "gRPC compresses per message itself");
        }
    }
}

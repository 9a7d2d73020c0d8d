//! OTLP/gRPC receiver: `LogsService`, `TraceService` and a refusing `MetricsService`, each a
//! unary `Export` served by tonic with gzip/zstd requests and a decompressed-size limit.
//!
//! The services are written against `tonic::server::Grpc` rather than the generated servers so
//! that the receiver, not the codec, decodes the protobuf: undecodable requests then answer
//! INVALID_ARGUMENT (the generated codec says INTERNAL), large ones are decoded off the runtime,
//! and oversized ones answer RESOURCE_EXHAUSTED instead of tonic's OUT_OF_RANGE, which OTLP
//! clients treat as retryable.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::service::Routes;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    INLINE_DECODE_MAX_BYTES, Logs, METRICS_LABEL, ReceiveError, Signal, Traces, admit_caller,
    decode_protobuf, export, record_received_bytes, record_rejection, run_cpu_bound,
};
use crate::auth::{Auth, Credentials, Scope};
use crate::config::IngestConfig;
use crate::error::ErrorKind;
use crate::metrics::Metrics;
use crate::pipeline::{Admission, IngestHandle, Transport};

/// `LogsService`, `TraceService` and `MetricsService` (which answers UNIMPLEMENTED). Unknown
/// services and methods answer UNIMPLEMENTED too.
pub fn grpc_routes(
    ingest: IngestHandle,
    config: &IngestConfig,
    metrics: Metrics,
    auth: Auth,
) -> Routes {
    let state = Arc::new(GrpcState {
        ingest,
        metrics,
        auth,
        max_body_bytes: config.max_body_bytes,
    });
    Routes::new(ExportService::<Logs>::new(Arc::clone(&state)))
        .add_service(ExportService::<Traces>::new(Arc::clone(&state)))
        .add_service(ExportService::<MetricsRefusal>::new(state))
}

struct GrpcState {
    ingest: IngestHandle,
    metrics: Metrics,
    auth: Auth,
    /// Limit for one request message, compressed and after decompression.
    max_body_bytes: usize,
}

/// One OTLP gRPC service: its name and what its `Export` method does with the message bytes.
trait GrpcExport: Send + Sync + 'static {
    const SERVICE: &'static str;
    /// Value of the `signal` metrics label.
    const LABEL: &'static str;
    /// The table the records go to; `None` for a service Vigil refuses.
    const TABLE: Option<vigil_core::Signal>;
    type Response: prost::Message + Send + 'static;

    /// `admission` is `Some` for services with a table.
    fn handle(
        state: Arc<GrpcState>,
        admission: Option<Admission>,
        message: Bytes,
    ) -> impl Future<Output = Result<Self::Response, ReceiveError>> + Send;
}

impl<S: Signal> GrpcExport for S {
    const SERVICE: &'static str = S::GRPC_SERVICE;
    const LABEL: &'static str = S::LABEL;
    const TABLE: Option<vigil_core::Signal> = Some(S::SIGNAL);
    type Response = S::Response;

    async fn handle(
        state: Arc<GrpcState>,
        admission: Option<Admission>,
        message: Bytes,
    ) -> Result<S::Response, ReceiveError> {
        let Some(admission) = admission else {
            tracing::error!("grpc export without an ingest slot");
            return Err(ReceiveError::Ingest(crate::error::IngestError::internal()));
        };
        record_received_bytes(&state.metrics, S::LABEL, Transport::Grpc, &message);
        state
            .ingest
            .byte_budget(S::SIGNAL, &admission)
            .charge(message.len())
            .map_err(ReceiveError::Ingest)?;
        let inline = message.len() <= INLINE_DECODE_MAX_BYTES;
        let request = run_cpu_bound(inline, move || decode_protobuf::<S>(&message)).await?;
        export::<S>(&state.ingest, admission, request, Transport::Grpc).await
    }
}

/// `MetricsService`: Vigil stores logs and traces only. The message is read (so the client sees
/// a clean end of stream) but never decoded.
struct MetricsRefusal;

impl GrpcExport for MetricsRefusal {
    const SERVICE: &'static str = metrics_service_server::SERVICE_NAME;
    const LABEL: &'static str = METRICS_LABEL;
    const TABLE: Option<vigil_core::Signal> = None;
    type Response = ExportMetricsServiceResponse;

    async fn handle(
        _: Arc<GrpcState>,
        _: Option<Admission>,
        _: Bytes,
    ) -> Result<Self::Response, ReceiveError> {
        Err(ReceiveError::MetricsRefused)
    }
}

/// The one place where a refusal becomes a gRPC status.
///
/// Overload and unavailability both answer UNAVAILABLE with a `google.rpc.RetryInfo` detail, as
/// the OTLP spec asks for throttling (RESOURCE_EXHAUSTED is only for limits a retry cannot fix).
fn to_status(err: &ReceiveError) -> Status {
    match err {
        ReceiveError::Undecodable(_) => Status::invalid_argument(err.to_string()),
        ReceiveError::PayloadTooLarge { .. } => Status::resource_exhausted(err.to_string()),
        ReceiveError::MetricsRefused | ReceiveError::NotFound => {
            Status::unimplemented(err.to_string())
        }
        ReceiveError::Auth(e) if e.is_forbidden() => Status::permission_denied(err.to_string()),
        ReceiveError::Auth(_) => Status::unauthenticated(err.to_string()),
        // HTTP-only refusals; listed so the mapping stays total.
        ReceiveError::UnsupportedMediaType(_)
        | ReceiveError::UnsupportedEncoding(_)
        | ReceiveError::BodyRead => Status::invalid_argument(err.to_string()),
        ReceiveError::Ingest(e) => match e.kind {
            ErrorKind::InvalidInput => Status::invalid_argument(e.message.clone()),
            // A caller over its own limit: RESOURCE_EXHAUSTED, with the wait as RetryInfo so
            // OTLP clients retry after it.
            ErrorKind::RateLimited { retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                e.message.clone(),
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ErrorKind::Overloaded { retry_after } | ErrorKind::Unavailable { retry_after } => {
                Status::with_error_details(
                    Code::Unavailable,
                    e.message.clone(),
                    ErrorDetails::with_retry_info(Some(retry_after)),
                )
            }
            // Internal details are logged where they happen, never returned.
            ErrorKind::Internal => Status::internal("internal error"),
        },
    }
}

/// A tonic service serving `G`'s `Export` method.
struct ExportService<G> {
    state: Arc<GrpcState>,
    export: PhantomData<fn() -> G>,
}

impl<G> ExportService<G> {
    fn new(state: Arc<GrpcState>) -> Self {
        Self {
            state,
            export: PhantomData,
        }
    }
}

impl<G> Clone for ExportService<G> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.state))
    }
}

impl<G: GrpcExport> NamedService for ExportService<G> {
    const NAME: &'static str = G::SERVICE;
}

impl<G, B> Service<http::Request<B>> for ExportService<G>
where
    G: GrpcExport,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let is_export = request
                .uri()
                .path()
                .strip_prefix('/')
                .and_then(|p| p.strip_prefix(G::SERVICE))
                .is_some_and(|method| method == "/Export");
            if !is_export {
                return Ok(
                    Status::unimplemented("unknown method; OTLP services have only Export")
                        .into_http(),
                );
            }
            // Authenticate and admit before the message is read or decompressed: an unknown
            // caller or an overloaded Vigil is refused without expanding it.
            let credentials = Credentials::of(request.headers(), request.extensions());
            let admission = match G::TABLE {
                Some(table) => admit_caller(&state.auth, &state.ingest, table, credentials)
                    .await
                    .map(Some),
                None => state
                    .auth
                    .authorize(credentials, Scope::Ingest)
                    .await
                    .map(|_| None)
                    .map_err(ReceiveError::Auth),
            };
            let admission = match admission {
                Ok(admission) => admission,
                Err(err) => {
                    record_rejection(&state.metrics, G::LABEL, Transport::Grpc, &err);
                    return Ok(to_status(&err).into_http());
                }
            };
            let mut grpc = Grpc::new(ExportCodec::<G::Response>::default())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(state.max_body_bytes);
            let method = ExportMethod::<G> {
                state: Arc::clone(&state),
                admission,
                export: PhantomData,
            };
            let response = grpc.unary(method, request).await;
            Ok(replace_size_status::<G>(&state, response))
        })
    }
}

/// tonic refuses a message over the limit before the method runs: with OUT_OF_RANGE when the
/// frame is too long, RESOURCE_EXHAUSTED when decompression passes the limit. OTLP clients retry
/// OUT_OF_RANGE, so both become the receiver's own non-retryable RESOURCE_EXHAUSTED, and are
/// counted. The method itself never answers either code (see [`to_status`]).
fn replace_size_status<G: GrpcExport>(
    state: &GrpcState,
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    // A status in the headers means a trailers-only (error) answer.
    let code = response
        .headers()
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()));
    if !matches!(code, Some(Code::OutOfRange | Code::ResourceExhausted)) {
        return response;
    }
    let err = ReceiveError::PayloadTooLarge {
        limit: state.max_body_bytes,
    };
    record_rejection(&state.metrics, G::LABEL, Transport::Grpc, &err);
    to_status(&err).into_http()
}

/// The unary handler tonic calls with the (decompressed) message bytes.
struct ExportMethod<G> {
    state: Arc<GrpcState>,
    /// Taken by the one call tonic makes for a unary request.
    admission: Option<Admission>,
    export: PhantomData<fn() -> G>,
}

impl<G: GrpcExport> UnaryService<Bytes> for ExportMethod<G> {
    type Response = G::Response;
    type Future = BoxFuture<tonic::Response<G::Response>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let state = Arc::clone(&self.state);
        let admission = self.admission.take();
        Box::pin(async move {
            match G::handle(Arc::clone(&state), admission, request.into_inner()).await {
                Ok(response) => Ok(tonic::Response::new(response)),
                Err(err) => {
                    record_rejection(&state.metrics, G::LABEL, Transport::Grpc, &err);
                    Err(to_status(&err))
                }
            }
        })
    }
}

/// Hands request messages over as raw bytes and encodes protobuf responses.
struct ExportCodec<R>(PhantomData<fn(R)>);

impl<R> Default for ExportCodec<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<R: prost::Message + Send + 'static> Codec for ExportCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ResponseEncoder<R>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder<R> {
        ResponseEncoder(PhantomData)
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

struct ResponseEncoder<R>(PhantomData<fn(R)>);

impl<R: prost::Message> Encoder for ResponseEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| {
            tracing::error!(error = %e, "cannot encode otlp/grpc response");
            Status::internal("internal error")
        })
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::IngestError;

    #[test]
    fn ingest_errors_map_to_otlp_grpc_codes() {
        let status = to_status(&ReceiveError::Ingest(IngestError::invalid(
            "no records decodable",
        )));
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, "no records decodable")
        );

        let status = to_status(&ReceiveError::Ingest(IngestError::internal()));
        assert_eq!(
            (status.code(), status.message()),
            (Code::Internal, "internal error")
        );

        let status = to_status(&ReceiveError::MetricsRefused);
        assert_eq!(
            (status.code(), status.message()),
            (
                Code::Unimplemented,
                "vigil does not accept metrics; send logs and traces"
            )
        );

        let status = to_status(&ReceiveError::Undecodable(
            "cannot decode protobuf X: y".into(),
        ));
        assert_eq!(status.code(), Code::InvalidArgument);

        let status = to_status(&ReceiveError::PayloadTooLarge { limit: 5 });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.get_details_retry_info().is_none(),
            "must not invite a retry"
        );
    }

    #[test]
    fn throttling_is_unavailable_with_retry_info() {
        let errors = [
            IngestError::overloaded("ingest queue is full", Duration::from_millis(2500)),
            IngestError::unavailable("shutting down", Duration::from_millis(2500)),
        ];
        for err in errors {
            let status = to_status(&ReceiveError::Ingest(err.clone()));
            assert_eq!(status.code(), Code::Unavailable, "{err:?}");
            assert_eq!(status.message(), err.message);
            let retry = status.get_details_retry_info().expect("RetryInfo detail");
            assert_eq!(retry.retry_delay, Some(Duration::from_millis(2500)));
        }
    }

    #[test]
    fn service_names_are_the_otlp_ones() {
        assert_eq!(
            <ExportService<Logs> as NamedService>::NAME,
            "opentelemetry.proto.collector.logs.v1.LogsService"
        );
        assert_eq!(
            <ExportService<Traces> as NamedService>::NAME,
            "opentelemetry.proto.collector.trace.v1.TraceService"
        );
        assert_eq!(
            <ExportService<MetricsRefusal> as NamedService>::NAME,
            "opentelemetry.proto.collector.metrics.v1.MetricsService"
        );
    }
}

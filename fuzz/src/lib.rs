//! What the fuzz targets share: the ingest path after a body is decoded.

pub mod ingest {
    use std::sync::LazyLock;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use vigil_core::decode::{Decoded, decode_logs, decode_traces};
    use vigil_core::redact::RedactionConfig;
    use vigil_core::{HashKey, Redactor};

    const RECEIVED_AT_NS: i64 = 1_767_225_600_000_000_000;

    /// The default redaction rules, as `vigil.toml` ships them.
    pub static REDACTOR: LazyLock<Redactor> = LazyLock::new(|| {
        let key = HashKey::new(b"vigil fuzzing hash key, not a secret").expect("hash key");
        Redactor::new(&RedactionConfig::default(), key).expect("redactor")
    });

    /// Decodes a logs export to Arrow and redacts it, as the pipeline does.
    pub fn logs(request: &ExportLogsServiceRequest) {
        redact(decode_logs(request, RECEIVED_AT_NS).expect("decoding never fails on input"));
    }

    /// Decodes a trace export to Arrow and redacts it, as the pipeline does.
    pub fn traces(request: &ExportTraceServiceRequest) {
        redact(decode_traces(request, RECEIVED_AT_NS).expect("decoding never fails on input"));
    }

    fn redact(decoded: Decoded) {
        if let Some(message) = &decoded.error_message {
            assert!(
                decoded.rejected > 0,
                "message without rejections: {message}"
            );
        }
        REDACTOR
            .apply(decoded.batch)
            .expect("redaction of a decoded batch");
    }
}

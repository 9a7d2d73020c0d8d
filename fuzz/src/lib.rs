//! What the fuzz targets share: the ingest path after a body is decoded.

pub mod ingest {
    use std::sync::LazyLock;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    use vigil_core::decode::{Decoded, decode_logs, decode_logs_protobuf};
    use vigil_core::redact::RedactionConfig;
    use vigil_core::{HashKey, Redactor};

    const RECEIVED_AT_NS: i64 = 1_767_225_600_000_000_000;

    /// The default redaction rules, as `vigil.toml` ships them.
    pub static REDACTOR: LazyLock<Redactor> = LazyLock::new(|| {
        let key = HashKey::new(b"vigil fuzzing hash key, not a secret").expect("hash key");
        Redactor::new(&RedactionConfig::default(), key).expect("redactor")
    });

    /// The receivers decode logs bodies in place; through prost's structs the batch must be
    /// the same. `body` is a protobuf body the receiver took.
    pub fn same_as_through_prost(body: &[u8]) {
        let in_place = decode_logs_protobuf(body, RECEIVED_AT_NS).expect("the receiver took it");
        let request = ExportLogsServiceRequest::decode(body).expect("prost takes it too");
        let through_prost = decode_logs(&request, RECEIVED_AT_NS).expect("decoding through prost");
        assert_eq!(in_place.batch.records(), through_prost.batch.records());
        assert_eq!(in_place.rejected, through_prost.rejected);
        assert_eq!(in_place.error_message, through_prost.error_message);
    }

    /// Redacts a decoded export, as the pipeline does.
    pub fn redact(decoded: Decoded) {
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

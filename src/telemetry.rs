//! OpenTelemetry traces: the OTLP/HTTP exporter behind `--otlp-endpoint`, and the W3C trace context a webhook
//! delivery carries (`traceparent`, `tracestate`), read defensively so that a reconcile it triggers joins the
//! forge's trace.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The name every span railyard exports is filed under.
pub const SERVICE_NAME: &str = "railyard";

/// How long one export may take; a collector that does not answer loses that batch, not railyard's time.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last spans may take to go out when railyard stops (it exits within 2 s of SIGTERM).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest `traceparent` read: version 00 is 55 characters, later versions may append fields.
const MAX_TRACEPARENT: usize = 128;
/// The longest `tracestate` read (W3C: at most 32 members; 512 characters is what every vendor must pass on).
const MAX_TRACESTATE: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "cannot export traces to {endpoint}: {source}; give --otlp-endpoint as http(s)://host:port (4318 is OTLP/HTTP's port)"
    )]
    Exporter { endpoint: String, source: opentelemetry_otlp::ExporterBuildError },
}

/// The exporter of one process: spans go out in batches from a thread of their own, and [`Traces::shutdown`] sends
/// what is left.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports to the OTLP/HTTP (protobuf) collector at `endpoint` (its base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// takes it: `/v1/traces` is appended unless the URL already ends with it).
    pub fn start(endpoint: &str) -> Result<Traces, TelemetryError> {
        let url = traces_url(endpoint);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|source| TelemetryError::Exporter { endpoint: url, source })?;
        let provider = SdkTracerProvider::builder()
            .with_resource(Resource::builder_empty().with_service_name(SERVICE_NAME).build())
            .with_batch_exporter(exporter)
            // A reconcile is exported whatever the forge's sampling flag says: a proxy that samples 1 % of requests
            // must not hide 99 % of deploys.
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
            .build();
        Ok(Traces { provider })
    }

    /// The `tracing` layer that turns railyard's spans into OpenTelemetry spans for this exporter.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(SERVICE_NAME))
    }

    /// Sends the spans still queued (for at most [`SHUTDOWN_TIMEOUT`]) and stops the exporter's thread.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            eprintln!("warning: the last traces could not be exported: {error}");
        }
    }
}

/// `endpoint` with the OTLP/HTTP traces path.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") }
}

/// The remote span a webhook delivery named as its parent (W3C `traceparent`, with its `tracestate`).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceParent(SpanContext);

impl TraceParent {
    /// The parent that `traceparent` and `tracestate` name, or `None` when there is none or it is malformed or
    /// oversized: a bad header never fails the request, it only starts a fresh trace.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<TraceParent> {
        let header = |name: &str, max: usize| {
            let value = headers.get(name)?.to_str().ok()?;
            (value.len() <= max).then(|| value.to_owned())
        };
        let traceparent = header("traceparent", MAX_TRACEPARENT).filter(|value| is_traceparent(value))?;
        let mut fields = HashMap::new();
        fields.insert("traceparent".to_owned(), traceparent);
        if let Some(state) = header("tracestate", MAX_TRACESTATE) {
            fields.insert("tracestate".to_owned(), state);
        }
        let context = TraceContextPropagator::new().extract(&Fields(&fields));
        let span = context.span().span_context().clone();
        span.is_valid().then_some(TraceParent(span))
    }

    pub fn trace_id(&self) -> String {
        self.0.trace_id().to_string()
    }

    pub fn span_id(&self) -> String {
        self.0.span_id().to_string()
    }

    /// Makes `span` a child of this remote parent (nothing happens when no exporter runs).
    pub fn adopt(&self, span: &tracing::Span) {
        let parent = opentelemetry::Context::new().with_remote_span_context(self.0.clone());
        // Without the OpenTelemetry layer there is no trace to join: not an error.
        let _ = span.set_parent(parent);
    }
}

/// Whether `value` has W3C's shape: `version-traceid-parentid-flags` in lowercase hex of 2, 32, 16 and 2 digits,
/// more fields only after a version other than 00 (the propagator alone pads a short id).
fn is_traceparent(value: &str) -> bool {
    let fields: Vec<&str> = value.split('-').collect();
    let lowercase_hex = |field: &str| field.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    let shaped = fields.len() >= 4
        && fields.iter().zip([2, 32, 16, 2]).all(|(field, digits)| field.len() == digits && lowercase_hex(field));
    shaped && (fields.len() == 4 || fields[0] != "00")
}

struct Fields<'a>(&'a HashMap<String, String>);

impl Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(traceparent: &str, tracestate: Option<&str>) -> Option<TraceParent> {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().expect("header value"));
        if let Some(state) = tracestate {
            headers.insert("tracestate", state.parse().expect("header value"));
        }
        TraceParent::from_headers(&headers)
    }

    #[test]
    fn a_valid_traceparent_names_its_trace_and_span() {
        let found = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Some("vendor=abc"))
            .expect("a valid traceparent");
        assert_eq!(found.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(found.span_id(), "00f067aa0ba902b7");
        assert_eq!(found.0.trace_state().get("vendor"), Some("abc"));
    }

    #[test]
    fn malformed_zero_or_oversized_traceparents_are_ignored() {
        let oversized = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}", "a".repeat(200));
        for bad in [
            "garbage",
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            oversized.as_str(),
        ] {
            assert_eq!(parent(bad, None), None, "{bad}");
        }
    }

    #[test]
    fn an_oversized_tracestate_is_dropped_but_the_parent_kept() {
        let state = format!("vendor={}", "a".repeat(MAX_TRACESTATE));
        let found = parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Some(&state))
            .expect("the traceparent alone is valid");
        assert_eq!(found.0.trace_state().get("vendor"), None);
    }

    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(traces_url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://127.0.0.1:4318/"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }
}

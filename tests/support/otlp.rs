//! A small OpenTelemetry collector: an axum server on 127.0.0.1 that takes OTLP/HTTP protobuf exports on
//! `POST /v1/traces`, decodes them with the OTLP types of `opentelemetry-proto`, and keeps the spans for a test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One exported span, with its ids as lowercase hex (empty for a root's parent).
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub service_name: String,
    /// Every attribute as `key` and its value as text, then each event's name (`event`) and attributes (`event.key`).
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }
}

/// The receiver; it stops with its runtime when dropped.
pub struct OtlpReceiver {
    pub port: u16,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    _runtime: tokio::runtime::Runtime,
}

impl OtlpReceiver {
    pub fn start() -> OtlpReceiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("receiver runtime");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("the receiver binds a loopback port");
        let port = listener.local_addr().expect("bound address").port();
        let app = axum::Router::new().route("/v1/traces", post(receive)).with_state(Arc::clone(&spans));
        runtime.spawn(async move { axum::serve(listener, app).await });
        OtlpReceiver { port, spans, _runtime: runtime }
    }

    /// The base URL to give `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Waits until the spans received satisfy `check`; the spans then, or a failure listing what came.
    pub fn wait_for(&self, what: &str, check: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let mut last = Vec::new();
        let found = crate::support::eventually(Duration::from_secs(60), || {
            last = self.spans();
            check(&last)
        });
        assert!(found, "timed out waiting for {what}; received:\n{}", describe(&last));
        last
    }
}

/// The spans one per line, for failure messages.
pub fn describe(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|span| {
            format!(
                "{} trace={} span={} parent={} {:?}",
                span.name, span.trace_id, span.span_id, span.parent_span_id, span.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn receive(State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|resource| resource.attributes).unwrap_or_default();
        let service_name = resource
            .iter()
            .find(|attribute| attribute.key == "service.name")
            .and_then(|attribute| attribute.value.as_ref())
            .map(text)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let mut attributes: Vec<(String, String)> = span.attributes.iter().map(pair).collect();
                // The logs inside a span come as its events: kept too, under `event.`, for the secret checks.
                for event in &span.events {
                    attributes.push(("event".to_owned(), event.name.clone()));
                    attributes
                        .extend(event.attributes.iter().map(pair).map(|(key, value)| (format!("event.{key}"), value)));
                }
                received.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    service_name: service_name.clone(),
                    attributes,
                });
            }
        }
    }
    spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(received);
    StatusCode::OK
}

fn pair(attribute: &opentelemetry_proto::tonic::common::v1::KeyValue) -> (String, String) {
    (attribute.key.clone(), attribute.value.as_ref().map(text).unwrap_or_default())
}

fn text(value: &opentelemetry_proto::tonic::common::v1::AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        other => format!("{other:?}"),
    }
}

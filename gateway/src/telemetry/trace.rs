//! Logs and traces: the process's `tracing` subscriber (text or JSON log
//! lines on stderr, and OpenTelemetry spans exported over OTLP/gRPC when an
//! endpoint is configured), the spans the node opens around connections,
//! admin calls, hook calls and Redis traffic, and the W3C trace context that
//! bus messages carry so that one emit is one trace across nodes.
//!
//! Without [`init`] (as in the tests) spans cost little and propagate
//! nothing: [`TraceContext::of`] returns `None`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::metrics::{AdminMethod, HookKind};
use crate::config::{LogFormat, TelemetryConfig};
use crate::protocol::engineio::Transport;

/// Target of the per-connection span: logs carry it, exported traces do
/// not (a connection lives for hours; its admin, hook and Redis spans are
/// the traces worth having).
pub const CONNECTION_TARGET: &str = "gateway::connection";

/// The default `service.name` of exported spans.
pub const DEFAULT_SERVICE_NAME: &str = "gateway";

/// Errors setting up logs and traces.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInitialized(#[from] tracing_subscriber::util::TryInitError),
}

/// What [`init`] sets up, resolved from `[telemetry]` and the standard
/// environment (`RUST_LOG`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_SERVICE_NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingOptions {
    pub log_format: LogFormat,
    /// `EnvFilter` directives of the log lines.
    pub log_filter: String,
    /// OTLP/gRPC endpoint; `None`: no export.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
}

impl TracingOptions {
    /// `[telemetry]`, with the environment filling what it leaves unset
    /// (`RUST_LOG` wins over `log_level`).
    pub fn from_config(cfg: &TelemetryConfig) -> Self {
        Self::resolve(cfg, |name| std::env::var(name).ok())
    }

    fn resolve(cfg: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Self {
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        Self {
            log_format: cfg.log_format,
            log_filter: non_empty(env("RUST_LOG")).unwrap_or_else(|| cfg.log_level.clone()),
            otlp_endpoint: cfg
                .otlp_endpoint
                .clone()
                .or_else(|| non_empty(env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")))
                .or_else(|| non_empty(env("OTEL_EXPORTER_OTLP_ENDPOINT"))),
            service_name: cfg
                .service_name
                .clone()
                .or_else(|| non_empty(env("OTEL_SERVICE_NAME")))
                .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned()),
        }
    }
}

/// Keeps the span exporter alive; [`TelemetryGuard::shutdown`] flushes it.
#[derive(Debug)]
#[must_use = "dropping the guard stops the span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter, waiting at
    /// most [`EXPORT_SHUTDOWN_TIMEOUT`] (a collector that does not answer
    /// must not hold the process up).
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let done = shutdown_in_background(provider);
            match tokio::time::timeout(EXPORT_SHUTDOWN_TIMEOUT, done).await {
                Ok(Ok(Err(e))) => tracing::debug!(error = %e, "span exporter shutdown"),
                Ok(_) => {}
                Err(_) => tracing::warn!("span exporter did not flush in time"),
            }
        }
    }
}

/// How long [`TelemetryGuard::shutdown`] waits for the last spans to go.
pub const EXPORT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Shuts the provider down on a thread of its own (it blocks until the
/// exporter is done), so that neither a runtime worker nor process exit
/// waits on it.
fn shutdown_in_background(
    provider: SdkTracerProvider,
) -> tokio::sync::oneshot::Receiver<opentelemetry_sdk::error::OTelSdkResult> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("otel-shutdown".into())
        .spawn(move || {
            let _ = tx.send(provider.shutdown());
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cannot start the span exporter shutdown");
    }
    rx
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            drop(shutdown_in_background(provider));
        }
    }
}

/// Installs the process's subscriber: log lines on stderr in `log_format`,
/// filtered by `log_filter`, and, with an endpoint, OpenTelemetry spans
/// exported over OTLP/gRPC (batched, in the background). Also installs the
/// W3C trace-context propagator globally. Call once, inside the Tokio
/// runtime (the gRPC exporter needs it).
pub fn init(options: &TracingOptions) -> Result<TelemetryGuard, TelemetryError> {
    let filter =
        EnvFilter::try_new(&options.log_filter).map_err(|source| TelemetryError::Filter {
            filter: options.log_filter.clone(),
            source,
        })?;
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    layers.push(match options.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    });
    let provider = match &options.otlp_endpoint {
        Some(endpoint) => {
            let provider = otlp_provider(endpoint, &options.service_name)?;
            layers.push(otel_layer(&provider).boxed());
            Some(provider)
        }
        None => None,
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_subscriber::registry().with(layers).try_init()?;
    if let Some(endpoint) = &options.otlp_endpoint {
        tracing::info!(%endpoint, service = %options.service_name, "exporting spans over OTLP");
    }
    Ok(TelemetryGuard { provider })
}

/// A tracer provider exporting over OTLP/gRPC to `endpoint` in batches,
/// with `service.name` `service_name` (and `OTEL_RESOURCE_ATTRIBUTES`).
pub fn otlp_provider(
    endpoint: &str,
    service_name: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service_name))
        .build())
}

fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// The layer that turns `tracing` spans into OpenTelemetry spans of
/// `provider`: INFO and above, connection spans left out.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    let targets = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target(CONNECTION_TARGET, LevelFilter::OFF);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(DEFAULT_SERVICE_NAME))
        .with_filter(targets)
}

// ---------------------------------------------------------------- spans

/// The span of one Engine.IO connection: enter it (or `.instrument()` the
/// connection's tasks with it) so every log line names the connection.
pub fn connection_span(sid: &str, transport: Transport, remote: SocketAddr) -> Span {
    tracing::info_span!(target: CONNECTION_TARGET, "connection", sid, transport = transport.as_str(), %remote)
}

/// The span of one admin gRPC call (server side). Set it as the child of
/// the caller's context with [`TraceContext::from_map`] on the request
/// metadata when the caller sent one.
pub fn admin_span(method: AdminMethod) -> Span {
    tracing::info_span!(
        "admin",
        otel.name = method.as_str(),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method.as_str(),
        rpc.grpc.status_code = tracing::field::Empty,
        namespace = tracing::field::Empty,
    )
}

/// The span of one hook call (client side).
pub fn hook_span(hook: HookKind, namespace: &str) -> Span {
    tracing::info_span!(
        "hook",
        otel.name = hook.as_str(),
        otel.kind = "client",
        rpc.system = "grpc",
        hook = hook.as_str(),
        namespace,
        result = tracing::field::Empty,
    )
}

/// The span of a publish to the cluster bus. `kind` says what travels
/// (`emit`, `request`, `response`, ...): never a room or socket id.
/// Carry [`TraceContext::of`] this span inside the message.
pub fn bus_publish_span(kind: &'static str) -> Span {
    tracing::info_span!(
        "bus.publish",
        otel.name = kind,
        otel.kind = "producer",
        messaging.system = "redis",
        messaging.operation = "publish",
    )
}

/// The span of handling a message from the cluster bus, a child of the
/// publisher's span when the message carried its context.
pub fn bus_receive_span(kind: &'static str, parent: Option<&TraceContext>) -> Span {
    let span = tracing::info_span!(
        "bus.receive",
        otel.name = kind,
        otel.kind = "consumer",
        messaging.system = "redis",
        messaging.operation = "receive",
    );
    if let Some(parent) = parent {
        parent.set_as_parent_of(&span);
    }
    span
}

// ---------------------------------------------------------------- propagation

/// A W3C trace context (`traceparent`, `tracestate`), the form a trace
/// crosses processes in: inside bus messages, gRPC metadata, HTTP headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: String,
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

impl TraceContext {
    /// The context of `span`, or `None` when it is not traced (no exporter
    /// installed, or not sampled).
    pub fn of(span: &Span) -> Option<Self> {
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut map = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut map);
        Self::from_map(&map)
    }

    /// The context of the current span.
    pub fn current() -> Option<Self> {
        Self::of(&Span::current())
    }

    /// Makes `span` a child of this context. Returns false when the context
    /// is unreadable or `span` is not traced.
    pub fn set_as_parent_of(&self, span: &Span) -> bool {
        let cx = TraceContextPropagator::new().extract(self);
        cx.span().span_context().is_valid() && span.set_parent(cx).is_ok()
    }

    /// Writes `traceparent` (and `tracestate` when not empty) into `carrier`.
    pub fn inject(&self, carrier: &mut HashMap<String, String>) {
        carrier.insert(TRACEPARENT.to_owned(), self.traceparent.clone());
        if !self.tracestate.is_empty() {
            carrier.insert(TRACESTATE.to_owned(), self.tracestate.clone());
        }
    }

    /// Reads a context from `carrier` (keys in lower case).
    pub fn from_map(carrier: &HashMap<String, String>) -> Option<Self> {
        let traceparent = carrier.get(TRACEPARENT)?.clone();
        Some(Self {
            traceparent,
            tracestate: carrier.get(TRACESTATE).cloned().unwrap_or_default(),
        })
    }

    /// A compact binary form for bus messages: `traceparent`, then a
    /// newline and `tracestate` when there is one.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.traceparent.len() + 1 + self.tracestate.len());
        out.extend_from_slice(self.traceparent.as_bytes());
        if !self.tracestate.is_empty() {
            out.push(b'\n');
            out.extend_from_slice(self.tracestate.as_bytes());
        }
        out
    }

    /// Reads [`TraceContext::to_bytes`]. `None` when it is not UTF-8 or has
    /// no `traceparent` (whether the values parse is checked on use).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (traceparent, tracestate) = text.split_once('\n').unwrap_or((text, ""));
        if traceparent.is_empty() {
            return None;
        }
        Some(Self {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.to_owned(),
        })
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(&self.traceparent),
            TRACESTATE if !self.tracestate.is_empty() => Some(&self.tracestate),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = value,
            TRACESTATE => self.tracestate = value,
            _ => {}
        }
    }
}

/// Writes the trace context of `span` into `carrier`; nothing when the span
/// is not traced.
pub fn inject_context(span: &Span, carrier: &mut HashMap<String, String>) {
    if let Some(cx) = TraceContext::of(span) {
        cx.inject(carrier);
    }
}

/// Makes `span` a child of the context in `carrier`, when there is one.
pub fn extract_context(carrier: &HashMap<String, String>, span: &Span) -> bool {
    TraceContext::from_map(carrier).is_some_and(|cx| cx.set_as_parent_of(span))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    fn traced() -> (SdkTracerProvider, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        (provider, exporter)
    }

    #[test]
    fn options_come_from_config_then_environment() {
        let cfg = TelemetryConfig::default();
        let env = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4317".to_owned()),
            "OTEL_SERVICE_NAME" => Some("edge".to_owned()),
            "RUST_LOG" => Some(String::new()),
            _ => None,
        };
        let o = TracingOptions::resolve(&cfg, env);
        assert_eq!(o.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(o.service_name, "edge");
        assert_eq!(o.log_filter, "info");
        let o = TracingOptions::resolve(&cfg, |_| None);
        assert_eq!(o.otlp_endpoint, None);
        assert_eq!(o.service_name, DEFAULT_SERVICE_NAME);
        let cfg = TelemetryConfig {
            otlp_endpoint: Some("http://mine:4317".to_owned()),
            ..TelemetryConfig::default()
        };
        assert_eq!(
            TracingOptions::resolve(&cfg, env).otlp_endpoint.as_deref(),
            Some("http://mine:4317")
        );
    }

    #[test]
    fn untraced_spans_carry_no_context() {
        let span = tracing::info_span!("x");
        assert_eq!(TraceContext::of(&span), None);
        let mut map = HashMap::new();
        inject_context(&span, &mut map);
        assert!(map.is_empty());
    }

    #[test]
    fn binary_form_round_trips() {
        let cx = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: "vendor=1".into(),
        };
        assert_eq!(TraceContext::from_bytes(&cx.to_bytes()), Some(cx.clone()));
        let bare = TraceContext {
            tracestate: String::new(),
            ..cx
        };
        assert_eq!(TraceContext::from_bytes(&bare.to_bytes()), Some(bare));
        assert_eq!(TraceContext::from_bytes(b""), None);
        assert_eq!(TraceContext::from_bytes(&[0xff]), None);
    }

    /// A publish on one node and its receipt on another (two subscribers,
    /// each with its own provider, as two processes would be) share one
    /// trace id, the receive span being a child of the publish span.
    #[test]
    fn a_bus_message_continues_the_publishers_trace() {
        let (provider_a, spans_a) = traced();
        let (provider_b, spans_b) = traced();
        let node_a = tracing_subscriber::registry().with(otel_layer(&provider_a));
        let node_b = tracing_subscriber::registry().with(otel_layer(&provider_b));

        let carried = tracing::subscriber::with_default(node_a, || {
            let span = bus_publish_span("emit");
            let _guard = span.enter();
            let cx = TraceContext::current().expect("traced");
            let mut map = HashMap::new();
            inject_context(&span, &mut map);
            assert_eq!(TraceContext::from_map(&map), Some(cx.clone()));
            cx.to_bytes()
        });
        tracing::subscriber::with_default(node_b, || {
            let cx = TraceContext::from_bytes(&carried).unwrap();
            let span = bus_receive_span("emit", Some(&cx));
            let _guard = span.enter();
            tracing::info!("delivered");
        });
        let published = spans_a.get_finished_spans().unwrap();
        let received = spans_b.get_finished_spans().unwrap();
        assert_eq!(published.len(), 1);
        assert_eq!(received.len(), 1);
        let (p, r) = (&published[0], &received[0]);
        assert_eq!(p.name, "emit");
        assert_eq!(p.span_kind, opentelemetry::trace::SpanKind::Producer);
        assert_eq!(r.span_kind, opentelemetry::trace::SpanKind::Consumer);
        assert_eq!(r.span_context.trace_id(), p.span_context.trace_id());
        assert_eq!(r.parent_span_id, p.span_context.span_id());
    }

    #[test]
    fn connection_spans_are_not_exported() {
        let (provider, spans) = traced();
        let subscriber = tracing_subscriber::registry().with(otel_layer(&provider));
        tracing::subscriber::with_default(subscriber, || {
            let conn = connection_span(
                "sid",
                Transport::Websocket,
                SocketAddr::from(([127, 0, 0, 1], 1)),
            );
            let _c = conn.enter();
            let hook = hook_span(HookKind::Event, "/");
            let _h = hook.enter();
        });
        let finished = spans.get_finished_spans().unwrap();
        assert_eq!(finished.len(), 1);
        assert_eq!(finished[0].name, "event");
        assert_eq!(
            finished[0].parent_span_id,
            opentelemetry::trace::SpanId::INVALID
        );
    }
}

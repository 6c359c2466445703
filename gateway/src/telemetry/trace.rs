//! Logs and traces: the process's `tracing` subscriber (JSON log lines on
//! stdout or text lines on stderr, see [`super::logs`], and OpenTelemetry
//! spans exported over OTLP/gRPC when an
//! endpoint is configured), the spans of admin calls, of deliveries of
//! traced emits from other nodes and of hook calls, and the W3C trace
//! context that crosses processes: in an admin call's metadata (its span
//! then continues the caller's trace), inside a cluster bus message, in a
//! hook call's metadata.
//!
//! Without [`init`] (as in the tests) spans cost little and propagate
//! nothing: [`TraceContext::of`] returns `None`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
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

use super::logs;
use super::metrics::AdminMethod;
use crate::config::{LogFormat, TelemetryConfig};

/// An error and its sources, one after the other (`publish failed: IO
/// Error: Connection refused (os error 111)`): how an error is logged
/// (`error = %ErrorChain(&e)`) when its own message only says what failed.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// The default `service.name` of exported spans.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "gateway";

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
    pub(crate) log_format: LogFormat,
    /// `EnvFilter` directives of the log lines.
    pub(crate) log_filter: String,
    /// OTLP/gRPC endpoint; `None`: no export.
    pub(crate) otlp_endpoint: Option<String>,
    pub(crate) service_name: String,
    /// The node id every log line carries; `None`: none.
    pub(crate) node_id: Option<String>,
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
            node_id: None,
        }
    }

    /// Every log line carries `node_id`.
    pub fn with_node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }
}

/// Keeps the span exporter alive; [`TelemetryGuard::shutdown`] flushes it.
#[derive(Debug)]
#[must_use = "dropping the guard stops the span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
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
pub(crate) const EXPORT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

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

/// Installs the process's subscriber: log lines in `log_format` (JSON on
/// stdout, text on stderr, coloured only when stderr is a terminal), each
/// with the node id, filtered by `log_filter` (the Redis client's own
/// records off unless the filter names `fred`), and, with an endpoint,
/// OpenTelemetry spans exported over OTLP/gRPC (batched, in the
/// background). Also installs the W3C trace-context propagator globally.
/// Call once, inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(options: &TracingOptions) -> Result<TelemetryGuard, TelemetryError> {
    let directives = logs::with_redis_client_quiet(&options.log_filter);
    let filter = EnvFilter::try_new(&directives).map_err(|source| TelemetryError::Filter {
        filter: options.log_filter.clone(),
        source,
    })?;
    let node_id: Option<Arc<str>> = options.node_id.as_deref().map(Arc::from);
    let traced = logs::TracedSpans::default();
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    layers.push(match options.log_format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .event_format(logs::TextLines {
                    node_id,
                    inner: tracing_subscriber::fmt::format()
                        .without_time()
                        .with_ansi(ansi),
                    ansi,
                })
                .with_filter(filter)
                .boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(logs::JsonLines {
                node_id,
                traced: traced.clone(),
            })
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
    let subscriber = tracing_subscriber::registry().with(layers);
    if provider.is_some() {
        // JSON lines inside a traced span carry its ids. Not in `layers`
        // (nor optional): neither a list nor an `Option` of layers passes
        // on the subscriber's registration, which this layer keeps.
        subscriber.with(traced).try_init()?;
    } else {
        subscriber.try_init()?;
    }
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
/// `provider`: INFO and above.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    let targets = Targets::new().with_default(LevelFilter::INFO);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(DEFAULT_SERVICE_NAME))
        .with_filter(targets)
}

// ---------------------------------------------------------------- spans

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

/// The span of a broadcast's delivery on a node that got it over the
/// cluster bus, a child of the context the message carried
/// ([`TraceContext::set_as_parent_of`]). Record `recipients` once known.
pub fn deliver_span(namespace: &str) -> Span {
    tracing::info_span!(
        "deliver",
        otel.kind = "consumer",
        namespace,
        recipients = tracing::field::Empty,
    )
}

/// The span of one call to a hooks backend (client side), `rpc` its name
/// (`OnConnect`), a child of the current span if any.
pub fn hook_span(rpc: &'static str, namespace: &str) -> Span {
    tracing::info_span!(
        "hook",
        otel.name = rpc,
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.method = rpc,
        namespace,
    )
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
    pub(crate) fn of(span: &Span) -> Option<Self> {
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut map = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut map);
        Self::from_map(&map)
    }

    /// The trace id and span id (lower-case hex) of the span `cx` holds,
    /// or `None` when it is not traced.
    pub(crate) fn ids_of_context(cx: &opentelemetry::Context) -> Option<(String, String)> {
        let span = cx.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
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

    /// The context as the key-value pairs a bus message carries.
    pub(crate) fn into_pairs(self) -> Vec<(String, String)> {
        let mut pairs = vec![(TRACEPARENT.to_owned(), self.traceparent)];
        if !self.tracestate.is_empty() {
            pairs.push((TRACESTATE.to_owned(), self.tracestate));
        }
        pairs
    }

    /// Reads a context from the pairs a bus message carries.
    pub(crate) fn from_pairs(pairs: &[(String, String)]) -> Option<Self> {
        let value = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        Some(Self {
            traceparent: value(TRACEPARENT)?,
            tracestate: value(TRACESTATE).unwrap_or_default(),
        })
    }

    /// Writes the context into gRPC request metadata (`traceparent`,
    /// `tracestate`); a value that is not valid metadata is left out.
    pub(crate) fn inject_into(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Ok(value) = self.traceparent.parse() {
            metadata.insert(TRACEPARENT, value);
        }
        if !self.tracestate.is_empty()
            && let Ok(value) = self.tracestate.parse()
        {
            metadata.insert(TRACESTATE, value);
        }
    }

    /// Reads a context from `carrier` (keys in lower case).
    pub(crate) fn from_map(carrier: &HashMap<String, String>) -> Option<Self> {
        let traceparent = carrier.get(TRACEPARENT)?.clone();
        Some(Self {
            traceparent,
            tracestate: carrier.get(TRACESTATE).cloned().unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_context_survives_the_bus_pairs() {
        let cx = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            tracestate: "vendor=1".to_owned(),
        };
        assert_eq!(TraceContext::from_pairs(&cx.clone().into_pairs()), Some(cx));
        assert_eq!(TraceContext::from_pairs(&[]), None);
    }

    #[test]
    fn untraced_spans_carry_no_context() {
        let span = tracing::info_span!("x");
        assert_eq!(TraceContext::of(&span), None);
    }
}

//! How log lines are written: JSON lines (one object per event, on stdout)
//! or text lines (on stderr, coloured only on a terminal), each carrying the
//! node's id; the Redis client's own records left out unless asked for; and
//! [`Throttle`], which keeps a warning that repeats during an outage to one
//! line per interval with the count of those held back.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::TraceContext;

/// The filter directive added to the configured one unless it names the
/// Redis client (`fred`) itself: its records repeat what the gateway
/// reports in its own words (`redis subscriber connection lost`), with the
/// build machine's source paths and Rust debug forms.
pub(crate) const REDIS_CLIENT_QUIET: &str = "fred=off";

/// `filter` with [`REDIS_CLIENT_QUIET`] added when it does not mention
/// `fred`.
pub(crate) fn with_redis_client_quiet(filter: &str) -> String {
    if filter.contains("fred") {
        filter.to_owned()
    } else if filter.trim().is_empty() {
        REDIS_CLIENT_QUIET.to_owned()
    } else {
        format!("{filter},{REDIS_CLIENT_QUIET}")
    }
}

/// One JSON object per event: `timestamp`, `level`, `node_id` (when
/// known), `target`, `message`, the event's fields, `trace_id` and
/// `span_id` (inside a traced span), and `spans` (the enclosing spans from
/// the outermost, each its `name` and fields).
pub(crate) struct JsonLines {
    pub(crate) node_id: Option<Arc<str>>,
    pub(crate) traced: TracedSpans,
}

/// Where [`JsonLines`] reads the trace id and span id of the span an event
/// is in: the OpenTelemetry layer's data, found through the subscriber
/// (a formatter is not given it, and the current dispatcher cannot be
/// reached while an event is being written). Add it to the subscriber as
/// a layer of its own when spans are traced; without it, or outside a
/// span, lines carry no ids.
#[derive(Clone, Default)]
pub(crate) struct TracedSpans(Arc<OnceLock<WeakDispatch>>);

impl TracedSpans {
    /// The ids of the event's span (its explicit parent, else the current
    /// span) when it is traced. Reading them starts the OpenTelemetry
    /// span: a parent set after its first log line is not taken.
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let dispatch = self.0.get()?.upgrade()?;
        let span = ctx.event_scope()?.next()?;
        let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
        TraceContext::ids_of_context(&cx)
    }
}

impl<S: Subscriber> Layer<S> for TracedSpans {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        if let Some(id) = &self.node_id {
            line.insert("node_id".into(), (**id).into());
        }
        line.insert("target".into(), meta.target().into());
        let mut fields = JsonFieldVisitor(Map::new());
        event.record(&mut fields);
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        for (key, value) in fields.0 {
            line.entry(key).or_insert(value);
        }
        if let Some((trace_id, span_id)) = self.traced.ids(ctx) {
            line.insert("trace_id".into(), trace_id.into());
            line.insert("span_id".into(), span_id.into());
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let mut object = Map::new();
                    object.insert("name".into(), span.name().into());
                    let extensions = span.extensions();
                    if let Some(fields) = extensions.get::<FormattedFields<N>>()
                        && let Ok(Value::Object(fields)) = serde_json::from_str(fields)
                    {
                        object.extend(fields);
                    }
                    Value::Object(object)
                })
                .collect();
            line.insert("spans".into(), spans.into());
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values: numbers and booleans as such, `%x`
/// and `?x` as the text they format to; the `log.*` fields of records
/// bridged from the `log` crate (file paths of the build machine) left out.
struct JsonFieldVisitor(Map<String, Value>);

impl JsonFieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonFieldVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, super::ErrorChain(value).to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// Text lines: `<time> node=<id> <level> <target>: <message> <fields>`.
pub(crate) struct TextLines<F> {
    pub(crate) node_id: Option<Arc<str>>,
    /// The standard text format, without its timestamp (written first here).
    pub(crate) inner: F,
    pub(crate) ansi: bool,
}

impl<S, N, F> FormatEvent<S, N> for TextLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut writer)?;
        if let Some(id) = &self.node_id {
            if self.ansi {
                write!(writer, " \x1b[2mnode=\x1b[0m{id}")?;
            } else {
                write!(writer, " node={id}")?;
            }
        }
        writer.write_char(' ')?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// At most one line per interval for a warning that repeats (a Redis
/// outage): [`Throttle::admit`] says whether to log now and how many were
/// held back since the last line.
pub(crate) struct Throttle {
    every: Duration,
    /// When the last line was let through, and how many were held back
    /// since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held_back)`: log this one now, with the count of lines held
    /// back since the last; `None`: hold it back (it is counted).
    pub(crate) fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let held_back = std::mem::take(&mut state.1);
                state.0 = Some(now);
                Some(held_back)
            }
        }
    }

    /// The outage is over: the next warning is logged at once. Returns the
    /// count of lines held back since the last one.
    pub(crate) fn reset(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = None;
        std::mem::take(&mut state.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn throttle_lets_one_through_per_interval_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(30));
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(t.admit(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.admit(), Some(2));
        assert_eq!(t.admit(), None);
        assert_eq!(t.reset(), 1);
        assert_eq!(t.admit(), Some(0));
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_node_id_fields_and_spans() {
        use tracing_subscriber::layer::SubscriberExt;

        let out = Lines::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(JsonLines {
                    node_id: Some(Arc::from("nodeA1")),
                    traced: TracedSpans::default(),
                }),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(port = 3000_u64, "outside any span");
            let span = tracing::info_span!("admin", method = "Emit");
            let _entered = span.enter();
            let error = std::io::Error::other("refused");
            tracing::warn!(error = &error as &dyn std::error::Error, "inside");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "outside any span");
        assert_eq!(lines[0]["port"], 3000);
        assert_eq!(lines[0]["node_id"], "nodeA1");
        assert!(lines[0].get("spans").is_none(), "{text}");
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["error"], "refused");
        assert_eq!(lines[1]["spans"][0]["name"], "admin");
        assert_eq!(lines[1]["spans"][0]["method"], "Emit");
    }

    #[test]
    fn json_lines_inside_a_traced_span_carry_its_ids() {
        use tracing_subscriber::layer::SubscriberExt;

        let out = Lines::default();
        let writer = out.clone();
        // Spans are traced (sampled, with ids), exported nowhere.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let traced = TracedSpans::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(JsonLines {
                        node_id: None,
                        traced: traced.clone(),
                    }),
            )
            .with(super::super::trace::otel_layer(&provider))
            .with(traced);
        let traceparent = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!("deliver");
            let _entered = span.enter();
            tracing::info!("inside");
            TraceContext::current().expect("traced").traceparent
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        // traceparent: 00-<trace id>-<span id>-<flags>
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(lines[1]["trace_id"], parts[1], "{text}");
        assert_eq!(lines[1]["span_id"], parts[2], "{text}");
    }

    #[test]
    fn the_redis_client_is_quiet_unless_named() {
        assert_eq!(with_redis_client_quiet("info"), "info,fred=off");
        assert_eq!(with_redis_client_quiet(""), "fred=off");
        assert_eq!(
            with_redis_client_quiet("info,fred=debug"),
            "info,fred=debug"
        );
    }
}

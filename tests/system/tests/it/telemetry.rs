//! Session telemetry: after known sessions the gateway's `/metrics` holds the right values
//! (active sessions by key and model, turn timings counted per turn, first audio only for
//! audio turns, upstream close codes, session durations); and a gateway started with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` exports the session span, with a child per turn and per
//! upstream connection and the GenAI attributes, to a real OTLP/gRPC receiver on loopback.
//! The Grafana dashboard for these reads only metrics a real gateway exports.

use futures_util::SinkExt;
use livegate_emulator::Behaviour;
use livegate_proto::auth::KeySettings;
use livegate_system_tests::process::Binary;
use livegate_system_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The value of the series `name{labels}` in a text exposition (`None`: no such series).
fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    metric_value(text, &format!("{name}{{{labels}}}"))
}

async fn metrics(stack: &Stack) -> String {
    scrape(stack.gateway.addr).await
}

/// Polls `/metrics` until `done` holds (bounded: the session's end is counted after its
/// close frame went out).
async fn metrics_until(stack: &Stack, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        let m = metrics(stack).await;
        if done(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    metrics(stack).await
}

fn audio_setup() -> Message {
    Message::text(
        serde_json::json!({"setup": {"model": MODEL, "generationConfig": {"responseModalities": ["AUDIO"]}}})
            .to_string(),
    )
}

#[tokio::test]
async fn metrics_have_the_right_values_after_known_sessions() {
    let stack = Stack::start().await;
    let (key, key_id) = stack.create_key(KeySettings::default()).await;
    let model = format!("model=\"{MODEL}\"");
    let active = format!("key=\"{key_id}\",{model}");

    // A text session: two turns, then the client closes.
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, setup(MODEL)).await;
    let m = metrics(&stack).await;
    assert_eq!(
        metric(&m, "livegate_gateway_sessions_active_by_key", &active),
        Some(1.0),
        "{m}"
    );
    for text in ["hello", "again"] {
        ws.send(text_turn(text)).await.unwrap();
        read_turn(&mut ws).await;
    }
    ws.close(None).await.unwrap();
    let m = metrics_until(&stack, |m| {
        metric(m, "livegate_gateway_session_duration_seconds_count", &model) == Some(1.0)
    })
    .await;
    assert_eq!(
        metric(&m, "livegate_gateway_sessions_active_by_key", &active),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "livegate_gateway_turns_total", &model),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "livegate_gateway_interruptions_total", &model),
        Some(0.0)
    );
    assert_eq!(
        metric(&m, "livegate_gateway_turn_seconds_count", &model),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "livegate_gateway_turn_first_response_seconds_count",
            &model
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "livegate_gateway_turn_first_audio_seconds_count",
            &model
        ),
        Some(0.0),
        "a text turn has no first audio: {m}"
    );

    // An audio session, which the upstream closes with 1011 after its turn.
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, audio_setup()).await;
    ws.send(text_turn("speak")).await.unwrap();
    read_turn(&mut ws).await;
    stack.emulator.set_behaviour(Behaviour {
        close_after: Some((Duration::ZERO, 1011, "Deadline expired".into())),
        ..Behaviour::default()
    });
    let mut ws2 = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    ws2.send(setup(MODEL)).await.unwrap();
    let (code, _) = close_of(&mut ws2).await;
    assert_eq!(code, 1011);
    ws.close(None).await.unwrap();
    let m = metrics_until(&stack, |m| {
        metric(m, "livegate_gateway_session_duration_seconds_count", &model) == Some(3.0)
    })
    .await;
    assert_eq!(
        metric(
            &m,
            "livegate_gateway_turn_first_audio_seconds_count",
            &model
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "livegate_gateway_turns_total", &model),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &m,
            "livegate_gateway_upstream_closes_total",
            "code=\"1011\""
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "livegate_gateway_sessions_active_by_key", &active),
        Some(0.0)
    );

    // Every metric the Grafana dashboard reads is one the gateway exports.
    let dashboard: serde_json::Value = serde_json::from_str(
        &livegate_deploy_tests::read("deploy/grafana/dashboards/livegate-sessions.json").unwrap(),
    )
    .unwrap();
    for t in livegate_deploy_tests::grafana::prom_targets(&dashboard) {
        for name in livegate_deploy_tests::grafana::metric_names(&t.expr) {
            let family = livegate_deploy_tests::grafana::family(&name);
            assert!(
                m.lines()
                    .any(|l| l.starts_with(&format!("# TYPE {family} "))),
                "panel {:?} reads {name}, which the gateway does not export:\n{m}",
                t.title
            );
        }
    }
}

/// An OTLP/gRPC trace receiver: keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.clone())
        .and_then(|v| v.value)
}

fn string(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(AnyValue::StringValue(s)) => s,
        other => panic!("{key} of {} is {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(AnyValue::IntValue(i)) => i,
        other => panic!("{key} of {} is {other:?}", span.name),
    }
}

/// A gateway process exporting its spans to an OTLP receiver on loopback (the receiver, the
/// process, its address and the receiver's task).
async fn otlp_gateway(
    stack: &Stack,
    dir: &std::path::Path,
) -> (
    Receiver,
    Binary,
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut env = stack.gateway_env("gw-otel-test");
    env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
        ("OTEL_SERVICE_NAME", "gw-otel-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]);
    let mut gateway = Binary::spawn("livegate-gateway", dir, &[], &env);
    let addr = gateway.addr().await;
    (receiver, gateway, addr.parse().unwrap(), server)
}

async fn connect_to(addr: std::net::SocketAddr, key: &str) -> Ws {
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/v1/vertex-ai/live"),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// Waits (bounded) until the receiver has a `live session` span; returns every span then.
async fn spans_with_session(receiver: &Receiver) -> Vec<Span> {
    let mut spans = Vec::new();
    for _ in 0..150 {
        spans = receiver.spans.lock().unwrap().clone();
        if spans.iter().any(|s| s.name == "live session") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spans
}

/// A session resumed on new upstream connections: a child span per upstream connection
/// (indexed from 1, each replaced one with its close code), and every replaced connection's
/// close counted in `livegate_gateway_upstream_closes_total`.
#[tokio::test]
async fn each_upstream_connection_of_a_resumed_session_gets_a_span_and_its_close_counted() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (receiver, mut gateway, addr, server) = otlp_gateway(&stack, dir.path()).await;
    stack.emulator.set_behaviour(Behaviour {
        connection_age: Some(livegate_emulator::ConnectionAge::new(
            Duration::from_millis(1000),
            Duration::from_millis(300),
        )),
        ..Behaviour::default()
    });
    let key = stack.key().await;
    let mut ws = connect_to(addr, &key).await;
    let setup = serde_json::json!({"setup": {"model": MODEL, "sessionResumption": {}}});
    open_session(&mut ws, Message::text(setup.to_string())).await;
    for i in 1..=15 {
        ws.send(text_turn(&format!("turn {i}"))).await.unwrap();
        read_turn(&mut ws).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    ws.close(None).await.unwrap();
    let resumed = stack.emulator.stats().resumed_sessions;
    assert!(
        resumed >= 2,
        "only {resumed} resumptions: the test did not test"
    );

    // Metrics: each replaced connection's close is counted (the last one was ended by the
    // client's close, not by the upstream).
    let (status, _, m) = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    let closes: f64 = m
        .lines()
        .filter(|l| l.starts_with("livegate_gateway_upstream_closes_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(closes, resumed as f64, "{m}");

    let spans = spans_with_session(&receiver).await;
    let session = spans
        .iter()
        .find(|s| s.name == "live session")
        .unwrap_or_else(|| panic!("no session span in {spans:#?}\n{}", gateway.output()));
    let mut upstream: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.parent_span_id == session.span_id
                && s.trace_id == session.trace_id
                && s.name == "upstream connection"
        })
        .collect();
    upstream.sort_by_key(|s| int(s, "livegate.upstream.index"));
    let indexes: Vec<i64> = upstream
        .iter()
        .map(|s| int(s, "livegate.upstream.index"))
        .collect();
    assert_eq!(
        indexes,
        (1..=resumed as i64 + 1).collect::<Vec<_>>(),
        "one span per upstream connection"
    );
    for replaced in &upstream[..upstream.len() - 1] {
        assert!(
            attr(replaced, "livegate.close.code").is_some(),
            "a replaced connection's span has its close code: {replaced:#?}"
        );
    }
    gateway.stop().await;
    server.abort();
}

#[tokio::test]
async fn an_otlp_receiver_gets_the_session_span_with_its_turns_and_upstream_connection() {
    let stack = Stack::start().await;
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut env = stack.gateway_env("gw-otel-test");
    env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
        ("OTEL_SERVICE_NAME", "gw-otel-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]);
    let mut gateway = Binary::spawn("livegate-gateway", dir.path(), &[], &env);
    let addr = gateway.addr().await;
    let (key, key_id) = stack.create_key(KeySettings::default()).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/v1/vertex-ai/live"),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    open_session(&mut ws, setup(MODEL)).await;
    let mut usage = Vec::new();
    for text in ["one", "two two"] {
        ws.send(text_turn(text)).await.unwrap();
        let turn = read_turn(&mut ws).await;
        let u = json_of(turn.last().unwrap())["usageMetadata"].clone();
        usage.push((
            u["promptTokenCount"].as_i64().unwrap(),
            // Thoughts count as output tokens in the GenAI conventions.
            u["candidatesTokenCount"].as_i64().unwrap()
                + u["thoughtsTokenCount"].as_i64().unwrap_or(0),
        ));
    }
    ws.close(None).await.unwrap();

    let mut spans = Vec::new();
    for _ in 0..150 {
        spans = receiver.spans.lock().unwrap().clone();
        if spans.iter().any(|s| s.name == "live session") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session = spans
        .iter()
        .find(|s| s.name == "live session")
        .unwrap_or_else(|| panic!("no session span in {spans:#?}\n{}", gateway.output()));
    assert_eq!(string(session, "gen_ai.provider.name"), "gcp.vertex_ai");
    assert_eq!(string(session, "gen_ai.system"), "vertex_ai");
    assert_eq!(string(session, "gen_ai.request.model"), MODEL);
    assert_eq!(string(session, "key_id"), key_id);
    assert_eq!(int(session, "livegate.turns"), 2);
    assert_eq!(
        int(session, "gen_ai.usage.input_tokens"),
        usage.iter().map(|u| u.0).sum::<i64>()
    );
    assert_eq!(
        int(session, "gen_ai.usage.output_tokens"),
        usage.iter().map(|u| u.1).sum::<i64>()
    );
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == session.span_id && s.trace_id == session.trace_id)
        .collect();
    let mut turns: Vec<&&Span> = children
        .iter()
        .filter(|s| s.name == format!("chat {MODEL}"))
        .collect();
    turns.sort_by_key(|s| int(s, "livegate.turn.index"));
    assert_eq!(turns.len(), 2, "{children:#?}");
    for (t, (input, output)) in turns.iter().zip(&usage) {
        assert_eq!(string(t, "gen_ai.operation.name"), "chat");
        assert_eq!(string(t, "gen_ai.request.model"), MODEL);
        assert_eq!(int(t, "gen_ai.usage.input_tokens"), *input);
        assert_eq!(int(t, "gen_ai.usage.output_tokens"), *output);
        assert_eq!(int(t, "gen_ai.usage.cache_read.input_tokens"), 0);
    }
    let upstream: Vec<_> = children
        .iter()
        .filter(|s| s.name == "upstream connection")
        .collect();
    assert_eq!(upstream.len(), 1, "{children:#?}");
    assert_eq!(int(upstream[0], "livegate.upstream.index"), 1);

    // The session's log lines carry its trace id.
    let trace_id = hex::encode(&session.trace_id);
    gateway.stop().await;
    let log = gateway.output();
    assert!(
        log.lines()
            .any(|l| l.contains("session started") && l.contains(&trace_id)),
        "no session log line with trace id {trace_id}:\n{log}"
    );
    server.abort();
}

//! The whole path: client → gateway → emulator → NATS → metering → ClickHouse, with costs
//! checked against a figure computed here, independently, from what the emulator reported.

use base64::Engine;
use futures_util::SinkExt;
use livegate_proto::auth::KeySettings;
use livegate_system_tests::*;
use rust_decimal::Decimal;
use std::str::FromStr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Per-token prices (USD) by modality for one model, as LiteLLM's table has them.
pub(crate) struct Prices {
    input: [(&'static str, &'static str); 4],
    output: [(&'static str, &'static str); 2],
}

pub(crate) const LIVE_25_FLASH: Prices = Prices {
    input: [
        ("TEXT", "0.0000005"),
        ("AUDIO", "0.000003"),
        ("IMAGE", "0.000003"),
        ("VIDEO", "0.000003"),
    ],
    output: [("TEXT", "0.000002"), ("AUDIO", "0.000012")],
};

const LIVE_38: Prices = Prices {
    input: [
        ("TEXT", "0.00000075"),
        ("AUDIO", "0.000003"),
        ("IMAGE", "0.000001"),
        ("VIDEO", "0.000001"),
    ],
    // LiteLLM also lists 3.8's video input at $0.0000333/s: a second way to price the same
    // video, which does not apply when Google counts VIDEO tokens (the emulator does).
    output: [("TEXT", "0.0000045"), ("AUDIO", "0.000012")],
};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn price(list: &[(&str, &str)], modality: &str) -> Decimal {
    list.iter()
        .find(|(m, _)| *m == modality)
        .map(|(_, p)| d(p))
        .unwrap()
}

/// Cost of everything the emulator reported for one of its sessions: Google's token counts
/// are the bill, including (Gemini 3.x) prompt tokens no detail covers, priced as TEXT, and
/// thinking tokens outside the total, priced as output TEXT.
pub(crate) fn expected_cost(stack: &Stack, emulator_session: &str, prices: &Prices) -> Decimal {
    let mut total = Decimal::ZERO;
    for rec in stack
        .emulator
        .recorded_usage()
        .iter()
        .filter(|r| r.session_id == emulator_session)
    {
        let mut detailed = 0;
        for item in rec.usage["promptTokensDetails"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let n = item["tokenCount"].as_u64().unwrap();
            detailed += n;
            total += Decimal::from(n) * price(&prices.input, item["modality"].as_str().unwrap());
        }
        let prompt = rec.usage["promptTokenCount"].as_u64().unwrap_or(0);
        total += Decimal::from(prompt - detailed) * price(&prices.input, "TEXT");
        let thoughts = rec.usage["thoughtsTokenCount"].as_u64().unwrap_or(0);
        total += Decimal::from(thoughts) * price(&prices.output, "TEXT");
        for item in rec.usage["candidatesTokensDetails"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let n = Decimal::from(item["tokenCount"].as_u64().unwrap());
            total += n * price(&prices.output, item["modality"].as_str().unwrap());
        }
    }
    total
}

fn b64(bytes: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(vec![1u8; bytes])
}

pub(crate) async fn session_cost(stack: &Stack, session_id: &str) -> (Decimal, Decimal, Decimal) {
    let sql =
        format!("SELECT count() FROM {{db}}.sessions FINAL WHERE session_id = '{session_id}'");
    let n = stack.sql_until(Duration::from_secs(20), &sql).await;
    assert_eq!(n.trim(), "1", "the session row arrived");
    let usage = stack
        .sql(&format!("SELECT toString(sum(cost_usd)) FROM {{db}}.usage_events FINAL WHERE session_id = '{session_id}'"))
        .await;
    let sessions = stack
        .sql(&format!(
            "SELECT toString(cost_usd) FROM {{db}}.sessions FINAL WHERE session_id = '{session_id}'"
        ))
        .await;
    let priced = stack
        .sql(&format!("SELECT toString(min(priced)) FROM {{db}}.usage_events FINAL WHERE session_id = '{session_id}'"))
        .await;
    assert_eq!(priced.trim(), "1");
    (d(usage.trim()), d(sessions.trim()), Decimal::ZERO)
}

#[tokio::test]
async fn text_audio_and_video_sessions_are_priced_exactly_into_clickhouse() {
    let stack = Stack::start_with(Options {
        metering: true,
        ..Options::default()
    })
    .await;
    let (key, key_id) = stack
        .create_key(KeySettings {
            team_id: "team-x".into(),
            ..KeySettings::default()
        })
        .await;

    // 1. Text.
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup(MODEL, "TEXT")).await;
    for t in ["What is the capital of France?", "And of Italy?"] {
        ws.send(litellm_text_turn(t)).await.unwrap();
        read_turn(&mut ws).await;
    }
    ws.close(None).await.unwrap();

    // 2. Audio in, audio out.
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    ws.send(litellm_setup(MODEL, "AUDIO")).await.unwrap();
    next_frame(&mut ws).await;
    let audio = serde_json::json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": b64(64_000)}}});
    ws.send(Message::text(audio.to_string())).await.unwrap();
    ws.send(Message::text(
        r#"{"realtimeInput":{"audioStreamEnd":true}}"#,
    ))
    .await
    .unwrap();
    read_turn(&mut ws).await;
    ws.close(None).await.unwrap();

    // 3. Video frames and an image, on a model that lists video per token and per second.
    let mut ws = stack.connect("/v1/vertex-ai/live", Some(&key)).await;
    open_session(&mut ws, litellm_setup("gemini-3.8-live", "TEXT")).await;
    for _ in 0..3 {
        let frame = serde_json::json!({"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": b64(2_000)}}});
        ws.send(Message::text(frame.to_string())).await.unwrap();
    }
    let image_turn = serde_json::json!({"clientContent": {"turns": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": b64(1_000)}}, {"text": "What do you see?"}]}], "turnComplete": true}});
    ws.send(Message::text(image_turn.to_string()))
        .await
        .unwrap();
    read_turn(&mut ws).await;
    ws.close(None).await.unwrap();

    let events = stack
        .events_until(Duration::from_secs(10), |e| e.ended().len() == 3)
        .await;
    let started = events.started();
    assert_eq!(started.len(), 3);
    // Emulator session ids are emu-…-N in connection order; ours follow the same order.
    let mut emu_sessions: Vec<String> = stack
        .emulator
        .recorded_usage()
        .iter()
        .map(|r| r.session_id.clone())
        .collect();
    emu_sessions.dedup();
    assert_eq!(emu_sessions.len(), 3);

    let mut total = Decimal::ZERO;
    for (i, prices) in [&LIVE_25_FLASH, &LIVE_25_FLASH, &LIVE_38]
        .into_iter()
        .enumerate()
    {
        let sid = &started[i].context.as_ref().unwrap().session_id;
        let expected = expected_cost(&stack, &emu_sessions[i], prices);
        assert!(expected > Decimal::ZERO);
        let (usage, session, _) = session_cost(&stack, sid).await;
        let tolerance = d("0.000000001");
        assert!(
            (usage - expected).abs() < tolerance,
            "session {i}: usage_events {usage} vs expected {expected}"
        );
        assert!(
            (session - expected).abs() < tolerance,
            "session {i}: sessions {session} vs expected {expected}"
        );
        total += expected;
    }
    // The audio session's split: 64 AUDIO tokens in, 32 AUDIO tokens out.
    let sid = &started[1].context.as_ref().unwrap().session_id;
    let split = stack
        .sql(&format!("SELECT input_audio_tokens, output_audio_tokens, toString(input_cost_usd), toString(output_cost_usd) FROM {{db}}.usage_events FINAL WHERE session_id = '{sid}' AND seq = 1"))
        .await;
    let cols: Vec<&str> = split.trim().split('\t').collect();
    assert_eq!(&cols[..2], ["64", "32"]);
    assert_eq!(d(cols[2]), d("0.000192"));
    assert_eq!(d(cols[3]), d("0.000384"));

    // The 3.8 session's receipt: Google's usageMetadata byte for byte as the emulator sent it,
    // its traffic type, and the 25 prompt tokens no detail covers.
    let sid = &started[2].context.as_ref().unwrap().session_id;
    let receipt = stack
        .sql(&format!("SELECT traffic_type, prepaid, input_residual_tokens, usage_json, pricing_entry, length(pricing_version) FROM {{db}}.usage_receipts FINAL WHERE session_id = '{sid}' AND event_id = '{sid}:1' FORMAT JSONEachRow"))
        .await;
    let receipt: serde_json::Value = serde_json::from_str(receipt.trim()).unwrap();
    let sent = stack
        .emulator
        .recorded_usage()
        .into_iter()
        .find(|r| r.session_id == emu_sessions[2])
        .unwrap()
        .usage;
    assert_eq!(receipt["traffic_type"], "ON_DEMAND");
    assert_eq!(receipt["prepaid"], 0);
    assert_eq!(
        receipt["input_residual_tokens"]
            .to_string()
            .trim_matches('"'),
        "25"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(receipt["usage_json"].as_str().unwrap()).unwrap(),
        sent
    );
    assert_eq!(receipt["pricing_entry"], "vertex_ai/gemini-3.8-live");
    assert_eq!(
        receipt["length(pricing_version)"]
            .to_string()
            .trim_matches('"'),
        "16"
    );

    // spend_daily and the KV spend agree with the total.
    let spend = stack
        .sql_until(Duration::from_secs(10), &format!("SELECT toString(sum(cost_usd)) FROM {{db}}.spend_daily FINAL WHERE key_id = '{key_id}'"))
        .await;
    assert!(
        (d(spend.trim()) - total).abs() < d("0.000000001"),
        "spend_daily {spend} vs {total}"
    );
    let js = stack.jetstream().await;
    let kv = js
        .get_key_value(livegate_common::subjects::SPEND_BUCKET)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = kv
            .get(livegate_common::subjects::spend_key_for_key(&key_id))
            .await
            .unwrap();
        if let Some(v) = v
            && (d(std::str::from_utf8(&v).unwrap().trim()) - total).abs() < d("0.000000001")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "KV spend never reached {total}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `livegate spend` reads the same figure.
    let (ch, db) = stack.clickhouse.as_ref().unwrap();
    let url = ch.http_url();
    let args = [
        "livegate",
        "spend",
        "--by",
        "team",
        "--json",
        "--clickhouse-url",
        &url,
        "--clickhouse-database",
        db,
    ];
    let mut out = Vec::new();
    livegate::run(
        <livegate::Args as clap::Parser>::try_parse_from(args).unwrap(),
        &mut out,
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["group"], "team-x");
    assert_eq!(v[0]["sessions"], 3);
    assert!(
        (d(v[0]["cost_usd"].as_str().unwrap()) - total).abs() < d("0.000000001"),
        "{v}"
    );

    // The README's spend queries run and agree.
    let readme = std::fs::read_to_string(crate::clients::repo().join("README.md")).unwrap();
    let block = readme
        .split("Five useful queries:")
        .nth(1)
        .and_then(|r| r.split("```sql").nth(1))
        .and_then(|r| r.split("```").next())
        .expect("the README's spend queries");
    let queries: Vec<&str> = block
        .split(';')
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .collect();
    assert_eq!(queries.len(), 5);
    for q in &queries {
        let sql: String = q
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("livegate.", "{db}.");
        let _ = stack.sql(&sql).await;
    }
    let by_team = stack.sql(&queries[0].replace("livegate.", "{db}.")).await;
    assert!(by_team.starts_with("team-x\t"), "{by_team}");
}

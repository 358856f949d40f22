//! The happy path: sessions of every kind land, priced exactly, in all three tables, and the
//! spend comes back through KV.

use crate::helpers::*;
use livegate_proto::usage::*;

#[tokio::test]
async fn sessions_land_priced_in_all_three_tables_and_spend_reaches_kv() {
    let w = World::new().await;
    let m = spawn_metering(w.config()).await;

    // A: text on gemini-live-2.5-flash ($0.50 in, $2.00 out per 1M; no cache price, so cached
    // tokens are billed as prompt).
    let a = context("sa", "k1", "t1", "gemini-live-2.5-flash");
    w.publish_session(&started(&a)).await;
    // 100 × 0.0000005 = 0.00005 in; 50 × 0.000002 = 0.0001 out.
    w.publish_report(&text_report(&a, 1, 100, 50)).await;
    // 200 prompt incl. 100 cached: 200 × 0.0000005 = 0.0001 in;
    // 80 × 0.000002 = 0.00016 out. The gateway measured 40 chars in, 300 out.
    let mut r2 = text_report(&a, 2, 200, 80);
    let t = r2.tokens.as_mut().unwrap();
    t.cached_tokens = 100;
    t.cache_details = vec![mt(Modality::Text, 100)];
    r2.media = Some(MediaMeasurements {
        input_characters: 40,
        output_characters: 300,
        ..MediaMeasurements::default()
    });
    w.publish_report(&r2).await;
    // 12 characters after the last report: a `sa:end` row (no character price: cost 0).
    w.publish_session(&ended(
        &a,
        2,
        45.2,
        MediaMeasurements {
            output_characters: 12,
            ..MediaMeasurements::default()
        },
    ))
    .await;

    // B: audio in and out, model named by its full resource path.
    let b = context(
        "sb",
        "k2",
        "t1",
        "projects/proj-1/locations/us-central1/publishers/google/models/gemini-live-2.5-flash-native-audio",
    );
    w.publish_report(&report(
        &b,
        1,
        TokenUsage {
            prompt_tokens: 360,
            response_tokens: 172,
            cached_tokens: 20,
            total_tokens: 532,
            prompt_details: vec![mt(Modality::Text, 40), mt(Modality::Audio, 320)],
            response_details: vec![mt(Modality::Text, 12), mt(Modality::Audio, 160)],
            cache_details: vec![mt(Modality::Text, 20)],
            ..TokenUsage::default()
        },
        MediaMeasurements {
            input_audio_seconds: 10.0,
            output_audio_seconds: 5.0,
            ..MediaMeasurements::default()
        },
    ))
    .await;
    w.publish_session(&ended(&b, 1, 12.0, MediaMeasurements::default()))
        .await;

    // C: a model nobody prices, no team.
    let c = context("sc", "k2", "", "mystery-model");
    w.publish_report(&text_report(&c, 1, 1000, 1000)).await;
    w.publish_session(&ended(&c, 1, 3.0, MediaMeasurements::default()))
        .await;

    // D: video and an image on gemini-3.8-live (video per token plus per second).
    let d = context("sd", "k3", "t2", "vertex_ai/gemini-3.8-live");
    w.publish_report(&report(
        &d,
        1,
        TokenUsage {
            prompt_tokens: 531,
            response_tokens: 20,
            prompt_details: vec![
                mt(Modality::Video, 263),
                mt(Modality::Image, 258),
                mt(Modality::Text, 10),
            ],
            response_details: vec![mt(Modality::Text, 20)],
            ..TokenUsage::default()
        },
        MediaMeasurements {
            input_video_seconds: 1.0,
            input_video_frames: 1,
            input_images: 1,
            ..MediaMeasurements::default()
        },
    ))
    .await;
    w.publish_session(&ended(&d, 1, 2.0, MediaMeasurements::default()))
        .await;

    w.wait_sessions(4).await;

    // usage_events: one row per report plus A's trailing row, each priced by hand.
    let rows = w
        .rows(
            "SELECT event_id, toString(input_cost_usd), toString(output_cost_usd), \
             toString(cost_usd), priced, pricing_entry, input_text_tokens, input_audio_tokens, \
             input_video_tokens, input_image_tokens, output_text_tokens, output_audio_tokens \
             FROM {db}.usage_events FINAL ORDER BY event_id",
        )
        .await;
    let expected = [
        // event, in, out, total, priced, entry, in text/audio/video/image, out text/audio
        (
            "sa:1",
            "0.00005",
            "0.0001",
            "0.00015",
            "1",
            "gemini-live-2.5-flash",
            "100 0 0 0 50 0",
        ),
        (
            "sa:2",
            "0.0001",
            "0.00016",
            "0.00026",
            "1",
            "gemini-live-2.5-flash",
            "200 0 0 0 80 0",
        ),
        (
            "sa:end",
            "0",
            "0",
            "0",
            "1",
            "gemini-live-2.5-flash",
            "0 0 0 0 0 0",
        ),
        // 40 × 0.0000005 + 320 × 0.000003 = 0.00098 (Google's AUDIO tokens, not the seconds);
        // 12 × 0.000002 + 160 × 0.000012 = 0.001944.
        (
            "sb:1",
            "0.00098",
            "0.001944",
            "0.002924",
            "1",
            "gemini-live-2.5-flash-native-audio",
            "40 320 0 0 12 160",
        ),
        ("sc:1", "0", "0", "0", "0", "", "1000 0 0 0 1000 0"),
        // 263 × 0.000001 + 258 × 0.000001 + 10 × 0.00000075 = 0.0005285 (the VIDEO tokens
        // are the bill: no per-second charge on top); 20 × 0.0000045 = 0.00009.
        (
            "sd:1",
            "0.0005285",
            "0.00009",
            "0.0006185",
            "1",
            "vertex_ai/gemini-3.8-live",
            "10 0 263 258 20 0",
        ),
    ];
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    for (row, (id, input, output, total, priced, entry, tokens)) in rows.iter().zip(expected) {
        let f: Vec<&str> = row.split('\t').collect();
        assert_eq!(f[0], id);
        assert_eq!(ch_dec(f[1]), dec(input), "{id} input");
        assert_eq!(ch_dec(f[2]), dec(output), "{id} output");
        assert_eq!(ch_dec(f[3]), dec(total), "{id} total");
        assert_eq!(f[4], priced, "{id} priced");
        assert_eq!(f[5], entry, "{id} entry");
        assert_eq!(f[6..].join(" "), tokens, "{id} tokens");
    }

    // sessions: totals of their usage rows plus the end event's own fields.
    let s = w
        .rows(
            "SELECT session_id, key_id, team_id, reports, events_counted, prompt_tokens, \
             response_tokens, input_characters + output_characters, toString(input_cost_usd), \
             toString(output_cost_usd), toString(cost_usd), duration_s, close_code, closed_by, \
             frames_in, bytes_out, toString(started_at), toString(ended_at), \
             upstream_connections, resumptions \
             FROM {db}.sessions FINAL ORDER BY session_id",
        )
        .await;
    let sa: Vec<&str> = s[0].split('\t').collect();
    assert_eq!(&sa[..8], ["sa", "k1", "t1", "2", "3", "300", "130", "352"]);
    assert_eq!(ch_dec(sa[8]), dec("0.00015"));
    assert_eq!(ch_dec(sa[9]), dec("0.00026"));
    assert_eq!(ch_dec(sa[10]), dec("0.00041"));
    assert_eq!(
        &sa[11..],
        [
            "45.2",
            "1000",
            "client",
            "10",
            "2000",
            "2027-01-15 08:00:00",
            "2027-01-15 08:00:45",
            "3",
            "2"
        ]
    );
    let sb: Vec<&str> = s[1].split('\t').collect();
    assert_eq!(ch_dec(sb[10]), dec("0.002924"));
    let sc: Vec<&str> = s[2].split('\t').collect();
    assert_eq!(ch_dec(sc[10]), dec("0"));
    let sd: Vec<&str> = s[3].split('\t').collect();
    assert_eq!(ch_dec(sd[10]), dec("0.0006185"));

    // spend_daily: per day × key × team × model.
    let daily = w
        .rows(
            "SELECT toString(day), key_id, team_id, sum(sessions), sum(prompt_tokens), \
             sum(response_tokens), toString(sum(cost_usd)) FROM {db}.spend_daily FINAL \
             GROUP BY day, key_id, team_id, model ORDER BY key_id, team_id",
        )
        .await;
    let expected = [
        "2027-01-15 k1 t1 1 300 130 0.00041",
        "2027-01-15 k2  1 1000 1000 0",
        "2027-01-15 k2 t1 1 360 172 0.002924",
        "2027-01-15 k3 t2 1 531 20 0.0006185",
    ];
    assert_eq!(daily.len(), expected.len(), "{daily:#?}");
    for (row, want) in daily.iter().zip(expected) {
        let mut f: Vec<String> = row.split('\t').map(str::to_string).collect();
        f[6] = ch_dec(&f[6]).to_string();
        assert_eq!(f.join(" "), want);
    }

    // Spend fed back to KV, exactly.
    w.wait_spend("key.k1", "0.00041").await;
    w.wait_spend("key.k2", "0.002924").await;
    w.wait_spend("key.k3", "0.0006185").await;
    w.wait_spend("team.t1", "0.003334").await;
    w.wait_spend("team.t2", "0.0006185").await;
    assert_eq!(w.spend("team.").await, None);

    // Metrics and health.
    assert_eq!(
        m.metric("livegate_metering_unpriced_events_total{model=\"mystery-model\"}")
            .await,
        1.0
    );
    assert_eq!(
        m.metric("livegate_metering_events_inserted_total").await,
        6.0
    );
    assert_eq!(
        m.metric("livegate_metering_events_consumed_total{kind=\"report\"}")
            .await,
        5.0
    );
    assert_eq!(m.get("/healthz").await.0, 200);
    assert_eq!(m.get("/readyz").await.0, 200);
    assert_eq!(m.get("/nope").await.0, 404);
    m.stop().await;
}

#[tokio::test]
async fn a_session_end_before_its_reports_waits_for_them() {
    let w = World::new().await;
    let m = spawn_metering(w.config()).await;
    let s = context("late", "kl", "tl", "gemini-live-2.5-flash");
    // The end says two reports were published, but they are not on the bus yet.
    w.publish_session(&ended(&s, 2, 5.0, MediaMeasurements::default()))
        .await;
    eventually("the end event to be seen", || async {
        (m.metric("livegate_metering_events_consumed_total{kind=\"session_ended\"}")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    w.publish_report(&text_report(&s, 1, 100, 50)).await; // 0.00015
    w.publish_report(&text_report(&s, 2, 10, 10)).await; // 0.000005 + 0.00002
    let row = eventually("the session row", || async {
        w.try_scalar(
            "SELECT concat(toString(events_counted), ' ', toString(cost_usd)) \
             FROM {db}.sessions FINAL WHERE session_id = 'late'",
        )
        .await
        .filter(|r| !r.is_empty())
    })
    .await;
    let (events, cost) = row.split_once(' ').unwrap();
    assert_eq!(events, "2");
    assert_eq!(ch_dec(cost), dec("0.000175"));
    w.wait_spend("key.kl", "0.000175").await;
    m.stop().await;
}

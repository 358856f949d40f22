//! Resumption semantics: handles that outlive their connection (for a while), a resume refused
//! while the session's old connection is open, the connection-age limit, and the record of
//! consumed client messages that a resume rolls back to its handle.

use crate::helpers::*;
use livegate_emulator::{Behaviour, ConnectionAge, EmulatorConfig};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::time::Duration;

fn recording() -> EmulatorConfig {
    EmulatorConfig {
        behaviour: Behaviour {
            record_consumed: true,
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    }
}

fn update(v: &Value) -> &Value {
    v.get("sessionResumptionUpdate")
        .unwrap_or_else(|| panic!("expected sessionResumptionUpdate, got {v}"))
}

fn sha(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// Sets up a transparent-resumption session; returns (session id, first handle).
async fn transparent(ws: &mut Ws, handle: Option<&str>) -> (String, String) {
    let mut resumption = json!({"transparent": true});
    if let Some(h) = handle {
        resumption["handle"] = json!(h);
    }
    let done = setup(ws, json!({"model": MODEL, "sessionResumption": resumption})).await;
    let first = next_json(ws).await;
    assert_eq!(update(&first)["lastConsumedClientMessageIndex"], "0");
    (
        done["setupComplete"]["sessionId"].as_str().unwrap().into(),
        update(&first)["newHandle"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn resume_is_refused_while_the_old_connection_is_open() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut old = connect(&emu).await;
    let (_, handle) = transparent(&mut old, None).await;

    let mut early = connect(&emu).await;
    send(
        &mut early,
        json!({"setup": {"model": MODEL, "sessionResumption": {"handle": handle}}}),
    )
    .await;
    let close = read_close(&mut early).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1011);
    assert!(close.reason.contains("still active"), "{}", close.reason);

    // Once the old connection is closed, the same handle resumes.
    old.close(None).await.unwrap();
    let _ = read_close(&mut old).await;
    let mut again = connect(&emu).await;
    transparent(&mut again, Some(&handle)).await;
    assert_eq!(emu.stats().resumed_sessions, 1);
}

#[tokio::test]
async fn handles_expire_after_the_ttl() {
    let emu = spawn(EmulatorConfig {
        behaviour: Behaviour {
            handle_ttl: Some(Duration::ZERO),
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut old = connect(&emu).await;
    let (_, handle) = transparent(&mut old, None).await;
    old.close(None).await.unwrap();
    let _ = read_close(&mut old).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut late = connect(&emu).await;
    send(
        &mut late,
        json!({"setup": {"model": MODEL, "sessionResumption": {"handle": handle}}}),
    )
    .await;
    let close = read_close(&mut late).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1008);
}

#[tokio::test]
async fn connection_age_limit_sends_go_away_then_closes() {
    let emu = spawn(EmulatorConfig {
        behaviour: Behaviour {
            connection_age: Some(ConnectionAge::new(
                Duration::from_millis(300),
                Duration::from_millis(200),
            )),
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    assert_eq!(next_json(&mut ws).await["goAway"]["timeLeft"], "0.2s");
    let close = read_close(&mut ws).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1011);
    assert_eq!(close.reason.as_str(), "Deadline expired.");
}

#[tokio::test]
async fn a_resume_rolls_the_consumed_record_back_to_its_handle() {
    let emu = spawn(recording()).await;
    let mut ws = connect(&emu).await;
    let (session, _) = transparent(&mut ws, None).await;
    let turn = user_text("one");
    send(&mut ws, turn.clone()).await;
    read_turn(&mut ws).await;
    let after_turn = next_json(&mut ws).await;
    assert_eq!(update(&after_turn)["lastConsumedClientMessageIndex"], "1");
    let handle = update(&after_turn)["newHandle"]
        .as_str()
        .unwrap()
        .to_string();
    // Consumed by this connection but not covered by the handle: lost unless sent again.
    let audio = json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": pcm_b64(3200)}}});
    send(&mut ws, audio.clone()).await;
    ws.close(None).await.unwrap();
    let _ = read_close(&mut ws).await;
    assert_eq!(emu.consumed(&session).len(), 2);

    let mut ws = connect(&emu).await;
    let (resumed, _) = transparent(&mut ws, Some(&handle)).await;
    assert_eq!(resumed, session, "a resume continues the session");
    assert_eq!(emu.consumed(&session).len(), 1, "rolled back to the handle");
    send(&mut ws, audio.clone()).await;
    let end = json!({"realtimeInput": {"audioStreamEnd": true}});
    send(&mut ws, end.clone()).await;
    let frames = read_turn(&mut ws).await;
    let text: String = frames
        .iter()
        .filter_map(|f| f.json.pointer("/serverContent/modelTurn/parts/0/text"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(text, "I received 0.10 seconds of audio.");
    let u = update(&next_json(&mut ws).await).clone();
    assert_eq!(u["lastConsumedClientMessageIndex"], "2");

    let consumed = emu.consumed(&session);
    let shas: Vec<&str> = consumed.iter().map(|c| c.sha256.as_str()).collect();
    assert_eq!(shas, [sha(&turn), sha(&audio), sha(&end)]);
    assert_eq!(
        consumed
            .iter()
            .map(|c| (c.connection, c.index))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 1), (2, 2)]
    );
    assert_eq!(consumed[1].kind, "realtimeInput");
    // Usage numbering continues across the session's connections.
    let seqs: Vec<u64> = emu
        .recorded_usage()
        .iter()
        .filter(|r| r.session_id == session)
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test]
async fn pongs_come_late_and_data_does_not_wait_for_them() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let emu = spawn(EmulatorConfig {
        behaviour: Behaviour {
            pong_delay: Duration::from_millis(500),
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    ws.send(Message::Ping(b"late".to_vec().into()))
        .await
        .unwrap();
    send(&mut ws, user_text("before the pong")).await;
    // The whole turn is answered while the pong is still held back.
    let mut turn_done = false;
    for _ in 0..100 {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match msg {
            Message::Pong(p) => {
                assert!(turn_done, "the pong overtook the turn");
                assert_eq!(&p[..], b"late");
                return;
            }
            Message::Binary(b) => {
                let v: Value = serde_json::from_slice(&b).unwrap();
                turn_done |= v.pointer("/serverContent/turnComplete") == Some(&json!(true));
            }
            _ => {}
        }
    }
    panic!("no pong");
}

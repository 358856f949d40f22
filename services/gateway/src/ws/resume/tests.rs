//! Resumption state without sockets: setup rewriting, replay bookkeeping, what the client
//! sees, and when a relay's end becomes a resumption.

use super::*;
use crate::ws::inspect::{ResumptionUpdate, inspect_server};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

fn frame(json: &str) -> ServerFrame {
    inspect_server(json.as_bytes(), &mut crate::ws::inspect::Media::default())
}

fn update(handle: &str, last: u64) -> ServerFrame {
    ServerFrame {
        resumption: Some(ResumptionUpdate {
            handle: Some(handle.into()),
            last_consumed: Some(last),
        }),
        ..ServerFrame::default()
    }
}

fn setup_of(frame: &[u8]) -> Value {
    serde_json::from_slice::<Value>(frame).unwrap()["setup"].clone()
}

fn closed(code: u16) -> End {
    End::UpstreamClosed(Some(CloseFrame {
        code: code.into(),
        reason: "x".into(),
    }))
}

#[test]
fn who_gets_resumed() {
    let plain = br#"{"setup":{"model":"m"}}"#;
    let asked = br#"{"setup":{"model":"m","session_resumption":{}}}"#;
    let cfg = ResumeConfig::default();
    assert!(
        Resume::new(&cfg, plain).is_none(),
        "client mode needs the client to ask"
    );
    let (state, up) = Resume::new(&cfg, asked).unwrap();
    assert!(state.client_asked);
    let s = setup_of(&up);
    assert_eq!(s["sessionResumption"], json!({"transparent": true}));
    assert!(s.get("session_resumption").is_none());
    assert_eq!(s["model"], "m");

    let always = ResumeConfig {
        mode: Mode::Always,
        ..ResumeConfig::default()
    };
    let (state, up) = Resume::new(&always, plain).unwrap();
    assert!(!state.client_asked);
    assert_eq!(setup_of(&up)["sessionResumption"]["transparent"], true);
    let off = ResumeConfig {
        mode: Mode::Off,
        ..ResumeConfig::default()
    };
    assert!(Resume::new(&off, asked).is_none());
    assert_eq!("ALWAYS".parse::<Mode>(), Ok(Mode::Always));
    assert!("sometimes".parse::<Mode>().is_err());
}

#[test]
fn a_client_handle_resumes_the_first_connection_and_is_kept() {
    let (state, up) = Resume::new(
        &ResumeConfig::default(),
        br#"{"setup":{"model":"m","sessionResumption":{"handle":"old"}}}"#,
    )
    .unwrap();
    assert_eq!(
        setup_of(&up)["sessionResumption"],
        json!({"handle": "old", "transparent": true})
    );
    assert_eq!(state.handle.as_deref(), Some("old"));
}

#[test]
fn frames_are_replayed_after_the_last_consumed_index_and_renumbered() {
    let (mut r, _) = Resume::new(
        &ResumeConfig::default(),
        br#"{"setup":{"model":"m","sessionResumption":{"transparent":true}}}"#,
    )
    .unwrap();
    for i in 1..=5 {
        r.on_client(&Message::text(format!("c{i}")));
    }
    // Upstream's state includes frames 1..=3.
    let (seen, switch) = r.on_server(&update("h1", 3));
    assert_eq!((seen, switch), (Seen::Forward, false));
    assert_eq!(
        String::from_utf8(r.resume_frame()).unwrap(),
        json!({"setup": {"model": "m", "sessionResumption": {"transparent": true, "handle": "h1"}}}).to_string()
    );
    let replay = r.reconnected();
    assert_eq!(replay, [Message::text("c4"), Message::text("c5")]);
    assert_eq!(r.resumptions(), 1);
    r.on_client(&Message::text("c6"));
    // The new connection consumed the two replayed frames (its 1 and 2): the client, which
    // numbers from its own setup, hears 5.
    let (seen, _) = r.on_server(&update("h2", 2));
    let Seen::Replace(m) = seen else {
        panic!("{seen:?}")
    };
    let v: Value = serde_json::from_slice(&m.into_data()).unwrap();
    assert_eq!(
        v["sessionResumptionUpdate"]["lastConsumedClientMessageIndex"],
        "5"
    );
    assert_eq!(v["sessionResumptionUpdate"]["newHandle"], "h2");
    assert_eq!(r.reconnected(), [Message::text("c6")]);
}

#[test]
fn go_away_is_swallowed_and_the_switch_waits_for_a_turn_boundary() {
    let (mut r, _) = Resume::new(
        &ResumeConfig::default(),
        br#"{"setup":{"model":"m","sessionResumption":{}}}"#,
    )
    .unwrap();
    // No handle yet: nothing to resume with, the client must see the goAway.
    let go_away = frame(r#"{"goAway":{"timeLeft":"10s"}}"#);
    assert_eq!(r.on_server(&go_away), (Seen::Forward, false));
    r.on_server(&update("h1", 0));
    r.on_server(&frame(
        r#"{"serverContent":{"modelTurn":{"parts":[{"text":"a"}]}}}"#,
    ));
    assert_eq!(r.on_server(&go_away), (Seen::Swallow, false));
    assert!(r.switch_by().is_some());
    // Mid-turn: an update does not switch.
    assert!(!r.on_server(&update("h2", 0)).1);
    r.on_server(&frame(r#"{"serverContent":{"turnComplete":true}}"#));
    assert!(r.on_server(&update("h3", 0)).1);

    let forwarding = ResumeConfig {
        forward_go_away: true,
        ..ResumeConfig::default()
    };
    let (mut r, _) = Resume::new(&forwarding, br#"{"setup":{"sessionResumption":{}}}"#).unwrap();
    r.on_server(&update("h1", 0));
    assert_eq!(r.on_server(&go_away), (Seen::Forward, false));
}

#[test]
fn updates_are_swallowed_when_the_gateway_asked_for_them() {
    let always = ResumeConfig {
        mode: Mode::Always,
        ..ResumeConfig::default()
    };
    let (mut r, _) = Resume::new(&always, br#"{"setup":{"model":"m"}}"#).unwrap();
    assert_eq!(r.on_server(&update("h1", 0)).0, Seen::Swallow);
}

#[test]
fn which_ends_are_resumed() {
    let (mut r, _) = Resume::new(
        &ResumeConfig {
            max_resumptions: 1,
            ..ResumeConfig::default()
        },
        br#"{"setup":{"sessionResumption":{}}}"#,
    )
    .unwrap();
    assert_eq!(r.decide(&closed(1011)), Decision::End, "no handle yet");
    r.on_server(&update("h1", 0));
    assert!(matches!(r.decide(&closed(1011)), Decision::Resume(_)));
    assert!(matches!(
        r.decide(&End::UpstreamGone("x".into())),
        Decision::Resume(_)
    ));
    assert!(matches!(r.decide(&End::Switch), Decision::Resume(_)));
    assert_eq!(r.decide(&closed(1008)), Decision::End, "the client's fault");
    assert_eq!(r.decide(&closed(1000)), Decision::End, "a normal end");
    assert_eq!(r.decide(&End::ClientGone("x".into())), Decision::End);
    // After a goAway, the close it announced is cured whatever its code.
    r.on_server(&frame(r#"{"goAway":{"timeLeft":"1s"}}"#));
    assert!(matches!(r.decide(&closed(1000)), Decision::Resume(_)));
    r.reconnected();
    assert_eq!(r.decide(&closed(1011)), Decision::End, "the count is spent");
}

#[test]
fn an_overflowing_replay_buffer_fails_the_resume_clearly() {
    let (mut r, _) = Resume::new(
        &ResumeConfig {
            buffer_bytes: 10,
            ..ResumeConfig::default()
        },
        br#"{"setup":{"sessionResumption":{}}}"#,
    )
    .unwrap();
    r.on_server(&update("h1", 0));
    r.on_client(&Message::text("0123456789abc"));
    match r.decide(&closed(1011)) {
        Decision::Fail(c) => {
            assert_eq!(c.code, close::INTERNAL);
            assert!(
                c.reason.contains("GATEWAY_RESUME_BUFFER_BYTES"),
                "{}",
                c.reason
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_key_bounds_resumption_within_the_gateway_limits() {
    let gateway = ResumeConfig {
        max_resumptions: 5,
        max_duration: Duration::from_secs(3600),
        ..ResumeConfig::default()
    };
    assert_eq!(
        gateway.for_key(None, None),
        gateway,
        "no key bound: the gateway's"
    );
    let key = gateway.for_key(Some(1), Some(600));
    assert_eq!(key.max_resumptions, 1);
    assert_eq!(key.max_duration, Duration::from_secs(600));
    let greedy = gateway.for_key(Some(100), Some(86_400));
    assert_eq!(
        (greedy.max_resumptions, greedy.max_duration),
        (5, Duration::from_secs(3600)),
        "a key never gets more than the gateway allows"
    );
    assert_eq!(gateway.for_key(Some(0), None).max_resumptions, 0);

    // A key allowed one resumption: the first goAway is cured, the second reaches the
    // client and the upstream's close ends the session as without resumption.
    let (mut state, _) = Resume::new(
        &gateway.for_key(Some(1), None),
        br#"{"setup":{"model":"m","sessionResumption":{}}}"#,
    )
    .unwrap();
    state.on_server(&update("h1", 0));
    let go_away = frame(r#"{"goAway":{"timeLeft":"10s"}}"#);
    assert_eq!(state.on_server(&go_away).0, Seen::Swallow);
    assert_eq!(
        state.decide(&End::Switch),
        Decision::Resume("goAway".into())
    );
    state.reconnected();
    state.on_server(&update("h2", 0));
    assert_eq!(state.on_server(&go_away).0, Seen::Forward);
    assert_eq!(state.decide(&closed(1011)), Decision::End);
}

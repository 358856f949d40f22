//! goAway, forced close, shutdown.

use crate::helpers::*;
use livegate_emulator::{Behaviour, EmulatorConfig};
use std::time::Duration;

#[tokio::test]
async fn go_away_then_close_with_configured_code() {
    let emu = spawn(EmulatorConfig {
        behaviour: Behaviour {
            go_away_after: Some(Duration::from_millis(50)),
            close_after: Some((Duration::from_millis(1050), 4000, "time is up".into())),
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    let go_away = next_json(&mut ws).await;
    assert_eq!(go_away["goAway"]["timeLeft"], "1s");
    let (close, seen) = read_close(&mut ws).await;
    assert!(seen.is_empty());
    let close = close.unwrap();
    assert_eq!(u16::from(close.code), 4000);
    assert_eq!(close.reason.as_str(), "time is up");
}

#[tokio::test]
async fn behaviour_set_at_run_time_applies_to_new_sessions() {
    let emu = spawn(EmulatorConfig::default()).await;
    emu.set_behaviour(Behaviour {
        close_after: Some((Duration::ZERO, 1011, "internal".into())),
        ..Behaviour::default()
    });
    assert!(emu.behaviour().close_after.is_some());
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    let close = read_close(&mut ws).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1011);
}

#[tokio::test]
async fn go_away_without_close_announces_its_own_delay() {
    let emu = spawn(EmulatorConfig {
        behaviour: Behaviour {
            go_away_after: Some(Duration::from_millis(10)),
            ..Behaviour::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    assert_eq!(next_json(&mut ws).await["goAway"]["timeLeft"], "0.01s");
    // The session stays usable.
    send(&mut ws, user_text("still there?")).await;
    read_turn(&mut ws).await;
}

#[tokio::test]
async fn shutdown_closes_open_sessions_with_1001() {
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    let addr = emu.addr();
    let closing = tokio::spawn(emu.shutdown());
    let close = read_close(&mut ws).await.0.unwrap();
    assert_eq!(u16::from(close.code), 1001);
    drop(ws);
    tokio::time::timeout(WAIT, closing).await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn client_close_ends_session_cleanly() {
    use futures_util::StreamExt as _;
    let emu = spawn(EmulatorConfig::default()).await;
    let mut ws = connect(&emu).await;
    text_setup(&mut ws).await;
    ws.close(None).await.unwrap();
    // The server answers the close; the stream then ends.
    let rest = tokio::time::timeout(WAIT, async {
        let mut n = 0;
        while let Some(Ok(_)) = ws.next().await {
            n += 1;
        }
        n
    })
    .await
    .unwrap();
    assert!(rest <= 1);
    for _ in 0..200 {
        if emu.stats().active_sessions == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("session still active after client close");
}

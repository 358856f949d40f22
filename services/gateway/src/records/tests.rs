use super::*;

fn usd(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn key_json(key_id: &str, revoked: bool, budget: Option<&str>, expires_at: Option<i64>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "hash": "h1",
        "key_id": key_id,
        "alias": "a",
        "team_id": "growth",
        "created_at": 1,
        "revoked": revoked,
        "max_budget_usd": budget,
        "expires_at": expires_at,
        "some_future_field": [1, 2],
    }))
    .unwrap()
}

#[test]
fn changes_of_the_keys_bucket_are_classified() {
    assert_eq!(
        classify(
            "k.h1",
            false,
            &key_json("key_1", true, Some("2.5"), Some(99))
        ),
        Some(Change::Key {
            hash: "h1".into(),
            key_id: "key_1".into(),
            limits: KeyLimits {
                ended: Some(Ended::Revoked),
                expires_at: Some(99),
                max_budget_usd: Some(usd("2.5")),
            },
        })
    );
    assert_eq!(
        classify("k.h1", false, &key_json("key_1", false, None, None)),
        Some(Change::Key {
            hash: "h1".into(),
            key_id: "key_1".into(),
            limits: KeyLimits::default(),
        })
    );
    assert_eq!(
        classify("k.h1", true, b""),
        Some(Change::KeyGone { hash: "h1".into() })
    );
    assert_eq!(
        classify(
            "t.growth",
            false,
            br#"{"team_id":"growth","max_budget_usd":"10","created_at":1}"#
        ),
        Some(Change::Team {
            team_id: "growth".into(),
            budget: Some(usd("10")),
        })
    );
    assert_eq!(
        classify("t.growth", true, b""),
        Some(Change::Team {
            team_id: "growth".into(),
            budget: None,
        }),
        "a cleared team record clears the team budget"
    );
    // Malformed records and foreign entries are ignored, never a panic.
    for (kv_key, value) in [
        ("k.h1", &b"{not json"[..]),
        ("k.h1", br#"{"hash":"h1","key_id":5}"#),
        (
            "k.h1",
            br#"{"hash":"h1","key_id":"k","max_budget_usd":"lots"}"#,
        ),
        ("k.h1", br#"{"hash":"h1","key_id":"k","revoked":"yes"}"#),
        ("k.h1", br#"{"key_id":"k"}"#),
        ("k.h2", &key_json("key_1", true, None, None)),
        ("t.growth", br#"{"team_id":"ops","max_budget_usd":"1"}"#),
        ("t.growth", b"\xff\xfe"),
        ("secret.browser-token", b"whatever"),
        ("", b""),
    ] {
        assert_eq!(classify(kv_key, false, value), None, "{kv_key} {value:?}");
    }
}

fn change(key_id: &str, limits: KeyLimits) -> Change {
    Change::Key {
        hash: format!("h-{key_id}"),
        key_id: key_id.into(),
        limits,
    }
}

#[tokio::test]
async fn a_revoked_or_deleted_key_ends_its_sessions_and_only_those() {
    let records = Records::default();
    records.apply(1, change("key_1", KeyLimits::default()));
    let a = records.subscribe("key_1", "", KeyLimits::default(), None);
    let b = records.subscribe("key_1", "", KeyLimits::default(), None);
    let other = records.subscribe("key_2", "", KeyLimits::default(), None);
    let ended = tokio::time::timeout(Duration::from_millis(50), a.ended()).await;
    assert!(ended.is_err(), "a usable key's session goes on");
    let revoked = KeyLimits {
        ended: Some(Ended::Revoked),
        ..KeyLimits::default()
    };
    assert_eq!(
        records.apply(2, change("key_1", revoked.clone())),
        Some(Stale::Key("key_1".into()))
    );
    for s in [&a, &b] {
        let e = tokio::time::timeout(Duration::from_secs(1), s.ended()).await;
        assert_eq!(e.unwrap(), Ended::Revoked);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(50), other.ended())
            .await
            .is_err()
    );
    // A session that starts after the revocation reached the mirror ends at once, whatever
    // auth's (cached) answer said.
    let late = records.subscribe("key_1", "", KeyLimits::default(), None);
    assert_eq!(late.ended_now(), Some(Ended::Revoked));
    assert_eq!(late.ended().await, Ended::Revoked);
    // A delete, known by its hash only.
    records.apply(3, change("key_2", KeyLimits::default()));
    assert_eq!(
        records.apply(
            4,
            Change::KeyGone {
                hash: "h-key_2".into()
            }
        ),
        Some(Stale::Key("key_2".into()))
    );
    assert_eq!(other.ended().await, Ended::Deleted);
    // A replayed older revision does not bring it back.
    records.apply(3, change("key_2", KeyLimits::default()));
    let again = records.subscribe("key_2", "", KeyLimits::default(), None);
    assert_eq!(again.ended().await, Ended::Deleted);
    // A delete of a key never seen names nobody.
    assert_eq!(
        records.apply(5, Change::KeyGone { hash: "h-x".into() }),
        None
    );
}

#[tokio::test]
async fn expiry_ends_a_session_when_it_passes() {
    let records = Records::default();
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let s = records.subscribe(
        "key_1",
        "",
        KeyLimits {
            expires_at: Some(now + 3600),
            ..KeyLimits::default()
        },
        None,
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(50), s.ended())
            .await
            .is_err()
    );
    assert_eq!(s.ended_now(), None);
    // The operator moves the expiry to the past second: the session ends at once.
    records.apply(
        1,
        change(
            "key_1",
            KeyLimits {
                expires_at: Some(now),
                ..KeyLimits::default()
            },
        ),
    );
    let e = tokio::time::timeout(Duration::from_secs(1), s.ended()).await;
    assert_eq!(e.unwrap(), Ended::Expired);
    assert_eq!(s.ended_now(), Some(Ended::Expired));
    // The far future and the distant past (no overflow either way).
    for (at, ended) in [
        (i64::MAX, None),
        (i64::MIN, Some(Ended::Expired)),
        (-1, Some(Ended::Expired)),
    ] {
        let l = Limits::fixed(
            KeyLimits {
                expires_at: Some(at),
                ..KeyLimits::default()
            },
            None,
        );
        assert_eq!(l.ended_now(), ended, "{at}");
        if ended.is_some() {
            assert_eq!(l.ended().await, Ended::Expired, "{at}");
        } else {
            assert!(
                tokio::time::timeout(Duration::from_millis(20), l.ended())
                    .await
                    .is_err()
            );
        }
    }
    // An expiry in the future ends it when it comes.
    let soon = Limits::fixed(
        KeyLimits {
            expires_at: Some(now + 2),
            ..KeyLimits::default()
        },
        None,
    );
    let e = tokio::time::timeout(Duration::from_secs(4), soon.ended()).await;
    assert_eq!(e.unwrap(), Ended::Expired);
}

#[test]
fn budget_changes_reach_live_sessions_of_the_key_and_the_team() {
    let records = Records::default();
    let granted = KeyLimits {
        max_budget_usd: Some(usd("10")),
        ..KeyLimits::default()
    };
    let s = records.subscribe("key_1", "growth", granted.clone(), Some(usd("100")));
    let no_team = records.subscribe("key_2", "", KeyLimits::default(), Some(usd("1")));
    assert_eq!(
        (s.key_budget(), s.team_budget()),
        (Some(usd("10")), Some(usd("100")))
    );
    assert_eq!(no_team.team_budget(), None, "no team, no team budget");
    records.apply(
        1,
        change(
            "key_1",
            KeyLimits {
                max_budget_usd: Some(usd("0.5")),
                ..KeyLimits::default()
            },
        ),
    );
    assert_eq!(s.key_budget(), Some(usd("0.5")));
    assert_eq!(
        records.apply(
            2,
            Change::Team {
                team_id: "growth".into(),
                budget: Some(usd("3")),
            }
        ),
        Some(Stale::Team("growth".into()))
    );
    assert_eq!(s.team_budget(), Some(usd("3")));
    // An older team revision (a replay) changes nothing; a clear removes the budget.
    records.apply(
        1,
        Change::Team {
            team_id: "growth".into(),
            budget: Some(usd("7")),
        },
    );
    assert_eq!(s.team_budget(), Some(usd("3")));
    records.apply(
        3,
        Change::Team {
            team_id: "growth".into(),
            budget: None,
        },
    );
    assert_eq!(s.team_budget(), None);
    // A new session starts from the mirror's view, not from auth's older answer.
    let later = records.subscribe("key_1", "growth", granted, Some(usd("100")));
    assert_eq!(
        (later.key_budget(), later.team_budget()),
        (Some(usd("0.5")), None)
    );
}

#[test]
fn channels_live_as_long_as_a_session_holds_them() {
    let records = Records::default();
    let a = records.subscribe("key_1", "growth", KeyLimits::default(), None);
    let b = records.subscribe("key_1", "growth", KeyLimits::default(), None);
    let c = records.subscribe("key_2", "growth", KeyLimits::default(), None);
    assert_eq!(records.channels(), (2, 1));
    drop(a);
    assert_eq!(records.channels(), (2, 1));
    drop(b);
    assert_eq!(records.channels(), (1, 1));
    drop(c);
    assert_eq!(records.channels(), (0, 0));
    // Changes for keys without sessions only update the view.
    records.apply(1, change("key_1", KeyLimits::default()));
    assert_eq!(records.channels(), (0, 0));
}

#[tokio::test]
async fn an_expiry_extended_mid_session_does_not_end_it() {
    let records = Records::default();
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let expiring = |at| KeyLimits {
        expires_at: Some(at),
        ..KeyLimits::default()
    };
    // Two whole seconds ahead: `now` is truncated, so the old expiry is 1 to 2 s away (one
    // second ahead could be a few ms away and end the session before the extension).
    let s = records.subscribe("key_1", "", expiring(now + 2), None);
    let watching = s.ended();
    tokio::pin!(watching);
    // Watching (asleep until the old expiry) when the operator extends it.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut watching)
            .await
            .is_err()
    );
    records.apply(1, change("key_1", expiring(now + 3600)));
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), &mut watching)
            .await
            .is_err(),
        "the session outlives the old expiry"
    );
    assert_eq!(s.ended_now(), None);
    // And an expiry removed altogether.
    records.apply(2, change("key_1", KeyLimits::default()));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut watching)
            .await
            .is_err()
    );
}

#[test]
fn deleted_keys_are_forgotten_once_no_cached_check_can_let_them_in() {
    let keep = Duration::from_millis(50);
    let records = Records::new(keep);
    let n = 1000u64;
    for i in 0..n {
        records.apply(i, change(&format!("key_{i}"), KeyLimits::default()));
    }
    for i in 0..n {
        records.apply(
            n + i,
            Change::KeyGone {
                hash: format!("h-key_{i}"),
            },
        );
    }
    // Within the window a late session of a deleted key still ends at once.
    let late = records.subscribe("key_7", "", KeyLimits::default(), None);
    assert_eq!(late.ended_now(), Some(Ended::Deleted));
    drop(late);
    assert_eq!(records.keys_held(), 1000);
    std::thread::sleep(keep * 2);
    // The next change forgets them; a key written again after its delete stays.
    records.apply(3 * n, change("key_1", KeyLimits::default()));
    assert_eq!(records.keys_held(), 1, "only the key written again");
    assert_eq!(
        records
            .subscribe("key_1", "", KeyLimits::default(), None)
            .ended_now(),
        None
    );
    // A forgotten key's session starts from auth's answer (which refuses a deleted key).
    let s = records.subscribe("key_7", "", KeyLimits::default(), None);
    assert_eq!(s.ended_now(), None);
}

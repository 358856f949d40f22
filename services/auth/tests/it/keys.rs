//! Key lifecycle across replicas and restarts, browser tokens, and bad input.

use crate::helpers::*;
use livegate_proto::auth::*;
use livegate_test_support::nats::NatsServer;
use std::time::Duration;
use tonic::Code;

fn check(credential: &str) -> CheckKeyRequest {
    CheckKeyRequest {
        credential: credential.to_string(),
    }
}

#[tokio::test]
async fn revoke_on_one_replica_is_seen_by_another_within_a_second() {
    let nats = NatsServer::start().await.unwrap();
    let a = spawn_auth(config(&nats.url())).await;
    let b = spawn_auth(config(&nats.url())).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);

    let (key, key_id) = create_key(
        &mut ca,
        KeySettings {
            alias: "svc-a".into(),
            team_id: "team-1".into(),
            allowed_models: vec!["gemini-live-2.5-flash".into()],
            max_concurrent_sessions: 3,
            max_budget_usd: "10".into(),
            ..Default::default()
        },
    )
    .await;
    let info = ca
        .check_key(check(&key))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(info.key_id, key_id);
    assert_eq!(info.alias, "svc-a");
    assert_eq!(info.team_id, "team-1");
    assert_eq!(info.max_concurrent_sessions, 3);
    assert_eq!(info.max_budget_usd, "10");
    assert_eq!(info.spend_usd, "0");

    // The other replica learns about the key through its KV watch.
    assert!(
        eventually(Duration::from_secs(1), || {
            let mut cb = cb.clone();
            let key = key.clone();
            async move { cb.check_key(check(&key)).await.is_ok() }
        })
        .await,
        "replica B never saw the new key"
    );

    ca.revoke_key(admin(RevokeKeyRequest {
        key: "svc-a".into(),
    }))
    .await
    .unwrap();
    let err = ca.check_key(check(&key)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        eventually(Duration::from_secs(1), || {
            let mut cb = cb.clone();
            let key = key.clone();
            async move {
                matches!(cb.check_key(check(&key)).await, Err(s) if s.code() == Code::Unauthenticated)
            }
        })
        .await,
        "replica B still accepts a revoked key after 1 s"
    );
    let listed = cb
        .list_keys(admin(ListKeysRequest {
            include_revoked: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(listed.iter().any(|k| k.key_id == key_id && k.revoked));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn keys_survive_an_auth_restart_and_unknown_keys_fail_alike() {
    let nats = NatsServer::start().await.unwrap();
    let a = spawn_auth(config(&nats.url())).await;
    let (key, key_id) = create_key(&mut a.client().await, KeySettings::default()).await;
    a.stop().await;

    let b = spawn_auth(config(&nats.url())).await;
    let mut c = b.client().await;
    let info = c
        .check_key(check(&key))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(info.key_id, key_id);

    let unknown = c.check_key(check("lg-not-a-real-key")).await.unwrap_err();
    c.revoke_key(admin(RevokeKeyRequest { key: key_id }))
        .await
        .unwrap();
    let revoked = c.check_key(check(&key)).await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(
        unknown.message(),
        revoked.message(),
        "must not reveal which"
    );
    b.stop().await;
}

#[tokio::test]
async fn expired_key_is_rejected() {
    let nats = NatsServer::start().await.unwrap();
    let auth = spawn_auth(config(&nats.url())).await;
    let mut c = auth.client().await;
    let soon = std::time::SystemTime::now() + Duration::from_secs(2);
    let (key, _) = create_key(
        &mut c,
        KeySettings {
            expires_at: Some(prost_types::Timestamp::from(soon)),
            ..Default::default()
        },
    )
    .await;
    assert!(c.check_key(check(&key)).await.is_ok());
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = c.clone();
            let key = key.clone();
            async move { matches!(c.check_key(check(&key)).await, Err(s) if s.code() == Code::Unauthenticated) }
        })
        .await
    );
    // A past expiry cannot be set at all.
    let past = c
        .create_key(admin(CreateKeyRequest {
            settings: Some(KeySettings {
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(past.code(), Code::InvalidArgument);
    auth.stop().await;
}

#[tokio::test]
async fn admin_calls_need_the_right_master_key() {
    let nats = NatsServer::start().await.unwrap();
    let auth = spawn_auth(config(&nats.url())).await;
    let mut c = auth.client().await;
    let wrong = c
        .list_keys(with_meta(
            ListKeysRequest::default(),
            "authorization",
            "Bearer nope",
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let missing = c.list_keys(ListKeysRequest::default()).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    // Non-UTF-8 bytes in the metadata: a clear error, no panic.
    let mut req = tonic::Request::new(ListKeysRequest::default());
    let raw = tonic::metadata::AsciiMetadataValue::try_from(&b"Bearer \xff\xfe"[..]).unwrap();
    req.metadata_mut().insert("authorization", raw);
    let err = c.list_keys(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("ASCII"), "{}", err.message());
    auth.stop().await;

    // Without a configured master key, admin calls are disabled.
    let mut cfg = config(&nats.url());
    cfg.master_key = None;
    let auth = spawn_auth(cfg).await;
    let err = auth
        .client()
        .await
        .list_keys(admin(ListKeysRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    auth.stop().await;
}

#[tokio::test]
async fn bad_credentials_get_clear_errors() {
    let nats = NatsServer::start().await.unwrap();
    let auth = spawn_auth(config(&nats.url())).await;
    let mut c = auth.client().await;
    let empty = c.check_key(check("")).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("empty"));
    let huge = c
        .check_key(check(&"x".repeat(10 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::InvalidArgument);
    assert!(huge.message().contains("longer"));
    let forged = c.check_key(check("lgb-abc.def")).await.unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
    let bad_alias = c
        .create_key(admin(CreateKeyRequest {
            settings: Some(KeySettings {
                alias: "has spaces".into(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_alias.code(), Code::InvalidArgument);
    auth.stop().await;
}

#[tokio::test]
async fn browser_tokens_carry_the_key_and_expire() {
    let nats = NatsServer::start().await.unwrap();
    let auth = spawn_auth(config(&nats.url())).await;
    let mut c = auth.client().await;
    let (key, key_id) = create_key(
        &mut c,
        KeySettings {
            allowed_models: vec!["gemini-live-2.5-flash".into()],
            ..Default::default()
        },
    )
    .await;
    let too_long = c
        .mint_browser_token(MintBrowserTokenRequest {
            credential: key.clone(),
            ttl_seconds: 3600,
            model: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument);
    let other_model = c
        .mint_browser_token(MintBrowserTokenRequest {
            credential: key.clone(),
            ttl_seconds: 60,
            model: "gemini-3.8-live".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(other_model.code(), Code::PermissionDenied);

    let token = c
        .mint_browser_token(MintBrowserTokenRequest {
            credential: key.clone(),
            ttl_seconds: 2,
            model: "gemini-live-2.5-flash".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    assert!(!token.contains(&key));
    let resp = c.check_key(check(&token)).await.unwrap().into_inner();
    assert!(resp.is_browser_token);
    assert_eq!(resp.bound_model, "gemini-live-2.5-flash");
    assert_eq!(resp.key.unwrap().key_id, key_id);
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = c.clone();
            let token = token.clone();
            async move { matches!(c.check_key(check(&token)).await, Err(s) if s.code() == Code::Unauthenticated) }
        })
        .await,
        "browser token did not expire"
    );
    auth.stop().await;
}

#[tokio::test]
async fn update_changes_only_the_masked_fields() {
    let nats = NatsServer::start().await.unwrap();
    let auth = spawn_auth(config(&nats.url())).await;
    let mut c = auth.client().await;
    let (key, key_id) = create_key(
        &mut c,
        KeySettings {
            alias: "u1".into(),
            team_id: "t".into(),
            ..Default::default()
        },
    )
    .await;
    let info = c
        .update_key(admin(UpdateKeyRequest {
            key: "u1".into(),
            settings: Some(KeySettings {
                max_budget_usd: "2.5".into(),
                team_id: "ignored".into(),
                ..Default::default()
            }),
            update_mask: vec!["max_budget_usd".into()],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.key_id, key_id);
    assert_eq!(info.max_budget_usd, "2.5");
    assert_eq!(info.team_id, "t");
    let checked = c
        .check_key(check(&key))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(checked.max_budget_usd, "2.5");
    let bad = c
        .update_key(admin(UpdateKeyRequest {
            key: "u1".into(),
            settings: None,
            update_mask: vec!["hash".into()],
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    auth.stop().await;
}

#[tokio::test]
async fn spend_written_to_kv_shows_in_check_key() {
    let nats = NatsServer::start().await.unwrap();
    let auth = spawn_auth(config(&nats.url())).await;
    let mut c = auth.client().await;
    let (key, key_id) = create_key(
        &mut c,
        KeySettings {
            team_id: "team-s".into(),
            ..Default::default()
        },
    )
    .await;
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    let spend = js
        .get_key_value(livegate_common::subjects::SPEND_BUCKET)
        .await
        .unwrap();
    spend
        .put(
            livegate_common::subjects::spend_key_for_key(&key_id),
            "1.234567890123".into(),
        )
        .await
        .unwrap();
    spend
        .put(
            livegate_common::subjects::spend_key_for_team("team-s"),
            "7.5".into(),
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(2), || {
            let mut c = c.clone();
            let key = key.clone();
            async move {
                let k = c
                    .check_key(check(&key))
                    .await
                    .unwrap()
                    .into_inner()
                    .key
                    .unwrap();
                k.spend_usd == "1.234567890123" && k.team_spend_usd == "7.5"
            }
        })
        .await
    );
    auth.stop().await;
}

#[tokio::test]
async fn nothing_that_resolves_to_a_browser_token_mints_and_nothing_is_trimmed() {
    let nats = NatsServer::start().await.unwrap();
    let auth = spawn_auth(config(&nats.url())).await;
    let mut c = auth.client().await;
    let (key, _) = create_key(&mut c, KeySettings::default()).await;
    let mint = |credential: String| MintBrowserTokenRequest {
        credential,
        ttl_seconds: 60,
        model: "gemini-live-2.5-flash".into(),
    };
    let token = c
        .mint_browser_token(mint(key.clone()))
        .await
        .unwrap()
        .into_inner()
        .token;
    // The token itself: refused as a browser token, with the same 401 the gateway answers.
    let s = c.mint_browser_token(mint(token.clone())).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("browser token cannot mint"), "{s:?}");
    // Any other spelling is not a credential at all (auth trims nothing into validity).
    for spelled in [
        format!(" {token}"),
        format!("\t{token}"),
        format!("{token} "),
        format!("{token}\n"),
        format!(" {key}"),
        format!("{key}\t"),
    ] {
        let s = c
            .mint_browser_token(mint(spelled.clone()))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{spelled:?}: {s:?}");
        let s = c.check_key(check(&spelled)).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{spelled:?}: {s:?}");
    }
    auth.stop().await;
}

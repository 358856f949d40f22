//! `GetAccessToken` through the real google-cloud-auth crate and the local Google stand-ins.

use crate::helpers::*;
use livegate_auth::config::GoogleSources;
use livegate_proto::auth::GetAccessTokenRequest;
use livegate_test_support::google::{FakeMetadataServer, FakeTokenEndpoint, TestServiceAccount};
use livegate_test_support::nats::NatsServer;
use std::time::Duration;
use tonic::Code;

fn req() -> GetAccessTokenRequest {
    GetAccessTokenRequest {
        project: "p1".into(),
        ..GetAccessTokenRequest::default()
    }
}

#[tokio::test]
async fn access_token_requires_the_internal_token() {
    let nats = NatsServer::start().await.unwrap();
    let auth = spawn_auth(config(&nats.url())).await;
    let mut c = auth.client().await;
    let none = c.get_access_token(req()).await.unwrap_err();
    assert_eq!(none.code(), Code::PermissionDenied);
    let wrong = c
        .get_access_token(with_meta(
            req(),
            livegate_auth::INTERNAL_TOKEN_METADATA,
            "guess",
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    auth.stop().await;
}

#[tokio::test]
async fn unusable_credentials_are_failed_precondition() {
    let nats = NatsServer::start().await.unwrap();
    let mut cfg = config(&nats.url());
    cfg.google = GoogleSources {
        application_credentials: Some("/nonexistent/sa.json".into()),
        ..GoogleSources::default()
    };
    let auth = spawn_auth(cfg).await;
    let err = auth
        .client()
        .await
        .get_access_token(internal(req()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("not configured"),
        "{}",
        err.message()
    );
    auth.stop().await;
}

#[tokio::test]
async fn authorized_user_token_is_cached_and_refreshed_near_expiry() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // google-cloud-auth refreshes 240 s before expiry, so 243 s means "refresh in ~3 s".
    let endpoint = FakeTokenEndpoint::start().await.unwrap();
    endpoint.set_expires_in(243);
    let file = endpoint.write_authorized_user_file(dir.path()).unwrap();
    let mut cfg = config(&nats.url());
    cfg.google = GoogleSources {
        default_application_credentials: Some(file.to_string_lossy().into_owned()),
        ..GoogleSources::default()
    };
    let auth = spawn_auth(cfg).await;
    let mut c = auth.client().await;
    let first = c
        .get_access_token(internal(req()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.source, "DEFAULT_GOOGLE_APPLICATION_CREDENTIALS");
    assert!(first.access_token.starts_with("fake-"));
    for _ in 0..20 {
        let again = c
            .get_access_token(internal(req()))
            .await
            .unwrap()
            .into_inner();
        assert!(again.access_token.starts_with("fake-"));
    }
    assert_eq!(endpoint.request_count(), 1, "tokens must be cached");
    assert!(
        eventually(Duration::from_secs(15), || {
            let n = endpoint.request_count();
            async move { n >= 2 }
        })
        .await,
        "token was not refreshed before expiry"
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = c.clone();
            let old = first.access_token.clone();
            async move {
                c.get_access_token(internal(req()))
                    .await
                    .unwrap()
                    .into_inner()
                    .access_token
                    != old
            }
        })
        .await
    );
    auth.stop().await;
}

#[tokio::test]
async fn metadata_server_token() {
    let nats = NatsServer::start().await.unwrap();
    let mds = FakeMetadataServer::start().await.unwrap();
    let mut cfg = config(&nats.url());
    cfg.google = GoogleSources {
        metadata_host: Some(mds.host()),
        ..GoogleSources::default()
    };
    let auth = spawn_auth(cfg).await;
    let mut c = auth.client().await;
    let t = c
        .get_access_token(internal(req()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.source, "metadata server");
    assert!(!t.access_token.is_empty());
    c.get_access_token(internal(req())).await.unwrap();
    assert!(mds.request_count() >= 1);
    auth.stop().await;
}

#[tokio::test]
async fn service_account_token_is_a_self_signed_jwt() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sa = TestServiceAccount::generate(dir.path()).unwrap();
    let mut cfg = config(&nats.url());
    // Inline JSON through the config file's vertex_credentials.
    cfg.google = GoogleSources {
        vertex_credentials: Some(sa.json.to_string().into()),
        ..GoogleSources::default()
    };
    let auth = spawn_auth(cfg).await;
    let t = auth
        .client()
        .await
        .get_access_token(internal(req()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.source, "vertex_credentials");
    let header = t.access_token.split('.').next().unwrap();
    use base64::Engine;
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], sa.kid.as_str());
    auth.stop().await;
}

#[tokio::test]
async fn each_model_list_credential_set_mints_its_own_tokens() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let default = TestServiceAccount::generate(dir.path()).unwrap();
    let a = TestServiceAccount::generate(&dir.path().join("a")).unwrap();
    let b = TestServiceAccount::generate(&dir.path().join("b")).unwrap();
    let a_value = a.path.to_string_lossy().into_owned();
    let b_value = b.json.to_string();
    let mut cfg = config(&nats.url());
    cfg.google = GoogleSources {
        application_credentials: Some(default.path.to_string_lossy().into_owned()),
        deployment_credentials: vec![a_value.clone().into(), b_value.clone().into()],
        ..GoogleSources::default()
    };
    let auth = spawn_auth(cfg).await;
    let mut c = auth.client().await;
    let kid_for = |credentials: String| {
        let mut c = c.clone();
        async move {
            let t = c
                .get_access_token(internal(GetAccessTokenRequest {
                    credentials,
                    ..GetAccessTokenRequest::default()
                }))
                .await
                .unwrap()
                .into_inner();
            let (header, _) = livegate_test_support::google::decode_jwt(&t.access_token).unwrap();
            (t.source, header["kid"].as_str().unwrap().to_string())
        }
    };
    let id = livegate_common::config::credentials_id;
    assert_eq!(
        kid_for(String::new()).await,
        (
            "GOOGLE_APPLICATION_CREDENTIALS".to_string(),
            default.kid.clone()
        )
    );
    assert_eq!(
        kid_for(id(&a_value)).await,
        ("model_list vertex_credentials".to_string(), a.kid.clone())
    );
    assert_eq!(
        kid_for(id(&b_value)).await,
        ("model_list vertex_credentials".to_string(), b.kid.clone())
    );
    let unknown = c
        .get_access_token(internal(GetAccessTokenRequest {
            credentials: "vc-0000000000000000".into(),
            ..GetAccessTokenRequest::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    auth.stop().await;
}

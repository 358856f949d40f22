use google_cloud_auth::credentials::{mds, user_account};
use livegate_emulator::{Emulator, EmulatorConfig};
use livegate_test_support::google::{CLOUD_PLATFORM_SCOPE, bearer_token, decode_jwt};
use livegate_test_support::{
    FakeMetadataServer, FakeTokenEndpoint, TestServiceAccount, init_crypto,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, http::HeaderValue};

async fn handshake(url: &str, bearer: &str) -> Result<u16, tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {bearer}")).unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await?;
    ws.close(None).await.ok();
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn service_account_jwt_from_the_real_crate_opens_an_emulator_session() {
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let sa = TestServiceAccount::generate(dir.path()).unwrap();
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sa.path).unwrap()).unwrap();
    assert_eq!(on_disk, sa.json);
    assert!(
        sa.public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );

    let credentials = sa.credentials().unwrap();
    let jwt = bearer_token(&credentials).await.unwrap();
    let (header, claims) = decode_jwt(&jwt).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], sa.kid.as_str());
    assert_eq!(claims["iss"], sa.client_email.as_str());
    assert_eq!(claims["scope"], CLOUD_PLATFORM_SCOPE);
    sa.verify_jwt(&jwt).unwrap();
    // Cached: the same JWT again.
    assert_eq!(bearer_token(&credentials).await.unwrap(), jwt);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = EmulatorConfig {
        service_account_keys: vec![sa.emulator_key()],
        ..Default::default()
    };
    config.validate().unwrap();
    let emulator = Emulator::start(listener, config).await;
    assert_eq!(handshake(&emulator.url(), &jwt).await.unwrap(), 101);

    // A JWT from another key is refused at the handshake.
    let stranger = TestServiceAccount::generate(dir.path()).unwrap();
    let foreign = bearer_token(&stranger.credentials().unwrap())
        .await
        .unwrap();
    match handshake(&emulator.url(), &foreign).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn authorized_user_file_fetches_from_the_fake_endpoint_once() {
    init_crypto();
    let endpoint = FakeTokenEndpoint::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = endpoint.write_authorized_user_file(dir.path()).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(json["token_uri"], endpoint.token_uri().as_str());

    let credentials = user_account::Builder::new(json).build().unwrap();
    for _ in 0..20 {
        assert_eq!(bearer_token(&credentials).await.unwrap(), "fake-1");
    }
    assert_eq!(endpoint.request_count(), 1, "the token must be cached");
    assert_eq!(endpoint.issued_tokens(), vec!["fake-1".to_owned()]);
    assert_eq!(endpoint.requested_scopes(), vec![None]);

    // A wrong refresh token is refused, as Google would.
    let mut bad = endpoint.authorized_user_json();
    bad["refresh_token"] = "revoked".into();
    let bad = user_account::Builder::new(bad).build().unwrap();
    assert!(bearer_token(&bad).await.is_err());
    assert_eq!(endpoint.issued_tokens().len(), 1);
}

#[tokio::test]
async fn metadata_server_credentials_use_the_fake_server() {
    init_crypto();
    let server = FakeMetadataServer::start().await.unwrap();
    let credentials = mds::Builder::default()
        .with_endpoint(server.endpoint())
        .with_scopes([CLOUD_PLATFORM_SCOPE])
        .build()
        .unwrap();
    for _ in 0..5 {
        assert_eq!(bearer_token(&credentials).await.unwrap(), "mds-1");
    }
    assert_eq!(server.token_request_count(), 1);
    assert_eq!(server.request_count(), 1);
    assert_eq!(
        server.requested_scopes(),
        vec![Some(CLOUD_PLATFORM_SCOPE.to_owned())]
    );
    assert!(server.host().starts_with("127.0.0.1:"));
}

//! Unit tests of [`ServiceAccount::generate`]: the file on disk is the key it describes.

use rsa::RsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey as _;

use super::*;

#[test]
fn generate_writes_a_google_key_file_for_the_key_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let sa = ServiceAccount::generate(dir.path()).unwrap();

    assert_eq!(
        sa.path,
        dir.path().join(format!("service-account-{}.json", sa.kid))
    );
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&sa.path).unwrap()).unwrap();
    assert_eq!(on_disk, sa.json);
    assert_eq!(on_disk["type"], "service_account");
    assert_eq!(on_disk["project_id"], PROJECT_ID);
    assert_eq!(on_disk["private_key_id"], sa.kid.as_str());
    assert_eq!(on_disk["client_email"], sa.client_email.as_str());
    assert_eq!(sa.kid.len(), 40);

    let pem = on_disk["private_key"].as_str().unwrap();
    let private = RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
    assert_eq!(RsaPublicKey::from(&private), sa.public_key());
    assert!(
        sa.public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
}

#[test]
fn generate_into_a_missing_directory_says_which_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = ServiceAccount::generate(&missing).unwrap_err();
    assert!(matches!(err, Error::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

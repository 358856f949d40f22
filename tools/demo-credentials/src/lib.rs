//! `livegate-demo-credentials`: a throw-away Google service-account key, in Google's key file
//! format, that grants access to nothing real.
//!
//! Demo mode (`scripts/start.sh`) and the benchmarks (`scripts/bench.sh`) give the file to
//! auth (`GOOGLE_APPLICATION_CREDENTIALS`) and to the emulator (`--service-account-key`):
//! google-cloud-auth signs its JWTs with the private half and the emulator checks them with
//! the public half, so no Google account is needed. The tests make their keys here too
//! (`livegate_test_support::google::TestServiceAccount`), so there is one key format.

use std::path::{Path, PathBuf};

use rand::Rng as _;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};

/// The project id written into every generated key file.
pub const PROJECT_ID: &str = "livegate-test-project";

/// A `token_uri` that must never be called: nothing listens on the discard port.
/// (google-cloud-auth signs service-account JWTs itself and never calls it.)
const UNUSED_TOKEN_URI: &str = "http://127.0.0.1:9/token";

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating an RSA key")]
    Generate(#[source] rsa::Error),
    #[error("encoding the private key")]
    Encode(#[source] rsa::pkcs8::Error),
    #[error("encoding the key file")]
    Json(#[source] serde_json::Error),
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A freshly generated service-account key and its JSON key file.
pub struct ServiceAccount {
    /// The written key file (for `GOOGLE_APPLICATION_CREDENTIALS`-style config).
    pub path: PathBuf,
    /// The key file's content.
    pub json: Value,
    /// `private_key_id`, which becomes the JWT `kid`.
    pub kid: String,
    /// `client_email`, which becomes the JWT `iss` and `sub`.
    pub client_email: String,
    /// `project_id`.
    pub project_id: String,
    private_key: RsaPrivateKey,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("path", &self.path)
            .field("kid", &self.kid)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Generates a 2048-bit RSA key and writes `<dir>/service-account-<kid>.json` in Google's
    /// key file format (PKCS#8 private key). CPU-bound (well under a second with the
    /// workspace's optimised `rsa`); call it at startup or from a test, not a hot path.
    ///
    /// # Errors
    /// If key generation or writing the file fails (`dir` must exist).
    pub fn generate(dir: &Path) -> Result<Self, Error> {
        let private_key =
            RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(Error::Generate)?;
        let private_key_pem = private_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(Error::Encode)?;
        let kid = random_hex(20);
        let project_id = PROJECT_ID.to_owned();
        let client_email = format!("livegate-test@{project_id}.iam.gserviceaccount.com");
        let json = json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": kid,
            "private_key": private_key_pem.as_str(),
            "client_email": client_email,
            "client_id": rand::thread_rng().gen_range(100_000_000_000_000_000_000u128..999_999_999_999_999_999_999u128).to_string(),
            "auth_uri": UNUSED_TOKEN_URI,
            "token_uri": UNUSED_TOKEN_URI,
            "universe_domain": "googleapis.com",
        });
        let path = dir.join(format!("service-account-{kid}.json"));
        let bytes = serde_json::to_vec_pretty(&json).map_err(Error::Json)?;
        std::fs::write(&path, bytes).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            json,
            kid,
            client_email,
            project_id,
            private_key,
        })
    }

    /// The public half of the key, which verifies the JWTs signed with it.
    pub fn public_key(&self) -> RsaPublicKey {
        RsaPublicKey::from(&self.private_key)
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), what the emulator takes.
    pub fn public_key_pem(&self) -> String {
        self.public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests;

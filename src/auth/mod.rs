//! JWT: verifying tokens into [`Actor`]s and minting them for `herald token`.
//! HS256 with `HERALD_JWT_SECRET`, or RS256/ES256 with a public key file. With
//! neither, Herald keeps a generated development secret in its data directory
//! and refuses to listen on anything but loopback.

pub mod audit;
pub mod grpc;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, Config};
use crate::domain::{Actor, AppError, Role};

const DEV_SECRET_FILE: &str = "dev-secret";
const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Checks tokens. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    key: std::sync::Arc<DecodingKey>,
    /// Shared: the gRPC interceptor's closure holds a verifier and is
    /// cloned for every call, and `Validation`'s sets cloned and dropped
    /// each time were about 1 % of the server's time under unary calls.
    validation: std::sync::Arc<Validation>,
    /// Tokens already verified, until they expire: clients send the same
    /// token with every call, and checking a signature each time is most of
    /// what a small call costs.
    /// Bounded (quick_cache evicts the least useful entries one by one): a
    /// flood of new tokens cannot empty it for everyone else at once.
    verified: std::sync::Arc<quick_cache::sync::Cache<String, Actor>>,
}

/// Verified tokens kept at most (approximately).
const VERIFIED_LIMIT: usize = 10_000;

impl Verifier {
    pub fn hs256(secret: &[u8], checks: &AuthConfig) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256, checks)
    }

    /// Checks `exp` and `nbf` with `leeway` seconds of clock skew, and `iss` /
    /// `aud` when they are configured.
    fn new(key: DecodingKey, alg: Algorithm, checks: &AuthConfig) -> Self {
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = checks.leeway.as_secs();
        validation.validate_nbf = true;
        if let Some(iss) = &checks.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &checks.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let verified = std::sync::Arc::new(quick_cache::sync::Cache::new(VERIFIED_LIMIT));
        Self { key: std::sync::Arc::new(key), validation: std::sync::Arc::new(validation), verified }
    }

    /// A bad token is `Unauthenticated` with a reason; the token itself is never echoed.
    pub fn verify(&self, token: &str) -> Result<Actor, AppError> {
        let now = chrono::Utc::now().timestamp();
        if let Some(actor) = self.verified.get(token)
            && actor.expires_at + self.validation.leeway as i64 > now
        {
            return Ok(actor);
        }
        let actor = self.verify_signature(token)?;
        self.verified.insert(token.to_string(), actor.clone());
        Ok(actor)
    }

    fn verify_signature(&self, token: &str) -> Result<Actor, AppError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf is in the future)",
                ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the one configured",
                ErrorKind::InvalidAudience => "the token's audience (aud) is not the one configured",
                ErrorKind::InvalidSignature => "the token's signature does not match",
                ErrorKind::MissingRequiredClaim(_) => {
                    "the token lacks a required claim (sub, exp, and iss/aud when configured)"
                }
                ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm",
                _ => "the token is not a valid JWT",
            };
            AppError::Unauthenticated(why.into())
        })?;
        let c = data.claims;
        if c.sub.is_empty() {
            return Err(AppError::Unauthenticated("the token's sub claim is empty".into()));
        }
        if c.sub == Actor::SYSTEM_SUBJECT {
            return Err(AppError::Unauthenticated(format!(
                "the subject '{}' is reserved for Herald's own actions",
                Actor::SYSTEM_SUBJECT
            )));
        }
        let roles = c
            .roles
            .iter()
            .map(|r| {
                Role::parse(r).ok_or_else(|| {
                    AppError::Unauthenticated(format!(
                        "the token has unknown role '{r}'; roles are viewer, agent, approver, admin"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Actor { subject: c.sub, roles, tenant: c.tenant.unwrap_or_default(), expires_at: c.exp })
    }

    /// Takes the token from an `Authorization: Bearer` value.
    pub fn verify_bearer(&self, header: Option<&str>) -> Result<Actor, AppError> {
        let header = header.ok_or_else(|| AppError::Unauthenticated("missing bearer token".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| AppError::Unauthenticated("authorization must be 'Bearer <jwt>'".into()))?;
        self.verify(token.trim())
    }
}

/// When the caller's token expires, as a timer deadline: streams and sockets
/// opened with it end then (gRPC `UNAUTHENTICATED`, WebSocket close 4001).
pub fn expiry(actor: &Actor) -> tokio::time::Instant {
    let left = actor.expires_at.saturating_sub(chrono::Utc::now().timestamp()).max(0) as u64;
    tokio::time::Instant::now() + Duration::from_secs(left.min(100 * 365 * 24 * 3600))
}

/// Signs tokens with the HS256 secret.
pub struct Minter {
    key: EncodingKey,
}

impl Minter {
    pub fn hs256(secret: &[u8]) -> Self {
        Self { key: EncodingKey::from_secret(secret) }
    }

    pub fn mint(
        &self,
        sub: &str,
        roles: &[Role],
        tenant: Option<&str>,
        ttl: Duration,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            sub: sub.into(),
            exp: chrono::Utc::now().timestamp() + ttl.as_secs() as i64,
            roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
            tenant: tenant.map(str::to_string),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)?)
    }
}

/// The HS256 secret: configured, or the development secret in the data
/// directory (created on first use), which is only allowed on loopback.
pub fn hs256_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.auth.secret {
        if s.len() < MIN_SECRET_LEN {
            bail!("HERALD_JWT_SECRET must be at least {MIN_SECRET_LEN} bytes long");
        }
        return Ok(s.as_bytes().to_vec());
    }
    if !config.addr.ip().is_loopback() {
        bail!(
            "refusing to listen on {} without HERALD_JWT_SECRET or HERALD_JWT_PUBLIC_KEY_FILE: \
             the development secret is only for loopback",
            config.addr
        );
    }
    dev_secret(&config.data_dir)
}

fn dev_secret(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(DEV_SECRET_FILE);
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().as_bytes().to_vec());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "no HERALD_JWT_SECRET: generated a development secret; mint a token with `herald token --sub you --role admin`"
    );
    Ok(secret.into_bytes())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(contents.as_bytes())
}

/// Where the development secret lives (whether or not it exists yet).
pub fn dev_secret_path(config: &Config) -> std::path::PathBuf {
    config.data_dir.join(DEV_SECRET_FILE)
}

/// How tokens are verified, for the start-up log.
pub fn describe(config: &Config) -> String {
    match (&config.auth.public_key_file, &config.auth.secret) {
        (Some(file), _) => format!(
            "{} with the public key {}",
            config.auth.algorithm.as_deref().unwrap_or("RS256"),
            file.display()
        ),
        (None, Some(_)) => "HS256 with HERALD_JWT_SECRET".into(),
        (None, None) => format!("HS256 with the development secret {}", dev_secret_path(config).display()),
    }
}

/// The verifier the configuration asks for.
pub fn verifier(config: &Config) -> anyhow::Result<Verifier> {
    if let Some(file) = &config.auth.public_key_file {
        let pem = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let alg = config.auth.algorithm.as_deref().unwrap_or("RS256");
        let (key, alg) = match alg {
            "RS256" => (DecodingKey::from_rsa_pem(&pem)?, Algorithm::RS256),
            "ES256" => (DecodingKey::from_ec_pem(&pem)?, Algorithm::ES256),
            other => bail!("HERALD_JWT_ALGORITHM={other} is not supported: use RS256 or ES256"),
        };
        return Ok(Verifier::new(key, alg, &config.auth));
    }
    Ok(Verifier::hs256(&hs256_secret(config)?, &config.auth))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// One token past the limit evicts a little, not everything: the cache
    /// used to start over empty.
    #[test]
    fn the_verified_token_cache_stays_full_past_its_limit() {
        let secret = b"a-test-secret-of-at-least-32-bytes!!";
        let checks = AuthConfig {
            secret: None,
            public_key_file: None,
            algorithm: None,
            leeway: Duration::from_secs(5),
            issuer: None,
            audience: None,
        };
        let verifier = Verifier::hs256(secret, &checks);
        let minter = Minter::hs256(secret);
        for i in 0..=VERIFIED_LIMIT {
            let token =
                minter.mint(&format!("user-{i}"), &[Role::Viewer], None, Duration::from_secs(600)).unwrap();
            assert_eq!(verifier.verify(&token).unwrap().subject, format!("user-{i}"));
        }
        let kept = verifier.verified.len();
        assert!(kept > VERIFIED_LIMIT / 2 && kept <= VERIFIED_LIMIT + VERIFIED_LIMIT / 10, "{kept} kept");
    }
}

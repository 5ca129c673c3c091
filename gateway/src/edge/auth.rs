//! Optional authentication of browsers: with `AUTH_JWT_SECRET` (HS256) or
//! `AUTH_JWT_PUBLIC_KEY` (RS256 / ES256) set, the Socket.IO handshake must carry
//! a valid, unexpired JWT (`auth.token`, or a `token` query parameter), and a
//! socket may only register as the token's `sub`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Map, Value};

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    /// From the configured username claim, when the token has it.
    pub username: Option<String>,
}

#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    username_claim: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// Settings read from the configuration.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub secret: Option<String>,
    /// PEM text, or the path of a PEM file.
    pub public_key: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub username_claim: String,
    /// Clock skew forgiven on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Authenticator {
    /// `None` when authentication is off (neither a secret nor a key is set).
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Self>, String> {
        let (key, algorithms) = match (
            settings.secret.as_deref().filter(|s| !s.is_empty()),
            settings.public_key.as_deref().filter(|s| !s.is_empty()),
        ) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err("set AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY, not both".into());
            }
            (Some(secret), None) => (
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256],
            ),
            (None, Some(key)) => {
                let pem = if key.trim_start().starts_with("-----BEGIN") {
                    key.to_owned()
                } else {
                    std::fs::read_to_string(key)
                        .map_err(|e| format!("cannot read AUTH_JWT_PUBLIC_KEY file {key:?}: {e}"))?
                };
                if let Ok(rsa) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    (rsa, vec![Algorithm::RS256])
                } else if let Ok(ec) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                    (ec, vec![Algorithm::ES256])
                } else {
                    return Err(
                        "AUTH_JWT_PUBLIC_KEY is neither an RSA nor an EC public key in PEM".into(),
                    );
                }
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token issued for later is not valid yet; both checks forgive the same
        // small clock skew between the issuer and us.
        validation.validate_nbf = true;
        validation.leeway = settings.leeway_secs;
        if let Some(issuer) = settings.issuer.as_deref().filter(|s| !s.is_empty()) {
            validation.set_issuer(&[issuer]);
        }
        match settings.audience.as_deref().filter(|s| !s.is_empty()) {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Some(Authenticator {
            key,
            validation,
            username_claim: settings.username_claim.clone(),
        }))
    }

    /// Verifies a token; the error is the reason given to the client.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let data =
            decode::<Map<String, Value>>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::ImmatureSignature => "token not yet valid".to_owned(),
                    ErrorKind::InvalidSignature => "invalid token signature".to_owned(),
                    ErrorKind::InvalidAlgorithm => "token algorithm not accepted".to_owned(),
                    ErrorKind::InvalidIssuer => "token issuer not accepted".to_owned(),
                    ErrorKind::InvalidAudience => "token audience not accepted".to_owned(),
                    ErrorKind::MissingRequiredClaim(claim) => {
                        format!("token lacks the {claim} claim")
                    }
                    _ => "invalid token".to_owned(),
                }
            })?;
        let sub = match data.claims.get("sub") {
            Some(Value::String(sub))
                if !sub.is_empty() && sub.len() <= crate::protocol::inbound::MAX_FIELD_BYTES =>
            {
                sub.clone()
            }
            _ => return Err("token sub must be a string of 1 to 128 bytes".into()),
        };
        let username = data
            .claims
            .get(&self.username_claim)
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && n.len() <= crate::protocol::inbound::MAX_FIELD_BYTES)
            .map(str::to_owned);
        Ok(Claims { sub, username })
    }
}

/// The token of a handshake: `auth.token`, else the `token` query parameter.
pub fn handshake_token(auth: Option<&Value>, query: Option<&str>) -> Option<String> {
    handshake_option(auth, query, "token")
}

/// A string option of a handshake: `auth.<name>`, else the `<name>` query
/// parameter (for clients that cannot set `auth`).
pub fn handshake_option(auth: Option<&Value>, query: Option<&str>, name: &str) -> Option<String> {
    if let Some(value) = auth.and_then(|a| a.get(name)).and_then(Value::as_str) {
        return Some(value.to_owned());
    }
    query?
        .split('&')
        .find_map(|pair| pair.split_once('=').filter(|(key, _)| *key == name))
        .map(|(_, value)| percent_decode(value))
}

/// Decodes `%XX` escapes (JWTs are base64url and dots, so this is rarely needed).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            secret: Some(secret.into()),
            username_claim: "name".into(),
            leeway_secs: 30,
            ..Default::default()
        }
    }

    fn token(secret: &str, claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encodes")
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    fn in_an_hour() -> u64 {
        now() + 3600
    }

    #[test]
    fn nbf_and_exp_are_checked_with_the_configured_leeway() {
        let auth = Authenticator::from_settings(&settings("s"))
            .expect("valid")
            .expect("on");
        let claims = |nbf: u64, exp: u64| json!({ "sub": "u1", "nbf": nbf, "exp": exp });
        let cases = [
            // (nbf, exp, result)
            (now() + 600, in_an_hour(), Err("token not yet valid")),
            (now() + 10, in_an_hour(), Ok(())), // within the leeway
            (now() - 10, in_an_hour(), Ok(())),
            (now() - 600, now() - 10, Ok(())), // expired, within the leeway
            (now() - 600, now() - 31 - 5, Err("token expired")),
            (now() - 600, now() - 300, Err("token expired")),
        ];
        for (nbf, exp, want) in cases {
            let got = auth.verify(&token("s", claims(nbf, exp))).map(|_| ());
            assert_eq!(
                got,
                want.map_err(str::to_owned),
                "nbf {nbf} exp {exp} now {}",
                now()
            );
        }
        // A stricter leeway refuses what the default forgave.
        let strict = Authenticator::from_settings(&AuthSettings {
            leeway_secs: 0,
            ..settings("s")
        })
        .expect("valid")
        .expect("on");
        assert_eq!(
            strict.verify(&token("s", claims(now() + 10, in_an_hour()))),
            Err("token not yet valid".to_owned())
        );
        assert_eq!(
            strict.verify(&token("s", claims(now() - 600, now() - 10))),
            Err("token expired".to_owned())
        );
    }

    #[test]
    fn off_unless_configured() {
        assert!(
            Authenticator::from_settings(&AuthSettings::default())
                .expect("valid")
                .is_none()
        );
        let both = AuthSettings {
            public_key: Some("x".into()),
            ..settings("s")
        };
        assert!(Authenticator::from_settings(&both).is_err());
    }

    #[test]
    fn hs256_tokens_are_verified() {
        let auth = Authenticator::from_settings(&settings("s3cret"))
            .expect("valid")
            .expect("on");
        let good = token(
            "s3cret",
            json!({ "sub": "u1", "name": "Ann", "exp": in_an_hour() }),
        );
        assert_eq!(
            auth.verify(&good),
            Ok(Claims {
                sub: "u1".into(),
                username: Some("Ann".into())
            })
        );
        let expired = token("s3cret", json!({ "sub": "u1", "exp": 1_000 }));
        assert_eq!(auth.verify(&expired), Err("token expired".into()));
        let forged = token("other", json!({ "sub": "u1", "exp": in_an_hour() }));
        assert_eq!(auth.verify(&forged), Err("invalid token signature".into()));
        let no_sub = token("s3cret", json!({ "exp": in_an_hour() }));
        assert!(auth.verify(&no_sub).is_err());
        assert!(auth.verify("not a jwt").is_err());
    }

    #[test]
    fn tokens_come_from_auth_or_the_query() {
        assert_eq!(
            handshake_token(Some(&json!({ "token": "a.b.c" })), None),
            Some("a.b.c".into())
        );
        assert_eq!(
            handshake_token(None, Some("EIO=4&token=x.y%2Dz&transport=polling")),
            Some("x.y-z".into())
        );
        assert_eq!(handshake_token(Some(&json!({})), Some("EIO=4")), None);
    }
}

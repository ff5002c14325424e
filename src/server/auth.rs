//! Login tokens: standard JWT (HS256) so that any backend can mint them.
//!
//! Claims: `appid` (a number), `uid` (a decimal string, as JS cannot hold 64
//! bits in a number; a number is accepted too), `exp` and `nbf` (unix
//! seconds, both optional). Ids written as strings must be canonical
//! decimals ("7", not "07" or "+7"), so one uid has one spelling.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use crate::error::{ErrorCode, ServiceError};

/// Mints a token for `uid` of `appid`, signed with `secret` (HS256), expiring
/// at `expires_at_unix_s`. The claims are `{"appid": 10000, "uid": "42", "exp": ...}`.
///
/// ```
/// use hummer_channel::server::{mint_token, DEMO_APPID, DEMO_SECRET};
/// let token = mint_token(DEMO_SECRET, DEMO_APPID, 42, 4_000_000_000);
/// assert_eq!(token.split('.').count(), 3);
/// ```
pub fn mint_token(secret: &str, appid: u32, uid: u64, expires_at_unix_s: u64) -> String {
    let claims = serde_json::json!({
        "appid": appid,
        "uid": uid.to_string(),
        "exp": expires_at_unix_s,
    });
    // HMAC signing of a JSON value cannot fail; an empty token would be
    // refused at login, never accepted.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// Checks `token` for a login of `uid` in `appid` at wall-clock `now_unix_s`.
/// Returns the expiry (unix seconds), `None` when the token has no `exp`.
pub(crate) fn verify_token(
    secret: Option<&str>,
    token: &str,
    appid: u32,
    uid: u64,
    now_unix_s: u64,
) -> Result<Option<u64>, ServiceError> {
    let invalid = |why: &str| ServiceError::new(ErrorCode::INVALID_TOKEN, why);
    let secret = secret.ok_or_else(|| invalid("this app accepts no tokens"))?;
    if secret.len() < super::MIN_SECRET_LEN {
        // A short secret can be brute-forced: refuse its tokens rather than
        // trust them (ServerConfig::validate refuses it at start-up).
        return Err(invalid("this app's secret is too short to accept tokens"));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    // The library would read the system clock: the Server compares `exp` with
    // its own clock below instead.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| invalid(&format!("token refused: {e}")))?;
    let claims = data.claims;
    if claim_u64(&claims, "appid") != Some(u64::from(appid)) {
        return Err(invalid("token is for another appid"));
    }
    if claim_u64(&claims, "uid") != Some(uid) {
        return Err(invalid("token is for another uid"));
    }
    let exp = match claims.get("exp") {
        None | Some(Value::Null) => None,
        Some(_) => Some(claim_u64(&claims, "exp").ok_or_else(|| invalid("bad exp claim"))?),
    };
    if let Some(exp) = exp {
        if exp <= now_unix_s {
            return Err(ServiceError::new(
                ErrorCode::EXPIRED_TOKEN,
                "the token has expired",
            ));
        }
    }
    match claims.get("nbf") {
        None | Some(Value::Null) => {}
        Some(_) => {
            let nbf = claim_u64(&claims, "nbf").ok_or_else(|| invalid("bad nbf claim"))?;
            if nbf > now_unix_s {
                return Err(invalid("the token is not valid yet (nbf)"));
            }
        }
    }
    Ok(exp)
}

/// A claim as an unsigned integer, whether a JSON number or a canonical
/// decimal string (digits only, no leading zero but for "0" itself).
fn claim_u64(claims: &Value, name: &str) -> Option<u64> {
    match claims.get(name)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let canonical = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'));
            canonical.then(|| s.parse().ok()).flatten()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "a-test-secret-of-at-least-32-bytes!";
    const X: &str = "another-secret-of-at-least-32-bytes";

    fn signed(claims: Value, key: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn nbf_is_honoured_and_uids_are_canonical() {
        let t = signed(serde_json::json!({"appid": 7, "uid": "99", "nbf": 500}), K);
        assert_eq!(verify_token(Some(K), &t, 7, 99, 500), Ok(None));
        let early = verify_token(Some(K), &t, 7, 99, 499).unwrap_err();
        assert_eq!(early.code, ErrorCode::INVALID_TOKEN);
        for uid in ["099", "+99", " 99", "99 ", "", "9x"] {
            let t = signed(serde_json::json!({"appid": 7, "uid": uid}), K);
            let e = verify_token(Some(K), &t, 7, 99, 0).unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_TOKEN, "uid {uid:?}");
        }
        let zero = signed(serde_json::json!({"appid": "0", "uid": "99"}), K);
        assert_eq!(verify_token(Some(K), &zero, 0, 99, 0), Ok(None));
    }

    #[test]
    fn a_short_secret_accepts_no_token() {
        let short = "s".repeat(super::super::MIN_SECRET_LEN - 1);
        let t = mint_token(&short, 7, 99, 1000);
        let e = verify_token(Some(&short), &t, 7, 99, 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_TOKEN);
        let ok = "s".repeat(super::super::MIN_SECRET_LEN);
        let t = mint_token(&ok, 7, 99, 1000);
        assert_eq!(verify_token(Some(&ok), &t, 7, 99, 0), Ok(Some(1000)));
    }

    #[test]
    fn claims_have_the_documented_shape() {
        let t = mint_token(K, 10000, u64::MAX, 1234);
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&t).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"appid": 10000, "uid": u64::MAX.to_string(), "exp": 1234})
        );
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn foreign_tokens_with_a_numeric_uid_and_no_exp_are_accepted() {
        // As PyJWT or npm jsonwebtoken might mint them.
        let claims = serde_json::json!({"appid": "7", "uid": 99});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(K.as_bytes()),
        )
        .unwrap();
        assert_eq!(verify_token(Some(K), &t, 7, 99, u64::MAX), Ok(None));
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let t = mint_token(K, 7, 99, 1000);
        assert_eq!(verify_token(Some(K), &t, 7, 99, 999), Ok(Some(1000)));
        let code = |r: Result<Option<u64>, ServiceError>| r.unwrap_err().code;
        assert_eq!(
            code(verify_token(Some(K), &t, 7, 99, 1000)),
            ErrorCode::EXPIRED_TOKEN
        );
        assert_eq!(
            code(verify_token(Some(X), &t, 7, 99, 0)),
            ErrorCode::INVALID_TOKEN
        );
        assert_eq!(
            code(verify_token(Some(K), &t, 8, 99, 0)),
            ErrorCode::INVALID_TOKEN
        );
        assert_eq!(
            code(verify_token(Some(K), &t, 7, 98, 0)),
            ErrorCode::INVALID_TOKEN
        );
        assert_eq!(
            code(verify_token(None, &t, 7, 99, 0)),
            ErrorCode::INVALID_TOKEN
        );
        assert_eq!(
            code(verify_token(Some(K), "garbage", 7, 99, 0)),
            ErrorCode::INVALID_TOKEN
        );
    }
}

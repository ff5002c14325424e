//! Login tokens: standard JWT (HS256) so that any backend can mint them.
//!
//! Claims: `appid` (a number), `uid` (a decimal string, as JS cannot hold 64
//! bits in a number; a number is accepted too) and `exp` (unix seconds).

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
    let invalid = |why: &str| ServiceError::new(ErrorCode::InvalidToken, why);
    let secret = secret.ok_or_else(|| invalid("this app accepts no tokens"))?;
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
                ErrorCode::ExpiredToken,
                "the token has expired",
            ));
        }
    }
    Ok(exp)
}

/// A claim as an unsigned integer, whether a JSON number or a decimal string.
fn claim_u64(claims: &Value, name: &str) -> Option<u64> {
    match claims.get(name)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_refusal() {
        let t = mint_token("k", 7, 99, 1000);
        assert_eq!(verify_token(Some("k"), &t, 7, 99, 999), Ok(Some(1000)));
        let code = |r: Result<Option<u64>, ServiceError>| r.unwrap_err().code;
        assert_eq!(
            code(verify_token(Some("k"), &t, 7, 99, 1000)),
            ErrorCode::ExpiredToken
        );
        assert_eq!(
            code(verify_token(Some("x"), &t, 7, 99, 0)),
            ErrorCode::InvalidToken
        );
        assert_eq!(
            code(verify_token(Some("k"), &t, 8, 99, 0)),
            ErrorCode::InvalidToken
        );
        assert_eq!(
            code(verify_token(Some("k"), &t, 7, 98, 0)),
            ErrorCode::InvalidToken
        );
        assert_eq!(
            code(verify_token(None, &t, 7, 99, 0)),
            ErrorCode::InvalidToken
        );
        assert_eq!(
            code(verify_token(Some("k"), "garbage", 7, 99, 0)),
            ErrorCode::InvalidToken
        );
    }
}

//! The server API's operations (stub: being written).
pub(super) struct ApiContext {/* empty for now; the other engineer adds fields */}
impl ApiContext {
    pub(super) fn new() -> ApiContext {
        ApiContext {}
    }
}
/// A JSON answer: HTTP status and body.
pub(super) struct ApiResponse {
    pub status: u16,
    pub body: serde_json::Value,
}
/// Handles an authenticated request of app `appid`. `path` is the whole path (`/v1/...`), `query` the raw query string.
pub(super) async fn handle(
    ctx: &ApiContext,
    appid: u32,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: bytes::Bytes,
) -> ApiResponse {
    let _ = (ctx, appid, method, path, query, body);
    ApiResponse {
        status: 404,
        body: serde_json::json!({"code": 2004, "message": "no such API route"}),
    }
}

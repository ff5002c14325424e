//! Each request of the API listener: its route, key, rate limit, body cap,
//! and answer (errors as JSON with the service's code).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use smol::future::FutureExt as _;
use smol::Timer;

use super::{dashboard, metrics, overview, process, Api, MAX_BODY, REQUEST_TIMEOUT};
use crate::adapters::server_tcp::{api, ip_key};

/// The answer's type.
pub(super) type Answer = Response<Full<Bytes>>;

/// The routes, by the pattern that labels their metrics (never the raw
/// path: the label's values stay few).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    Stats,
    Dashboard,
    DashboardFile,
    Api,
    Unknown,
}

impl Route {
    fn of(path: &str) -> Route {
        match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/v1/stats" => Route::Stats,
            "/dashboard" => Route::Dashboard,
            p if p.starts_with("/dashboard/") => Route::DashboardFile,
            p if p.starts_with("/v1/") => Route::Api,
            _ => Route::Unknown,
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Stats => "/v1/stats",
            Route::Dashboard => "/dashboard",
            Route::DashboardFile => "/dashboard/{file}",
            Route::Api => "/v1/*",
            Route::Unknown => "unknown",
        }
    }
}

/// Answers `request` from `peer` within [`REQUEST_TIMEOUT`], and counts it.
pub(super) async fn respond(api: &Api, request: Request<Incoming>, peer: IpAddr) -> Answer {
    let started = Instant::now();
    let route = Route::of(request.uri().path());
    let label = match route {
        Route::Api => {
            super::super::api::route_label(request.method().as_str(), request.uri().path())
        }
        other => other.pattern(),
    };
    let answer = answer(api, route, request, peer);
    let late = async {
        Timer::after(REQUEST_TIMEOUT).await;
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            4000,
            "the request took too long",
        )
    };
    let mut response = answer.or(late).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    api.note(label, response.status().as_u16(), started.elapsed());
    response
}

async fn answer(api: &Api, route: Route, request: Request<Incoming>, peer: IpAddr) -> Answer {
    if route != Route::Api && route != Route::Unknown && request.method() != Method::GET {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            2001,
            &format!("{} takes GET only", route.pattern()),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let published = &api.control.published;
    match route {
        Route::Healthz => text(StatusCode::OK, "text/plain; charset=utf-8", "ok"),
        Route::Readyz if published.ready() => {
            text(StatusCode::OK, "text/plain; charset=utf-8", "ready")
        }
        Route::Readyz if published.is_shutting_down() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "shutting down",
        ),
        Route::Readyz => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "starting",
        ),
        Route::Metrics => {
            let scrape = metrics::Scrape {
                stats: published.merged(),
                refused: api.control.stats().refused_connections,
                api_rate_limited: api.rate_limited.get(),
                api_requests: api
                    .requests
                    .borrow()
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect(),
                api_latency: api
                    .latency
                    .borrow()
                    .iter()
                    .map(|(k, h)| (*k, h.clone()))
                    .collect(),
                process: process::read(),
                #[cfg(feature = "webhooks")]
                hooks: api.control.hooks.stats(),
            };
            text(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                metrics::encode(scrape),
            )
        }
        Route::Dashboard | Route::DashboardFile => match dashboard::file(request.uri().path()) {
            Some((content_type, body)) => {
                let mut r = text(StatusCode::OK, content_type, body);
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                    ),
                );
                r
            }
            None => error(StatusCode::NOT_FOUND, 2004, "no such file"),
        },
        Route::Stats => match check_key(api, request.headers(), peer) {
            Ok(appid) => json_answer(
                StatusCode::OK,
                overview::overview(&published.merged(), appid),
            ),
            Err(refused) => refused.answer(api),
        },
        Route::Api => server_api(api, request, peer).await,
        Route::Unknown => error(StatusCode::NOT_FOUND, 2004, "no such route"),
    }
}

/// A `/v1/...` call of the server API.
async fn server_api(api: &Api, request: Request<Incoming>, peer: IpAddr) -> Answer {
    if api.control.published.is_shutting_down() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            4000,
            "the server is shutting down",
        );
    }
    let appid = match check_key(api, request.headers(), peer) {
        Ok(appid) => appid,
        Err(refused) => return refused.answer(api),
    };
    let headers = request.headers();
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => return error(StatusCode::BAD_REQUEST, 2001, "a bad Content-Length"),
        },
    };
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let method = request.method().clone();
    if (method == Method::POST || method == Method::PUT || method == Method::PATCH)
        && declared.is_none()
        && !headers.contains_key(header::TRANSFER_ENCODING)
    {
        return error(
            StatusCode::LENGTH_REQUIRED,
            2007,
            "a POST, PUT or PATCH needs a Content-Length (or a chunked body)",
        );
    }
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Err(_) => return error(StatusCode::BAD_REQUEST, 2001, "cannot read the body"),
    };
    let answer = api::handle(
        &api.context,
        appid,
        method.as_str(),
        &path,
        query.as_deref(),
        body,
    )
    .await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_answer(status, answer.body);
    if let Some(allow) = answer.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

fn too_large() -> Answer {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        2007,
        &format!("a request body is at most {MAX_BODY} bytes"),
    )
}

/// Why a request's key is refused.
enum Refused {
    /// No key, or an unknown one (the message says which).
    Unauthorized(&'static str),
    /// Over the rate limit: a call would pass after this long.
    Limited(Duration),
}

impl Refused {
    fn answer(self, api: &Api) -> Answer {
        match self {
            Refused::Limited(wait) => limited(api, wait),
            Refused::Unauthorized(message) => {
                let mut r = error(StatusCode::UNAUTHORIZED, 1009, message);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("apikey"));
                r
            }
        }
    }
}

/// The app of the request's API key, its rate limit passed; or why not
/// (a client without a valid key is limited by its address).
fn check_key(api: &Api, headers: &HeaderMap, peer: IpAddr) -> Result<u32, Refused> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("apikey").then(|| key.trim())
        });
    let now = Instant::now();
    let mut limits = api.limits.borrow_mut();
    match key.and_then(|k| api.config.app_of_api_key(k)) {
        Some(appid) => limits
            .apps
            .take(appid, now)
            .map(|()| appid)
            .map_err(Refused::Limited),
        None => {
            limits
                .addresses
                .take(ip_key(peer), now)
                .map_err(Refused::Limited)?;
            Err(Refused::Unauthorized(match key {
                None => "an API key is needed: Authorization: apikey KEY",
                Some(_) => "unknown API key",
            }))
        }
    }
}

/// 429, with the seconds until a call would pass.
fn limited(api: &Api, wait: Duration) -> Answer {
    api.rate_limited.set(api.rate_limited.get() + 1);
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, 4003, "too many API calls");
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_answer(status: StatusCode, body: Value) -> Answer {
    text(status, "application/json", body.to_string())
}

/// An error: `{"code": code, "message": message}`.
fn error(status: StatusCode, code: u32, message: &str) -> Answer {
    json_answer(status, json!({"code": code, "message": message}))
}

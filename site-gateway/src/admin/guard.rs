//! The gate in front of every admin request: the HTTP limits, then the token and its role
//! (decided by [`super::tokens::decide`]), then the access log. Refusals say what to do;
//! a token never appears in a response, a URL or a log line.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::cookie::Cookie;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;

use super::AdminAuth;
use super::access::AccessRecord;
use super::tokens::{self, Caller, Decision, Need, Presented};

/// All request headers together, names and values: browsers and scrapers send about 1 KiB;
/// nginx and Node.js refuse past 8 to 16 KiB. (actix-http also caps a head at 96 headers.)
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A request body: only the login form has one, a token of 46 characters.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// The status page's login cookie.
pub const COOKIE: &str = "leasehold_token";

#[derive(Serialize)]
struct ApiError {
    error: String,
}

pub fn json_error(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(ApiError { error: message })
}

/// The middleware (`actix_web::middleware::from_fn`).
pub async fn gate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let Some(auth) = request.app_data::<web::Data<AdminAuth>>().cloned() else {
        return Ok(request.into_response(HttpResponse::InternalServerError().finish()));
    };
    let seen = Seen::of(&request);
    if let Some(refusal) = limits(&request) {
        let response = request.into_response(refusal);
        seen.log(&auth, None, response.status(), started);
        return Ok(response);
    }
    let presented = presented(&request);
    let had_cookie = matches!(presented, Presented::Cookie(_));
    let gave_token = !matches!(presented, Presented::None);
    let tokens = auth.tokens.as_ref().map(|store| store.current());
    let need = tokens::need(seen.method.as_str(), &seen.path);
    let decision = tokens::decide(
        tokens.as_deref(),
        auth.anonymous,
        presented,
        need,
        OffsetDateTime::now_utc(),
    );
    let (response, caller) = match decision {
        Decision::Allow(caller) => {
            request.extensions_mut().insert(caller.clone());
            let response = next.call(request).await?.map_into_boxed_body();
            // The login handler names who signed in.
            let named = response.request().extensions().get::<Caller>().cloned();
            (response, Some(named.unwrap_or(caller)))
        }
        Decision::Unauthenticated(why) => {
            let refusal = unauthenticated(&auth, &seen.path, &why, gave_token, had_cookie);
            (request.into_response(refusal), None)
        }
        Decision::Forbidden(caller) => {
            let refusal = forbidden(&seen, &caller, need);
            (request.into_response(refusal), Some(caller))
        }
    };
    seen.log(&auth, caller.as_ref(), response.status(), started);
    Ok(response)
}

/// What the access log says of a request, taken before the request is handed on.
struct Seen {
    method: Method,
    path: String,
    query: String,
    remote: String,
    protocol: String,
}

impl Seen {
    fn of(request: &ServiceRequest) -> Seen {
        Seen {
            method: request.method().clone(),
            path: request.path().to_owned(),
            query: request.query_string().to_owned(),
            remote: request
                .peer_addr()
                .map_or_else(|| "-".to_owned(), |addr| addr.to_string()),
            protocol: format!("{:?}", request.version()),
        }
    }

    fn log(&self, auth: &AdminAuth, caller: Option<&Caller>, status: StatusCode, started: Instant) {
        // Probes run every few seconds from every load balancer; they read nothing.
        if matches!(self.path.as_str(), "/live" | "/ready") {
            return;
        }
        let token = caller.map_or_else(|| "-".to_owned(), |caller| caller.name.clone());
        auth.access.record(AccessRecord {
            timestamp: super::tokens::rfc3339_precise(OffsetDateTime::now_utc()),
            level: "INFO",
            target: "leasehold::access",
            message: format!(
                "{} {} {} by {token}",
                self.method,
                self.path,
                status.as_u16()
            ),
            token,
            role: caller
                .and_then(|caller| caller.role)
                .map(|role| role.as_str()),
            remote: self.remote.clone(),
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            protocol: self.protocol.clone(),
            status: status.as_u16(),
            // Microseconds are plenty, and keep the line short.
            ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            dropped_before: 0,
        });
    }
}

/// The token a request carries: the `Authorization` header first, then the login cookie.
fn presented(request: &ServiceRequest) -> Presented<'_> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        // The scheme is case-insensitive (RFC 9110); the token is not.
        let bearer = value
            .to_str()
            .ok()
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        return match bearer {
            Some(token) if !token.is_empty() && !token.contains(' ') => Presented::Bearer(token),
            _ => Presented::Malformed,
        };
    }
    let cookie = request
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value);
    match cookie {
        Some(token) if !token.is_empty() => Presented::Cookie(token),
        _ => Presented::None,
    }
}

/// 431 for oversized headers, 413 for a body over the limit (by its stated length; the
/// form extractor limits a body sent without one).
fn limits(request: &ServiceRequest) -> Option<HttpResponse> {
    let bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Some(json_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request's headers are {bytes} bytes; this gateway takes at most {MAX_HEADER_BYTES} (docs/api.md, Limits)"
            ),
        ));
    }
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match length {
        Some(length) if length > MAX_BODY_BYTES as u64 => Some(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request's body is {length} bytes; this gateway takes at most {MAX_BODY_BYTES} (docs/api.md, Limits)"
            ),
        )),
        _ => None,
    }
}

fn unauthenticated(
    auth: &AdminAuth,
    path: &str,
    why: &str,
    gave_token: bool,
    had_cookie: bool,
) -> HttpResponse {
    // RFC 6750: the scheme and realm, and `invalid_token` when one was sent.
    let challenge = if gave_token {
        format!(
            "Bearer realm=\"leasehold {}\", error=\"invalid_token\"",
            auth.site
        )
    } else {
        format!("Bearer realm=\"leasehold {}\"", auth.site)
    };
    let mut response = if path == "/" {
        let message = had_cookie.then(|| format!("Sign in again: {why}."));
        super::login::page(auth, StatusCode::UNAUTHORIZED, message.as_deref())
    } else {
        json_error(
            StatusCode::UNAUTHORIZED,
            format!("{why}; see docs/api.md, Tokens"),
        )
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_str(&challenge)
            .unwrap_or_else(|_| header::HeaderValue::from_static("Bearer")),
    );
    if had_cookie {
        // The cookie no longer signs anyone in: drop it, so the browser stops sending it.
        let _ = response.add_removal_cookie(&Cookie::build(COOKIE, "").path("/").finish());
    }
    response
}

fn forbidden(seen: &Seen, caller: &Caller, need: Need) -> HttpResponse {
    let role = caller.role.map_or("none", |role| role.as_str());
    let needed = match need {
        Need::Write => "write",
        _ => "read",
    };
    json_error(
        StatusCode::FORBIDDEN,
        format!(
            "the token `{}` has the role `{role}`, which may not {} {}; this needs the role `{needed}` (docs/api.md, Roles)",
            caller.name, seen.method, seen.path
        ),
    )
}

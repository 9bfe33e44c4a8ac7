//! The status page's sign-in: a form that takes a token once and sets it as a cookie that
//! scripts cannot read (`HttpOnly`), that travels only over HTTPS (`Secure`, when the
//! address has TLS) and never to another site (`SameSite=Strict`). The page's refresh
//! then carries it. The token is posted in the body, never put in a URL.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use time::OffsetDateTime;

use super::AdminAuth;
use super::guard::COOKIE;
use super::tokens::{self, Decision, Need, Presented};
use crate::page::escape;

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `GET /login`.
pub async fn form(auth: web::Data<AdminAuth>) -> HttpResponse {
    page(&auth, StatusCode::OK, None)
}

/// `POST /login`: a token good for the page sets the cookie and goes to the page.
pub async fn login(
    request: HttpRequest,
    auth: web::Data<AdminAuth>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let store = auth.tokens.as_ref().map(|store| store.current());
    let decision = tokens::decide(
        store.as_deref(),
        None,
        Presented::Bearer(form.token.trim()),
        Need::Read,
        OffsetDateTime::now_utc(),
    );
    match decision {
        Decision::Allow(caller) => {
            request.extensions_mut().insert(caller);
            let cookie = Cookie::build(COOKIE, form.token.trim().to_owned())
                .path("/")
                .http_only(true)
                .secure(auth.tls)
                .same_site(SameSite::Strict)
                .finish();
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/"))
                .cookie(cookie)
                .finish()
        }
        Decision::Forbidden(caller) => {
            let message = format!(
                "The token `{}` has the role `{}`, which may read only /metrics; the page needs `read`.",
                caller.name,
                caller.role.map_or("none", |role| role.as_str())
            );
            request.extensions_mut().insert(caller);
            page(&auth, StatusCode::FORBIDDEN, Some(&message))
        }
        Decision::Unauthenticated(why) => {
            page(&auth, StatusCode::UNAUTHORIZED, Some(&format!("{why}.")))
        }
    }
}

/// `POST /logout`: drops the cookie.
pub async fn logout() -> HttpResponse {
    let mut response = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .finish();
    let _ = response.add_removal_cookie(&Cookie::build(COOKIE, "").path("/").finish());
    response
}

/// The sign-in form, with `message` above it.
pub fn page(auth: &AdminAuth, status: StatusCode, message: Option<&str>) -> HttpResponse {
    let site = escape(&auth.site);
    let note = message
        .map(|message| {
            format!(
                "<p class=\"login-error\" id=\"login-error\">{}</p>\n",
                escape(message)
            )
        })
        .unwrap_or_default();
    let warnings: String = auth
        .warnings
        .iter()
        .map(|warning| format!("<p class=\"login-warning\">{}</p>\n", escape(warning)))
        .collect();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Sign in · {site} · Leasehold</title>\n<style>\n{style}\
         .login {{ max-width: 420px; margin: 12vh auto; }}\n\
         .login input {{ width: 100%; box-sizing: border-box; padding: 8px; margin: 6px 0 12px; font: inherit; }}\n\
         .login button {{ padding: 6px 16px; font: inherit; }}\n\
         .login-error {{ color: var(--bad); }}\n.login-warning {{ color: var(--warn); }}\n\
         </style>\n</head>\n<body>\n<main>\n<section class=\"card login\" id=\"login\">\n\
         <h2>Sign in to {site}</h2>\n{note}{warnings}\
         <form method=\"post\" action=\"/login\">\n<label for=\"token\">Admin token \
         <small class=\"muted\">(role read or write; <code>leasehold token add</code>)</small></label>\n\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n</section>\n</main>\n</body>\n</html>\n",
        style = crate::page::STYLE,
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

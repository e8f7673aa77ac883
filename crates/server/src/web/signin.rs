//! Signing in from the page: a form posted over HTTP, a session cookie,
//! and the checks the WebSocket upgrade makes.
//!
//! - `GET /session`: what the page needs to draw its form (`accounts`,
//!   `signup`) and who its cookie signs in (`name`, or `null`).
//! - `POST /signin`, `POST /signup`: a form (`name`, `password`,
//!   URL-encoded, at most [`MAX_FORM_BYTES`]). On success the answer sets
//!   the session cookie ([`cookie_name`]): `HttpOnly` (scripts cannot read it),
//!   `SameSite=Strict` (other sites' pages cannot send it), `Secure` when
//!   the page is served over HTTPS. It holds the account's name and a
//!   session token of the account made by the hub exactly as for
//!   REGISTER, so LOGOUT, PASSWORD and `natter account passwd` end it too.
//! - `POST /signout`: the session ends on the server (its WebSockets are
//!   closed) and the cookie is cleared.
//!
//! Every POST and the WebSocket upgrade refuse a request whose `Origin` is
//! not this page's own (403): another page, even one on the same host,
//! cannot sign someone in or out or talk as them. Requests without an
//! `Origin` (not from a browser) are not refused for that, since a
//! browser always sends it there. Passwords and tokens never reach a log
//! line: they travel as [`Secret`]s.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::header::{self, CACHE_CONTROL, CONTENT_TYPE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use natter_core::AccountsMode;
use natter_proto::Secret;
use natter_proto::command::{MAX_PASSWORD, MIN_PASSWORD, validate_name};
use serde_json::json;
use tokio::sync::oneshot;

use crate::auth::pool::Busy;
use crate::auth::web::{Refused, WebLogin, WebRequest, Why};
use crate::hub::HubEvent;
use crate::listener::Shared;

/// The session cookie's name, without a port.
pub const COOKIE: &str = "natter_session";

/// The session cookie's name for the page the browser asked for:
/// `natter_session_8080` for `Host: 127.0.0.1:8080`, `natter_session`
/// without a port. Browsers keep cookies per host, not per port, so two
/// servers on one host (another port, another test) would otherwise
/// overwrite each other's session.
pub fn cookie_name(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let port = match host.rsplit_once(':') {
        // `[::1]` alone has colons but no port.
        Some((_, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => port,
        _ => "",
    };
    if port.is_empty() {
        COOKIE.to_owned()
    } else {
        format!("{COOKIE}_{port}")
    }
}

/// Largest sign-in form body: a name, a password of at most
/// [`MAX_PASSWORD`] bytes, URL-encoded (up to three bytes per byte).
pub const MAX_FORM_BYTES: usize = 4 * 1024;

/// How long the browser keeps the cookie: a month, renewed at each
/// sign-in. The session itself lasts until it is signed out or ended.
const COOKIE_MAX_AGE_SECS: u64 = 30 * 24 * 3600;

/// The page's session, as its cookie carries it.
pub struct WebCookie {
    pub name: String,
    pub token: Secret,
}

impl WebCookie {
    /// The session cookie among the request's cookies, if one is there
    /// and well-formed.
    pub fn from_headers(headers: &HeaderMap) -> Option<WebCookie> {
        let wanted = cookie_name(headers);
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == wanted)?
            .1;
        let (name, token) = value.split_once(':')?;
        Some(WebCookie {
            name: percent_decode(name)?,
            token: Secret::new(token.to_owned()),
        })
    }

    fn to_header(&self, name: &str, secure: bool) -> HeaderValue {
        let value = format!("{}:{}", percent_encode(&self.name), self.token.expose());
        cookie_header(name, &value, COOKIE_MAX_AGE_SECS, secure)
    }
}

/// A `Set-Cookie` that clears the session cookie of the page `headers`
/// asked for.
pub fn clear_cookie(headers: &HeaderMap, secure: bool) -> HeaderValue {
    cookie_header(&cookie_name(headers), "", 0, secure)
}

fn cookie_header(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let header =
        format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::try_from(header).expect("cookie values are ASCII without separators")
}

/// A name as cookie text: letters, digits, `_`, `-`, `.` as they are,
/// other bytes (non-ASCII letters) as `%XX`.
fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2)?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Whether the request's `Origin`, if it has one, is the page's own: the
/// scheme this listener serves and the `Host` the browser asked for.
pub fn same_origin(headers: &HeaderMap, https: bool) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let scheme = if https { "https" } else { "http" };
    origin
        .to_str()
        .is_ok_and(|origin| origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")))
}

/// The answer to a request from another origin.
pub fn cross_origin() -> Response {
    let text = "refused: this request comes from another site's page (Origin does not match)";
    error(StatusCode::FORBIDDEN, text)
}

/// Which account a cookie still signs in: its display name. `Err` when
/// the hub is gone.
pub async fn check(shared: &Shared, cookie: &WebCookie) -> Result<Option<String>, ()> {
    let (reply, answer) = oneshot::channel();
    let request = WebRequest::Check {
        name: cookie.name.clone(),
        token: cookie.token.clone(),
        reply,
    };
    shared
        .hub
        .send(HubEvent::Web(request))
        .await
        .map_err(|_| ())?;
    answer.await.map_err(|_| ())
}

/// `GET /session`.
pub async fn session(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let config = shared.config.get();
    let https = config.tls.is_some();
    let cookie = WebCookie::from_headers(&headers);
    let name = match &cookie {
        Some(cookie) if config.accounts.enabled() => match check(&shared, cookie).await {
            Ok(name) => name,
            Err(()) => return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"),
        },
        _ => None,
    };
    let accounts = match config.accounts {
        AccountsMode::Off => "off",
        AccountsMode::Optional => "optional",
        AccountsMode::Required => "required",
    };
    let body = json!({
        "accounts": accounts,
        "signup": config.accounts.enabled() && config.signup_open,
        "name": name,
    });
    let mut response = json_response(StatusCode::OK, &body);
    if cookie.is_some() && name.is_none() {
        // Ended (signed out elsewhere, password changed): forget it.
        response
            .headers_mut()
            .insert(SET_COOKIE, clear_cookie(&headers, https));
    }
    response
}

/// `POST /signin`.
pub async fn sign_in(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    login(&shared, addr, &headers, &body, false).await
}

/// `POST /signup`.
pub async fn sign_up(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    login(&shared, addr, &headers, &body, true).await
}

async fn login(
    shared: &Shared,
    addr: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
    signup: bool,
) -> Response {
    let https = shared.config.get().tls.is_some();
    if !same_origin(headers, https) {
        return cross_origin();
    }
    let (name, password) = match read_form(body, &shared.config.get().limits, signup) {
        Ok(form) => form,
        Err(text) => return error(StatusCode::BAD_REQUEST, &text),
    };
    let (reply, answer) = oneshot::channel();
    let request = WebRequest::Login(WebLogin {
        ip: addr.ip(),
        name,
        password,
        signup,
        reply,
    });
    if shared.hub.send(HubEvent::Web(request)).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    }
    match answer.await {
        Ok(Ok(session)) => {
            let cookie = WebCookie {
                name: session.display.clone(),
                token: session.token,
            };
            let mut response = json_response(StatusCode::OK, &json!({"name": session.display}));
            response
                .headers_mut()
                .insert(SET_COOKIE, cookie.to_header(&cookie_name(headers), https));
            response
        }
        Ok(Err(refused)) => refusal(&refused),
        // The pool was full (the job was dropped), or the hub stopped.
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, &Busy.to_string()),
    }
}

/// The name and password of a sign-in form, checked as SIGNUP and
/// REGISTER check them; the error text otherwise.
fn read_form(
    body: &[u8],
    limits: &natter_proto::Limits,
    signup: bool,
) -> Result<(String, Secret), String> {
    let mut name = None;
    let mut password = None;
    for (key, value) in form_urlencoded::parse(body) {
        match &*key {
            "name" => name = Some(value.trim().to_owned()),
            "password" => password = Some(Secret::new(value.into_owned())),
            _ => {}
        }
    }
    let (Some(name), Some(password)) = (name, password) else {
        return Err("a name and a password are needed".into());
    };
    validate_name(&name, limits).map_err(|e| e.to_string())?;
    let len = password.expose().len();
    let shortest = if signup { MIN_PASSWORD } else { 1 };
    if !(shortest..=MAX_PASSWORD).contains(&len) {
        let text = if signup {
            format!("a password needs {MIN_PASSWORD} to {MAX_PASSWORD} bytes")
        } else {
            "enter your password".into()
        };
        return Err(text);
    }
    Ok((name, password))
}

/// `POST /signout`: the session ends on the server, then the cookie.
pub async fn sign_out(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let https = shared.config.get().tls.is_some();
    if !same_origin(&headers, https) {
        return cross_origin();
    }
    if let Some(cookie) = WebCookie::from_headers(&headers) {
        let (reply, answer) = oneshot::channel();
        let request = WebRequest::SignOut {
            name: cookie.name,
            token: cookie.token,
            reply,
        };
        if shared.hub.send(HubEvent::Web(request)).await.is_err() || answer.await.is_err() {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
        }
    }
    let mut response = json_response(StatusCode::OK, &json!({"name": null}));
    response
        .headers_mut()
        .insert(SET_COOKIE, clear_cookie(&headers, https));
    response
}

fn refusal(refused: &Refused) -> Response {
    let status = match refused.why {
        Why::NotAllowed => StatusCode::FORBIDDEN,
        Why::BadCredentials => StatusCode::UNAUTHORIZED,
        Why::Taken => StatusCode::CONFLICT,
        Why::Blocked => StatusCode::TOO_MANY_REQUESTS,
        Why::Busy => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &refused.text)
}

/// `{"error": text}` with `status`.
pub fn error(status: StatusCode, text: &str) -> Response {
    json_response(status, &json!({ "error": text }))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let headers = [
        (CONTENT_TYPE, "application/json"),
        // Answers about a session are never cached.
        (CACHE_CONTROL, "no-store"),
    ];
    (status, headers, body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_the_cookie() {
        for name in ["ann", "Zoë", "a.b-c_d", "日本"] {
            let encoded = percent_encode(name);
            assert!(encoded.bytes().all(|b| b.is_ascii_graphic() && b != b';'));
            assert_eq!(percent_decode(&encoded).as_deref(), Some(name));
        }
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "127.0.0.1:8080".parse().unwrap());
        let cookies = "a=1; natter_session_9090=x:nt1.other; natter_session_8080=Zo%C3%AB:nt1.abc";
        headers.insert(header::COOKIE, cookies.parse().unwrap());
        let cookie = WebCookie::from_headers(&headers).unwrap();
        assert_eq!(cookie.name, "Zoë");
        assert_eq!(cookie.token.expose(), "nt1.abc");
    }

    #[test]
    fn the_cookie_is_named_after_the_port_the_page_came_from() {
        let name = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, host.parse().unwrap());
            cookie_name(&headers)
        };
        assert_eq!(name("127.0.0.1:8080"), "natter_session_8080");
        assert_eq!(name("[::1]:8443"), "natter_session_8443");
        assert_eq!(name("[::1]"), "natter_session");
        assert_eq!(name("chat.example.com"), "natter_session");
        assert_eq!(cookie_name(&HeaderMap::new()), "natter_session");
    }

    #[test]
    fn only_the_pages_own_origin_passes() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&headers, false), "no Origin: not a browser");
        headers.insert(ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&headers, false));
        assert!(!same_origin(&headers, true), "the page is on https");
        headers.insert(ORIGIN, "http://127.0.0.1:9999".parse().unwrap());
        assert!(!same_origin(&headers, false));
        headers.insert(ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&headers, false));
    }
}

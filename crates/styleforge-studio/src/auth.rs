//! Who may talk to the studio: the per-start token, the Host check and the rule that
//! state-changing requests carry the token in a header.
//!
//! - Every request needs the token: the `token=` query parameter of the printed URL, the
//!   cookie set on that first visit (`HttpOnly`, `SameSite=Strict`, so other sites' pages
//!   never send it), or the [`TOKEN_HEADER`] header.
//! - A POST needs the token in [`TOKEN_HEADER`] itself: a page of another site can make
//!   the browser send a cookie with a form, never a custom header (that needs a CORS
//!   preflight the studio does not answer), so no cross-site request can change anything.
//! - The `Host` header must name the address the studio listens on: a DNS name that a
//!   hostile site re-points at 127.0.0.1 (DNS rebinding) is refused.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngCore;

/// The header that carries the token on API calls (required on POSTs).
pub const TOKEN_HEADER: &str = "x-styleforge-token";

/// A fresh random token: 128 bits from the operating system's generator, in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cookie's name: one per port, so that two studios on one machine do not overwrite
/// each other's cookie (cookies are not told apart by port).
pub fn cookie_name(port: u16) -> String {
    format!("styleforge_token_{port}")
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The token rules for one server.
#[derive(Debug, Clone)]
pub struct Gate {
    token: String,
    ip: IpAddr,
    port: u16,
}

/// How a request proved it knows the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The `token=` query parameter (the printed URL): the reply sets the cookie.
    Query,
    /// The cookie or the header.
    Kept,
}

impl Gate {
    /// The rules for a server on `ip:port` with `token`.
    pub fn new(token: String, ip: IpAddr, port: u16) -> Self {
        Self { token, ip, port }
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether `host` (a `Host` header) names this server. On a loopback address: the
    /// loopback names with the port (`127.0.0.1`, `localhost`, `[::1]`). On another
    /// address (bound with the explicit flag): any IP literal with the port, never a DNS
    /// name other than `localhost`.
    pub fn host_allowed(&self, host: &str) -> bool {
        let (name, port) = match host.rsplit_once(':') {
            Some((n, p)) if !n.is_empty() && !p.contains(']') => (n, p.parse::<u16>().ok()),
            _ => (host, Some(80)),
        };
        if port != Some(self.port) {
            return false;
        }
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) if self.ip.is_loopback() => ip.is_loopback(),
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// Checks a request; the error is the refusal to send instead.
    pub fn check(
        &self,
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Proof, Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.host_allowed(host) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "this address is not the one the studio listens on (Host header refused)",
            ));
        }
        let in_header = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| same(t, &self.token));
        if *method == Method::POST {
            return if in_header {
                Ok(Proof::Kept)
            } else {
                Err(refuse(
                    StatusCode::FORBIDDEN,
                    "a change needs the studio's token in the x-styleforge-token header",
                ))
            };
        }
        if *method != Method::GET && *method != Method::HEAD {
            return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "GET or POST only"));
        }
        let in_query = query.is_some_and(|q| {
            q.split('&')
                .filter_map(|kv| kv.strip_prefix("token="))
                .any(|t| same(t, &self.token))
        });
        if in_query {
            return Ok(Proof::Query);
        }
        let cookie = cookie_name(self.port);
        let in_cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == cookie && same(v, &self.token));
        if in_header || in_cookie {
            Ok(Proof::Kept)
        } else {
            Err(refuse(
                StatusCode::UNAUTHORIZED,
                "open the studio with the URL it printed (it carries the token)",
            ))
        }
    }

    /// The `Set-Cookie` value that keeps the token for later requests.
    pub fn cookie(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            cookie_name(self.port),
            self.token
        ))
        .expect("hex token and ASCII name")
    }
}

/// A request refused by [`Gate::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403 or 405.
    pub status: StatusCode,
    /// Why, for the person at the browser.
    pub message: &'static str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

fn refuse(status: StatusCode, message: &'static str) -> Refusal {
    Refusal { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(ip: &str) -> Gate {
        Gate::new("ab12".into(), ip.parse().unwrap(), 8123)
    }

    #[test]
    fn loopback_server_accepts_only_loopback_hosts_with_its_port() {
        let g = gate("127.0.0.1");
        for ok in [
            "127.0.0.1:8123",
            "localhost:8123",
            "LOCALHOST:8123",
            "[::1]:8123",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:8123",
            "127.0.0.1:8124",
            "127.0.0.1",
            "10.0.0.2:8123",
            "",
            "[::1]",
            "localhost.evil.example:8123",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn other_bind_accepts_ip_literals_not_dns_names() {
        let g = gate("0.0.0.0");
        assert!(g.host_allowed("192.168.1.20:8123"));
        assert!(!g.host_allowed("rebound.example:8123"));
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}

//! Who may talk to the server, checked before anything else runs.
//!
//! Two attacks reach a server on 127.0.0.1 from a web page (docs/api.md, "Security"):
//! - DNS rebinding: a page on `attacker.example` re-points its name at 127.0.0.1 and
//!   then reads and writes "its own" origin, which is ax. The browser still sends
//!   `Host: attacker.example:PORT`, so every request whose Host is not one of the
//!   server's names is refused, reads included (Jupyter's, Vite's and Ollama's fix).
//! - Cross-site requests: any page may send no-cors fetches and form posts to
//!   `http://127.0.0.1:8080` without reading the answer. Writes therefore need an
//!   `Origin` that is the server's own (or one the user named with `--cors-origin`),
//!   are refused when `Sec-Fetch-Site` says another site sent them, and may not carry
//!   the content types a form or a no-cors fetch can send.
//!
//! Clients that are not browsers (curl, scripts, the CLI) send no `Origin` and no
//! `Sec-Fetch-Site`, and a Host that names the server: they pass unchanged.

use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;

/// The names the server answers to and the web origins allowed to change things.
#[derive(Debug, Clone)]
pub struct Access {
    bind: IpAddr,
    hosts: Vec<HostRule>,
    cors_origins: Vec<String>,
}

/// One `--allowed-host` entry.
#[derive(Debug, Clone, PartialEq)]
enum HostRule {
    /// `*`: every name (only with a token: then rebinding pages lack the token).
    Any,
    /// `name` or `name:port`.
    Exact { name: String, port: Option<u16> },
    /// `.example.com`: the domain and every name under it (Vite's form).
    Domain { domain: String, port: Option<u16> },
}

impl Access {
    /// The server's own names only (loopback names, and the bound address).
    pub fn local(bind: IpAddr) -> Access {
        Access {
            bind,
            hosts: Vec::new(),
            cors_origins: Vec::new(),
        }
    }

    /// With the user's `--allowed-host` and `--cors-origin` entries; an entry that
    /// cannot be read is an error that says what was expected.
    pub fn new(
        bind: IpAddr,
        allowed_hosts: &[String],
        cors_origins: &[String],
    ) -> Result<Access, String> {
        let hosts = allowed_hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .map(parse_host_rule)
            .collect::<Result<Vec<_>, _>>()?;
        let cors_origins = cors_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .map(normalize_origin)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Access {
            bind,
            hosts,
            cors_origins,
        })
    }

    /// The origins named with `--cors-origin`, as browsers send them.
    pub fn cors_origins(&self) -> &[String] {
        &self.cors_origins
    }

    /// Whether `--allowed-host '*'` turned the Host check off.
    pub fn any_host(&self) -> bool {
        self.hosts.contains(&HostRule::Any)
    }

    /// One line for the start-up log: the names and origins this server accepts.
    pub fn describe(&self) -> String {
        let mut names = vec!["localhost".to_owned(), "loopback addresses".to_owned()];
        if self.bind.is_unspecified() {
            names.push("any IP address".to_owned());
        } else if !self.bind.is_loopback() {
            names.push(self.bind.to_string());
        }
        names.extend(self.hosts.iter().map(|h| match h {
            HostRule::Any => "any name".to_owned(),
            HostRule::Exact { name, port } | HostRule::Domain { domain: name, port } => {
                let dot = if matches!(h, HostRule::Domain { .. }) {
                    "."
                } else {
                    ""
                };
                match port {
                    Some(p) => format!("{dot}{name}:{p}"),
                    None => format!("{dot}{name}"),
                }
            }
        }));
        let cors = if self.cors_origins.is_empty() {
            "no other origin (no CORS)".to_owned()
        } else {
            self.cors_origins.join(", ")
        };
        format!(
            "answers to {}; pages that may use it: its own and {cors}",
            names.join(", ")
        )
    }

    /// Whether a request naming `host` (lower case, no brackets, no trailing dot)
    /// and `port` reached the server under one of its names.
    fn host_allowed(&self, host: &str, port: Option<u16>) -> bool {
        if let Ok(ip) = host.parse::<IpAddr>() {
            // A rebinding page needs a name it controls; an address in the URL is
            // connected to as written. Bound to every interface, ax cannot know all the
            // addresses it is reached at (published container ports, NAT), so any
            // address is its own.
            return ip.is_loopback() || ip == self.bind || self.bind.is_unspecified();
        }
        // RFC 6761: `localhost` and names under it never leave the machine.
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        self.hosts.iter().any(|rule| match rule {
            HostRule::Any => true,
            HostRule::Exact { name, port: want } => {
                name == host && want.is_none_or(|w| Some(w) == port)
            }
            HostRule::Domain { domain, port: want } => {
                let under = host
                    .strip_suffix(domain.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
                under && want.is_none_or(|w| Some(w) == port)
            }
        })
    }
}

fn parse_host_rule(entry: &str) -> Result<HostRule, String> {
    if entry == "*" {
        return Ok(HostRule::Any);
    }
    let bad = || {
        format!(
            "--allowed-host `{entry}`: give a host name as browsers send it in the Host header: \
             `ax.example.com`, `ax.example.com:8443`, `.example.com` (the domain and every name \
             under it) or `*` (any name; needs AX_TOKEN)"
        )
    };
    if entry.contains("://") || entry.contains('/') {
        return Err(bad());
    }
    let (domain, rest) = match entry.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    let authority: Authority = rest.parse().map_err(|_| bad())?;
    if authority.as_str().contains('@') {
        return Err(bad());
    }
    let name = normalize_name(authority.host());
    if name.is_empty() || name.contains('*') {
        return Err(bad());
    }
    let port = authority.port_u16();
    Ok(if domain {
        HostRule::Domain { domain: name, port }
    } else {
        HostRule::Exact { name, port }
    })
}

/// Lower case, without IPv6 brackets or the root's trailing dot.
fn normalize_name(host: &str) -> String {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

/// An origin as browsers serialise it: `scheme://host[:port]`, lower case, without
/// the scheme's default port.
fn normalize_origin(entry: &str) -> Result<String, String> {
    let parsed = parse_origin(entry.trim_end_matches('/')).ok_or_else(|| {
        format!(
            "--cors-origin `{entry}`: give a web origin as the browser shows it, \
             `https://app.example.com` or `http://localhost:5173` (scheme, host and port; \
             no path, no wildcard)"
        )
    })?;
    Ok(parsed.serialize())
}

#[derive(Debug, PartialEq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn serialize(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if Some(self.port) == default_port(&self.scheme) {
            format!("{}://{host}", self.scheme)
        } else {
            format!("{}://{host}:{}", self.scheme, self.port)
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn parse_origin(text: &str) -> Option<Origin> {
    let uri: Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if !path_ok || authority.as_str().contains('@') {
        return None;
    }
    let port = authority.port_u16().or_else(|| default_port(&scheme))?;
    Some(Origin {
        scheme,
        host: normalize_name(authority.host()),
        port,
    })
}

/// The Host of a request: its header, or the authority of an absolute-form target
/// (which takes precedence, RFC 9112 §3.2.2).
fn request_authority(req: &Request) -> Result<Option<Authority>, ApiError> {
    if let Some(a) = req.uri().authority() {
        return Ok(Some(a.clone()));
    }
    match req.headers().get(header::HOST) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<Authority>().ok())
            .filter(|a| !a.as_str().contains('@'))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the Host header {v:?} is not a host name with an optional port"
                ))
            }),
    }
}

/// Refuse requests that reached the server under a name it does not answer to.
pub async fn check_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let authority = match request_authority(&req) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    // No Host at all: HTTP/1.0 tools; every browser sends one.
    let Some(authority) = authority else {
        return next.run(req).await;
    };
    let host = normalize_name(authority.host());
    if state.access.host_allowed(&host, authority.port_u16()) {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::FORBIDDEN,
        "host-not-allowed",
        format!(
            "this server does not answer to the name `{host}` (Host: {authority}); a web page \
             under that name could be reaching it through DNS rebinding. If you use this name \
             on purpose (a reverse proxy, a tunnel, a LAN name), start ax with \
             `--allowed-host {host}` (or AX_ALLOWED_HOSTS={host}); see docs/api.md, \"Security\""
        ),
    )
    .into_response()
}

/// Content types that a cross-site HTML form or a no-cors `fetch` may send without
/// a CORS preflight (the Fetch standard's CORS-safelisted request header values).
const FORM_TYPES: [&str; 3] = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

fn is_write(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The media type of a request, lower case, without parameters ("" when absent).
pub(super) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Refuse writes that a page on another origin sent, or could have sent.
pub async fn check_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !is_write(req.method()) {
        return next.run(req).await;
    }
    if let Err(e) = write_allowed(&state.access, &req) {
        return e.into_response();
    }
    next.run(req).await
}

fn write_allowed(access: &Access, req: &Request) -> Result<(), ApiError> {
    let headers = req.headers();
    let method = req.method();
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("").trim().to_owned());
    let named = origin.as_deref().and_then(parse_origin).is_some_and(|o| {
        access
            .cors_origins
            .iter()
            .any(|allowed| *allowed == o.serialize())
    });
    let own_origins = || {
        let host = request_authority(req).ok().flatten();
        match host {
            Some(h) => format!("http://{h} or https://{h}"),
            None => "the server's own".to_owned(),
        }
    };
    let cross = |what: String| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-origin",
            format!(
                "refused a {method} from {what}: ax accepts changes only from its own pages \
                 ({}) and from clients that are not browsers. To let a web app on another \
                 origin use this server, start ax with `--cors-origin <origin>` (or \
                 AX_CORS_ORIGINS), which needs AX_TOKEN; see docs/api.md, \"Security\"",
                own_origins()
            ),
        )
    };
    if let Some(o) = &origin
        && !named
    {
        let same = match (parse_origin(o), request_authority(req).ok().flatten()) {
            (Some(o), Some(host)) => {
                normalize_name(host.host()) == o.host
                    && host.port_u16().or_else(|| default_port(&o.scheme)) == Some(o.port)
            }
            _ => false,
        };
        if !same {
            return Err(cross(format!("a page on origin `{o}`")));
        }
    }
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if (site == "cross-site" || site == "same-site") && !named {
        return Err(cross(format!("another site (Sec-Fetch-Site: {site})")));
    }
    let ct = content_type(headers);
    if FORM_TYPES.contains(&ct.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!(
                "ax does not accept `Content-Type: {ct}` for a {method}: any web page can send \
                 that type in a form post. Send JSON as `Content-Type: application/json` (a \
                 workflow file may also be sent as `application/yaml`), or no body and no \
                 Content-Type for pause, resume, cancel, restore and delete"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn access(hosts: &[&str]) -> Access {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        Access::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &hosts, &[]).expect("access")
    }

    #[test]
    fn own_names_and_allowed_hosts() {
        let a = access(&["ax.example.com", ".corp.test", "tunnel.test:9000"]);
        for (host, port, ok) in [
            ("localhost", Some(8080), true),
            ("localhost", Some(9999), true),
            ("app.localhost", None, true),
            ("127.0.0.1", Some(8080), true),
            ("127.0.0.2", None, true),
            ("::1", Some(8080), true),
            ("10.0.0.1", Some(8080), false),
            ("attacker.example", Some(8080), false),
            ("localhost.attacker.example", None, false),
            ("ax.example.com", Some(443), true),
            ("x.ax.example.com", None, false),
            ("corp.test", None, true),
            ("a.b.corp.test", Some(1), true),
            ("evilcorp.test", None, false),
            ("tunnel.test", Some(9000), true),
            ("tunnel.test", Some(9001), false),
        ] {
            assert_eq!(a.host_allowed(host, port), ok, "{host} {port:?}");
        }
        assert!(access(&["*"]).host_allowed("anything.test", None));
        let any = Access::local("0.0.0.0".parse().expect("ip"));
        assert!(any.host_allowed("192.168.1.5", Some(8080)));
        assert!(!any.host_allowed("attacker.example", Some(8080)));
        let one = Access::local("192.168.1.5".parse().expect("ip"));
        assert!(one.host_allowed("192.168.1.5", None));
        assert!(!one.host_allowed("192.168.1.6", None));
    }

    #[test]
    fn entries_that_cannot_be_read_are_refused() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for bad in [
            "http://x.test",
            "x.test/path",
            "*.x.test",
            "user@x.test",
            ":80",
        ] {
            let err = Access::new(ip, &[bad.to_owned()], &[]).expect_err(bad);
            assert!(err.contains("--allowed-host"), "{err}");
        }
        for bad in ["*", "app.example.com", "https://a.test/path", "ftp:/x"] {
            let err = Access::new(ip, &[], &[bad.to_owned()]).expect_err(bad);
            assert!(err.contains("--cors-origin"), "{err}");
        }
        let a = Access::new(
            ip,
            &[],
            &[
                "HTTPS://App.Example.com:443/".to_owned(),
                "http://localhost:5173".to_owned(),
            ],
        )
        .expect("origins");
        assert_eq!(
            a.cors_origins(),
            ["https://app.example.com", "http://localhost:5173"]
        );
    }
}

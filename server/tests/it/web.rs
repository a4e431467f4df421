//! The web app as `ax serve` serves it (tower-http's ServeDir): content types that
//! browsers need (wasm streaming compilation wants `application/wasm`), the page for
//! client routes, revalidation of the page and long caching of trunk's hashed files,
//! conditional and range requests, no dot files, and the security checks in front.

use super::common::{Backend, engine};
use ax_server::api::{Access, AppState, app};
use reqwest::Method;
use std::net::SocketAddr;
use std::sync::Arc;

const WASM: &str = "ax-web-0123456789abcdef_bg.wasm";
const JS: &str = "ax-web-0123456789abcdef.js";

async fn serve(web_dir: Option<std::path::PathBuf>) -> (String, super::common::TestEngine) {
    let t = engine(Backend::Sqlite).await;
    let state = AppState {
        engine: t.engine.clone(),
        token: None,
        web_dir,
        access: Arc::new(Access::local("127.0.0.1".parse().expect("ip"))),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app(state)).await;
    });
    (format!("http://{addr}"), t)
}

fn dist() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let w = |name: &str, bytes: &[u8]| std::fs::write(d.path().join(name), bytes).expect("write");
    w("index.html", b"<!doctype html><title>ax</title><script type=module src=./ax-web-0123456789abcdef.js></script>");
    w(WASM, b"\0asm\x01\0\0\0");
    w(JS, b"export default 1;");
    w("style-0123456789abcdef.css", b"body{}");
    w(".env", b"SECRET=1");
    w("healthz", b"{\"status\": \"static\"}");
    d
}

#[tokio::test]
async fn the_page_is_served_with_types_caching_and_client_routes() {
    let d = dist();
    let (base, _t) = serve(Some(d.path().to_path_buf())).await;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{base}{path}")).send();
    for (path, ctype, cache, body_start) in [
        ("/", "text/html", "no-cache", "<!doctype"),
        ("/index.html", "text/html", "no-cache", "<!doctype"),
        ("/runs/01ABC", "text/html", "no-cache", "<!doctype"),
        (
            "/ax-web-0123456789abcdff.js",
            "text/html",
            "no-cache",
            "<!doctype",
        ),
        (
            &format!("/{WASM}"),
            "application/wasm",
            "public, max-age=31536000, immutable",
            "\0asm",
        ),
        (
            &format!("/{JS}"),
            "javascript",
            "public, max-age=31536000, immutable",
            "export",
        ),
        (
            "/style-0123456789abcdef.css",
            "text/css",
            "public, max-age=31536000, immutable",
            "body",
        ),
    ] {
        let r = get(path).await.expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers().clone();
        let ct = h["content-type"].to_str().unwrap_or("");
        assert!(ct.contains(ctype), "{path}: {ct}");
        assert_eq!(h["cache-control"], cache, "{path}");
        assert!(h.get("last-modified").is_some(), "{path}");
        let text = r.text().await.unwrap_or_default();
        assert!(text.starts_with(body_start), "{path}: {text}");
    }
    // /healthz is the server's, not the static file that says "no server".
    let r = get("/healthz").await.expect("GET");
    assert!(r.text().await.unwrap_or_default().contains("\"ok\""));
    // Conditional and range requests.
    let r = get("/").await.expect("GET");
    let modified = r.headers()["last-modified"].clone();
    let r = client
        .get(format!("{base}/"))
        .header("if-modified-since", modified)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 304);
    let r = client
        .get(format!("{base}/{WASM}"))
        .header("range", "bytes=0-3")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes().await.expect("body").as_ref(), b"\0asm");
    let r = client
        .head(format!("{base}/{WASM}"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-length"], "8");
    // Dot files and paths out of the folder are not served.
    for path in ["/.env", "/a/../.env", "/%2e%2e/%2e%2e/etc/passwd"] {
        let r = get(path).await.expect("GET");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert!(
            !text.contains("SECRET") && !text.contains("root:"),
            "{path}: {text}"
        );
        assert!(
            status == 404 || text.starts_with("<!doctype"),
            "{path}: {status} {text}"
        );
    }
    // Writes to the page are a JSON 405; a foreign Host gets nothing.
    let r = client
        .request(Method::POST, format!("{base}/"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.headers().get("allow").is_some());
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "method-not-allowed");
    let r = client
        .get(format!("{base}/{WASM}"))
        .header("host", "attacker.example")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn without_a_built_page_the_server_says_how_to_build_it() {
    let (base, _t) = serve(None).await;
    let r = reqwest::get(format!("{base}/")).await.expect("GET");
    assert_eq!(r.status().as_u16(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert!(
        r.text()
            .await
            .unwrap_or_default()
            .contains("cargo xtask web")
    );
}

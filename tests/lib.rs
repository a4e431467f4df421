//! Fixtures for end-to-end tests: the `ax` binary serving the built web app on a
//! free port, chromedriver, and a headless Chromium session.

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// The `ax` binary: `$AX_BIN`, else the workspace's debug build.
pub fn ax_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AX_BIN") {
        return PathBuf::from(p);
    }
    let p = target_dir().join("debug").join("ax");
    assert!(
        p.is_file(),
        "{} is missing: build it first (`cargo build -p ax-server --bin ax`; `cargo xtask test e2e` does)",
        p.display()
    );
    p
}

/// trunk's output folder with the built web app.
pub fn dist() -> PathBuf {
    let d = std::env::var_os("AX_WEB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("dist"));
    assert!(
        d.join("index.html").is_file(),
        "{} has no index.html: build the web app first (`cargo xtask web`; `cargo xtask test e2e` does)",
        d.display()
    );
    d
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ax serve` on a fresh database, with the offline provider slowed down so that
/// runs can be watched.
pub struct Server {
    pub url: String,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

pub async fn serve(echo_latency_ms: u64) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = dir.path().join("agents.toml");
    std::fs::write(
        &agents,
        format!("[defaults]\nprovider = \"echo\"\n\n[providers.echo]\nkind = \"echo\"\nlatency_ms = {echo_latency_ms}\n"),
    )
    .expect("agents");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
    let child = Command::new(ax_bin())
        .args(["serve", "--port", &port.to_string()])
        .arg("--db")
        .arg(dir.path().join("ax.db"))
        .arg("--agents")
        .arg(&agents)
        .arg("--web-dir")
        .arg(dist())
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ax serve");
    let proc = Proc(child);
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{url}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ax serve did not become healthy; see its log in {}",
            dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server {
        url,
        dir,
        _proc: proc,
    }
}

/// chromedriver and a headless Chromium session.
pub struct Browser {
    pub client: Client,
    _driver: Proc,
}

pub async fn browser() -> Browser {
    browser_with(&[]).await
}

/// A headless Chromium session with extra command-line switches (e.g.
/// `--host-resolver-rules=…` to point a made-up name at 127.0.0.1).
pub async fn browser_with(extra_args: &[&str]) -> Browser {
    let port = free_port();
    let driver_bin =
        std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
    let child = Command::new(&driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {driver_bin}: {e} (`cargo xtask setup` installs it)")
        });
    let driver = Proc(child);
    let chrome = std::env::var("CHROME").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1366,900",
    ];
    args.extend_from_slice(extra_args);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({ "binary": chrome, "args": args }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot start a Chromium session: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    Browser {
        client,
        _driver: driver,
    }
}

pub fn testid(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

impl Browser {
    /// Wait until `css` matches an element.
    pub async fn wait_for(&self, css: &str, secs: u64) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(secs))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element matches `{css}` after {secs} s: {e}"))
    }

    pub async fn click(&self, css: &str) {
        let el = self.wait_for(css, 20).await;
        el.click()
            .await
            .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Run JavaScript and return its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Replace the code editor's text (one edit, as a paste would).
    pub async fn set_editor(&self, text: &str) {
        self.wait_for(&format!("{} .cm-content", testid("editor")), 30)
            .await;
        self.js(
            "document.querySelector('[data-testid=\"editor\"]').axEditor.replaceAll(arguments[0]);",
            vec![json!(text)],
        )
        .await;
    }

    /// The code editor's text.
    pub async fn editor_text(&self) -> String {
        let v = self
            .js(
                "return document.querySelector('[data-testid=\"editor\"]').axEditor.text();",
                vec![],
            )
            .await;
        v.as_str().unwrap_or("").to_owned()
    }

    /// Move the mouse over an element (tooltips on hover).
    pub async fn hover(&self, css: &str) {
        let el = self.wait_for(css, 20).await;
        let actions = MouseActions::new("mouse".into()).then(PointerAction::MoveToElement {
            element: el,
            duration: Some(Duration::from_millis(100)),
            x: 0.0,
            y: 0.0,
        });
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("cannot move the mouse to `{css}`: {e}"));
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    pub async fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|e| panic!("CDP {cmd} failed: {e}"))
    }

    /// Emulate the system's dark (or light) colour scheme.
    pub async fn color_scheme(&self, scheme: &str) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// Audit the page with axe-core: the serious and critical violations, one
    /// line each (rule, impact, the elements, axe's help text).
    pub async fn axe(&self) -> Vec<String> {
        let path = std::env::var_os("AX_AXE_JS")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("web/editor/node_modules/axe-core/axe.min.js"));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (axe-core comes with the editor's npm packages: `cargo xtask editor`)",
                path.display()
            )
        });
        self.js(&format!("{source}\nreturn true;"), vec![]).await;
        let v = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => \
                 ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))})))) \
                 .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));",
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("axe.run failed: {e}"));
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|x| matches!(x["impact"].as_str(), Some("serious" | "critical")))
            .map(|x| {
                format!(
                    "{} ({}): {} — {}",
                    x["id"].as_str().unwrap_or(""),
                    x["impact"].as_str().unwrap_or(""),
                    x["help"].as_str().unwrap_or(""),
                    x["nodes"]
                )
            })
            .collect()
    }

    /// Poll until `check` (a JS expression) is true.
    pub async fn until(&self, what: &str, secs: u64, check: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(&format!("return !!({check});"), vec![]).await;
            if v == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let _ = self
                    .screenshot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                let body = self
                    .js("return document.body.innerText.slice(0, 3000);", vec![])
                    .await;
                panic!(
                    "timed out after {secs} s waiting for {what}; the page says:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Save a screenshot under target/screenshots (outside the repository's files).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = target_dir().join("screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}.png"));
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(&path, png);
        }
        path
    }

    /// States of the graph's nodes, by step key.
    pub async fn node_states(&self) -> Vec<(String, String)> {
        let v = self
            .js(
                "return [...document.querySelectorAll('[data-testid=\"graph\"] [data-step]')].map(n => [n.dataset.step, n.dataset.state]);",
                vec![],
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| {
                        Some((
                            p[0].as_str()?.to_owned(),
                            p[1].as_str().unwrap_or("").to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A Chrome DevTools Protocol command (chromedriver's `goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"cmd": self.cmd, "params": self.params}).to_string()),
        )
    }
}

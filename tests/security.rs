//! Web pages against `ax serve` in a real headless Chromium (docs/api.md, "Security"):
//! a page on another origin tries every request a page can send without the
//! server's consent (no-cors fetches, form posts, beacons, credentialed fetches);
//! a DNS-rebinding page (Chromium's resolver maps `attacker.test` to 127.0.0.1, so
//! the page's origin is ax's address under the attacker's name) tries to read and
//! write "its own" origin. Nothing may change, nothing may be read; the server's
//! own page must still load and run a workflow.
//!
//! Needs the built web app and chromedriver: `cargo xtask test e2e`.

use ax_e2e::{Browser, Server, browser_with, serve, testid};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const CHAIN: &str = "name: victim\nsteps:\n  - {key: a, agent: x, prompt: one}\n  - {key: b, agent: x, prompt: \"two {{a.result}}\", dependencies: [a]}\n  - {key: c, agent: x, prompt: \"three {{b.result}}\", dependencies: [b]}\n";
const OWN: &str =
    "name: own-page-run\nsteps:\n  - key: hello\n    agent: writer\n    prompt: Say hello\n";

/// A second web server on another port: the attacker's site, one page for every path.
fn attacker_site(html: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    port
}

/// Every write a page on another origin can attempt without a CORS grant.
fn attack_page(target: &str, execution: &str, checkpoint: &str) -> String {
    let target = json!(target);
    let workflow = json!("name: pwned\nsteps:\n  - {key: a, agent: x, prompt: hi}\n");
    // A text/plain form body is `name=value`: a YAML file in the name, `#` to make the
    // `=` and the empty value a comment.
    let form_yaml = json!("name: pwned-form\nsteps:\n  - {key: a, agent: x, prompt: hi}\n#");
    let execution = json!(execution);
    let checkpoint = json!(checkpoint);
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>attacking</title><body><script>
const T = {target}, WF = {workflow}, FORM_YAML = {form_yaml}, EXEC = {execution}, CP = {checkpoint};
const results = [];
async function attempt(name, f) {{
  try {{
    const r = await f();
    results.push([name, r instanceof Response ? r.type + ' ' + r.status : String(r || 'sent')]);
  }}
  catch (e) {{ results.push([name, 'failed: ' + e]); }}
}}
function form(path, enctype, fields) {{
  return new Promise(resolve => {{
    const frame = document.createElement('iframe');
    frame.name = 'f' + results.length + Math.random();
    document.body.append(frame);
    frame.onload = () => resolve('loaded');
    const f = document.createElement('form');
    f.method = 'POST'; f.action = T + path; f.enctype = enctype; f.target = frame.name;
    for (const [k, v] of Object.entries(fields)) {{
      const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.append(i);
    }}
    document.body.append(f);
    f.submit();
    setTimeout(() => resolve('timeout'), 5000);
  }});
}}
const noCors = (path, body, type) => fetch(T + path, {{method: 'POST', mode: 'no-cors',
  headers: type ? {{'Content-Type': type}} : {{}}, body}});
(async () => {{
  await attempt('no-cors text/plain workflow', () => noCors('/api/workflows', WF, 'text/plain'));
  await attempt('no-cors "json" workflow', () => noCors('/api/workflows', JSON.stringify({{source: WF}}), 'application/json'));
  await attempt('no-cors untyped blob', () => noCors('/api/workflows', new Blob([JSON.stringify({{source: WF}})])));
  await attempt('no-cors run', () => noCors('/api/executions', JSON.stringify({{source: WF}}), 'text/plain'));
  await attempt('no-cors import and resume', () => noCors('/api/checkpoints/import?resume=true', CP, 'text/plain'));
  await attempt('no-cors import blob', () => noCors('/api/checkpoints/import?resume=true', new Blob([CP])));
  await attempt('no-cors resume', () => noCors('/api/executions/' + EXEC + '/resume'));
  await attempt('no-cors cancel', () => noCors('/api/executions/' + EXEC + '/cancel', '', 'text/plain'));
  await attempt('cors with credentials', () => fetch(T + '/api/workflows', {{method: 'POST',
    credentials: 'include', headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{source: WF}})}}));
  await attempt('read with credentials', () => fetch(T + '/api/workflows', {{credentials: 'include'}}));
  await attempt('beacon', async () => {{ navigator.sendBeacon(T + '/api/workflows', new Blob([WF], {{type: 'text/plain'}})); }});
  await attempt('form text/plain', () => form('/api/workflows', 'text/plain', {{[FORM_YAML]: ''}}));
  await attempt('form urlencoded', () => form('/api/workflows', 'application/x-www-form-urlencoded', {{source: WF}}));
  await attempt('form multipart', () => form('/api/workflows', 'multipart/form-data', {{source: WF}}));
  await attempt('form cancel', () => form('/api/executions/' + EXEC + '/cancel', 'application/x-www-form-urlencoded', {{}}));
  window.results = results;
  document.title = 'done';
}})();
</script>"#
    )
}

async fn api_get(server: &Server, path: &str) -> Value {
    reqwest::get(format!("{}{path}", server.url))
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

async fn api_post(server: &Server, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert!(r.status().is_success(), "POST {path}: {}", r.status());
    r.json().await.expect("JSON")
}

async fn wait_state(server: &Server, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = api_get(server, &format!("/api/executions/{id}")).await;
        if e["state"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never became {want}: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a page could have changed: workflows, executions and their states, events.
async fn snapshot(server: &Server) -> Value {
    let workflows = api_get(server, "/api/workflows").await;
    let executions = api_get(server, "/api/executions").await;
    let mut events = Vec::new();
    for e in executions.as_array().into_iter().flatten() {
        let id = e["id"].as_str().unwrap_or("");
        let n = api_get(server, &format!("/api/executions/{id}/events")).await;
        events.push(n.as_array().map_or(0, Vec::len));
    }
    let names: Vec<&Value> = workflows
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| &w["name"])
        .collect();
    let states: Vec<(&Value, &Value)> = executions
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (&e["id"], &e["state"]))
        .collect();
    json!({"workflows": names, "executions": states, "events": events})
}

async fn page_fetches(b: &Browser, script: &str) -> Value {
    b.client
        .execute_async(
            &format!(
                "const done = arguments[arguments.length - 1]; (async () => {{ {script} }})().then(done, e => done({{error: String(e)}}));"
            ),
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the built web app and chromedriver: run `cargo xtask test e2e`"]
async fn pages_on_other_origins_cannot_drive_or_read_the_server() {
    let server = serve(200).await;
    let port = server.url.rsplit(':').next().expect("port").to_owned();
    // A finished run to export a checkpoint from, and a paused run to attack.
    let done = api_post(&server, "/api/executions", json!({"source": CHAIN})).await;
    let done_id = done["id"].as_str().expect("id").to_owned();
    wait_state(&server, &done_id, "completed").await;
    let cps = api_get(&server, &format!("/api/executions/{done_id}/checkpoints")).await;
    let first = cps
        .as_array()
        .and_then(|a| a.last())
        .and_then(|c| c["id"].as_str())
        .expect("a checkpoint")
        .to_owned();
    let checkpoint = api_get(&server, &format!("/api/checkpoints/{first}/export")).await;
    let victim = api_post(&server, "/api/executions", json!({"source": CHAIN})).await;
    let victim_id = victim["id"].as_str().expect("id").to_owned();
    api_post(
        &server,
        &format!("/api/executions/{victim_id}/pause"),
        json!({"now": true}),
    )
    .await;
    wait_state(&server, &victim_id, "paused").await;
    let before = snapshot(&server).await;

    let attacker_port = attacker_site(attack_page(
        &server.url,
        &victim_id,
        &checkpoint.to_string(),
    ));
    let b = browser_with(&["--host-resolver-rules=MAP attacker.test 127.0.0.1"]).await;

    // 1. A page on another origin: no-cors fetches, forms, beacons.
    b.client
        .goto(&format!("http://attacker.test:{attacker_port}/"))
        .await
        .expect("load the attacker's page");
    b.until("the attack page to finish", 60, "document.title === 'done'")
        .await;
    let results = b.js("return window.results;", vec![]).await;
    eprintln!("attempts: {results}");
    assert_eq!(
        results.as_array().map(Vec::len),
        Some(15),
        "every attempt ran: {results}"
    );
    // Beacons and form posts are sent after the page moves on; give them time to land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = snapshot(&server).await;
    assert_eq!(after, before, "a page on another origin changed the server");

    // 2. DNS rebinding: the page's origin is ax's address under the attacker's name.
    b.client
        .goto(&format!("http://attacker.test:{port}/"))
        .await
        .expect("load the rebound name");
    let out = page_fetches(
        &b,
        &format!(
            "const out = {{}};
             let r = await fetch('/api/workflows'); out.read = [r.status, await r.text()];
             r = await fetch('/api/executions/{victim_id}'); out.execution = [r.status, await r.text()];
             r = await fetch('/api/workflows', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
                 body: JSON.stringify({{source: 'name: rebound\\nsteps:\\n  - {{key: a, agent: x, prompt: hi}}\\n'}})}});
             out.write = [r.status, await r.text()];
             r = await fetch('/api/executions/{victim_id}/resume', {{method: 'POST'}});
             out.resume = [r.status, await r.text()];
             r = await fetch('/');
             out.page = [r.status, await r.text()];
             return out;"
        ),
    )
    .await;
    eprintln!("rebinding: {out}");
    for what in ["read", "execution", "write", "resume", "page"] {
        assert_eq!(out[what][0], 403, "{what}: {out}");
        let text = out[what][1].as_str().unwrap_or("");
        assert!(text.contains("host-not-allowed"), "{what}: {text}");
        assert!(!text.contains("victim"), "{what} leaked data: {text}");
    }
    let after = snapshot(&server).await;
    assert_eq!(after, before, "a rebinding page changed the server");

    // 3. The server's own page still loads, detects the server and runs a workflow.
    b.client.goto(&server.url).await.expect("load the page");
    b.wait_for(&testid("editor"), 60).await;
    b.until(
        "the server to be detected",
        30,
        "!document.querySelector('[data-testid=\"server-banner\"]')",
    )
    .await;
    b.set_editor(OWN).await;
    b.click(&testid("run-server")).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = api_get(&server, "/api/executions").await;
        let own = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["workflow"] == "own-page-run");
        if own.is_some_and(|e| e["state"] == "completed") {
            break;
        }
        if Instant::now() > deadline {
            b.screenshot("security-own-page").await;
            panic!("the designer's run never completed: {list}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

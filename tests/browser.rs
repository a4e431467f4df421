//! The designer end to end: `ax serve` on a free port, driven through headless
//! Chromium by chromedriver, as a person would use it.
//!
//! Needs the built web app and chromedriver: `cargo xtask test e2e` builds and
//! runs it (`cargo test -p ax-e2e -- --ignored` if they are already there).

use std::collections::BTreeMap;

use ax_e2e::{Browser, browser, serve, testid};

const CYCLE: &str = "name: e2e-review\nsteps:\n  - key: parse\n    agent: backend\n    prompt: Parse the change\n    dependencies: [aggregate]\n  - key: audit\n    agent: security\n    prompt: \"Audit {{parse.result}}\"\n    dependencies: [parse]\n  - key: aggregate\n    agent: product\n    prompt: \"Sum up {{audit.result}}\"\n    dependencies: [audit]\n";

const FIXED: &str = "name: e2e-review\nsteps:\n  - key: parse\n    agent: backend\n    prompt: Parse the change\n  - key: audit\n    agent: security\n    prompt: \"Audit {{parse.result}}\"\n    dependencies: [parse]\n  - key: quality\n    agent: quality\n    prompt: \"Check {{parse.result}}\"\n    dependencies: [parse]\n  - key: aggregate\n    agent: product\n    prompt: \"Sum up {{audit.result}} and {{quality.result}}\"\n    dependencies: [audit, quality]\n";

const APPROVAL: &str = "name: e2e-ship\nsteps:\n  - key: draft\n    agent: writer\n    prompt: Write the notes\n  - key: sign-off\n    type: approval\n    prompt: \"Ship this? {{draft.result}}\"\n    dependencies: [draft]\n  - key: publish\n    agent: writer\n    prompt: \"Publish: {{sign-off.result.comment}}\"\n    dependencies: [sign-off]\n";

const KEYS: [&str; 4] = ["parse", "audit", "quality", "aggregate"];

fn all_completed_js() -> String {
    let checks: Vec<String> = KEYS
        .iter()
        .map(|k| format!("document.querySelector('[data-testid=\"graph\"] [data-step=\"{k}\"][data-state=\"completed\"]')"))
        .collect();
    checks.join(" && ")
}

async fn set_latency(b: &Browser, ms: u32) {
    b.click(&testid("tab-run")).await;
    b.wait_for(&testid("latency"), 20).await;
    b.js(
        "const i = document.querySelector('[data-testid=\"latency\"]'); i.value = arguments[0]; \
         i.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![serde_json::json!(ms.to_string())],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the built web app and chromedriver: run `cargo xtask test e2e`"]
async fn designer_end_to_end() {
    let server = serve(250).await;
    let b = browser().await;
    b.client.goto(&server.url).await.expect("load the page");
    b.wait_for(&format!("{} .cm-content", testid("editor")), 60)
        .await;
    b.screenshot("01-start").await;
    let violations = b.axe().await;
    assert!(
        violations.is_empty(),
        "axe on the start page:\n{}",
        violations.join("\n")
    );

    // A cycle is reported as typed, without a server round trip.
    b.set_editor(CYCLE).await;
    b.until(
        "the cycle problem",
        20,
        "document.querySelector('[data-testid=\"problems\"] [data-code=\"cycle\"]')",
    )
    .await;
    let message = b
        .js("return document.querySelector('[data-testid=\"problems\"] [data-code=\"cycle\"]').innerText;", vec![])
        .await;
    assert!(
        message.as_str().unwrap_or("").contains("→"),
        "the cycle is walked: {message}"
    );
    b.screenshot("02-cycle").await;

    // A misspelt dependency: underlined, explained on hover with the fix, fixed in one click.
    b.set_editor(&FIXED.replace(
        "dependencies: [parse]\n  - key: quality",
        "dependencies: [prase]\n  - key: quality",
    ))
    .await;
    b.until(
        "the squiggle",
        20,
        "document.querySelector('.cm-lintRange-error')",
    )
    .await;
    b.hover(".cm-lintRange-error").await;
    b.until(
        "the problem's tooltip",
        20,
        "document.querySelector('.cm-tooltip-lint .cm-diagnosticAction')",
    )
    .await;
    let tip = b
        .js(
            "return document.querySelector('.cm-tooltip-lint').innerText;",
            vec![],
        )
        .await;
    assert!(
        tip.as_str().unwrap_or("").contains("did you mean `parse`"),
        "{tip}"
    );
    b.screenshot("02b-squiggle-and-fix").await;
    b.click(".cm-tooltip-lint .cm-diagnosticAction").await;
    b.until("the fix applied", 20, "document.querySelector('[data-testid=\"editor\"]').axEditor.text().includes('dependencies: [parse]\\n  - key: quality')").await;

    // Fixed: no problem left, and the graph shows every step.
    b.set_editor(FIXED).await;
    b.until(
        "no cycle",
        20,
        "!document.querySelector('[data-testid=\"problems\"] [data-code=\"cycle\"]')",
    )
    .await;
    for k in KEYS {
        b.wait_for(&format!("{} [data-step=\"{k}\"]", testid("graph")), 20)
            .await;
    }
    assert_eq!(b.node_states().await.len(), 4);
    b.screenshot("03-graph").await;

    // Clicking a node opens its form, which shows what the text says.
    b.click(&format!("{} [data-step=\"audit\"]", testid("graph")))
        .await;
    b.wait_for(&testid("step-form"), 20).await;
    b.until(
        "the form of the clicked step",
        10,
        "document.querySelector('[data-testid=\"field-key\"]').value === 'audit' && \
         document.querySelector('[data-testid=\"field-dependencies\"]').innerText.includes('parse')",
    )
    .await;
    b.screenshot("03b-step-form").await;

    // An edit through the form is undone like typing.
    b.js(
        "const i = document.querySelector('[data-testid=\"field-agent\"]'); i.value = 'auditor'; \
         i.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![],
    )
    .await;
    b.until("the form's edit in the text", 20, "document.querySelector('[data-testid=\"editor\"]').axEditor.text().includes('agent: auditor')").await;
    b.screenshot("03c-form-edit").await;
    b.click(&testid("undo")).await;
    b.until("the form's edit undone", 20, "!document.querySelector('[data-testid=\"editor\"]').axEditor.text().includes('agent: auditor') && document.querySelector('[data-testid=\"field-agent\"]').value === 'security'").await;
    b.screenshot("03d-undone").await;

    // Completion inside a placeholder, typed with real keys: upstream steps only.
    b.js(
        "const e = document.querySelector('[data-testid=\"editor\"]').axEditor; \
         const t = e.text(); const at = t.indexOf('Sum up ') + 'Sum up '.length; e.select(at, at);",
        vec![],
    )
    .await;
    let content = b.wait_for(".cm-content", 20).await;
    content.send_keys("{{au").await.expect("typing");
    b.until(
        "the completion list",
        20,
        "document.querySelector('.cm-tooltip-autocomplete [role=\"option\"]')",
    )
    .await;
    let options = b
        .js("return [...document.querySelectorAll('.cm-tooltip-autocomplete [role=\"option\"]')].map(o => o.innerText);", vec![])
        .await;
    assert!(options.to_string().contains("audit.result"), "{options}");
    b.screenshot("03e-completion").await;
    content.send_keys("\u{E007}").await.expect("Enter");
    b.until("the completion applied", 20, "document.querySelector('[data-testid=\"editor\"]').axEditor.text().includes('Sum up {{audit.result}}{{audit.result}}')").await;
    b.set_editor(FIXED).await;

    // Saved, and still there after a reload.
    b.click(&testid("save")).await;
    let name = b
        .js(
            "return document.querySelector('[data-testid=\"doc-name\"]').innerText;",
            vec![],
        )
        .await;
    let name = name.as_str().unwrap_or("").trim().to_owned();
    assert!(!name.is_empty());
    b.client.refresh().await.expect("reload");
    b.wait_for(&testid("editor"), 60).await;
    b.click(&testid("tab-documents")).await;
    b.until(
        "the saved draft",
        20,
        &format!("document.querySelector('[data-testid=\"drafts\"] [data-name=\"{name}\"]')"),
    )
    .await;
    b.wait_for(&format!("{} .cm-content", testid("editor")), 60)
        .await;
    let text = b.editor_text().await;
    assert!(
        text.contains("key: quality"),
        "the draft is open again after the reload"
    );
    b.screenshot("04-drafts").await;

    // Run on the server: the graph follows it live until every step completed.
    b.until(
        "the server to be detected",
        30,
        "!document.querySelector('[data-testid=\"server-banner\"]')",
    )
    .await;
    b.click(&testid("run-server")).await;
    b.until(
        "a server step running",
        30,
        "document.querySelector('[data-testid=\"graph\"] [data-state=\"running\"]')",
    )
    .await;
    b.screenshot("05-server-run").await;
    b.until(
        "every step completed on the server",
        60,
        &all_completed_js(),
    )
    .await;
    b.screenshot("06-server-done").await;
    let list: serde_json::Value = reqwest::get(format!("{}/api/executions", server.url))
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list[0]["state"], "completed", "{list}");
    // The run panel lists every checkpoint, the final one (written after the last
    // `execution` event) included, and Resume is off for a completed run.
    let id = list[0]["id"].as_str().expect("execution id").to_owned();
    let cps: serde_json::Value =
        reqwest::get(format!("{}/api/executions/{id}/checkpoints", server.url))
            .await
            .expect("checkpoints")
            .json()
            .await
            .expect("json");
    let n = cps.as_array().expect("a list of checkpoints").len();
    assert!(n > 0, "{cps}");
    b.click(&testid("tab-run")).await;
    b.until(
        &format!("the page to list all {n} checkpoints"),
        30,
        &format!("document.querySelectorAll('[data-testid=\"checkpoints\"] li').length === {n}"),
    )
    .await;
    b.until(
        "Resume to be disabled, with the reason",
        10,
        "(() => { const r = document.querySelector('[data-testid=\"resume\"]'); \
         return r.disabled && r.title.includes('completed'); })()",
    )
    .await;
    b.screenshot("06b-server-checkpoints").await;

    // One click on a node: the step's rendered prompt, output, tokens and attempts.
    b.click(&format!("{} [data-step=\"audit\"]", testid("graph")))
        .await;
    b.until(
        "the step's output",
        20,
        "document.querySelector('[data-testid=\"step-output\"]')",
    )
    .await;
    let prompt = b
        .js(
            "return document.querySelector('[data-testid=\"step-prompt\"]').innerText;",
            vec![],
        )
        .await;
    assert!(
        prompt.as_str().unwrap_or("").starts_with("Audit ")
            && !prompt.as_str().unwrap_or("").contains("{{"),
        "the rendered prompt: {prompt}"
    );
    b.until(
        "the attempts",
        20,
        "document.querySelectorAll('[data-testid=\"step-attempts\"] tbody tr').length >= 1",
    )
    .await;
    b.screenshot("06c-step-output").await;

    // Run in the browser, with a latency long enough to reload in the middle.
    set_latency(&b, 1500).await;
    b.click(&testid("run-local")).await;
    b.until("the local run to start", 30, "document.querySelector('[data-testid=\"graph\"] [data-step=\"parse\"][data-state=\"running\"]')").await;
    b.until("the first local step completed", 30, "document.querySelector('[data-testid=\"graph\"] [data-step=\"parse\"][data-state=\"completed\"]')").await;
    b.until(
        "a later local step running",
        30,
        "document.querySelector('[data-testid=\"graph\"] [data-state=\"running\"]')",
    )
    .await;
    b.screenshot("07-local-run").await;
    b.client.refresh().await.expect("reload mid-run");
    b.wait_for(&testid("resume-offer"), 60).await;
    b.screenshot("08-resume-offer").await;
    b.click(&testid("resume-offer-resume")).await;
    b.until(
        "every step completed in the browser",
        60,
        &all_completed_js(),
    )
    .await;
    let states = b.node_states().await;
    assert!(states.iter().all(|(_, s)| s == "completed"), "{states:?}");
    b.screenshot("09-local-done").await;

    // The document's runs (the server's and the browser's) compared step by step.
    b.click(&testid("tab-run")).await;
    b.until(
        "both runs listed",
        30,
        "document.querySelectorAll('[data-testid=\"runs\"] li').length >= 2",
    )
    .await;
    b.js(
        "document.querySelectorAll('[data-testid=\"compare-pick\"]').forEach((c, i) => { if (i < 2) c.click(); });",
        vec![],
    )
    .await;
    b.click(&testid("compare")).await;
    b.until(
        "the comparison",
        30,
        "document.querySelector('[data-testid=\"comparison-table\"] tr[data-step=\"aggregate\"]')",
    )
    .await;
    b.screenshot("10-comparison").await;
    let violations = b.axe().await;
    assert!(
        violations.is_empty(),
        "axe on the comparison:\n{}",
        violations.join("\n")
    );
    b.click(&testid("close-comparison")).await;

    // Dark mode follows the system setting.
    b.color_scheme("dark").await;
    b.until(
        "dark colours",
        10,
        "getComputedStyle(document.body).backgroundColor !== 'rgb(255, 255, 255)'",
    )
    .await;
    b.screenshot("11-dark").await;
    let violations = b.axe().await;
    assert!(
        violations.is_empty(),
        "axe in dark mode:\n{}",
        violations.join("\n")
    );
    b.color_scheme("light").await;

    approve_in_the_page(&b, &server.url).await;
    let _ = b.client.clone().close().await;
}

/// A server run waits at an approval; the run panel shows the request, and
/// Approve (with a comment) lets it finish.
async fn approve_in_the_page(b: &Browser, url: &str) {
    b.set_editor(APPROVAL).await;
    b.until(
        "the approval's own shape",
        20,
        "document.querySelector('[data-testid=\"graph\"] .node.approval[data-step=\"sign-off\"]')",
    )
    .await;
    b.click(&testid("run-server")).await;
    b.until(
        "the approval waiting on the server",
        60,
        "document.querySelector('[data-testid=\"graph\"] [data-step=\"sign-off\"][data-state=\"waiting\"]') && \
         document.querySelector('[data-testid=\"run-state\"]').innerText === 'waiting'",
    )
    .await;
    b.click(&testid("tab-run")).await;
    b.click(&format!("{} [data-step=\"sign-off\"]", testid("graph")))
        .await;
    b.until(
        "the request with Approve and Reject",
        30,
        "document.querySelector('[data-testid=\"decision-request\"]') && \
         document.querySelector('[data-testid=\"decision-request\"]').innerText.startsWith('Ship this? ') && \
         document.querySelector('[data-testid=\"reject\"]')",
    )
    .await;
    b.screenshot("12-approval").await;
    b.js(
        "const t = document.querySelector('[data-testid=\"decision-comment\"]'); t.value = 'approved in the page'; \
         t.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![],
    )
    .await;
    b.click(&testid("approve")).await;
    b.until(
        "the approved run completed",
        60,
        "document.querySelector('[data-testid=\"graph\"] [data-step=\"publish\"][data-state=\"completed\"]')",
    )
    .await;
    let list: serde_json::Value = reqwest::get(format!("{url}/api/executions"))
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let ship = list
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|x| x["workflow"] == "e2e-ship" || x["workflow"]["name"] == "e2e-ship")
        })
        .cloned()
        .unwrap_or_default();
    let id = ship["id"]
        .as_str()
        .expect("the approval's execution")
        .to_owned();
    let e: serde_json::Value = reqwest::get(format!("{url}/api/executions/{id}"))
        .await
        .expect("execution")
        .json()
        .await
        .expect("json");
    let sign_off = e["steps"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["key"] == "sign-off"))
        .cloned()
        .unwrap_or_default();
    assert!(
        sign_off["output"]
            .as_str()
            .is_some_and(|o| o.contains("approved in the page")),
        "{e}"
    );
    b.screenshot("13-approved").await;
}

/// Checkpoints move both ways: a dry run paused mid-way in the page continues
/// on `ax serve`, and a server run paused mid-way continues in the page; in
/// both, the steps completed before the move keep their output and attempt
/// count and are not called again.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the built web app and chromedriver: run `cargo xtask test e2e`"]
async fn checkpoints_move_between_browser_and_server() {
    let server = serve(1500).await;
    let b = browser().await;
    b.client.goto(&server.url).await.expect("load the page");
    b.wait_for(&format!("{} .cm-content", testid("editor")), 60)
        .await;
    capture_downloads(&b).await;
    b.set_editor(FIXED).await;
    browser_to_server(&b, &server.url).await;
    server_to_browser(&b, &server.url).await;
    let _ = b.client.clone().close().await;
}

/// Keep every `Blob` the page turns into a download URL, so that the test can
/// read a downloaded file (the page's "Export checkpoint").
async fn capture_downloads(b: &Browser) {
    b.js(
        "window.axDownloads = []; const create = URL.createObjectURL; \
         URL.createObjectURL = (blob) => { window.axDownloads.push(blob); return create.call(URL, blob); };",
        vec![],
    )
    .await;
}

/// Click "Export checkpoint" and return the downloaded checkpoint file.
async fn export_from_page(b: &Browser) -> serde_json::Value {
    let before = b.js("return window.axDownloads.length;", vec![]).await;
    b.click(&testid("export-checkpoint")).await;
    b.until(
        "the checkpoint download",
        20,
        &format!("window.axDownloads.length > {before}"),
    )
    .await;
    let text = b
        .js(
            "return window.axDownloads[window.axDownloads.length - 1].text();",
            vec![],
        )
        .await;
    serde_json::from_str(text.as_str().expect("the file's text")).expect("a JSON checkpoint file")
}

/// The completed steps of a checkpoint file: key → (attempt, output text).
fn completed_steps(file: &serde_json::Value) -> BTreeMap<String, (u64, String)> {
    let steps = file["checkpoint"]["steps"]
        .as_object()
        .expect("the checkpoint's steps");
    steps
        .iter()
        .filter(|(_, s)| s["state"] == "completed")
        .map(|(k, s)| {
            let hash = s["output"]["hash"].as_str().expect("an output reference");
            let text = file["outputs"][hash].as_str().expect("the output's text");
            (
                k.clone(),
                (s["attempt"].as_u64().expect("attempt"), text.to_owned()),
            )
        })
        .collect()
}

async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn post_json(url: &str, body: serde_json::Value) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    assert!(status.is_success(), "POST {url}: {status} {v}");
    v
}

/// Poll the execution until `done` holds for it.
async fn wait_execution(
    url: &str,
    id: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let e = get_json(&format!("{url}/api/executions/{id}")).await;
        if done(&e) {
            return e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn step<'a>(e: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    e["steps"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["key"] == key))
        .unwrap_or_else(|| panic!("no step {key} in {e}"))
}

/// A dry run paused after its first step, exported from the page, imported
/// into the server with `?resume=true`: the server completes it and calls
/// no step that the browser completed.
async fn browser_to_server(b: &Browser, url: &str) {
    set_latency(b, 3000).await;
    b.click(&testid("run-local")).await;
    b.until("the first dry-run step completed", 60, "document.querySelector('[data-testid=\"graph\"] [data-step=\"parse\"][data-state=\"completed\"]')").await;
    b.click(&testid("pause")).await;
    b.until(
        "the dry run paused with nothing running",
        60,
        "document.querySelector('[data-testid=\"run-state\"]').innerText === 'paused' && \
         !document.querySelector('[data-testid=\"graph\"] [data-state=\"running\"]')",
    )
    .await;
    let file = export_from_page(b).await;
    let done = completed_steps(&file);
    assert!(
        done.contains_key("parse") && !done.contains_key("aggregate"),
        "the dry run should stop mid-way: {done:?}"
    );
    let e = post_json(&format!("{url}/api/checkpoints/import?resume=true"), file).await;
    let id = e["id"].as_str().expect("the imported execution's id");
    let e = wait_execution(url, id, "the imported run to complete", |e| {
        e["state"] == "completed"
    })
    .await;
    for (key, (attempt, output)) in &done {
        let s = step(&e, key);
        assert_eq!(s["output"].as_str(), Some(output.as_str()), "{key}: {e}");
        assert_eq!(s["attempts"].as_u64(), Some(*attempt), "{key}: {e}");
    }
    let aggregate = step(&e, "aggregate");
    assert_eq!(aggregate["state"], "completed", "{e}");
    let events = get_json(&format!("{url}/api/executions/{id}/events")).await;
    let called: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|ev| ev["type"] == "step" && ev["state"] == "running")
        .filter_map(|ev| ev["step"].as_str())
        .collect();
    assert!(called.contains(&"aggregate"), "{events}");
    for key in done.keys() {
        assert!(
            !called.contains(&key.as_str()),
            "{key} ran again on the server: {events}"
        );
    }
}

/// A server run paused after its first step, exported from the server,
/// imported into the page and resumed there as a dry run: it completes, and
/// the steps the server completed keep their output and attempts.
async fn server_to_browser(b: &Browser, url: &str) {
    let e = post_json(
        &format!("{url}/api/executions"),
        serde_json::json!({ "source": FIXED }),
    )
    .await;
    let id = e["id"].as_str().expect("the execution's id").to_owned();
    wait_execution(url, &id, "the server's first step", |e| {
        step(e, "parse")["state"] == "completed"
    })
    .await;
    post_json(
        &format!("{url}/api/executions/{id}/pause"),
        serde_json::json!({ "now": false }),
    )
    .await;
    wait_execution(url, &id, "the server run paused", |e| {
        e["state"] == "paused"
    })
    .await;
    let cps = get_json(&format!("{url}/api/executions/{id}/checkpoints")).await;
    let cp = cps[0]["id"].as_str().expect("the newest checkpoint");
    let text = reqwest::get(format!("{url}/api/checkpoints/{cp}/export"))
        .await
        .expect("export")
        .text()
        .await
        .expect("the file");
    let file: serde_json::Value = serde_json::from_str(&text).expect("a JSON checkpoint file");
    let done = completed_steps(&file);
    assert!(
        done.contains_key("parse") && !done.contains_key("aggregate"),
        "the server run should stop mid-way: {done:?}"
    );

    set_latency(b, 300).await;
    b.wait_for(&testid("import-checkpoint"), 20).await;
    b.js(
        "const input = document.querySelector('[data-testid=\"import-checkpoint\"]').parentElement.querySelector('input[type=file]'); \
         const t = new DataTransfer(); t.items.add(new File([arguments[0]], 'server-checkpoint.json', {type: 'application/json'})); \
         input.files = t.files; input.dispatchEvent(new Event('change', {bubbles: true}));",
        vec![serde_json::json!(text)],
    )
    .await;
    b.until(
        "the imported run ready to resume in the page",
        30,
        "[...document.querySelectorAll('[data-testid=\"notice\"]')].some(n => n.innerText.includes('Imported the checkpoint')) && \
         !document.querySelector('[data-testid=\"resume\"]').disabled && \
         document.querySelector('[data-testid=\"graph\"] [data-step=\"parse\"][data-state=\"completed\"]')",
    )
    .await;
    b.click(&testid("resume")).await;
    b.until(
        "the imported run completed in the page",
        60,
        &format!(
            "document.querySelector('[data-testid=\"run-state\"]').innerText === 'completed' && {}",
            all_completed_js()
        ),
    )
    .await;
    b.screenshot("14-server-checkpoint-done-in-browser").await;
    let after = completed_steps(&export_from_page(b).await);
    for (key, v) in &done {
        assert_eq!(after.get(key), Some(v), "{key} changed in the browser");
    }
    assert!(after.contains_key("aggregate"), "{after:?}");
}

//! The designer end to end: `ax serve` on a free port, driven through headless
//! Chromium by chromedriver, as a person would use it.
//!
//! Needs the built web app and chromedriver: `cargo xtask test e2e` builds and
//! runs it (`cargo test -p ax-e2e -- --ignored` if they are already there).

use ax_e2e::{Browser, browser, serve, testid};

const CYCLE: &str = "name: e2e-review\nsteps:\n  - key: parse\n    agent: backend\n    prompt: Parse the change\n    dependencies: [aggregate]\n  - key: audit\n    agent: security\n    prompt: \"Audit {{parse.result}}\"\n    dependencies: [parse]\n  - key: aggregate\n    agent: product\n    prompt: \"Sum up {{audit.result}}\"\n    dependencies: [audit]\n";

const FIXED: &str = "name: e2e-review\nsteps:\n  - key: parse\n    agent: backend\n    prompt: Parse the change\n  - key: audit\n    agent: security\n    prompt: \"Audit {{parse.result}}\"\n    dependencies: [parse]\n  - key: quality\n    agent: quality\n    prompt: \"Check {{parse.result}}\"\n    dependencies: [parse]\n  - key: aggregate\n    agent: product\n    prompt: \"Sum up {{audit.result}} and {{quality.result}}\"\n    dependencies: [audit, quality]\n";

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
    b.wait_for(&testid("editor"), 60).await;
    b.screenshot("01-start").await;

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
    let text = b
        .js(
            "return document.querySelector('[data-testid=\"editor\"]').value;",
            vec![],
        )
        .await;
    assert!(
        text.as_str().unwrap_or("").contains("key: quality"),
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

    let _ = b.client.clone().close().await;
}

//! The JavaScript-facing exports, in the browser (`wasm-api` feature).
#![cfg(target_arch = "wasm32")]

use ax_core::wasm::{Executor, plan, render, validate, validate_with};
use serde_json::Value;
use wasm_bindgen_test::wasm_bindgen_test as test;
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const WF: &str = "name: t\ninputs:\n  who: {default: world}\nsteps:\n  - {key: a, agent: x, prompt: \"hello {{who}}\"}\n  - {key: b, agent: x, prompt: \"{{a.result}}!\", dependencies: [a]}\n";

#[test]
fn validate_returns_the_cli_json() {
    let r: Value = serde_json::from_str(&validate(WF, Some("t.yaml".into()))).expect("json");
    assert_eq!(r["valid"], true);
    assert_eq!(r["order"], serde_json::json!(["a", "b"]));
    let bad: Value = serde_json::from_str(&validate("name: x\nsteps: []\n", None)).expect("json");
    assert_eq!(bad["errors"][0]["code"], "empty-workflow");
}

#[test]
fn plan_and_render() {
    let p: Value = serde_json::from_str(&plan(WF, None).expect("valid")).expect("json");
    assert_eq!(p["levels"], serde_json::json!([["a"], ["b"]]));
    assert!(plan("name: x\nsteps: []\n", None).is_err());
    let out = render(
        "{{x.result}} and {{n}}",
        r#"{"inputs": {"n": 2}, "outputs": {"x": "hi"}}"#,
    )
    .expect("renders");
    assert_eq!(out, "hi and 2");
    assert!(render("{{missing}}", "{}").is_err());
}

#[test]
fn executor_steps_through_a_run_and_restores() {
    let mut e = Executor::new(WF, "{}", 7.0).expect("executor");
    let actions: Value =
        serde_json::from_str(&e.handle(r#"{"type":"start"}"#, 1000.0).expect("start"))
            .expect("json");
    let start = actions
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "startStep"))
        .cloned()
        .expect("a start");
    assert_eq!(start["prompt"], "hello world");
    e.handle(
        r#"{"type":"stepSucceeded","key":"a","attempt":1,"output":"hi"}"#,
        1010.0,
    )
    .expect("answer");
    let cp = e.snapshot();
    let outputs = e.outputs();
    let mut r = Executor::restore(WF, &cp, &outputs).expect("restore");
    let actions: Value = serde_json::from_str(
        &r.handle(
            r#"{"type":"stepSucceeded","key":"b","attempt":1,"output":"done"}"#,
            1020.0,
        )
        .expect("b"),
    )
    .expect("json");
    assert!(
        actions
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["type"] == "finished"))
    );
    assert_eq!(r.state(), "completed");
}

#[test]
fn validate_with_loads_sub_workflows_from_the_documents() {
    let parent = "name: p\nsteps:\n  - key: run\n    type: workflow\n    workflow: ./child.yaml\n    inputs: {txt: hi}\n";
    let docs = r#"{"flows/child.yaml": "name: c\ninputs:\n  text:\nsteps:\n  - {key: a, agent: w, prompt: \"{{text}}\"}\n"}"#;
    let r: Value = serde_json::from_str(
        &validate_with(parent, Some("flows/p.yaml".into()), docs).expect("documents parse"),
    )
    .expect("json");
    assert_eq!(r["valid"], false);
    let codes: Vec<&str> = r["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|p| p["code"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(codes, ["missing-input", "unknown-input"]);
    assert_eq!(r["errors"][1]["line"], 6);
    assert!(validate_with(parent, None, "not json").is_err());
}

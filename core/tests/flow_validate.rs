//! Validation of approval steps, `forEach` and sub-workflows: every problem with
//! its code and the parent's line and column.

use ax_core::report::{Code, Problem, Report};
use ax_core::subworkflow::{DocumentLoader, LoadedWorkflow, MAX_NESTING, analyze_tree};
use ax_core::validate::validate_workflow;
use ax_core::{ForEach, Options, Step, StepType, Workflow, analyze};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn report(text: &str) -> Report {
    analyze(text, &Options::for_file("w.yaml")).report
}

/// `line:col code message` of every problem, errors then warnings.
fn lines(r: &Report) -> Vec<String> {
    r.errors
        .iter()
        .chain(&r.warnings)
        .map(|p: &Problem| {
            format!(
                "{}:{} {} {}",
                p.line.unwrap_or(0),
                p.column.unwrap_or(0),
                p.code,
                p.message
            )
        })
        .collect()
}

fn has(r: &Report, needle: &str) {
    let all = lines(r);
    assert!(
        all.iter().any(|l| l.contains(needle)),
        "expected a problem containing {needle:?}, got:\n{}",
        all.join("\n")
    );
}

#[test]
fn step_types_and_their_fields() {
    let r = report(
        "name: x\nsteps:\n  - key: a\n    type: aproval\n    prompt: ok?\n  - key: b\n    type: approval\n    agent: lead\n    prompt: ship?\n    retryPolicy: {maxRetries: 1}\n  - key: c\n    type: approval\n  - key: d\n    type: workflow\n  - key: e\n    agent: w\n    prompt: p\n    workflow: ./x.yaml\n    onTimeout: approve\n    maxItems: 3\n",
    );
    assert!(!r.valid);
    has(
        &r,
        "4:11 invalid-value unknown step type `aproval`; did you mean `approval`? types: prompt, approval, workflow",
    );
    has(
        &r,
        "8:5 invalid-value `agent` does not apply to an approval step",
    );
    has(&r, "10:5 invalid-value `retryPolicy` does not apply");
    has(
        &r,
        "11:10 schema the step has no `prompt`; add `prompt: \"…\" (what the approver reads)`",
    );
    has(
        &r,
        "13:10 schema the step has no `workflow`; add `workflow: ./child.yaml` (a `type: workflow` step needs it)",
    );
    has(
        &r,
        "18:5 invalid-value `workflow` belongs to `type: workflow` steps",
    );
    has(
        &r,
        "19:5 invalid-value `onTimeout` belongs to `type: approval` steps",
    );
    has(
        &r,
        "20:5 invalid-value `maxItems` only applies to a step with `forEach`",
    );
}

/// A mistyped `type` is one problem: what the step would need is not guessed,
/// and no child is loaded for a step that is not `type: workflow`.
#[test]
fn a_mistyped_type_is_one_problem() {
    let text = "name: x\nsteps:\n  - key: a\n    type: workfow\n    workflow: ./c.yaml\n  - key: b\n    type: aproval\n    prompt: ok?\n";
    let r = tree("x.yaml", text, &[]);
    assert_eq!(
        lines(&r),
        [
            "4:11 invalid-value unknown step type `workfow`; did you mean `workflow`? types: prompt, approval, workflow (`prompt` when absent)",
            "7:11 invalid-value unknown step type `aproval`; did you mean `approval`? types: prompt, approval, workflow (`prompt` when absent)",
        ]
    );
}

#[test]
fn approval_timeouts() {
    let r = report(
        "name: x\nsteps:\n  - key: a\n    type: approval\n    prompt: ok?\n    onTimeout: approve\n  - key: b\n    type: approval\n    prompt: ok?\n    timeoutMs: 1000\n    onTimeout: approve\n    outputSchema: {type: object, required: [ticket]}\n  - key: c\n    type: approval\n    prompt: ok?\n    timeoutMs: 1000\n    onTimeout: maybe\n",
    );
    has(&r, "6:5 invalid-value `onTimeout` needs `timeoutMs`");
    has(
        &r,
        "11:16 invalid-value `onTimeout: approve` approves without data, but `outputSchema` does not accept null",
    );
    has(
        &r,
        "17:16 invalid-value `onTimeout` is `reject` or `approve`, not `maybe`",
    );
    // A schema that accepts null is fine with onTimeout: approve.
    let ok = report(
        "name: x\nsteps:\n  - key: b\n    type: approval\n    prompt: ok?\n    timeoutMs: 1000\n    onTimeout: approve\n    outputSchema: {type: [object, \"null\"]}\n",
    );
    assert!(ok.valid, "{:?}", lines(&ok));
}

#[test]
fn item_and_index_only_in_for_each_steps() {
    let r = report(
        "name: x\ninputs:\n  files: {default: [a, b]}\nsteps:\n  - key: a\n    agent: w\n    prompt: \"Review {{item.path}} ({{index}})\"\n  - key: b\n    agent: w\n    forEach: \"{{files}}\"\n    when: '{{item}} != \"x\"'\n    prompt: \"Review {{item}} ({{index}})\"\noutputs:\n  first: \"{{item}}\"\n",
    );
    has(
        &r,
        "7:21 item-outside-foreach `{{item.path}}` cannot be used here: it is only defined in a step with `forEach`; add `forEach` to `a`",
    );
    has(
        &r,
        "7:36 item-outside-foreach `{{index}}` cannot be used here",
    );
    has(
        &r,
        "11:12 item-outside-foreach `{{item}}` cannot be used here: the condition decides about the whole step",
    );
    has(
        &r,
        "14:11 item-outside-foreach `{{item}}` cannot be used in `outputs`",
    );
    assert_eq!(
        r.errors
            .iter()
            .filter(|p| p.code == Code::ItemOutsideForeach)
            .count(),
        4,
        "{:?}",
        lines(&r)
    );
    // An input named `index` keeps working outside forEach steps (files from
    // before forEach existed), but is ambiguous inside one.
    let r = report(
        "name: x\ninputs:\n  index: {default: 3}\n  files: {default: [a]}\nsteps:\n  - key: a\n    agent: w\n    prompt: \"Page {{index}}\"\n  - key: b\n    agent: w\n    forEach: \"{{files}}\"\n    prompt: \"{{item}} at {{index}}\"\n",
    );
    assert_eq!(r.errors.len(), 1, "{:?}", lines(&r));
    has(
        &r,
        "12:26 invalid-value `{{index}}` is ambiguous: in a forEach step `index` is the item's position, but an input has that name too; rename the input",
    );
}

#[test]
fn for_each_sources_are_checked_like_prompts() {
    let r = report(
        "name: x\nsteps:\n  - key: files\n    agent: w\n    prompt: p\n  - key: a\n    agent: w\n    forEach: \"{{files.result.list}}\"\n    prompt: \"{{item}}\"\n  - key: b\n    agent: w\n    forEach: \"files: {{files.result.list}}\"\n    prompt: \"{{item}}\"\n    dependencies: [files]\n  - key: c\n    agent: w\n    forEach: [\"{{filez.result}}\", plain]\n    prompt: \"{{item}}\"\n  - key: d\n    agent: w\n    forEach: 3\n    prompt: \"{{item}}\"\n    maxConcurrency: 0\n",
    );
    has(
        &r,
        "8:15 placeholder-not-upstream `{{files.result.list}}` uses the result of `files`, which is not upstream of `a`",
    );
    has(
        &r,
        "12:14 invalid-value `forEach` must be one placeholder that renders a list",
    );
    has(
        &r,
        "17:16 unknown-placeholder `{{filez.result}}` refers to `filez`, which is no step and no declared input; did you mean `{{files.result}}`?",
    );
    has(
        &r,
        "21:14 schema `forEach` takes one placeholder that renders a list",
    );
    has(
        &r,
        "23:21 invalid-value `maxConcurrency` must be at least 1",
    );
    // A `forEach` that is written but wrong does not also make `{{item}}` and
    // `maxConcurrency` errors.
    assert_eq!(r.errors.len(), 5, "{:?}", lines(&r));
}

#[test]
fn outputs_refer_to_steps_and_inputs() {
    let r = report(
        "name: x\nsteps:\n  - {key: draft, agent: w, prompt: p}\noutputs:\n  text: \"{{draft.result}}\"\n  bad: \"{{drat.result}}\"\n  topic: \"{{topic}}\"\n  \"a b\": \"{{draft}}\"\n",
    );
    has(
        &r,
        "6:9 unknown-placeholder `{{drat.result}}` in output `bad` refers to `drat`",
    );
    has(
        &r,
        "7:11 undeclared-input `{{topic}}` uses input `topic`, which `inputs` does not declare",
    );
    has(
        &r,
        "8:3 invalid-value output name `a b` may only hold letters",
    );
    has(
        &r,
        "8:11 invalid-value in output `a b`: `{{draft}}` refers to step `draft`; write `{{draft.result}}`",
    );
}

#[test]
fn workflows_that_came_as_data_are_checked_too() {
    let wf = Workflow {
        name: "x".into(),
        description: None,
        version: "1".into(),
        steps: vec![
            Step {
                key: "a".into(),
                kind: StepType::Approval,
                agent: "lead".into(),
                prompt: "ok?".into(),
                ..Step::default()
            },
            Step {
                key: "b".into(),
                kind: StepType::Workflow,
                ..Step::default()
            },
            Step {
                key: "c".into(),
                agent: "w".into(),
                prompt: "{{item}}".into(),
                for_each: Some(ForEach::List(vec![serde_json::json!(1)])),
                ..Step::default()
            },
        ],
        config: Default::default(),
        tags: vec![],
        author: None,
        inputs: Default::default(),
        outputs: Default::default(),
    };
    let r = validate_workflow(wf).expect_err("invalid");
    let all = lines(&r);
    assert!(
        all.iter()
            .any(|l| l.contains("`agent` does not apply to an approval step")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|l| l.contains("schema the step has no `workflow`")),
        "{all:?}"
    );
    assert_eq!(all.len(), 2, "{all:?}");
}

// ---- Sub-workflows ----

fn docs(files: &[(&str, &str)]) -> DocumentLoader {
    DocumentLoader::new(
        files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned())),
    )
}

fn tree(name: &str, text: &str, files: &[(&str, &str)]) -> Report {
    analyze_tree(text, &Options::for_file(name), name, &mut docs(files)).report
}

const CHILD: &str = "name: child\ninputs:\n  text: {description: What to translate}\n  locales: {default: [de-DE]}\nsteps:\n  - {key: t, agent: w, prompt: \"{{text}} {{locales}} {{tone}}\"}\n";

#[test]
fn children_are_loaded_and_their_inputs_checked() {
    let parent = "name: p\nsteps:\n  - key: draft\n    agent: w\n    prompt: p\n  - key: localize\n    type: workflow\n    workflow: ./child.yaml\n    dependencies: [draft]\n    inputs:\n      txt: \"{{draft.result}}\"\n      locales: [de-DE, ja-JP]\n  - key: gone\n    type: workflow\n    workflow: ./missing.yaml\n";
    let r = tree("flows/p.yaml", parent, &[("flows/child.yaml", CHILD)]);
    has(
        &r,
        "11:7 unknown-input `txt` is not an input of `flows/child.yaml`; did you mean `text`? it takes: locales, text, tone",
    );
    has(
        &r,
        "10:5 missing-input `flows/child.yaml` requires the input `text` (What to translate); give it under `inputs:`",
    );
    has(
        &r,
        "10:5 missing-input `flows/child.yaml` requires the input `tone`",
    );
    has(
        &r,
        "15:15 missing-workflow the workflow `./missing.yaml` cannot be loaded: there is no document `flows/missing.yaml`",
    );
    assert_eq!(r.errors.len(), 4, "{:?}", lines(&r));
    // Given right, the tree is valid and the plan knows the child.
    let fixed = parent
        .replace("txt:", "text:")
        .replace("      locales", "      tone: warm\n      locales")
        .replace(
            "  - key: gone\n    type: workflow\n    workflow: ./missing.yaml\n",
            "",
        );
    let mut loader = docs(&[("flows/child.yaml", CHILD)]);
    let a = analyze_tree(
        &fixed,
        &Options::for_file("p.yaml"),
        "flows/p.yaml",
        &mut loader,
    );
    assert!(a.report.valid, "{:?}", lines(&a.report));
    let plan = a.plan.expect("plan");
    let sub = plan.sub_workflow(1).expect("the child is loaded");
    assert_eq!(sub.id, "flows/child.yaml");
    assert_eq!(sub.plan.workflow.name, "child");
    assert!(plan.sub_workflow(0).is_none());
}

#[test]
fn problems_inside_a_child_point_at_the_parent() {
    let parent = "name: p\nsteps:\n  - key: run\n    type: workflow\n    workflow: c.yaml\n    inputs: {x: 1}\n";
    let child =
        "name: c\ninputs:\n  x:\nsteps:\n  - {key: a, agent: w, prompt: \"{{x}} {{b.result}}\"}\n";
    let r = tree("p.yaml", parent, &[("c.yaml", child)]);
    has(
        &r,
        "5:15 unknown-placeholder in `c.yaml` at 5:39: `{{b.result}}` refers to `b`",
    );
    // The child's code, at the parent's `workflow:`.
    assert!(
        r.errors.iter().all(|p| p.line == Some(5)),
        "{:?}",
        lines(&r)
    );
}

#[test]
fn cycles_across_files_name_the_files() {
    let a = "name: a\nsteps:\n  - key: to-b\n    type: workflow\n    workflow: b.yaml\n";
    let b = "name: b\nsteps:\n  - key: to-a\n    type: workflow\n    workflow: ./a.yaml\n";
    let r = tree("a.yaml", a, &[("a.yaml", a), ("b.yaml", b)]);
    has(
        &r,
        "5:15 cycle in `b.yaml` at 5:15: sub-workflow cycle: a.yaml → b.yaml → a.yaml",
    );
    // A workflow that runs itself.
    let me = "name: me\nsteps:\n  - key: again\n    type: workflow\n    workflow: me.yaml\n";
    let r = tree("me.yaml", me, &[("me.yaml", me)]);
    has(&r, "5:15 cycle sub-workflow cycle: me.yaml → me.yaml");
}

#[test]
fn nesting_deeper_than_eight_is_refused() {
    let level = |n: usize| {
        format!(
            "name: l{n}\nsteps:\n  - key: down\n    type: workflow\n    workflow: l{}.yaml\n",
            n + 1
        )
    };
    let leaf = |n: usize| format!("name: l{n}\nsteps:\n  - {{key: a, agent: w, prompt: p}}\n");
    // Depth 8 below the root: fine.
    let mut files: Vec<(String, String)> = (1..MAX_NESTING)
        .map(|n| (format!("l{n}.yaml"), level(n)))
        .collect();
    files.push((format!("l{MAX_NESTING}.yaml"), leaf(MAX_NESTING)));
    let mut loader = DocumentLoader::new(files.clone());
    let ok = analyze_tree(
        &level(0),
        &Options::for_file("l0.yaml"),
        "l0.yaml",
        &mut loader,
    );
    assert!(ok.report.valid, "{:?}", lines(&ok.report));
    // Depth 9: refused, at the root's step.
    files.pop();
    files.push((format!("l{MAX_NESTING}.yaml"), level(MAX_NESTING)));
    files.push((format!("l{}.yaml", MAX_NESTING + 1), leaf(MAX_NESTING + 1)));
    let mut loader = DocumentLoader::new(files);
    let r = analyze_tree(
        &level(0),
        &Options::for_file("l0.yaml"),
        "l0.yaml",
        &mut loader,
    )
    .report;
    assert!(!r.valid);
    assert!(
        r.errors
            .iter()
            .all(|p| p.line == Some(5) && p.column == Some(15)),
        "{:?}",
        lines(&r)
    );
    assert_eq!(
        lines(&r),
        [
            "5:15 too-large sub-workflows nest more than 8 levels deep below this workflow: l0.yaml → l1.yaml → l2.yaml → l3.yaml → l4.yaml → l5.yaml → l6.yaml → l7.yaml → l8.yaml → l9.yaml; run fewer levels of workflows inside each other"
        ]
    );
    // A much deeper chain is not searched to its end.
    let files: Vec<(String, String)> = (1..40).map(|n| (format!("l{n}.yaml"), level(n))).collect();
    let mut loader = DocumentLoader::new(files);
    let r = analyze_tree(
        &level(0),
        &Options::for_file("l0.yaml"),
        "l0.yaml",
        &mut loader,
    )
    .report;
    has(&r, "l9.yaml → …; run fewer levels");
    // The same child run directly is fine: depth counts from the workflow run.
    let files: Vec<(String, String)> = (2..=MAX_NESTING)
        .map(|n| (format!("l{n}.yaml"), level(n)))
        .chain(std::iter::once((
            format!("l{}.yaml", MAX_NESTING + 1),
            leaf(MAX_NESTING + 1),
        )))
        .collect();
    let mut loader = DocumentLoader::new(files);
    let ok = analyze_tree(
        &level(1),
        &Options::for_file("l1.yaml"),
        "l1.yaml",
        &mut loader,
    );
    assert!(ok.report.valid, "{:?}", lines(&ok.report));
}

#[test]
fn a_loader_can_be_a_closure() {
    let parent = "name: p\nsteps:\n  - key: run\n    type: workflow\n    workflow: summarize\n";
    let mut calls = Vec::new();
    let mut loader = |from: &str, reference: &str| {
        calls.push(format!("{from} -> {reference}"));
        if reference == "summarize" {
            Ok(LoadedWorkflow {
                id: "stored:summarize".into(),
                text: "name: summarize\nsteps:\n  - {key: a, agent: w, prompt: p}\n".into(),
                filename: None,
            })
        } else {
            Err(format!("no stored workflow `{reference}`"))
        }
    };
    let a = analyze_tree(
        parent,
        &Options::for_file("p.yaml"),
        "stored:p",
        &mut loader,
    );
    assert!(a.report.valid, "{:?}", lines(&a.report));
    assert_eq!(calls, ["stored:p -> summarize"]);
}

/// `model`, `temperature`, `maxTokens` and `system`: types, ranges and the
/// step types that take them, each reported at its line and column.
#[test]
fn step_model_settings_are_checked_with_positions() {
    let ok = "name: x\nsteps:\n  - key: a\n    agent: b\n    prompt: p\n    model: m-1\n    temperature: 1.5\n    maxTokens: 2e3\n    system: be brief\n";
    let a = analyze(ok, &Options::for_file("x.yaml"));
    assert!(a.report.valid, "{:?}", a.report.errors);
    let s = &a.workflow().expect("workflow").steps[0];
    assert_eq!(s.model.as_deref(), Some("m-1"));
    assert_eq!((s.temperature, s.max_tokens), (Some(1.5), Some(2000)));
    assert_eq!(s.system.as_deref(), Some("be brief"));

    let bad = "name: x\nsteps:\n  - key: a\n    agent: b\n    prompt: p\n    model: \" \"\n    temperature: 2.5\n    maxTokens: 0\n    system: [x]\n  - key: c\n    agent: b\n    prompt: p\n    temperature: warm\n    maxTokens: -1\n  - key: d\n    type: approval\n    prompt: ok?\n    model: m\n";
    let a = analyze(bad, &Options::for_file("x.yaml"));
    let got: Vec<String> = a
        .report
        .errors
        .iter()
        .map(|p| {
            format!(
                "{}:{} {} {}",
                p.line.unwrap_or(0),
                p.column.unwrap_or(0),
                p.code,
                p.message
            )
        })
        .collect();
    let all = got.join("\n");
    for want in [
        "6:12 invalid-value `model` is blank",
        "7:18 invalid-value `temperature` must be between 0 and 2, not 2.5",
        "8:16 invalid-value `maxTokens` must be at least 1",
        "9:13 schema `system` must be text, not a list",
        "13:18 schema `temperature` must be a number, not `warm`",
        "14:16 invalid-value `maxTokens` must be zero or more",
        "18:5 invalid-value `model` does not apply to an approval step",
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
    assert_eq!(got.len(), 7, "{all}");
}

/// A workflow that came as data (the designer's form, the API) gets the same
/// range checks.
#[test]
fn step_model_settings_of_a_workflow_as_data_are_checked() {
    let step = |key: &str| Step {
        key: key.into(),
        agent: "b".into(),
        prompt: "p".into(),
        ..Step::default()
    };
    let wf = Workflow {
        name: "x".into(),
        description: None,
        version: "1".into(),
        steps: vec![
            Step {
                temperature: Some(-0.1),
                max_tokens: Some(0),
                ..step("a")
            },
            Step {
                model: Some("m".into()),
                kind: StepType::Workflow,
                workflow: Some("./c.yaml".into()),
                agent: String::new(),
                prompt: String::new(),
                ..step("w")
            },
        ],
        config: Default::default(),
        tags: vec![],
        author: None,
        inputs: Default::default(),
        outputs: Default::default(),
    };
    let all = lines(&validate_workflow(wf).expect_err("invalid")).join("\n");
    assert!(
        all.contains("`temperature` must be between 0 and 2, not -0.1"),
        "{all}"
    );
    assert!(all.contains("`maxTokens` must be at least 1"), "{all}");
    assert!(
        all.contains("`model` does not apply to a `type: workflow` step"),
        "{all}"
    );
}

/// `config.budget`: `usd` zero or more, `tokens` a whole number, nothing else.
#[test]
fn budget_is_checked_with_positions() {
    let a = analyze(
        "name: x\nconfig:\n  budget: {usd: 2.5, tokens: 5e5}\nsteps: [{key: a, agent: b, prompt: p}]\n",
        &Options::for_file("x.yaml"),
    );
    assert!(a.report.valid, "{:?}", a.report.errors);
    let b = a
        .workflow()
        .expect("workflow")
        .config
        .budget
        .expect("budget");
    assert_eq!((b.usd, b.tokens), (Some(2.5), Some(500_000)));
    let r = report(
        "name: x\nconfig:\n  budget: {usd: -1, tokens: lots, eur: 3}\nsteps: [{key: a, agent: b, prompt: p}]\n",
    );
    let all = lines(&r).join("\n");
    assert!(
        all.contains("3:17 invalid-value `usd` must be zero or more, not -1"),
        "{all}"
    );
    assert!(
        all.contains("3:29 schema `tokens` must be a whole number of tokens, not `lots`"),
        "{all}"
    );
    assert!(
        all.contains("3:35 schema unknown field `eur` in budget"),
        "{all}"
    );
    let r = report("name: x\nconfig: {budget: {}}\nsteps: [{key: a, agent: b, prompt: p}]\n");
    assert!(lines(&r).join("\n").contains("`budget` is empty"), "{r:?}");
}

/// `cache` on a step and in `config`: true, false or `{ttlMs}`; a step's own
/// setting wins over the file's.
#[test]
fn cache_settings_load_and_are_checked() {
    let a = analyze(
        "name: x\nconfig: {cache: true}\nsteps:\n  - {key: a, agent: b, prompt: p}\n  - {key: c, agent: b, prompt: p, cache: false}\n  - {key: d, agent: b, prompt: p, cache: {ttlMs: 60000}}\n",
        &Options::for_file("x.yaml"),
    );
    assert!(a.report.valid, "{:?}", a.report.errors);
    let wf = a.workflow().expect("workflow");
    let uses: Vec<_> = wf.steps.iter().map(|s| s.cache_use(&wf.config)).collect();
    assert_eq!(
        uses,
        [
            Some(ax_core::CacheUse { ttl_ms: None }),
            None,
            Some(ax_core::CacheUse {
                ttl_ms: Some(60000)
            })
        ]
    );
    let r = report(
        "name: x\nsteps:\n  - {key: a, agent: b, prompt: p, cache: yes}\n  - {key: c, agent: b, prompt: p, cache: {ttlMs: 0}}\n  - {key: d, type: approval, prompt: p, cache: true}\n",
    );
    let all = lines(&r).join("\n");
    assert!(
        all.contains("3:42 schema `cache` is true, false or `{ttlMs: 3600000}`, not a string"),
        "{all}"
    );
    assert!(
        all.contains("4:50 invalid-value `ttlMs` must be at least 1 millisecond"),
        "{all}"
    );
    assert!(
        all.contains("5:41 invalid-value `cache` does not apply to an approval step"),
        "{all}"
    );
}

//! The workflows every measurement runs, as ax YAML. `bench/peer/peer_bench.py`
//! builds the same graphs in LangGraph: keep the shapes, keys and prompts in step.

use std::fmt::Write as _;

/// `n` steps in a line; step i renders the previous result into its prompt.
pub fn chain(n: usize) -> String {
    let mut s = format!("name: chain-{n}\nsteps:\n");
    for i in 0..n {
        if i == 0 {
            s.push_str("  - {key: s0, agent: worker, prompt: \"s0: start\"}\n");
        } else {
            let _ = writeln!(
                s,
                "  - {{key: s{i}, agent: worker, prompt: \"s{i}: next {{{{s{p}.result}}}}\", dependencies: [s{p}]}}",
                p = i - 1
            );
        }
    }
    s
}

/// `n` steps in a line whose prompts do not quote earlier results (so that the
/// echo provider's answers, which repeat the prompt, stay the same size).
pub fn chain_plain(n: usize) -> String {
    let mut s = format!("name: plain-chain-{n}\nsteps:\n");
    for i in 0..n {
        let deps = if i == 0 {
            String::new()
        } else {
            format!(", dependencies: [s{}]", i - 1)
        };
        let _ = writeln!(
            s,
            "  - {{key: s{i}, agent: worker, prompt: \"step {i} of {n}\"{deps}}}"
        );
    }
    s
}

/// 1 → `width` → 1: a root, `width` workers that all read it, and a join that
/// waits for every worker. `parallelism` is the width, so all workers may run at
/// once (as in one LangGraph superstep).
pub fn fan(width: usize) -> String {
    let mut s = format!(
        "name: fan-{width}\nconfig: {{parallelism: {width}}}\nsteps:\n  - {{key: root, agent: worker, prompt: \"root: start\"}}\n"
    );
    let mut deps = Vec::with_capacity(width);
    for i in 0..width {
        let _ = writeln!(
            s,
            "  - {{key: w{i}, agent: worker, prompt: \"w{i}: {{{{root.result}}}}\", dependencies: [root]}}"
        );
        deps.push(format!("w{i}"));
    }
    let _ = writeln!(
        s,
        "  - {{key: join, agent: worker, prompt: \"join: {width} results\", dependencies: [{}]}}",
        deps.join(", ")
    );
    s
}

/// The seed's code-review workflow, exactly as in `examples/code-review.yaml`.
pub fn code_review() -> String {
    std::fs::read_to_string(crate::util::repo_root().join("examples/code-review.yaml"))
        .unwrap_or_else(|_| CODE_REVIEW.to_owned())
}

/// A copy, for running from outside the repository.
const CODE_REVIEW: &str = r#"name: code-review-workflow
description: Multi-agent code review with security and quality checks
version: 1.0.0
inputs:
  git_diff:
    description: The unified diff to review.
steps:
  - key: parse-changes
    agent: backend
    prompt: "Parse git diff and extract changed files: {{git_diff}}"
  - key: security-audit
    agent: security
    prompt: "Audit these changes for vulnerabilities: {{parse-changes.result}}"
    dependencies: ["parse-changes"]
  - key: quality-check
    agent: quality
    prompt: "Run tests and check code quality: {{parse-changes.result}}"
    dependencies: ["parse-changes"]
  - key: aggregate-results
    agent: product
    prompt: "Aggregate: security={{security-audit.result}}, quality={{quality-check.result}}"
    dependencies: ["security-audit", "quality-check"]
"#;

/// The diff given to code-review execution `i` (each execution gets its own).
pub fn review_diff(i: usize) -> String {
    format!("diff --git a/src/f{i}.rs b/src/f{i}.rs\n+fn f{i}() {{}}")
}

/// The crash-soak workflow: 12 steps in a lattice (3 wide), each prompt naming
/// the execution's marker (`run`) and its own key on the first line, and quoting
/// its first dependency's result. The fake LLM answers `answer(<first line>)`,
/// so every output can be checked against its prompt afterwards.
///
/// `timeout_ms` and `retries` add `timeoutMs` and a `retryPolicy` to every step
/// (for the fault runs).
pub fn soak(steps: usize, timeout_ms: Option<u64>, retries: Option<(u32, u64)>) -> String {
    let mut s = String::from(
        "name: soak\ninputs:\n  run: {description: the execution's marker}\nconfig: {parallelism: 3}\nsteps:\n",
    );
    for i in 0..steps {
        let mut extra = String::new();
        if let Some(t) = timeout_ms {
            let _ = write!(extra, ", timeoutMs: {t}");
        }
        if let Some((n, d)) = retries {
            let _ = write!(
                extra,
                ", retryPolicy: {{maxRetries: {n}, retryDelayMs: {d}, retryBackoffMultiplier: 1.5}}"
            );
        }
        if i < 3 {
            let _ = writeln!(
                s,
                "  - {{key: c{i}, agent: worker, prompt: \"{{{{run}}}} c{i}\\nstart\"{extra}}}"
            );
        } else {
            let (a, b) = (i - 3, i - 2);
            let _ = writeln!(
                s,
                "  - {{key: c{i}, agent: worker, prompt: \"{{{{run}}}} c{i}\\nafter {{{{c{a}.result}}}}\", dependencies: [c{a}, c{b}]{extra}}}"
            );
        }
    }
    s
}

/// What the fake LLM answers to a prompt (and what the soak checks outputs against).
pub fn fake_answer(prompt: &str) -> String {
    format!("answer({})", prompt.lines().next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(yaml: &str) -> usize {
        let a = ax_core::analyze(yaml, &ax_core::Options::default());
        match &a.plan {
            Some(p) => p.workflow.steps.len(),
            None => panic!("{yaml}\n{:?}", a.full_report()),
        }
    }

    #[test]
    fn the_workflows_are_valid() {
        assert_eq!(valid(&chain(40)), 40);
        assert_eq!(valid(&chain_plain(5)), 5);
        assert_eq!(valid(&fan(100)), 102);
        assert_eq!(valid(&code_review()), 4);
        assert_eq!(valid(&soak(12, Some(1500), Some((3, 100)))), 12);
        assert_eq!(valid(&soak(12, None, None)), 12);
    }

    #[test]
    fn answers() {
        assert_eq!(fake_answer("R1 c3\nafter x"), "answer(R1 c3)");
    }
}

//! The generated workflows the core's benchmarks and `examples/allocs.rs` read.

use ax_core::{Options, analyze};

/// A workflow of `n` steps: a chain (each step uses the previous result) or wide
/// (one root, everything else depends on it).
pub fn workflow_yaml(n: usize, chain: bool) -> String {
    let mut s =
        String::from("name: bench\ndescription: generated\nconfig:\n  parallelism: 8\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!("  - key: step-{i}\n    agent: backend\n"));
        if i == 0 {
            s.push_str(
                "    prompt: \"Start the analysis of the repository and list the modules.\"\n",
            );
        } else {
            let dep = if chain { i - 1 } else { 0 };
            s.push_str(&format!(
                "    prompt: \"Review the previous findings and extend them: {{{{step-{dep}.result}}}}\"\n    dependencies: [step-{dep}]\n    timeoutMs: 30000\n"
            ));
        }
    }
    s
}

pub fn workflow_json(n: usize, chain: bool) -> String {
    let a = analyze(&workflow_yaml(n, chain), &Options::for_file("w.yaml"));
    ax_core::emit::to_json(a.workflow().expect("generated workflow loads"))
}

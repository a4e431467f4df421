//! `ax-bench`: the evidence behind BENCHMARKS.md and RELIABILITY.md.
//!
//! ```text
//! ax-bench peer   [--quick] [--reps N] [--only CASE] --python PY   ax and LangGraph side by side
//! ax-bench ax-run --scenario S --sync normal|full --dir DIR         one ax measurement (JSON)
//! ax-bench soak   [--quick] [--kills N] [--fault-rate F] …          kill -9 soak under `ax serve`
//! ax-bench load   [--quick] [--wrk PATH]                            wrk against the API while runs run
//! ax-bench growth [--quick] [--executions N]                        database size with pruning
//! ax-bench publish [--file F] [--names a,b]                         copy target/bench/*.md into RELIABILITY.md (or F)
//! ax-bench core-report                                              criterion results of the core → target/bench/core.md
//! ax-bench first-token [--runs N] [--settle-ms MS] [--build CMD]    first-token latency ax adds, through `ax serve` and `ax workflow run --stream`
//! ax-bench cli    [--quick] [--reps N] [--before OLD_AX]            `ax workflow run` of a 1,000-step chain, whole process
//! ax-bench scale  [--executions N] [--latency-ms MS] [--workers 1,2,3] [--pg URL]   N code-review runs: SQLite, PostgreSQL × workers
//! ```
//! `cargo xtask bench-peer | soak | load | growth` build what is needed and run these.

mod axrun;
mod cli;
mod core_report;
mod fakellm;
mod firsttoken;
mod growth;
mod load;
mod peer;
mod publish;
mod scale;
mod serve;
mod soak;
mod util;
mod workflows;

use util::Args;

const USAGE: &str = "usage: ax-bench <peer|ax-run|cli|soak|load|growth|publish|core-report|first-token|scale> [OPTIONS] (see bench/src/main.rs)";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let flags = ["quick", "no-kill", "keep"];
    let res = Args::parse(rest, &flags).and_then(|a| match cmd.as_str() {
        "peer" => peer::main(&a),
        "ax-run" => axrun::main(&a),
        "cli" => cli::main(&a),
        "soak" => soak::main(&a),
        "load" => load::main(&a),
        "growth" => growth::main(&a),
        "publish" => publish::main(&a),
        "core-report" => core_report::main(&a),
        "first-token" => firsttoken::main(&a),
        "scale" => scale::main(&a),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(anyhow::anyhow!("unknown command `{other}`; {USAGE}")),
    });
    if let Err(e) = res {
        eprintln!("ax-bench {cmd}: error: {e:#}");
        std::process::exit(1);
    }
}

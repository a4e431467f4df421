//! ax-core: the pure core of ax.
//!
//! Text in, decisions out, and no IO in between: this crate parses and validates
//! workflow files (YAML or JSON), builds the dependency graph, renders prompt
//! templates, and runs executions as a sans-IO state machine ([`exec::Execution`])
//! that the server (tokio + SQLite + HTTP) and the browser (wasm + IndexedDB)
//! drive. It reads no clock and draws no randomness: time and seeds come in as
//! values, so every platform makes the same decisions.
//!
//! Start with [`validate::analyze`] (text → report + plan) and
//! [`exec::Execution`] (plan + events → actions).

pub mod checkpoint;
pub mod condition;
pub mod edit;
pub mod emit;
pub mod exec;
pub mod graph;
pub mod load;
pub mod model;
pub mod parse;
pub mod plan;
pub mod report;
pub mod retry;
mod scan;
pub mod schema;
pub mod sim;
pub mod sort;
pub mod source;
pub mod state;
pub mod subworkflow;
pub mod template;
pub mod validate;
#[cfg(all(target_arch = "wasm32", feature = "wasm-api"))]
pub mod wasm;

pub use checkpoint::{Checkpoint, CheckpointDelta, CheckpointFile, Compatibility, RestoreError};
pub use exec::{
    Action, ChildControl, Event, ExecError, Execution, StartChild, StartStep, StepError,
};
pub use model::{
    Budget, Cache, CacheUse, Config, ErrorClass, ForEach, InputSpec, ModelSettings, OnTimeout,
    RetryPolicy, Step, StepType, Workflow,
};
pub use plan::Plan;
pub use report::{Code, Problem, Report};
pub use retry::ProviderRetry;
pub use state::{ExecutionState, StepState};
pub use validate::{Analysis, Options, analyze};

#[cfg(all(test, target_arch = "wasm32"))]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

//! What `GET /metrics` reads from the database: figures of the whole
//! deployment (every process on this database), not of one process.

/// Executions by state, and the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// (state, executions), every state that has any.
    pub by_state: Vec<(String, u64)>,
    /// Executions that want a driver and have none (queued, no owner).
    pub queued: u64,
}

/// Executions by state (one scan of the state column, grouped).
pub const BY_STATE_SQL: &str =
    "SELECT state, count(*) FROM workflow_executions GROUP BY state ORDER BY state";
/// The queue: wanting a driver, owned by nobody (the partial queue index).
pub const QUEUED_SQL: &str =
    "SELECT count(*) FROM workflow_executions WHERE queued_at IS NOT NULL AND owner IS NULL";

-- ax schema, version 4: approvals, forEach items and sub-workflows (issue 11).

-- A child execution (a `type: workflow` step's run) knows its parent: the
-- execution, the step, the attempt (unique per step, items included) and the item.
ALTER TABLE workflow_executions ADD COLUMN parent_id TEXT REFERENCES workflow_executions(id);
ALTER TABLE workflow_executions ADD COLUMN parent_step TEXT;
ALTER TABLE workflow_executions ADD COLUMN parent_attempt INTEGER;
ALTER TABLE workflow_executions ADD COLUMN parent_item INTEGER;
-- A `waiting` execution has no process driving it; this is when it must be
-- woken anyway (an approval's deadline), if ever.
ALTER TABLE workflow_executions ADD COLUMN wake_at INTEGER;
CREATE INDEX idx_executions_parent ON workflow_executions(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX idx_executions_wake ON workflow_executions(wake_at) WHERE wake_at IS NOT NULL;

-- An approval's request (what the approver reads), and a forEach step's items.
ALTER TABLE execution_steps ADD COLUMN request TEXT;
ALTER TABLE execution_steps ADD COLUMN items_total INTEGER;
ALTER TABLE execution_steps ADD COLUMN items_done INTEGER;
-- The item an attempt was for (forEach steps).
ALTER TABLE workflow_step_executions ADD COLUMN item INTEGER;

-- What reaches an execution from outside: a person's decision on an approval, a
-- child's report. The process driving the execution takes the row and records
-- the outcome (refused decisions say why, with the HTTP status to answer); the
-- rows stay as the audit trail (who decided what, when).
CREATE TABLE execution_inbox (
    id           INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('approve', 'reject', 'child')),
    step_key     TEXT NOT NULL,
    attempt      INTEGER,
    payload      TEXT NOT NULL DEFAULT '{}',                  -- JSON object
    created_at   INTEGER NOT NULL,
    taken_at     INTEGER,
    outcome      TEXT CHECK (outcome IS NULL OR outcome IN ('accepted', 'refused')),
    status       INTEGER,                                     -- for a refusal: 409, 422, …
    error        TEXT
);
CREATE INDEX idx_inbox_pending ON execution_inbox(execution_id, id) WHERE taken_at IS NULL;

DROP VIEW v_active_executions;
CREATE VIEW v_active_executions AS
SELECT e.id, e.workflow_id, w.name AS workflow, e.state, e.owner, e.heartbeat_at,
       e.created_at, e.started_at, e.total_steps,
       e.steps_completed AS completed_steps, e.steps_running AS running_steps
FROM workflow_executions e JOIN workflows w ON w.id = e.workflow_id
WHERE e.state IN ('idle', 'validating', 'running', 'paused', 'waiting', 'interrupted');

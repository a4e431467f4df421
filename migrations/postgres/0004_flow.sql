-- ax schema, version 4: approvals, forEach items and sub-workflows (issue 11).

-- A child execution (a `type: workflow` step's run) knows its parent: the
-- execution, the step, the attempt (unique per step, items included) and the item.
ALTER TABLE workflow_executions ADD COLUMN parent_id text REFERENCES workflow_executions(id);
ALTER TABLE workflow_executions ADD COLUMN parent_step text;
ALTER TABLE workflow_executions ADD COLUMN parent_attempt integer;
ALTER TABLE workflow_executions ADD COLUMN parent_item integer;
-- A `waiting` execution has no process driving it; this is when it must be
-- woken anyway (an approval's deadline), if ever.
ALTER TABLE workflow_executions ADD COLUMN wake_at bigint;
CREATE INDEX idx_executions_parent ON workflow_executions(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX idx_executions_wake ON workflow_executions(wake_at) WHERE wake_at IS NOT NULL;

-- An approval's request (what the approver reads), and a forEach step's items.
ALTER TABLE execution_steps ADD COLUMN request text;
ALTER TABLE execution_steps ADD COLUMN items_total integer;
ALTER TABLE execution_steps ADD COLUMN items_done integer;
-- The item an attempt was for (forEach steps).
ALTER TABLE workflow_step_executions ADD COLUMN item integer;

-- What reaches an execution from outside: a person's decision on an approval, a
-- child's report. The process driving the execution takes the row and records
-- the outcome (refused decisions say why, with the HTTP status to answer); the
-- rows stay as the audit trail (who decided what, when).
CREATE TABLE execution_inbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id text NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('approve', 'reject', 'child')),
    step_key     text NOT NULL,
    attempt      integer,
    payload      jsonb NOT NULL DEFAULT '{}',
    created_at   bigint NOT NULL,
    taken_at     bigint,
    outcome      text CHECK (outcome IS NULL OR outcome IN ('accepted', 'refused')),
    status       integer,
    error        text
);
CREATE INDEX idx_inbox_pending ON execution_inbox(execution_id, id) WHERE taken_at IS NULL;

CREATE OR REPLACE VIEW v_active_executions AS
SELECT e.id, e.workflow_id, w.name AS workflow, e.state, e.owner, e.heartbeat_at,
       e.created_at, e.started_at, e.total_steps,
       e.steps_completed AS completed_steps, e.steps_running AS running_steps
FROM workflow_executions e JOIN workflows w ON w.id = e.workflow_id
WHERE e.state IN ('idle', 'validating', 'running', 'paused', 'waiting', 'interrupted');

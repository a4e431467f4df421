-- ax schema, version 3: `waiting` executions and `item`/`decision` events
-- (approvals and forEach, issue 11).

ALTER TABLE workflow_executions DROP CONSTRAINT workflow_executions_state_check;
ALTER TABLE workflow_executions ADD CONSTRAINT workflow_executions_state_check
    CHECK (state IN ('idle', 'validating', 'running', 'paused', 'completed', 'failed',
                     'cancelled', 'interrupted', 'waiting'));
ALTER TABLE workflow_events DROP CONSTRAINT workflow_events_type_check;
ALTER TABLE workflow_events ADD CONSTRAINT workflow_events_type_check
    CHECK (type IN ('execution', 'step', 'checkpoint', 'log', 'item', 'decision'));

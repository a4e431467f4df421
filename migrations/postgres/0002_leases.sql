-- ax schema, version 2: leases. An execution is driven by one process at a
-- time, under a lease: the owner (host/pid/token), a fencing token that grows
-- with every claim, and an expiry the owner keeps pushing forward. Every row an
-- owner writes carries its token, and a write whose token is no longer the
-- execution's is refused (in the same transaction as the write).

ALTER TABLE workflow_executions ADD COLUMN lease_token bigint NOT NULL DEFAULT 0;
ALTER TABLE workflow_executions ADD COLUMN lease_expires_at bigint;
-- The owner process's start time (clock ticks since boot) and "boot id/pid
-- namespace": with them a process on the same machine can tell whether the
-- owner is still alive (pids are reused; start times are not).
ALTER TABLE workflow_executions ADD COLUMN owner_started bigint;
ALTER TABLE workflow_executions ADD COLUMN owner_boot text;
-- Since when the execution wants a driver (NULL: it needs none: paused,
-- finished, or imported without resuming). Workers claim queued executions.
ALTER TABLE workflow_executions ADD COLUMN queued_at bigint;
-- The lease a pending control request is meant for.
ALTER TABLE workflow_executions ADD COLUMN control_token bigint;

ALTER TABLE workflow_step_executions ADD COLUMN lease_token bigint;
ALTER TABLE workflow_events ADD COLUMN lease_token bigint;
ALTER TABLE workflow_checkpoints ADD COLUMN lease_token bigint;

-- Every claim: who took which token, and from whom.
CREATE TABLE execution_leases (
    execution_id   text NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    token          bigint NOT NULL,
    owner          text NOT NULL,
    claimed_at     bigint NOT NULL,
    previous_owner text,
    PRIMARY KEY (execution_id, token)
);

CREATE INDEX idx_executions_queue ON workflow_executions(queued_at) WHERE queued_at IS NOT NULL;
CREATE INDEX idx_executions_owner ON workflow_executions(owner) WHERE owner IS NOT NULL;

-- Runs whose driver died before this version want a driver again; a run
-- imported without resuming does not.
UPDATE workflow_executions SET queued_at = updated_at
 WHERE state IN ('running', 'validating')
    OR (state = 'interrupted' AND COALESCE(reason, '') NOT LIKE 'imported from%');
UPDATE workflow_executions SET lease_expires_at = heartbeat_at + 10000
 WHERE owner IS NOT NULL AND heartbeat_at IS NOT NULL;

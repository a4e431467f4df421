-- ax schema, version 1: the seed's seven tables, three views and its triggers,
-- plus current per-step state and content-addressed step outputs.
-- All timestamps are epoch milliseconds.

CREATE TABLE workflows (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    version               TEXT NOT NULL,
    description           TEXT,
    author                TEXT,
    tags                  TEXT NOT NULL DEFAULT '[]',          -- JSON array
    source                TEXT NOT NULL,                       -- the file as written
    format                TEXT NOT NULL CHECK (format IN ('yaml', 'json')),
    filename              TEXT,
    definition            TEXT NOT NULL,                       -- the parsed workflow (JSON)
    hash                  TEXT NOT NULL,                       -- structural hash
    step_count            INTEGER NOT NULL,
    archived              INTEGER NOT NULL DEFAULT 0,
    total_executions      INTEGER NOT NULL DEFAULT 0,
    successful_executions INTEGER NOT NULL DEFAULT 0,
    failed_executions     INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX idx_workflows_name ON workflows(name);
CREATE INDEX idx_workflows_created ON workflows(created_at DESC);

-- The steps of a workflow definition.
CREATE TABLE workflow_steps (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    position    INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    agent       TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    optional    INTEGER NOT NULL DEFAULT 0,
    definition  TEXT NOT NULL,                                 -- the step (JSON)
    PRIMARY KEY (workflow_id, key)
);

CREATE TABLE workflow_dependencies (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    step_key    TEXT NOT NULL,
    depends_on  TEXT NOT NULL,
    PRIMARY KEY (workflow_id, step_key, depends_on)
);

CREATE TABLE workflow_executions (
    id            TEXT PRIMARY KEY,
    workflow_id   TEXT NOT NULL REFERENCES workflows(id),
    state         TEXT NOT NULL CHECK (state IN ('idle', 'validating', 'running', 'paused',
                                                 'completed', 'failed', 'cancelled', 'interrupted')),
    reason        TEXT,
    inputs        TEXT NOT NULL DEFAULT '{}',                  -- JSON object
    seed          INTEGER NOT NULL,
    -- The process driving it: "host/pid/token", refreshed by heartbeats.
    owner         TEXT,
    owner_host    TEXT,
    owner_pid     INTEGER,
    heartbeat_at  INTEGER,
    -- A control request from another process: pause | pause-now | resume | cancel.
    control       TEXT CHECK (control IS NULL OR control IN ('pause', 'pause-now', 'resume', 'cancel')),
    control_at    INTEGER,
    total_steps   INTEGER NOT NULL DEFAULT 0,
    -- Counts of steps by state, kept by a trigger on execution_steps (lists read
    -- them without scanning steps).
    steps_completed INTEGER NOT NULL DEFAULT 0,
    steps_failed    INTEGER NOT NULL DEFAULT 0,
    steps_running   INTEGER NOT NULL DEFAULT 0,
    steps_skipped   INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    duration_ms   INTEGER,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX idx_executions_workflow ON workflow_executions(workflow_id, created_at DESC);
CREATE INDEX idx_executions_state ON workflow_executions(state);
CREATE INDEX idx_executions_created ON workflow_executions(created_at DESC);

-- Current state of every step of an execution (one row per step).
CREATE TABLE execution_steps (
    execution_id TEXT NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    step_key     TEXT NOT NULL,
    position     INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    reason       TEXT,
    error_class  TEXT,
    error        TEXT,
    output_hash  TEXT,
    started_at   INTEGER,
    finished_at  INTEGER,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (execution_id, step_key)
);

-- One row per attempt of a step: provider, model, tokens, cost, latency, outcome.
CREATE TABLE workflow_step_executions (
    id            INTEGER PRIMARY KEY,
    execution_id  TEXT NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    step_key      TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    state         TEXT NOT NULL,
    prompt        TEXT,
    provider      TEXT,
    model         TEXT,
    output_hash   TEXT,
    error_class   TEXT,
    error         TEXT,
    tokens_in     INTEGER NOT NULL DEFAULT 0,
    tokens_out    INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL,
    latency_ms    INTEGER,
    started_at    INTEGER,
    finished_at   INTEGER,
    duration_ms   INTEGER,
    -- Rewound by a restore: kept as history, no longer the step's current attempt.
    superseded    INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX idx_step_exec ON workflow_step_executions(execution_id, step_key, attempt);

-- Step outputs, stored once by content hash; checkpoints refer to them.
CREATE TABLE step_outputs (
    hash       TEXT PRIMARY KEY,
    text       TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Checkpoints as a journal: `full` snapshots and `delta`s (changes since the
-- previous row of the same execution). `visible` rows are restore points.
CREATE TABLE workflow_checkpoints (
    id              INTEGER PRIMARY KEY,
    execution_id    TEXT NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('full', 'delta')),
    visible         INTEGER NOT NULL DEFAULT 0,
    data            TEXT NOT NULL,
    completed_steps INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);
CREATE INDEX idx_checkpoints_exec ON workflow_checkpoints(execution_id, id);

-- Ids only grow within an execution (rows are only deleted with their
-- execution), which is what event streams resume from.
CREATE TABLE workflow_events (
    id           INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    at           INTEGER NOT NULL,
    type         TEXT NOT NULL CHECK (type IN ('execution', 'step', 'checkpoint', 'log')),
    step_key     TEXT,
    state        TEXT,
    attempt      INTEGER,
    message      TEXT,
    data         TEXT
);
CREATE INDEX idx_events_exec ON workflow_events(execution_id, id);

-- Views ---------------------------------------------------------------------

CREATE VIEW v_active_executions AS
SELECT e.id, e.workflow_id, w.name AS workflow, e.state, e.owner, e.heartbeat_at,
       e.created_at, e.started_at, e.total_steps,
       e.steps_completed AS completed_steps, e.steps_running AS running_steps
FROM workflow_executions e JOIN workflows w ON w.id = e.workflow_id
WHERE e.state IN ('idle', 'validating', 'running', 'paused', 'interrupted');

CREATE VIEW v_workflow_stats AS
SELECT w.id AS workflow_id, w.name, w.total_executions, w.successful_executions, w.failed_executions,
       CASE WHEN w.successful_executions + w.failed_executions = 0 THEN NULL
            ELSE ROUND(100.0 * w.successful_executions / (w.successful_executions + w.failed_executions), 1)
       END AS success_rate,
       (SELECT AVG(e.duration_ms) FROM workflow_executions e
         WHERE e.workflow_id = w.id AND e.state = 'completed') AS avg_duration_ms,
       (SELECT MAX(e.created_at) FROM workflow_executions e WHERE e.workflow_id = w.id) AS last_run_at
FROM workflows w;

CREATE VIEW v_recent_workflow_events AS
SELECT ev.id, ev.execution_id, w.name AS workflow, ev.at, ev.type, ev.step_key, ev.state,
       ev.attempt, ev.message
FROM workflow_events ev
JOIN workflow_executions e ON e.id = ev.execution_id
JOIN workflows w ON w.id = e.workflow_id
ORDER BY ev.id DESC
LIMIT 500;

-- Triggers ------------------------------------------------------------------

-- updated_at, when a writer did not set it.
CREATE TRIGGER trg_workflows_updated AFTER UPDATE ON workflows
FOR EACH ROW WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE workflows SET updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) WHERE id = NEW.id;
END;

CREATE TRIGGER trg_executions_updated AFTER UPDATE OF state, reason, control, owner ON workflow_executions
FOR EACH ROW WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE workflow_executions SET updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) WHERE id = NEW.id;
END;

-- Durations, when a run or an attempt finishes.
CREATE TRIGGER trg_execution_duration AFTER UPDATE OF finished_at ON workflow_executions
FOR EACH ROW WHEN NEW.finished_at IS NOT NULL AND NEW.started_at IS NOT NULL
BEGIN
    UPDATE workflow_executions SET duration_ms = NEW.finished_at - NEW.started_at WHERE id = NEW.id;
END;

CREATE TRIGGER trg_step_execution_duration AFTER UPDATE OF finished_at ON workflow_step_executions
FOR EACH ROW WHEN NEW.finished_at IS NOT NULL AND NEW.started_at IS NOT NULL
BEGIN
    UPDATE workflow_step_executions SET duration_ms = NEW.finished_at - NEW.started_at WHERE id = NEW.id;
END;

-- Statistics counters.
CREATE TRIGGER trg_step_counts AFTER UPDATE OF state ON execution_steps
FOR EACH ROW WHEN NEW.state <> OLD.state
BEGIN
    UPDATE workflow_executions
       SET steps_completed = steps_completed + (NEW.state = 'completed') - (OLD.state = 'completed'),
           steps_failed    = steps_failed    + (NEW.state = 'failed')    - (OLD.state = 'failed'),
           steps_running   = steps_running   + (NEW.state = 'running')   - (OLD.state = 'running'),
           steps_skipped   = steps_skipped   + (NEW.state = 'skipped')   - (OLD.state = 'skipped')
     WHERE id = NEW.execution_id;
END;

CREATE TRIGGER trg_stats_new_execution AFTER INSERT ON workflow_executions
BEGIN
    UPDATE workflows SET total_executions = total_executions + 1 WHERE id = NEW.workflow_id;
END;

CREATE TRIGGER trg_stats_finished AFTER UPDATE OF state ON workflow_executions
FOR EACH ROW WHEN NEW.state <> OLD.state AND NEW.state IN ('completed', 'failed')
BEGIN
    UPDATE workflows
       SET successful_executions = successful_executions + (NEW.state = 'completed'),
           failed_executions     = failed_executions + (NEW.state = 'failed')
     WHERE id = NEW.workflow_id;
END;

-- A finished run that is resumed or restored no longer counts until it ends again.
CREATE TRIGGER trg_stats_reopened AFTER UPDATE OF state ON workflow_executions
FOR EACH ROW WHEN OLD.state IN ('completed', 'failed') AND NEW.state NOT IN ('completed', 'failed')
BEGIN
    UPDATE workflows
       SET successful_executions = MAX(successful_executions - (OLD.state = 'completed'), 0),
           failed_executions     = MAX(failed_executions - (OLD.state = 'failed'), 0)
     WHERE id = NEW.workflow_id;
END;

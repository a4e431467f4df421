-- ax schema, version 1 (PostgreSQL): the same tables, views and semantics as
-- migrations/sqlite/0001_workflows.sql, with PostgreSQL's types: jsonb for
-- JSON, identity columns, booleans. Timestamps are epoch milliseconds (bigint)
-- in both backends, so durations are plain subtraction and the Rust side reads
-- one representation.

CREATE FUNCTION ax_now_ms() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE TABLE workflows (
    id                    text PRIMARY KEY,
    name                  text NOT NULL,
    version               text NOT NULL,
    description           text,
    author                text,
    tags                  jsonb NOT NULL DEFAULT '[]',
    source                text NOT NULL,                       -- the file as written
    format                text NOT NULL CHECK (format IN ('yaml', 'json')),
    filename              text,
    definition            jsonb NOT NULL,                      -- the parsed workflow
    hash                  text NOT NULL,                       -- structural hash
    step_count            integer NOT NULL,
    archived              boolean NOT NULL DEFAULT false,
    total_executions      bigint NOT NULL DEFAULT 0,
    successful_executions bigint NOT NULL DEFAULT 0,
    failed_executions     bigint NOT NULL DEFAULT 0,
    created_at            bigint NOT NULL,
    updated_at            bigint NOT NULL
);
CREATE INDEX idx_workflows_name ON workflows(name);
CREATE INDEX idx_workflows_created ON workflows(created_at DESC);
-- An identical text is stored once (looked up by hash, then compared).
CREATE INDEX idx_workflows_hash ON workflows(hash);

CREATE TABLE workflow_steps (
    workflow_id text NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    key         text NOT NULL,
    position    integer NOT NULL,
    level       integer NOT NULL,
    agent       text NOT NULL,
    prompt      text NOT NULL,
    optional    boolean NOT NULL DEFAULT false,
    definition  jsonb NOT NULL,
    PRIMARY KEY (workflow_id, key)
);

CREATE TABLE workflow_dependencies (
    workflow_id text NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    step_key    text NOT NULL,
    depends_on  text NOT NULL,
    -- Declaration order (SQLite keeps it in rowid order).
    position    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, step_key, depends_on)
);

CREATE TABLE workflow_executions (
    id            text PRIMARY KEY,
    workflow_id   text NOT NULL REFERENCES workflows(id),
    state         text NOT NULL CHECK (state IN ('idle', 'validating', 'running', 'paused',
                                                 'completed', 'failed', 'cancelled', 'interrupted')),
    reason        text,
    inputs        jsonb NOT NULL DEFAULT '{}',
    seed          bigint NOT NULL,
    -- The process driving it: "host/pid/token", refreshed by heartbeats.
    owner         text,
    owner_host    text,
    owner_pid     bigint,
    heartbeat_at  bigint,
    -- A control request from another process.
    control       text CHECK (control IS NULL OR control IN ('pause', 'pause-now', 'resume', 'cancel')),
    control_at    bigint,
    total_steps   integer NOT NULL DEFAULT 0,
    -- Counts of steps by state, kept by a trigger on execution_steps.
    steps_completed integer NOT NULL DEFAULT 0,
    steps_failed    integer NOT NULL DEFAULT 0,
    steps_running   integer NOT NULL DEFAULT 0,
    steps_skipped   integer NOT NULL DEFAULT 0,
    created_at    bigint NOT NULL,
    started_at    bigint,
    finished_at   bigint,
    duration_ms   bigint,
    updated_at    bigint NOT NULL
);
CREATE INDEX idx_executions_workflow ON workflow_executions(workflow_id, created_at DESC);
CREATE INDEX idx_executions_state ON workflow_executions(state);
CREATE INDEX idx_executions_created ON workflow_executions(created_at DESC);
-- Short ids on the command line (prefix search).
CREATE INDEX idx_executions_id_prefix ON workflow_executions(id text_pattern_ops);

CREATE TABLE execution_steps (
    execution_id text NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    step_key     text NOT NULL,
    position     integer NOT NULL,
    state        text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    reason       text,
    error_class  text,
    error        text,
    output_hash  text,
    started_at   bigint,
    finished_at  bigint,
    updated_at   bigint NOT NULL,
    PRIMARY KEY (execution_id, step_key)
);

CREATE TABLE workflow_step_executions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id  text NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    step_key      text NOT NULL,
    attempt       integer NOT NULL,
    state         text NOT NULL,
    prompt        text,
    provider      text,
    model         text,
    output_hash   text,
    error_class   text,
    error         text,
    tokens_in     bigint NOT NULL DEFAULT 0,
    tokens_out    bigint NOT NULL DEFAULT 0,
    cost_usd      double precision,
    latency_ms    bigint,
    started_at    bigint,
    finished_at   bigint,
    duration_ms   bigint,
    superseded    boolean NOT NULL DEFAULT false,
    updated_at    bigint NOT NULL
);
CREATE INDEX idx_step_exec ON workflow_step_executions(execution_id, step_key, attempt);
CREATE INDEX idx_step_exec_output ON workflow_step_executions(output_hash) WHERE output_hash IS NOT NULL;

CREATE TABLE step_outputs (
    hash       text PRIMARY KEY,
    text       text NOT NULL,
    bytes      bigint NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE workflow_checkpoints (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id    text NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('full', 'delta')),
    visible         boolean NOT NULL DEFAULT false,
    data            jsonb NOT NULL,
    completed_steps integer NOT NULL DEFAULT 0,
    created_at      bigint NOT NULL
);
CREATE INDEX idx_checkpoints_exec ON workflow_checkpoints(execution_id, id);

-- Ids only grow within an execution: every writer of an execution's events
-- holds its row lock (see the store), so ids are taken in commit order.
CREATE TABLE workflow_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id text NOT NULL REFERENCES workflow_executions(id) ON DELETE CASCADE,
    at           bigint NOT NULL,
    type         text NOT NULL CHECK (type IN ('execution', 'step', 'checkpoint', 'log')),
    step_key     text,
    state        text,
    attempt      integer,
    message      text,
    data         jsonb
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
-- BEFORE triggers set columns of the row being written (no second update);
-- the counters are statement-level triggers over transition tables, so a
-- group commit that moves a thousand steps updates each execution once, and
-- workflow rows are locked in id order (no deadlock between workers).

-- updated_at, when a writer did not set it.
CREATE FUNCTION ax_touch_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := ax_now_ms();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER trg_workflows_updated BEFORE UPDATE ON workflows
FOR EACH ROW EXECUTE FUNCTION ax_touch_updated();

CREATE TRIGGER trg_executions_updated BEFORE UPDATE OF state, reason, control, owner ON workflow_executions
FOR EACH ROW EXECUTE FUNCTION ax_touch_updated();

-- Durations, when a run or an attempt finishes.
CREATE FUNCTION ax_duration() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.finished_at IS NOT NULL AND NEW.started_at IS NOT NULL THEN
        NEW.duration_ms := NEW.finished_at - NEW.started_at;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER trg_execution_duration BEFORE UPDATE OF finished_at ON workflow_executions
FOR EACH ROW EXECUTE FUNCTION ax_duration();

CREATE TRIGGER trg_step_execution_duration BEFORE UPDATE OF finished_at ON workflow_step_executions
FOR EACH ROW EXECUTE FUNCTION ax_duration();

-- Statistics counters: steps by state.
CREATE FUNCTION ax_step_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workflow_executions e
       SET steps_completed = e.steps_completed + d.completed,
           steps_failed    = e.steps_failed    + d.failed,
           steps_running   = e.steps_running   + d.running,
           steps_skipped   = e.steps_skipped   + d.skipped
      FROM (SELECT n.execution_id,
                   sum((n.state = 'completed')::int - (o.state = 'completed')::int) AS completed,
                   sum((n.state = 'failed')::int    - (o.state = 'failed')::int)    AS failed,
                   sum((n.state = 'running')::int   - (o.state = 'running')::int)   AS running,
                   sum((n.state = 'skipped')::int   - (o.state = 'skipped')::int)   AS skipped
              FROM new_rows n
              JOIN old_rows o ON o.execution_id = n.execution_id AND o.step_key = n.step_key
             WHERE n.state <> o.state
             GROUP BY n.execution_id) d
     WHERE e.id = d.execution_id;
    RETURN NULL;
END $$;

CREATE TRIGGER trg_step_counts AFTER UPDATE ON execution_steps
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION ax_step_counts();

-- Statistics counters: executions per workflow (workflow rows updated in id
-- order, so that two transactions never wait for each other in a cycle).
CREATE FUNCTION ax_stats_new_executions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT workflow_id, count(*) AS n FROM new_rows GROUP BY workflow_id ORDER BY workflow_id LOOP
        UPDATE workflows SET total_executions = total_executions + r.n WHERE id = r.workflow_id;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER trg_stats_new_execution AFTER INSERT ON workflow_executions
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION ax_stats_new_executions();

-- A run that finishes counts once; a finished run that is resumed or restored
-- no longer counts until it ends again.
CREATE FUNCTION ax_stats_state() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT n.workflow_id,
               sum(CASE WHEN n.state = 'completed' THEN 1
                        WHEN o.state = 'completed' AND n.state <> 'failed' THEN -1
                        ELSE 0 END) AS ok,
               sum(CASE WHEN n.state = 'failed' THEN 1
                        WHEN o.state = 'failed' AND n.state <> 'completed' THEN -1
                        ELSE 0 END) AS bad
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE n.state <> o.state
           AND (n.state IN ('completed', 'failed') OR o.state IN ('completed', 'failed'))
         GROUP BY n.workflow_id
         ORDER BY n.workflow_id
    LOOP
        UPDATE workflows
           SET successful_executions = GREATEST(successful_executions + r.ok, 0),
               failed_executions     = GREATEST(failed_executions + r.bad, 0)
         WHERE id = r.workflow_id;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER trg_stats_state AFTER UPDATE ON workflow_executions
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION ax_stats_state();

-- ax schema, version 5: cost control. A run's own budget (over the file's
-- `config.budget`; NULL: the file's, per limit).
ALTER TABLE workflow_executions ADD COLUMN budget_usd REAL;
ALTER TABLE workflow_executions ADD COLUMN budget_tokens INTEGER;
-- `--cache`: every prompt step without its own `cache` uses the response cache.
ALTER TABLE workflow_executions ADD COLUMN cache INTEGER NOT NULL DEFAULT 0;

-- The response cache: answers by a hash of everything that shapes them
-- (provider kind and address, model, settings, system prompt, prompt, schema).
CREATE TABLE response_cache (
    key          TEXT PRIMARY KEY,
    output       TEXT NOT NULL,
    provider     TEXT NOT NULL,
    model        TEXT NOT NULL,
    tokens_in    INTEGER NOT NULL DEFAULT 0,
    tokens_out   INTEGER NOT NULL DEFAULT 0,
    cost_usd     REAL,
    created_at   INTEGER NOT NULL,
    hits         INTEGER NOT NULL DEFAULT 0,
    last_hit_at  INTEGER
);
CREATE INDEX idx_response_cache_created ON response_cache(created_at);

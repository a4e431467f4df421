-- ax schema, version 5: cost control. A run's own budget (over the file's
-- `config.budget`; NULL: the file's, per limit).
ALTER TABLE workflow_executions ADD COLUMN budget_usd double precision;
ALTER TABLE workflow_executions ADD COLUMN budget_tokens bigint;
-- `--cache`: every prompt step without its own `cache` uses the response cache.
ALTER TABLE workflow_executions ADD COLUMN cache boolean NOT NULL DEFAULT false;

-- The response cache: answers by a hash of everything that shapes them
-- (provider kind and address, model, settings, system prompt, prompt, schema).
CREATE TABLE response_cache (
    key          text PRIMARY KEY,
    output       text NOT NULL,
    provider     text NOT NULL,
    model        text NOT NULL,
    tokens_in    bigint NOT NULL DEFAULT 0,
    tokens_out   bigint NOT NULL DEFAULT 0,
    cost_usd     double precision,
    created_at   bigint NOT NULL,
    hits         bigint NOT NULL DEFAULT 0,
    last_hit_at  bigint
);
CREATE INDEX idx_response_cache_created ON response_cache(created_at);

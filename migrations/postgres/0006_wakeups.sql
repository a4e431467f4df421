-- ax schema, version 6: wake-ups (issue 13). The database tells the processes
-- that LISTEN on channel `ax_wake` when something is for them, so that a
-- control request, a decision or a new run reaches a worker at once instead of
-- at its next poll (polling stays, as the fallback):
--   `control:<execution id>`  a pause/resume/cancel request was left for the owner;
--   `inbox:<execution id>`    a message (a decision, a child's report) arrived;
--   `work`                    an execution wants a driver and has none.
-- Notifications are sent when the transaction commits, so a listener that
-- reads the row finds the change.

CREATE FUNCTION ax_wake_control() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ax_wake', 'control:' || NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER trg_wake_control AFTER UPDATE OF control ON workflow_executions
    FOR EACH ROW WHEN (NEW.control IS NOT NULL)
    EXECUTE FUNCTION ax_wake_control();

CREATE FUNCTION ax_wake_inbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ax_wake', 'inbox:' || NEW.execution_id);
    RETURN NULL;
END $$;

CREATE TRIGGER trg_wake_inbox AFTER INSERT ON execution_inbox
    FOR EACH ROW EXECUTE FUNCTION ax_wake_inbox();

-- Checked when the transaction commits (a run created and claimed in one
-- transaction wants no other driver): still queued and without an owner?
-- Identical notifications of one transaction are sent once.
CREATE FUNCTION ax_wake_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM workflow_executions
                WHERE id = NEW.id AND owner IS NULL AND queued_at IS NOT NULL) THEN
        PERFORM pg_notify('ax_wake', 'work');
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER trg_wake_work AFTER INSERT OR UPDATE OF queued_at, owner ON workflow_executions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.queued_at IS NOT NULL AND NEW.owner IS NULL)
    EXECUTE FUNCTION ax_wake_work();

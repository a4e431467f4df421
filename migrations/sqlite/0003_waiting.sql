-- ax schema, version 3: `waiting` executions and `item`/`decision` events
-- (approvals and forEach, issue 11).

-- `waiting` executions and `item`/`decision` events. SQLite cannot alter a CHECK
-- constraint; its documented way for loosening one is to edit the stored schema
-- text (rows already satisfy the wider check). The migration runner bumps
-- `schema_version` after this file so that every connection reloads the schema.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, '''cancelled'', ''interrupted'')', '''cancelled'', ''interrupted'', ''waiting'')')
 WHERE type = 'table' AND name = 'workflow_executions';
UPDATE sqlite_schema
   SET sql = replace(sql, '''checkpoint'', ''log'')', '''checkpoint'', ''log'', ''item'', ''decision'')')
 WHERE type = 'table' AND name = 'workflow_events';
PRAGMA writable_schema = OFF;

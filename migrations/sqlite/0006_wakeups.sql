-- ax schema, version 6: wake-ups (issue 13). On PostgreSQL, triggers announce
-- control requests, decisions and new work to the processes that LISTEN. A
-- SQLite file is used by the processes of one machine, which find these by
-- polling (200 ms for requests, 1 s for new work); nothing changes here, and
-- the version exists so that both dialects keep the same numbers.
SELECT 1;

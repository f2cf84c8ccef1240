-- Run inside the application's database: what the master user created there before
-- the application had its own user (Scalelite's tables, on a database made before
-- this chart) passes to the application's user, so its migrations may alter them.
\set ON_ERROR_STOP on

SELECT format('ALTER SCHEMA public OWNER TO %I', :'app_user')
WHERE (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public')
      <> :'app_user' \gexec

-- Tables, views, sequences of their own (a column's sequence follows its table).
SELECT format('ALTER TABLE %I.%I OWNER TO %I', n.nspname, c.relname, :'app_user')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public'
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND pg_get_userbyid(c.relowner) = current_user
  AND NOT (c.relkind = 'S' AND EXISTS (
        SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
\gexec

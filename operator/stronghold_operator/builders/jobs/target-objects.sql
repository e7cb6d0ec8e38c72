-- Relations, schemas and functions of a restore target's own: any of them makes it
-- non-empty (stronghold_job.py _target_objects; the program ships this file beside it).
SELECT kind || ' ' || name FROM (
  SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
         WHEN 'm' THEN 'view' WHEN 'S' THEN 'sequence' ELSE 'relation' END AS kind,
         format('%I.%I', n.nspname, c.relname) AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\_%'
  UNION ALL
  SELECT 'schema', format('%I', nspname) FROM pg_namespace
  WHERE nspname NOT IN ('public', 'pg_catalog', 'information_schema')
    AND nspname NOT LIKE 'pg\_%'
  UNION ALL
  SELECT 'function', format('%I.%I', n.nspname, p.proname)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.objid = p.oid AND d.deptype = 'e')
) o ORDER BY 1

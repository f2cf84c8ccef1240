-- One application's user and database, run as the master user by bootstrap.sh with
-- psql variables app_user and app_db and the environment's APP_PASSWORD (kept off
-- the command line, where ps would show it). Idempotent: a second run changes
-- only the password (to the one in Secrets Manager).
\set ON_ERROR_STOP on
\getenv app_password APP_PASSWORD

SELECT format('CREATE ROLE %I LOGIN', :'app_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec

ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_password';

-- The master may act as the application's role (to hand it objects below), never the
-- other way round: the application's user holds no master rights.
SELECT format('GRANT %I TO %I', :'app_user', current_user)
WHERE NOT pg_has_role(current_user, :'app_user', 'MEMBER') \gexec

SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'app_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'app_db') \gexec

ALTER DATABASE :"app_db" OWNER TO :"app_user";
-- Each application reaches its own database only.
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;

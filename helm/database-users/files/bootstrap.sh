#!/bin/sh
# bootstrap.sh APP...: for each application, its user, password and database.
# The master's credentials (/secrets/master/{username,password}, or MASTER_USERNAME and
# MASTER_PASSWORD) and each application's (/secrets/APP/{username,password,host,port,
# dbname}) are mounted from Secrets that External Secrets copies from Secrets Manager;
# nothing here is a value of the chart. SECRETS_DIR replaces /secrets (tests).
set -eu
here=$(dirname "$0")
secrets=${SECRETS_DIR:-/secrets}
PGUSER=${MASTER_USERNAME:-$(cat "$secrets/master/username")}
PGPASSWORD=${MASTER_PASSWORD:-$(cat "$secrets/master/password")}
export PGUSER PGPASSWORD
export PGSSLMODE="${PGSSLMODE:-require}" PGCONNECT_TIMEOUT=10
for app in "$@"; do
    dir="$secrets/$app"
    export PGHOST="$(cat "$dir/host")" PGPORT="$(cat "$dir/port")"
    user=$(cat "$dir/username") db=$(cat "$dir/dbname")
    APP_PASSWORD=$(cat "$dir/password") \
        psql -X -q -d postgres -v app_user="$user" -v app_db="$db" -f "$here/users.sql"
    psql -X -q -d "$db" -v app_user="$user" -f "$here/ownership.sql"
    echo "database-users: $app: user $user owns database $db"
done

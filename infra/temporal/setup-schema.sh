#!/bin/sh
# Creates and migrates Temporal's two PostgreSQL databases with the admin-tools
# image: `temporal` (workflow state) and `temporal_visibility` (listing and
# search attributes).
#
# Safe to run on every start: `setup-schema -v 0.0` leaves an existing schema
# alone and `update-schema` applies only the versions not applied yet, so the
# same run also upgrades the schema after the Temporal images are upgraded.
#
# Environment: SQL_HOST, SQL_PORT (5432), SQL_USER, SQL_PASSWORD (read by
# temporal-sql-tool itself, never put on a command line).
set -eu

: "${SQL_HOST:?set SQL_HOST to the PostgreSQL host of Temporal}"
: "${SQL_USER:?set SQL_USER}"
: "${SQL_PASSWORD:?set SQL_PASSWORD}"
SQL_PORT="${SQL_PORT:-5432}"
SCHEMA_ROOT=/etc/temporal/schema/postgresql/v12

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$SQL_HOST" --port "$SQL_PORT" --user "$SQL_USER" "$@"
}

# setup_database DATABASE SCHEMA_DIR
setup_database() {
  echo "database $1: create, set up, update to the latest schema"
  # Fails when the database exists already, which is the normal case after the
  # first run; if it fails for another reason, setup-schema below fails too.
  sql_tool --db "$1" create-database || echo "database $1 not created (it probably exists)"
  sql_tool --db "$1" setup-schema -v 0.0
  sql_tool --db "$1" update-schema -d "$SCHEMA_ROOT/$2/versioned"
}

setup_database temporal temporal
setup_database temporal_visibility visibility
echo "Temporal schema is up to date"

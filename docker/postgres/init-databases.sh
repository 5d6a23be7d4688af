#!/bin/sh
# First start of the Postgres container only (docker-entrypoint-initdb.d): one database per
# consumer, each owned by its own role, so MLflow and Airflow cannot touch each other's tables.
# Passwords come from the container's environment (docker-compose.yml, from .env) and reach
# SQL as psql variables (:'var' quotes them), never spliced into the SQL text.
set -eu

: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v mlflow_password="$MLFLOW_DB_PASSWORD" \
    -v airflow_password="$AIRFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
SQL

#!/bin/sh
# Registers in Temporal what Metronis Aegis needs, idempotently: its namespace
# and the custom search attributes of core/search_attributes.py (the same ones
# `aegis dev` passes to its dev server). Workflows that set an unregistered
# search attribute fail to start, so this runs before the API and workers.
#
# Used by docker-compose.yml (service temporal-setup) and, verbatim, by
# infra/k8s/temporal/search-attributes-job.yaml; tests/test_deploy_files.py
# checks that the two copies are identical and that the attributes below are
# exactly those the code sets.
#
# Environment: TEMPORAL_ADDRESS (host:port of the frontend), NAMESPACE
# (default), RETENTION of closed workflows' histories (7d), ATTEMPTS (90, two
# seconds apart) for the server to come up.
set -eu

: "${TEMPORAL_ADDRESS:?set TEMPORAL_ADDRESS, e.g. temporal:7233}"
export TEMPORAL_ADDRESS
NAMESPACE="${NAMESPACE:-default}"
RETENTION="${RETENTION:-7d}"
ATTEMPTS="${ATTEMPTS:-90}"
REGISTERED=""

retry() {
  attempt=1
  until "$@"; do
    if [ "$attempt" -ge "$ATTEMPTS" ]; then
      echo "giving up after $attempt attempts: $*" >&2
      return 1
    fi
    attempt=$((attempt + 1))
    sleep 2
  done
}

ensure_namespace() {
  if temporal operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE exists"
  else
    temporal operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION"
  fi
}

# ensure_search_attribute NAME TYPE
ensure_search_attribute() {
  if temporal operator search-attribute list --namespace "$NAMESPACE" | grep -qw "$1"; then
    echo "search attribute $1 exists"
  elif ! temporal operator search-attribute create --namespace "$NAMESPACE" --name "$1" --type "$2"; then
    return 1
  fi
  REGISTERED="$REGISTERED $1"
}

# A list query that names every attribute is rejected until the frontend knows
# them all: wait for that, so that the first workflows can start.
attributes_queryable() {
  query="WorkflowType = 'EvaluateTrace'"
  for name in $REGISTERED; do
    query="$query AND $name != 'probe'"
  done
  temporal workflow list --namespace "$NAMESPACE" --query "$query" --limit 1 >/dev/null
}

echo "waiting for the Temporal frontend at $TEMPORAL_ADDRESS"
retry temporal operator cluster health
retry ensure_namespace

retry ensure_search_attribute AegisOrganizationId Keyword
retry ensure_search_attribute AegisDomain Keyword
retry ensure_search_attribute AegisStatus Keyword
retry ensure_search_attribute AegisTier Keyword
retry ensure_search_attribute AegisSeverity Keyword

retry attributes_queryable
echo "namespace $NAMESPACE is ready with search attributes:$REGISTERED"

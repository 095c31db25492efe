"""Temporal activities: thin adapters between the workflow, PostgreSQL and the evaluators."""

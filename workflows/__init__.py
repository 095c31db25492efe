"""Temporal workflows. Deterministic orchestration only: no I/O, no SQLAlchemy or SDK imports."""

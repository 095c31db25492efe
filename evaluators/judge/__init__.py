"""Tier 3: an LLM judge that rates a trace against its domain's rubric.

Pure: building the prompt, calling a provider and checking its verdict. The
durable parts (retries, persistence, budgets) belong to the activity that
calls ``run_judge``.
"""

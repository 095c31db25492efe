"""Pure evaluation tiers.

Import from the submodules (``evaluators.sanitize`` for Tier 0,
``evaluators.rules`` for Tier 1, ``evaluators.pii``, ``evaluators.types``).
This package module stays empty on purpose so that importing one light
submodule (e.g. from workflow code, which may run in a sandbox that
re-imports modules) does not pull in the others.
"""

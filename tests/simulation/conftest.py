"""Hypothesis profiles of the simulation, chosen by HYPOTHESIS_PROFILE.

``sim-fast`` (the default, run by ``make test``) is small and derandomized, so
CI sees the same examples every time; ``simulate`` (``make simulate``) is the
long search. Both are database-less with no per-example deadline: an example
runs many whole ingest runs, and its time depends on the latency it drew.

test_simulation.py applies the chosen profile to its own test only (nothing
is loaded globally), so the rest of the suite keeps its hypothesis settings.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

_COMMON = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

settings.register_profile(
    "sim-fast", parent=_COMMON, max_examples=120, stateful_step_count=20, derandomize=True
)
settings.register_profile("simulate", parent=_COMMON, max_examples=10_000, stateful_step_count=50)

"""Test configuration, set once per process.

* float64 is enabled here, once (tests that check float32 pass float32 arrays explicitly).
* Rank promotion raises, so a silent broadcast inside a rule fails loudly (as equinox's tests do).
* Hypothesis: no deadline (first calls compile), bounded example counts so the suite stays fast,
  and derandomized so CI sees the same examples every run. For a wider random search run
  ``pytest --hypothesis-profile=thorough`` (200 random examples per test).
"""

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile(
    "default",
    deadline=None,
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    derandomize=True,
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=200, derandomize=False)
settings.load_profile("default")

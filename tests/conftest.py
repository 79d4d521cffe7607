"""Test configuration, set once per process.

* float64 is enabled here, once (tests that check float32 pass float32 arrays explicitly).
* Rank promotion raises, so a silent broadcast inside a rule fails loudly, and dtype promotion is
  strict, so a rule that mixes float32 with float64 (or an int array with a float one) fails
  instead of silently upcasting (as equinox's tests do).
* Hypothesis: no deadline (first calls compile), bounded example counts so the suite stays fast,
  and derandomized so CI sees the same examples every run. For a wider random search run
  ``pytest --hypothesis-profile=thorough`` (200 random examples per test).
"""

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _strict_dtype_promotion(request):
    """Strict dtype promotion around every test, except in modules that drive third-party code
    (optax's schedules mix Python floats with int32 step counts) and say so with
    ``DTYPE_PROMOTION = "standard"``."""
    if getattr(request.module, "DTYPE_PROMOTION", "strict") == "standard":
        yield
        return
    with jax.numpy_dtype_promotion("strict"):
        yield

settings.register_profile(
    "default",
    deadline=None,
    max_examples=10,
    # function_scoped_fixture: the autouse promotion fixture holds for every example alike
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    print_blob=True,
    derandomize=True,
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=200, derandomize=False)
settings.load_profile("default")

"""Test configuration, set once per process.

* float64 is enabled here, once (tests that check float32 pass float32 arrays explicitly).
* Rank promotion raises, so a silent broadcast inside a rule fails loudly, and dtype promotion is
  strict, so a rule that mixes float32 with float64 (or an int array with a float one) fails
  instead of silently upcasting (as equinox's tests do).
* Hypothesis: no deadline (first calls compile), bounded example counts so the suite stays fast,
  and derandomized so CI sees the same examples every run. For a wider random search run
  ``pytest --hypothesis-profile=thorough`` (200 random examples per test).
* XLA:CPU compiles with LLVM at ``-O0`` (``--xla_backend_optimization_level=0``, added to ``XLA_FLAGS``
  unless it names a level): the suite is bound by compilation of small programs, and this cuts its time
  by about 15%. XLA's own passes (fusion, buffer assignment: the programs and the temp memory the tests
  check) do not depend on it, and the suite passes at either level. Subprocesses inherit it.
"""

import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # after XLA_FLAGS: the backend reads them when it starts
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


_CACHE_OPTIONS = {"jax_persistent_cache_min_compile_time_secs": 0, "jax_persistent_cache_min_entry_size_bytes": 0}


@pytest.fixture(scope="session")
def xla_cache_dir(tmp_path_factory):
    """XLA's persistent compilation cache, one folder per test process (each xdist worker), shared by
    the subprocesses it starts. The suite is bound by compilation: each `train()` jits its step afresh
    (so the same config compiles again in every test that trains it), and each fresh process compiles
    everything from scratch. With the cache, a program this process (or a subprocess it waited for)
    already compiled is loaded instead. It is keyed by the program, the compile options, the backend
    and XLA_FLAGS, so a hit is the executable that would have been compiled; it starts empty every run.
    It is not shared between the workers: JAX writes entries without a lock, and a worker reading an
    entry another is still writing would get a warning (a failure where warnings are errors)."""
    cache = tmp_path_factory.getbasetemp() / "xla_cache"
    cache.mkdir(exist_ok=True)
    return cache


@pytest.fixture(scope="session", autouse=True)
def _persistent_compilation_cache(xla_cache_dir):
    """The test processes themselves use the run's cache too (see ``xla_cache_dir``)."""
    saved = {name: getattr(jax.config, name) for name in ["jax_compilation_cache_dir", *_CACHE_OPTIONS]}
    jax.config.update("jax_compilation_cache_dir", str(xla_cache_dir))
    for name, value in _CACHE_OPTIONS.items():
        jax.config.update(name, value)
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


@pytest.fixture(scope="session")
def subprocess_env(xla_cache_dir):
    """The environment for tests that start Python (``mdc-jax``) in a subprocess: the run's
    compilation cache (``xla_cache_dir``), so a subprocess loads what this run has compiled already
    (the same programs a user's fresh process would compile)."""
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(xla_cache_dir),
            **{name.upper(): str(value) for name, value in _CACHE_OPTIONS.items()}}


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

"""Benchmark: closed-form rules vs jax.grad (see `mdc_jax.bench`). Usage: python scripts/bench.py --suite full"""

import sys

from mdc_jax.bench import main

if __name__ == "__main__":
    sys.exit(main())

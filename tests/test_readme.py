"""The README's Python examples run as written (in order, sharing one namespace)."""

import re
from pathlib import Path

import jax.numpy as jnp

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4
    namespace = {}
    for block in blocks:
        if "my_rule" in block:  # the template for the user's own test: only checked to compile
            compile(block, "README.md", "exec")
            continue
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["per_example"][0][0].shape == (32, 4, 16)
    assert jnp.isfinite(namespace["loss"]) and namespace["Z_tau"].shape == (32, 128)

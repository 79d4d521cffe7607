"""The Python examples of the README and of every guide under docs/ run as written.

Each page's ```` ```python ```` blocks run in order, sharing one namespace per page (so a page
sets up what its later blocks use). Blocks that are not Python (```` ```bash ````, ```` ```yaml ````,
```` ```toml ````, plain ```` ``` ````) are not run; a Python block whose first line is ``# template``
(code with names the reader supplies) is only compiled. docs/bracket.md's examples run in
test_bracket.py. The API reference's examples (the docstrings' ``>>>``) run in test_docs.py.
"""

import re
from pathlib import Path

import jax.numpy as jnp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Pages whose examples run elsewhere, or cannot run as written yet (say why).
ELSEWHERE = {
    "bracket.md": "run by tests/test_bracket.py::test_the_docs_examples_run",
    "per_example.md": "its API block uses FCNN and RNN arguments under the same names X, Y (docs/dp_sgd.md runs "
                      "the same calls with a setup)",
}
# Names a page's examples take as given (said in its prose).
PRELUDE = {"rnn.md": "chunk, lr = 10, 0.1"}


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def run_page(page: Path) -> dict:
    namespace: dict = {}
    exec(PRELUDE.get(page.name, ""), namespace)
    for block in python_blocks(page):
        code = compile(block, str(page), "exec")
        if not block.startswith("# template"):
            exec(code, namespace)
    return namespace


def _readme(ns):
    assert jnp.isfinite(ns["loss"]) and jnp.isfinite(ns["rnn_loss"]) and jnp.isfinite(ns["head_loss"])
    assert ns["rnn_grads"].W.shape == (32, 32) and ns["dW"].shape == (32, 2048)
    assert ns["out"]["grad_norm"].shape == (32,) and ns["fit"].converged
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200  # a landing page


WITH_EXAMPLES = {"README.md", "rules.md", "conventions.md", "gradcheck.md", "dp_sgd.md", "fused_head.md", "logistic.md",
                 "notation.md", "models.md", "rnn.md", "curvature.md", "optim.md"}


# What some pages' examples compute, checked beyond "it ran".
CHECKS = {
    "README.md": _readme,
    "conventions.md": lambda ns: ns["per_example"][0][0].shape == (32, 4, 16) or pytest.fail("per-example shape"),
    "rules.md": lambda ns: ns["Z_tau"].shape == (32, 128) or pytest.fail("Z_tau shape"),
}


@pytest.mark.parametrize("page", [p for p in PAGES if p.name not in ELSEWHERE], ids=lambda p: p.name)
def test_page_python_examples_run(page):
    blocks = python_blocks(page)
    assert blocks or page.name not in WITH_EXAMPLES, f"{page.name} lost its examples"
    namespace = run_page(page)
    CHECKS.get(page.name, lambda ns: None)(namespace)


def test_readme_links_point_to_files_that_exist():
    """The README is not part of the docs site (whose links mkdocs checks): its relative links are checked here."""
    links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    local = [link.split("#")[0] for link in links if "://" not in link]
    assert local and [link for link in local if not (ROOT / link).exists()] == []

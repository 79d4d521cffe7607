"""The docs site builds strictly, a broken link or cross-reference fails it, and every docstring example runs.

`make docs` builds the site from mkdocs.yml: the guides under docs/ and an API reference that
mkdocstrings generates from the docstrings. Here it is built with ``--strict``, so a link to a missing
page or anchor, a cross-reference (``[name][mdc_jax.name]``) to nothing, or a docstring role naming a
``mdc_jax.…`` object that does not exist (``:func:`mdc_jax.gone` ``) fails the suite. The docstrings'
``>>>`` examples run through doctest, all modules in one fresh process (an example may register an
activation: it must not leak into other tests). The guides' ``python`` blocks run in test_readme.py.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_site_builds_strictly(tmp_path):
    result = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    api = (tmp_path / "site" / "api" / "mdc_jax" / "index.html").read_text(encoding="utf-8")
    assert 'id="mdc_jax.fcnn_classification_loss"' in api  # the reference really came from the docstrings
    assert (tmp_path / "site" / "benchmarks" / "index.html").exists()


def test_strict_build_fails_on_a_broken_link_and_a_broken_cross_reference(tmp_path):
    """The same configuration over one planted page: each kind of breakage is reported by name."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = tmp_path / "docs"
    docs.mkdir()
    config.update(docs_dir=str(docs), nav=[{"Home": "index.md"}], hooks=[])
    config.pop("exclude_docs", None)
    mkdocstrings = next(p["mkdocstrings"] for p in config["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    python = mkdocstrings["handlers"]["python"]
    python["paths"] = [str(ROOT)]
    python["options"]["extensions"] = [str(ROOT / ext) for ext in python["options"]["extensions"]]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    page = docs / "index.md"

    page.write_text("# Home\n\nSee [the guide](no_such_page.md).\n", encoding="utf-8")
    broken_link = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert broken_link.returncode != 0 and "no_such_page.md" in broken_link.stderr, broken_link.stderr

    page.write_text(textwrap.dedent("""\
        # Home

        [a name that exists][mdc_jax.softmax] and [one that does not][mdc_jax.no_such_function].

        ::: mdc_jax.softmax
        """), encoding="utf-8")
    broken_ref = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert broken_ref.returncode != 0, broken_ref.stderr
    assert "mdc_jax.no_such_function" in broken_ref.stderr and "mdc_jax.softmax'" not in broken_ref.stderr

    # A docstring's role naming a function that is gone (the API reference's own cross-references).
    (tmp_path / "planted.py").write_text('def f():\n    """Like :func:`mdc_jax.fcnn_forward`, see :func:`mdc_jax.gone`."""\n')
    python["paths"].append(str(tmp_path))
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    page.write_text("# Home\n\n::: mdc_jax.fcnn_forward\n\n::: planted\n", encoding="utf-8")
    broken_role = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert broken_role.returncode != 0 and "mdc_jax.gone" in broken_role.stderr, broken_role.stderr
    assert "mdc_jax.fcnn_forward'" not in broken_role.stderr


_DOCTESTS = """
import doctest, importlib, pkgutil, sys
import mdc_jax

failed = attempted = 0
for info in pkgutil.walk_packages(mdc_jax.__path__, "mdc_jax."):
    module = importlib.import_module(info.name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failed, attempted = failed + result.failed, attempted + result.attempted
print(f"{attempted} examples, {failed} failed")
sys.exit(1 if failed or not attempted else 0)
"""


def test_docstring_examples_run():
    result = subprocess.run([sys.executable, "-c", _DOCTESTS], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"a docstring example no longer runs:\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"

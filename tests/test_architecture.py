"""The house rules: a light core, models found through a registry users extend from their own
package, the old import paths kept, and `models/` never installed as a bare `models`."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import mdc_jax
from mdc_jax.experiment import models as model_registry

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("optax", "yaml", "matplotlib", "sklearn", "hypothesis", "pytest", "torch", "chex")

# Makes the optional dependencies unimportable, as on a machine with the core install only.
_BLOCK = textwrap.dedent(f"""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {OPTIONAL!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
    sys.meta_path.insert(0, _Block())
    for m in list(sys.modules):
        if m.split(".")[0] in {OPTIONAL!r}:
            del sys.modules[m]
""")


def run_python(code: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_the_rules_the_checker_and_the_solvers_work_with_the_core_install_alone(tmp_path, subprocess_env):
    code = _BLOCK + textwrap.dedent("""
        import jax, jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        import mdc_jax
        import importlib, pkgutil
        from mdc_jax import bench, gradcheck, reference, registry, rules, solvers, testing
        for package in (rules, reference, bench):  # every rule family, reference and benchmark case imports
            for info in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{package.__name__}.{info.name}")
        specs = registry.list_rules()
        assert len(specs) >= 19
        rows = gradcheck.run_gradcheck(["softmax", "logistic_loss", "identity_logdet"], "float64", seeds=1)
        assert rows and all(r.passed for r in rows), rows
        fit = mdc_jax.fit_logistic_newton(jnp.array([[0.0], [1.0], [2.0], [3.0]]), jnp.array([0, 1, 0, 1]))
        assert fit.converged
        loaded = {m.split(".")[0] for m in sys.modules}
        assert not loaded & set(OPTIONAL), loaded & set(OPTIONAL)
        print("ok", len(specs))
    """).replace("OPTIONAL", repr(OPTIONAL))
    proc = run_python(code, tmp_path, subprocess_env)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-3000:]


def test_train_without_the_extra_names_the_extra_to_install(tmp_path, subprocess_env):
    code = _BLOCK + textwrap.dedent(f"""
        from mdc_jax import cli
        sys.exit(cli.main(["train", r"{REPO / 'configs' / 'fcnn_classification_digits.yaml'}"]))
    """)
    proc = run_python(code, tmp_path, subprocess_env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "needs the 'train' extra" in proc.stderr and "pip install 'mdc-jax[train]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_models_are_installed_as_mdc_jax_models_not_as_a_bare_models(tmp_path, subprocess_env):
    proc = run_python("import mdc_jax_models, sys; print(mdc_jax_models.CONFIGS)\n"
                      "try:\n import models\nexcept ModuleNotFoundError:\n print('no bare models')", tmp_path,
                      subprocess_env)
    assert proc.returncode == 0, proc.stderr
    configs, bare = proc.stdout.splitlines()
    assert bare == "no bare models" and Path(configs, "fcnn_classification_digits.yaml").is_file()


def test_the_shipped_models_register_through_the_entry_point_group():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group=model_registry.MODELS_GROUP)}
    assert set(names) >= {"mlp_classifier", "mlp_regressor", "rnn_charlm", "logistic", "multinomial"}
    for kind, value in names.items():
        if value.startswith("mdc_jax_models."):
            assert model_registry.get_model(kind).options.__module__.startswith("mdc_jax_models")


def test_a_model_from_another_package_trains_without_editing_mdc_jax(tmp_path, subprocess_env):
    """A user's package declares a model in the `mdc_jax.models` entry-point group; `mdc-jax train`
    finds it by its kind. The package is put on the path as an installed distribution would be."""
    site = tmp_path / "site"
    (site / "my_models-0.1.dist-info").mkdir(parents=True)
    (site / "my_models-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: my-models\nVersion: 0.1\n")
    (site / "my_models-0.1.dist-info" / "entry_points.txt").write_text(
        "[mdc_jax.models]\nlinear_softmax = my_models:LINEAR_SOFTMAX\n")
    (site / "my_models.py").write_text(textwrap.dedent("""
        import dataclasses
        import jax, jax.numpy as jnp, numpy as np
        import mdc_jax
        from mdc_jax import reference
        from mdc_jax.experiment.models import Model, ModelOptions, ModelSpec, pick_loss

        @dataclasses.dataclass
        class Options(ModelOptions):
            scale: float = 1.0

        def build(cfg):
            rng = np.random.default_rng(cfg.data.split_seed)
            X = jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)
            Y = jax.nn.one_hot(jnp.argmax(X, axis=1), 3, dtype=jnp.float32)
            loss = pick_loss(mdc_jax.fcnn_classification_loss, reference.fcnn_classification_loss, cfg.train.grad)
            def batch(key):
                idx = jax.random.randint(key, (cfg.train.batch_size,), 0, 64)
                return X[idx], Y[idx]
            def evaluate(p):
                return {"accuracy": float(jnp.mean(jnp.argmax(X @ p[0][0] + p[0][1], 1) == jnp.argmax(Y, 1)))}
            return Model(init=lambda key: [(cfg.model.scale * jnp.zeros((3, 3)), jnp.zeros(3))],
                         loss=lambda p, b: loss(p, *b, []), batch=batch, batch_axes=(0, 0),
                         evaluate=evaluate, primary="accuracy", report=lambda p: {})

        LINEAR_SOFTMAX = ModelSpec("linear_softmax", Options, ("argmax3",), build=build)
    """))
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": "argmax3"}, "model": {"kind": "linear_softmax", "scale": 2},
                                      "optimizer": {"name": "sgd", "learning_rate": 1.0},
                                      "train": {"steps": 30, "batch_size": 16, "eval_every": 30}}))
    env = {**subprocess_env, "PYTHONPATH": str(site)}
    listed = subprocess.run([sys.executable, "-m", "mdc_jax.cli", "models"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and "linear_softmax" in listed.stdout, listed.stderr
    run = subprocess.run([sys.executable, "-m", "mdc_jax.cli", "train", str(config), "--out", str(tmp_path / "run")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "run" / "final.npz").is_file()
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"] == {"kind": "linear_softmax",
                                                                                       "scale": 2.0}


def _fake_distribution(site: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    for module, code in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(code))


def test_a_broken_plugin_is_skipped_with_a_warning_and_a_module_may_register_rules(tmp_path, subprocess_env):
    site = tmp_path / "site"
    _fake_distribution(site, "broken_plugin", "[mdc_jax.models]\nbroken = broken_models:SPEC\n"
                       "not_a_spec = broken_models:NOT\n\n[mdc_jax.rules]\nmine = my_rules\n",
                       {"broken_models": "raise ImportError('no module named torch_geometric')\n",
                        "my_rules": """
                            from mdc_jax.reference.softmax import sample_matrix, softmax
                            from mdc_jax.registry import RuleSpec, register_rule
                            from mdc_jax.rules import softmax as rules
                            register_rule(RuleSpec("my_softmax", "mine", rules.softmax, softmax, sample_matrix))
                        """})
    env = {**subprocess_env, "PYTHONPATH": str(site)}
    cli = [sys.executable, "-m", "mdc_jax.cli"]
    models = subprocess.run([*cli, "models"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert models.returncode == 0 and "mlp_classifier" in models.stdout, models.stderr
    assert "entry point 'broken' = 'broken_models:SPEC'" in models.stderr and "failed to load" in models.stderr
    rules = subprocess.run([*cli, "gradcheck", "--rule", "my_softmax", "--seeds", "1"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert rules.returncode == 0 and "my_softmax" in rules.stdout and "1 passed" in rules.stdout, rules.stderr


def test_every_package_of_the_engine_is_in_the_wheel():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "mdc_jax").rglob("__init__.py")}
    assert on_disk <= listed, on_disk - listed


def test_register_model_refuses_a_taken_kind_and_bad_specs():
    spec = model_registry.get_model("mlp_classifier")
    with pytest.raises(ValueError, match="'mlp_classifier' is already registered"):
        model_registry.register_model(model_registry.ModelSpec("mlp_classifier", spec.options, ("digits",),
                                                               build=spec.build))
    with pytest.raises(ValueError, match="exactly one of build"):
        model_registry.ModelSpec("x", spec.options, ("digits",))
    with pytest.raises(ValueError, match="options must be a dataclass subclassing ModelOptions"):
        model_registry.ModelSpec("x", dict, ("digits",), build=spec.build)


def test_names_users_read_today_still_import():
    from mdc_jax import identities
    from mdc_jax.identities import det, outer_self  # noqa: F401
    from mdc_jax.reference import cross_entropy, rnn_loss, sigmoid, softmax  # noqa: F401
    from mdc_jax.registry import RuleSpec, get_rule, list_rules, register_rule  # noqa: F401
    from mdc_jax.testing import assert_vjp_matches, check_vjp, rel_err  # noqa: F401

    assert identities.linear is mdc_jax.rules.identities.linear
    for name in mdc_jax.__all__:
        assert getattr(mdc_jax, name) is not None



def test_reference_softmax_is_the_module_and_calling_it_still_works():
    """The package's `softmax` no longer hides its module (issue 20, item 5); the old call warns, naming the function."""
    import warnings

    import jax.numpy as jnp
    import numpy as np

    from mdc_jax import reference

    assert reference.softmax is sys.modules["mdc_jax.reference.softmax"]
    assert reference.softmax.softmax.__module__ == "mdc_jax.reference.softmax"
    A = jnp.asarray([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    with pytest.warns(DeprecationWarning, match=r"call mdc_jax\.reference\.softmax\.softmax\(A, axis\)"):
        old = reference.softmax(A, 0)
    np.testing.assert_array_equal(old, reference.softmax.softmax(A, axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference.softmax.softmax(A)  # the function itself does not warn

# --------------------------------------------------------------------------------------------
# The package's shape: no private reaches across modules, modules of one job, namespaces that re-export

PACKAGE = REPO / "mdc_jax"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p) for p in PACKAGE.rglob("*.py")}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The module ``from <level dots><target> import ...`` names, seen from ``module``."""
    if not level:
        return target or ""
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{target}" if target else base


def _attribute_chain(node: ast.Attribute) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None when the chain does not start at a plain name."""
    chain = [node.attr]
    while isinstance(node.value, ast.Attribute):
        node = node.value
        chain.append(node.attr)
    return [node.value.id, *reversed(chain)] if isinstance(node.value, ast.Name) else None


def private_reaches(source: str, module: str, is_package: bool = False, modules=MODULES) -> list[str]:
    """Where ``source`` (the code of ``module``) uses a private name of another mdc_jax module:
    ``from .x import _y``, ``from mdc_jax.x import _y``, or ``x._y`` with ``x`` an mdc_jax module.
    Private *modules* (``_validation``, ``_sampling``) are the package's to share; dunders are fine."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> the mdc_jax module it is bound to
    reaches = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mdc_jax":
                    bound[alias.asname or "mdc_jax"] = alias.name if alias.asname else "mdc_jax"
        elif isinstance(node, ast.ImportFrom):
            source_module = _absolute(module, is_package, node.level, node.module)
            if source_module.split(".")[0] != "mdc_jax":
                continue
            for alias in node.names:
                if f"{source_module}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{source_module}.{alias.name}"
                elif _is_private(alias.name) and source_module != module:
                    reaches.append(f"{node.lineno}: from {source_module} import {alias.name}")
    for node in ast.walk(tree):
        chain = _attribute_chain(node) if isinstance(node, ast.Attribute) else None
        if not chain or chain[0] not in bound or not _is_private(chain[-1]):
            continue
        owner = bound[chain[0]]
        for attr in chain[1:-1]:
            owner = f"{owner}.{attr}" if f"{owner}.{attr}" in modules else None
            if owner is None:
                break
        if owner is not None and owner != module:
            reaches.append(f"{node.lineno}: {'.'.join(chain)} ({owner}.{chain[-1]})")
    return sorted(set(reaches), key=lambda r: int(r.split(":")[0]))


def test_the_private_reach_check_sees_each_kind_of_reach():
    modules = {"mdc_jax", "mdc_jax.rules", "mdc_jax.rules.fcnn", "mdc_jax.rules.rnn", "mdc_jax._validation"}
    reach = lambda code, module="mdc_jax.rules.rnn": private_reaches(textwrap.dedent(code), module, modules=modules)
    assert reach("from .fcnn import _check, forward") == ["1: from mdc_jax.rules.fcnn import _check"]
    assert reach("from mdc_jax.rules.fcnn import _check") == ["1: from mdc_jax.rules.fcnn import _check"]
    assert reach("from . import fcnn as f\nf._check(1)") == ["2: f._check (mdc_jax.rules.fcnn._check)"]
    assert reach("import mdc_jax\nmdc_jax.rules.fcnn._penalty") == [
        "2: mdc_jax.rules.fcnn._penalty (mdc_jax.rules.fcnn._penalty)"]
    assert reach("from .. import _validation as v\nv._private()", "mdc_jax.rules.rnn") == [
        "2: v._private (mdc_jax._validation._private)"]
    # allowed: a module's own privates, private modules, dunders, other packages' privates
    assert reach("from .rnn import _chunks\nfrom . import rnn\nrnn._chunks") == []
    assert reach("from .. import _validation as v\nv.require_bool(1)\nfrom . import fcnn\nfcnn.__name__") == []
    assert reach("import jax\njax._src.core\nfrom jax._src import core\nx = object()\nx._y") == []
    assert reach("from . import _z") == ["1: from mdc_jax.rules import _z"]  # not a module: a private name


def test_no_module_of_mdc_jax_uses_a_private_name_of_another():
    """What another module needs gets a public, documented name in its home module (issue 20, item 2)."""
    reaches = [f"{path.relative_to(REPO)}:{reach}" for path in sorted(PACKAGE.rglob("*.py"))
               for reach in private_reaches(path.read_text(), _module_name(path), path.name == "__init__.py")]
    assert not reaches, "private names used across modules:\n" + "\n".join(reaches)


MAX_LINES = 500
WHOLE = "reads better whole"


def test_no_module_is_over_500_lines_unless_its_docstring_says_why():
    """A module over 500 lines does several jobs, unless it is one job that reads better whole: then its
    docstring says so, with the phrase "reads better whole" and the reason."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_LINES and WHOLE not in (ast.get_docstring(ast.parse(source)) or ""):
            long.append(f"{path.relative_to(REPO)}: {lines} lines")
    assert not long, f"over {MAX_LINES} lines, without '{WHOLE}' and why in the docstring:\n" + "\n".join(long)


NAMESPACES = {"mdc_jax.identities": "mdc_jax.rules.identities", "mdc_jax.per_example": "mdc_jax.rules.per_example",
              "mdc_jax.bracket": "mdc_jax.rules.bracket"}


def _re_exports(module: str) -> tuple[dict[str, str], list[str], list[str]]:
    """A module's ``from X import name as name`` lines ({name: X}), its ``__all__``, and what else it holds."""
    path = REPO / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    imported, names, other = {}, [], []
    for i, node in enumerate(tree.body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.ImportFrom) and all(a.asname == a.name for a in node.names) and len(node.names) == 1:
            imported[node.names[0].name] = _absolute(module, path.name == "__init__.py", node.level, node.module)
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            names = ast.literal_eval(node.value)
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]:
            continue
        else:
            other.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return imported, names, other


@pytest.mark.parametrize("namespace", sorted(NAMESPACES))
def test_a_family_namespace_is_one_re_export_per_line_from_its_rules(namespace):
    """`mdc_jax.identities`, `.per_example`, `.bracket`: a re-export only (`from .rules.<family> import x as x`,
    one a line), listed in `__all__`, of the same objects as the rules module's."""
    import importlib

    imported, names, other = _re_exports(namespace)
    assert not other, f"{namespace} holds more than re-exports: {other}"
    assert sorted(names) == sorted(imported), f"{namespace}: __all__ and the re-exports differ"
    home = NAMESPACES[namespace]
    assert all(source == home or source.startswith(f"{home}.") for source in imported.values()), imported
    public, rules = importlib.import_module(namespace), importlib.import_module(home)
    for name in names:
        assert getattr(public, name) is getattr(rules, name), f"{namespace}.{name} is not {home}.{name}"


def test_the_flat_names_are_one_re_export_per_line_listed_in_all():
    imported, names, other = _re_exports("mdc_jax")
    assert not other, f"mdc_jax/__init__.py holds more than re-exports: {other}"
    assert sorted(names) == sorted(imported) == names, "mdc_jax.__all__: every re-export once, sorted"

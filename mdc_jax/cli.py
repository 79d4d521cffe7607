"""The `mdc-jax` command line: argument parsing only; the work lives in library functions."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

TRAIN_EXTRA_MODULES = ("optax", "yaml", "matplotlib", "sklearn")


def _enable_x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _with_train_extra(command: str, run) -> int:
    """Runs ``run()``; a missing optional dependency becomes one line naming the extra to install."""
    try:
        return run()
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        print(f"mdc-jax {command}: needs the 'train' extra (missing module {err.name!r}); install it with "
              f"pip install 'mdc-jax[train]'", file=sys.stderr)
        return 2


def _usage_error(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _check_out(flag: str, path: str | None) -> str | None:
    """Why ``path`` (an output folder, as given) is unusable, or None."""
    if path is not None and not path.strip():
        return f"{flag}: expected a directory path, got an empty string"
    return None


def _check_writable(flag: str, path: str | None) -> str | None:
    """Why the file ``path`` cannot be written, or None; checked before a long job that ends writing it."""
    if path is None:
        return None
    target = Path(path)
    if not path.strip():
        return f"{flag}: expected a file path, got an empty string"
    if target.is_dir():
        return f"{flag} {path}: is a directory; expected a file path"
    folder = target.parent
    if not folder.is_dir():
        return f"{flag} {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        return f"{flag} {path}: cannot be written (permission denied)"
    return None


def _demo(args: argparse.Namespace) -> int:
    def run():
        from .experiment.trainer import check_new_run_dir

        if problem := _check_out("--out", args.out):
            return _usage_error(f"mdc-jax demo: {problem}")
        if args.out is not None:
            check_new_run_dir(args.out, hint="give a new or empty directory")  # before the gradient check
        _enable_x64()  # for the float64 gradient check; the models train in float32
        from .demo import run_demo

        overrides = [*(args.set or []), *([f"train.steps={args.steps}"] if args.steps is not None else []),
                     *([f"train.seed={args.seed}"] if args.seed is not None else [])]
        result = run_demo(args.config, overrides, out_dir=args.out)
        return 0 if result["grad_check_passed"] else 1

    return _with_train_extra("demo", run)


def _rules(args: argparse.Namespace) -> int:
    from .registry import list_rules

    specs = list_rules()
    width = max(len(s.name) for s in specs)
    print(f"{'rule':{width}}  seed reference")
    for s in specs:
        print(f"{s.name:{width}}  {s.seed}")
    return 0


def _gradcheck(args: argparse.Namespace) -> int:
    if args.dtype == "float64":
        _enable_x64()
    from .gradcheck import format_rows, print_progress, run_gradcheck
    from .registry import get_rule

    if args.seeds < 1:
        print(f"mdc-jax gradcheck: --seeds must be >= 1 (random inputs per rule); got {args.seeds}. "
              f"A check of nothing would pass vacuously.", file=sys.stderr)
        return 2
    if problem := _check_writable("--json", args.json):
        return _usage_error(f"mdc-jax gradcheck: {problem}")
    try:
        for name in args.rule or []:
            get_rule(name)
    except ValueError as err:
        print(f"mdc-jax gradcheck: --rule: {err}", file=sys.stderr)
        return 2
    rows = run_gradcheck(args.rule or None, args.dtype, args.seeds, progress=print_progress)
    if not rows:
        print("mdc-jax gradcheck: no rule is registered, so nothing was checked.", file=sys.stderr)
        return 2
    print(format_rows(rows))
    if args.json:
        import dataclasses

        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=2)
    return 0 if all(r.passed for r in rows) else 1


def _models(args: argparse.Namespace) -> int:
    from .experiment.models import list_models

    specs = list_models()
    width = max([len(s.kind) for s in specs] or [4])
    print(f"{'kind':{width}}  {'trained by':10}  datasets / description")
    for s in specs:
        print(f"{s.kind:{width}}  {'gradient' if s.build else 'solver':10}  {', '.join(s.datasets)}: {s.description}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .experiment import distributed

    options = distributed.resolve(args.coordinator, args.num_processes, args.process_id, args.distributed,
                                  args.timeout)  # bad flags fail here, before anything starts
    if options is None:
        if args.timeout is not None:
            return _usage_error("mdc-jax train: --timeout applies to a run across processes (--coordinator, "
                                "--num-processes, --process-id, or --distributed) only")
        return _with_train_extra("train", lambda: _train_here(args, None))
    try:
        processes = distributed.join(options)
    except distributed.DistributedError as err:
        print(f"mdc-jax train: {err}", file=sys.stderr)
        return distributed.EXIT_DISTRIBUTED
    try:
        code = _with_train_extra("train", lambda: _train_here(args, processes))
    except BaseException as err:  # leave at once: jax's shutdown barrier would wait for peers that may be gone
        code = _runtime_error("train", err) if isinstance(err, RuntimeError | MemoryError) else None
        if isinstance(err, distributed.DistributedError):
            code = distributed.EXIT_DISTRIBUTED
        elif isinstance(err, KeyboardInterrupt):
            code, err = 130, "interrupted"
        elif code is None:
            code = 2 if isinstance(err, ValueError | OSError) else 1
            if code == 1:
                import traceback

                traceback.print_exc()
        message = f"mdc-jax train: {processes.label}: {err}" if code in (2, distributed.EXIT_DISTRIBUTED, 130) else ""
        distributed.stop(processes, message, code)
    if code == 0:
        distributed.leave(processes)
    else:
        distributed.stop(processes, "", code)
    return code


def _train_here(args: argparse.Namespace, processes) -> int:
    from .experiment.config import ConfigError, load_config
    from .experiment.models import find_config, get_model
    from .experiment.trainer import load_run_config, train

    if problem := _check_out("--out", args.out) or _check_out("--resume", args.resume):
        raise ConfigError(problem)
    if args.start_over and not args.resume:
        raise ConfigError("--start-over applies to --resume RUN_DIR only")
    try:
        if args.config is None:
            if not args.resume:
                raise ConfigError("give a config (a path, or the name of a shipped one), or --resume RUN_DIR")
            cfg = load_run_config(args.resume, args.set or [])
        else:
            cfg = load_config(find_config(args.config), args.set or [])
    except (ValueError, OSError) as err:
        if processes is not None:  # tell the others, which wait in the start-up agreement: all stop, naming this one
            from .experiment.distributed import check_agreement

            check_agreement(processes.agree({"problem": str(err)}))
        raise
    if get_model(cfg.model.kind).float64:
        _enable_x64()
    train(cfg, out_dir=args.out, resume=args.resume, start_over=args.start_over, processes=processes)
    return 0


def _sweep(args: argparse.Namespace) -> int:
    def run():
        from .experiment.models import find_config, get_model
        from .experiment.sweep import plan_sweep, run_sweep

        if problem := _check_out("--out", args.out):
            return _usage_error(f"mdc-jax sweep: {problem}")
        out = args.out if args.out is not None else f"runs/sweep-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        configs = [find_config(c) for c in args.configs]
        # Each grid point's config as it will run: a required key may come from the grid alone.
        if any(get_model(cfg.model.kind).float64 for _, _, cfg in plan_sweep(configs, args.set or [], args.grid or [])):
            _enable_x64()  # Newton fits run in float64; gradient-trained models are explicitly float32
        rows = run_sweep(configs, args.set or [], args.grid or [], out)
        print((Path(out) / "sweep.md").read_text(), end="")
        return 0 if rows else 1

    return _with_train_extra("sweep", run)


def _bench(args: argparse.Namespace) -> int:
    def run():
        from .bench import main as bench_main

        if problem := _check_writable("--json", args.json):
            return _usage_error(f"mdc-jax bench: {problem}")
        argv = ["--suite", args.suite, "--dtype", args.dtype] + (["--json", args.json] if args.json else [])
        if args.only:
            argv += ["--only", *args.only]
        return bench_main(argv)

    return _with_train_extra("bench", run)


def _bracket(args: argparse.Namespace) -> int:
    from .bracket import gradient, parse

    expr = parse(args.expr)
    for name in args.wrt or expr.names:
        print(gradient(expr, name).equation(ascii=args.ascii))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdc-jax", description="Closed-form backpropagation rules for JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="check, train and time a model on bundled data (default: the digits MLP)")
    demo.add_argument("config", nargs="?", default="fcnn_classification_digits",
                      help="a gradient-trained config, path or shipped name (default: fcnn_classification_digits)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    demo.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    demo.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    demo.add_argument("--out", help="run directory, new or empty (default: runs/<config-name>-<timestamp>)")
    demo.set_defaults(func=_demo)

    rules = sub.add_parser("rules", help="list the registered rules and their seed references")
    rules.set_defaults(func=_rules)

    models = sub.add_parser("models", help="list the model kinds configs can name (model.kind)")
    models.set_defaults(func=_models)

    check = sub.add_parser("gradcheck", help="check rules against jax.grad and finite differences")
    check.add_argument("--rule", action="append", metavar="NAME", help="a rule to check (repeatable; default: all)")
    check.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    check.add_argument("--seeds", type=int, default=3, help="random inputs per rule (default: 3)")
    check.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    check.set_defaults(func=_gradcheck)

    train = sub.add_parser("train", help="train the model a YAML config describes")
    train.add_argument("config", nargs="?", help="a YAML config: a path, or the name of a shipped one (see configs/); "
                       "optional with --resume, which reads the run's own config.yaml")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.steps=100")
    train.add_argument("--out", help="run directory, new or empty (default: runs/<config-name>-<timestamp>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint "
                       "(train.steps and optimizer settings may be changed with --set)")
    train.add_argument("--start-over", action="store_true",
                       help="with --resume: train from step 0 when no checkpoint of the run can be read")
    joined = train.add_argument_group("across processes (docs/distributed.md)")
    joined.add_argument("--coordinator", metavar="HOST:PORT",
                        help="process 0's address, served by process 0 (default: $JAX_COORDINATOR_ADDRESS)")
    joined.add_argument("--num-processes", type=int, metavar="P", help="processes in the run (default: $JAX_NUM_PROCESSES)")
    joined.add_argument("--process-id", type=int, metavar="I", help="this process, 0 .. P-1 (default: $JAX_PROCESS_ID)")
    joined.add_argument("--distributed", action="store_true", help="join the processes jax.distributed.initialize() "
                        "detects by itself (SLURM's srun, Open MPI, Kubernetes, Cloud TPU)")
    joined.add_argument("--timeout", type=float, metavar="SECONDS", help="the longest wait for the other processes: "
                        "joining, the start-up agreement, one step (default: 300)")
    train.set_defaults(func=_train)

    sweep = sub.add_parser("sweep", help="run several experiments and tabulate them")
    sweep.add_argument("configs", nargs="+", help="YAML configs")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE", help="override applied to every run")
    sweep.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="run every combination of values")
    sweep.add_argument("--out", help="output folder, new or empty (default: runs/sweep-<timestamp>)")
    sweep.set_defaults(func=_sweep)

    from .bench import CASE_MODULES, DTYPES  # names only: the bench package imports nothing heavy

    bench = sub.add_parser("bench", help="benchmark closed-form rules against jax.grad")
    bench.add_argument("--suite", choices=["small", "full"], default="small")
    bench.add_argument("--only", nargs="*", choices=CASE_MODULES, metavar="FAMILY",
                       help=f"rule families, run in the order given ({' '.join(CASE_MODULES)}; default: all)")
    bench.add_argument("--dtype", choices=DTYPES, default="float32",
                       help="the cases' dtype (default: float32); bfloat16 runs the families that support it and "
                            "names the others with the reason")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON (rewritten after each family)")
    bench.set_defaults(func=_bench)

    brk = sub.add_parser("bracket", help="the gradient of a bracket expression by seed 000's §4.2 rule")
    brk.add_argument("expr", help="the explicit bracket form, e.g. '(a_i X_ij b_j | )' (see docs/bracket.md)")
    brk.add_argument("--wrt", action="append", metavar="TENSOR",
                     help="differentiate with respect to TENSOR (repeatable; default: every tensor)")
    brk.add_argument("--ascii", action="store_true", help="spell ∇ as grad and δ as delta")
    brk.set_defaults(func=_bracket)
    return parser


def _runtime_error(command: str, err: Exception) -> int | None:
    """The exit status for a non-finite loss (3), a failure of XLA or the host running out of memory (1),
    after one line on stderr; None for any other error. Neither module is imported here: an error of
    one was raised by it. Only XLA's own RESOURCE_EXHAUSTED is blamed on the model and batch sizes: a
    Python MemoryError (the DP accountant's, say) carries its own message, which names its cause."""
    trainer, jax = sys.modules.get("mdc_jax.experiment.trainer"), sys.modules.get("jax")
    if trainer is not None and isinstance(err, trainer.NonFiniteLoss):
        print(f"mdc-jax {command}: {err}", file=sys.stderr)
        return trainer.EXIT_NON_FINITE
    first = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, MemoryError):
        print(f"mdc-jax {command}: error: out of host memory: {type(err).__name__}"
              + (f": {first[:600]}" if first else ""), file=sys.stderr)
        return 1
    first = first[:300]
    if jax is not None and isinstance(err, jax.errors.JaxRuntimeError):
        if "RESOURCE_EXHAUSTED" in first:
            print(f"mdc-jax {command}: error: XLA ran out of memory ({first}): reduce model sizes or train.batch_size",
                  file=sys.stderr)
        else:
            print(f"mdc-jax {command}: error: XLA failed: {first or type(err).__name__}", file=sys.stderr)
        return 1
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # a ConfigError, or bad input reaching a library function: one line
        print(f"mdc-jax {args.command}: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as err:
        code = _runtime_error(args.command, err)
        if code is None:
            raise
        return code


if __name__ == "__main__":
    sys.exit(main())

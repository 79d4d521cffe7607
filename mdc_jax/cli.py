"""The `mdc-jax` command line: argument parsing only; the work lives in library functions."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)  # for the float64 gradient check; training is float32
    from models.digits_demo import run_digits_demo

    result = run_digits_demo(steps=args.steps, seed=args.seed)
    return 0 if result["grad_check_max_rel_err"] <= 1e-10 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdc-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train an FCNN on the bundled digits data with the closed-form gradient")
    demo.add_argument("--steps", type=int, default=1500, help="training steps (default: 1500)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

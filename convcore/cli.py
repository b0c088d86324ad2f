"""The ``convcore`` command: ``convcore bench``, ``convcore tune``, ``convcore train``, ``convcore backends``."""
from __future__ import annotations

import argparse
import sys


def _backends(args) -> int:
    import convcore

    for info in convcore.backends().values():
        print(info)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="convcore", description="Hand-written CPU and CUDA kernels for CNNs.")
    commands = parser.add_subparsers(dest="command", required=True)
    from .bench.cli import add_parser as add_bench
    from .bench.tune_cli import add_parser as add_tune
    from .train import add_parser as add_train

    add_bench(commands)
    add_tune(commands)
    add_train(commands)
    listing = commands.add_parser("backends", help="report which backends are available, and why")
    listing.set_defaults(run=_backends)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

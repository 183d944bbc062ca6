"""The `fastnn` command: `fastnn train`, `fastnn bench`, `fastnn info`.

Each subcommand lives in its own module with `add_arguments(parser)` and
`run(args) -> int`; this file only wires them up.
"""
import argparse
import importlib
import sys

SUBCOMMANDS = {
    "train": ("fastnn._cli_train", "train a network (default: a small CNN on the shipped digits set)"),
    "bench": ("fastnn._cli_bench", "benchmark fastnn against NumPy and PyTorch"),
    "info": (None, "print the build and run-time configuration"),
}


def build_parser(command=None):
    """The argument parser; only the chosen subcommand's module is imported (others stay unloaded)."""
    parser = argparse.ArgumentParser(prog="fastnn", description="fastnn: fast CPU neural-network kernels")
    sub = parser.add_subparsers(dest="command")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if module is not None and name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    import fastnn

    if args.command == "info":
        fastnn.show_config()
        return 0
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    # train and bench are whole programs: freed arrays stay in the process (no page faults per step).
    fastnn.keep_freed_memory()
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

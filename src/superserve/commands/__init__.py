"""CLI subcommands: one module each, with `add_arguments(parser)` and `run(args) -> int`.
Command modules import heavy dependencies inside `run`."""

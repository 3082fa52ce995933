"""The `scaling` command line: one module per command group, each with `register(subparsers)`."""

"""CLI subcommands: each module's ``register(subparsers)`` adds one thin caller of an engine stage."""

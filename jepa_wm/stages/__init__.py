"""CLI glue: one module per stage with ``add_arguments(parser)`` and ``main(cfg)``."""

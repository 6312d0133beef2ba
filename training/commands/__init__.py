"""One module per ``llm-sap`` subcommand: ``add_arguments(parser)`` and ``run(cfg, args, console)``."""

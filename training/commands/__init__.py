"""The offline ``llm-sap`` subcommands (evaluate, select-*, distill, sft, grpo, merge, ...): one
module each, with ``add_arguments(parser)``, ``overrides(args)`` and ``run(cfg, args, console)``."""

"""The live ``llm-sap`` subcommands (serve, replay, demo, watch): one module each, with
``add_arguments(parser)``, ``overrides(args)`` and ``run(cfg, args, console)``; ``cfg`` is a
``streamer.config.LiveConfig`` (the whole tree's live part)."""

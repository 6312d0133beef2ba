"""The ``llm-sap`` command line: one entry point over the commands each package owns.

``streamer.commands`` owns the live ones (serve, replay, demo), ``training.commands`` the offline
ones. Only the module of the command that runs is imported, so ``llm-sap evaluate`` works without
the streaming extra. ``main(argv)`` returns the exit code (0 ok, 2 bad input, 1 unexpected
failure), so tests call it directly. Bad input prints one line, ``llm-sap: error: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import structlog
from rich.console import Console

from planner.exceptions import PlannerError
from planner.logs import configure_logging
from streamer.exceptions import StreamerError
from training.config import load_config
from training.exceptions import TrainingError, UsageError

# subcommand -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "evaluate": ("training.commands.evaluate", "score a planner (or predictions) on the CholecT50-SAP split"),
    "select-prior": ("training.commands.select_prior", "choose the sequence prior's settings by CV"),
    "select-fusion": ("training.commands.select_fusion", "choose the engine/prior fusion weight by CV"),
    "fit-learned": (
        "training.commands.fit_learned",
        "CV the next-action model families; fit the learned planner",
    ),
    "serve": ("streamer.commands.serve", "run the live service until stopped"),
    "replay": ("streamer.commands.replay", "a recorded video through the live pipeline, into a report"),
    "replay-eval": (
        "training.commands.replay_eval",
        "the split's videos through the live pipeline, scored with the paper's metrics",
    ),
    "demo": ("streamer.commands.demo", "the whole system on embedded defaults, watched from the terminal"),
    "watch": ("streamer.commands.watch", "what the assistant publishes for a room, from any MQTT broker"),
    "tiny-model": ("training.commands.tiny_model", "build a tiny random Qwen2 / Qwen2-VL checkpoint locally"),
    "distill": ("training.commands.distill", "teacher answers for the training samples, verified, as chats"),
    "sft": ("training.commands.sft", "LoRA SFT (TRL) on distilled chats: --config FILE [--resume]"),
    "grpo": ("training.commands.grpo", "GRPO (TRL) from the SFT adapter with rule-based rewards"),
    "merge": ("training.commands.merge", "merge a LoRA adapter into its base for TensorRT-LLM / vLLM"),
    "train-recognizer": ("training.commands.train_recognizer", "train the streamer's frame classifier"),
}


class _HelpFormatter(argparse.HelpFormatter):
    """Every option says its default: "(required)", the help's own words about it, or "(default: X)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or action.help == argparse.SUPPRESS or action.nargs == 0:
            return text  # positional arguments, flags (off unless given), --help
        if action.required:
            return f"{text} (required)"
        if "default" in text:
            return text
        if action.default is None or action.default == []:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument(
        "--config",
        type=Path,
        action="append",
        default=[],
        help="TOML file over the built-in defaults (repeatable; default: none)",
    )
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. planner.settings.deadline_s=2 (repeatable; default: none)",
    )
    g.add_argument(
        "--log-format",
        choices=("console", "json"),
        help="log format (default: console, or the config's logging.format)",
    )
    g.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="debug also shows other libraries' warnings and progress bars "
        "(default: info, or the config's logging.level; demo: warning)",
    )


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> tuple[_Parser, ModuleType | None]:
    """The parser, with the full options of ``command`` only: its module is the one imported."""
    parser = _Parser(prog="llm-sap", description="Real-time surgical action planning assistant.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    module: ModuleType | None = None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            _common(p)
    return parser, module


class Terminated(BaseException):
    """SIGTERM arrived while a command was starting or running outside its own signal handling."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run one command; SIGTERM ends it like SIGINT does (one line, exit 143), never by signal."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    console = Console()
    if not console.is_terminal:  # files and CI logs: wide enough for the 13-column table
        console = Console(width=150)
    err = Console(stderr=True)
    try:
        words = sys.argv[1:] if argv is None else argv
        parser, module = build_parser(chosen_command(words))
        args = parser.parse_args(words)
        if args.command is None or module is None:
            parser.print_help()
            return 2
        cli_sets = list(args.set)
        if args.log_format:
            cli_sets.append(f"logging.format={args.log_format!r}")
        if args.log_level:
            cli_sets.append(f"logging.level={args.log_level!r}")
        cfg = load_config(args.config, [*cli_sets, *module.overrides(args)])
        configure_logging(cfg.logging.format, cfg.logging.level)
        code: int = module.run(cfg, args, console)
        return code
    except (TrainingError, PlannerError, StreamerError) as exc:
        err.print(f"llm-sap: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return int(getattr(exc, "exit_code", 2))  # 2 bad input; 1 a stream failed (StreamFailedError)
    except KeyboardInterrupt:
        err.print("llm-sap: interrupted", markup=False)
        return 130
    except Terminated:
        err.print("llm-sap: stopped (SIGTERM)", markup=False)
        return 143
    except Exception as exc:  # unexpected: log it with its traceback, exit 1
        structlog.get_logger(__name__).exception("cli.failed", error=str(exc))
        return 1


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()

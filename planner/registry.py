"""One registry mechanism for every pluggable family: engines, sources, recognizers, teachers.

A family maps names to ``"module:attribute"`` targets (or ``"module"`` for a module that is the
plugin), imported only when chosen, so heavy packages load only where they are used. A spec is
``NAME`` or ``NAME:ARG``; a family may name a ``fallback`` kind that takes any other spec whole
(sources: a file path or a URL is a video). An unknown name raises the family's error with one
message format: ``unknown <family> 'NAME' (known: a, b, c)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PluginSpec:
    name: str  # the registered kind
    arg: str  # what follows "NAME:" ("" when absent); for the fallback kind, the whole spec


class PluginRegistry:
    def __init__(
        self,
        family: str,
        targets: Mapping[str, str],
        *,
        error: type[Exception],
        fallback: str | None = None,
    ) -> None:
        if fallback is not None and fallback not in targets:
            raise ValueError(f"{family}: fallback {fallback!r} is not registered")
        self.family = family
        self._targets = dict(targets)
        self._error = error
        self._fallback = fallback

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._targets))

    def register(self, name: str, target: str) -> None:
        """Add a kind (``"module:attribute"``); a name already taken is an error."""
        if name in self._targets:
            raise ValueError(f"{self.family} {name!r} is already registered")
        self._targets[name] = target

    def parse(self, spec: str) -> PluginSpec:
        spec = spec.strip()
        name, _, arg = spec.partition(":")
        if name in self._targets and name != self._fallback:
            return PluginSpec(name, arg)
        if self._fallback is not None and spec:
            return PluginSpec(self._fallback, spec)
        raise self._error(f"unknown {self.family} {name!r} (known: {', '.join(self.names())})")

    def load(self, name: str) -> Any:
        """The registered object (imported now); ``KeyError``-free: unknown names raise the error."""
        target = self._targets.get(name)
        if target is None:
            raise self._error(f"unknown {self.family} {name!r} (known: {', '.join(self.names())})")
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr) if attr else module

    def resolve(self, spec: str) -> tuple[Any, str]:
        """(the registered object for ``spec``, its argument)."""
        parsed = self.parse(spec)
        return self.load(parsed.name), parsed.arg

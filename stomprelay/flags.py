"""How one option of ``stomprelay`` is declared, read and shown.

An :class:`Option` is a flag with its environment variable, type, default,
bounds and the :class:`~stomprelay.settings.Settings` fields it fills;
:mod:`stomprelay.options` holds the table of them all.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stomprelay.settings import Settings

#: Groups of options: the commands that share a group declare it once.
SERVE, REDIS, HISTORY, AUTH = "serve", "redis", "history", "auth"

_UNSET: Any = object()


class OptionError(ValueError):
    """A value the options cannot take; the message names the flag."""


def comma_list(text: str) -> tuple[str, ...]:
    """``a, b,,c`` -> ``("a", "b", "c")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _split(value: str) -> list[str]:
    return [part for part in value.split(",") if part]


def _yes(value: str) -> bool:
    return value in ("1", "true", "yes")


def not_zero(value: str) -> bool:
    return value not in ("", "0")


def not_no(value: str) -> bool:
    return value not in ("0", "false", "no")


@dataclass(frozen=True, slots=True)
class Option:
    """One option of the command line: flag, environment variable, type, default,
    help, bounds, and the :class:`Settings` fields its value fills."""

    flag: str
    help: str
    #: Environment variable giving the default; None: none.
    env: str | None = None
    #: Settings fields it sets (``limits.x`` for :class:`Limits`); the first one's
    #: default is the option's, unless ``default`` is given.
    fields: tuple[str, ...] = ()
    #: Type of the value (``int``, ``float``, ``str``, :func:`comma_list`);
    #: ``bool`` makes a switch (``store_true``), ``"toggle"`` a --x/--no-x pair.
    kind: Any = str
    default: Any = _UNSET
    #: Smallest value allowed, and whether 0 is excluded too (``positive``).
    minimum: float | None = None
    positive: bool = False
    choices: tuple[str, ...] | None = None
    #: How the environment variable's text becomes the value (default: ``kind``;
    #: a switch: :func:`_yes`; a repeatable option: comma separated).
    from_env: Callable[[str], Any] | None = None
    #: The value as the Settings field wants it (e.g. ``allow`` -> True).
    to_setting: Callable[[Any], Any] | None = None
    #: Raises ValueError on a value it refuses (the message is shown).
    validate: Callable[[Any], object] | None = None
    groups: frozenset[str] = frozenset({SERVE})
    #: The README's default column, where the value alone says too little.
    shown: str | None = None
    #: Repeatable (``append``); its variable is comma separated.
    repeat: bool = False
    hidden: bool = False
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute name (``--journal-size`` -> ``journal_size``)."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def base_default(self) -> Any:
        """The default before the environment: given, else the Settings field's."""
        if self.default is not _UNSET:
            return self.default
        if self.fields:
            return _setting(Settings(), self.fields[0])
        return False if self.kind in (bool, "toggle") else None

    def env_default(self, environ: Mapping[str, str]) -> Any:
        """The default with the environment applied; OptionError names the variable."""
        raw = environ.get(self.env) if self.env else None
        if raw is None or raw == "":
            return self.base_default
        if self.from_env is not None:
            parse = self.from_env
        elif self.kind in (bool, "toggle"):
            parse = _yes
        elif self.repeat:
            parse = _split
        else:
            parse = self.kind
        try:
            return parse(raw)
        except ValueError:
            raise OptionError(f"{self.env} must be a number, not {raw!r}") from None

    def add_to(self, parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
        """Add this option to ``parser``, its default read from ``environ``."""
        extra: dict[str, Any] = {}
        if self.kind is bool:
            extra["action"] = "store_true"
        elif self.kind == "toggle":
            extra["action"] = argparse.BooleanOptionalAction
        elif self.repeat:
            extra["action"] = "append"
        elif self.kind is not str:
            extra["type"] = self.kind
        if self.choices:
            extra["choices"] = self.choices
        if self.metavar:
            extra["metavar"] = self.metavar
        help_text = argparse.SUPPRESS if self.hidden else self.help
        if self.env and not self.hidden:
            help_text += f" (env {self.env})"
        parser.add_argument(self.flag, default=self.env_default(environ), help=help_text, **extra)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused, or None."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.positive and value <= 0:
                return f"{self.flag} must be positive, not {value}"
            if self.minimum is not None and value < self.minimum:
                if self.minimum == 0:
                    return f"{self.flag} must not be negative, not {value}"
                return f"{self.flag} must be at least {self.minimum:g}, not {value}"
        if self.choices and value not in self.choices:
            return f"{self.flag} ({self.env}) is one of {', '.join(self.choices)}, not {value!r}"
        if self.validate is not None and value is not None:
            try:
                self.validate(value)
            except ValueError as exc:
                return f"{self.flag}: {exc}"
        return None


def _setting(settings: Settings, name: str) -> Any:
    owner: Any = settings
    for part in name.split("."):
        owner = getattr(owner, part)
    return owner


def limit(name: str, help_text: str, minimum: float = 1, *, positive: bool = False) -> Option:
    """A protocol limit: flag and variable are the setting's name (``limits.`` dropped)."""
    short = name.rpartition(".")[2]
    return Option(
        "--" + short.replace("_", "-"),
        help_text,
        short.upper(),
        (name,),
        type(_setting(Settings(), name)),
        minimum=None if positive else minimum,
        positive=positive,
    )


@dataclass(frozen=True, slots=True)
class Rule:
    """A check across options: ``refuses(values)`` True stops the start with ``message``."""

    needs: tuple[str, ...]
    refuses: Callable[[Mapping[str, Any]], bool]
    message: str


def _shown(option: Option) -> str:
    if option.shown is not None:
        return option.shown
    value = option.base_default
    if option.kind is bool:
        return "off"
    if value is None or value == () or value == []:
        return "none"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


#: Flags, paths and URLs in a help text, shown as code in the README.
_CODE = re.compile(r"(?<![\w.*/])(--[a-z][a-z-]*|https?://[\w*.-]+|/[\w{}*./-]*[\w}*])")


def _markdown_text(text: str) -> str:
    """A help text as a table cell: flags and paths as code, ``*`` and ``|`` escaped."""
    parts = _CODE.split(text)
    return "".join(
        f"`{part}`" if i % 2 else part.replace("|", "\\|").replace("*", "\\*")
        for i, part in enumerate(parts)
    )


def markdown_table(options: Iterable[Option]) -> str:
    """The README's configuration table: one row per visible option."""
    lines = ["| flag | env | default | meaning |", "|---|---|---|---|"]
    for option in options:
        if option.hidden:
            continue
        flag = f"`{option.flag}`"
        if option.kind == "toggle":
            flag += f" / `--no-{option.flag[2:]}`"
        env = f"`{option.env}`" if option.env else ""
        if option.kind is bool:
            env = f"`{option.env}=1`"
        elif option.kind == "toggle":
            env = f"`{option.env}=0`"
        text = _markdown_text(option.help)
        lines.append(f"| {flag} | {env} | {_shown(option)} | {text} |")
    return "\n".join(lines) + "\n"

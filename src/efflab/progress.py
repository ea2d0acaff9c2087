"""Progress bars for long loops: shown on a terminal, silent when quiet or not a TTY."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar in this process; the CLI's ``--quiet``."""
    global _quiet
    _quiet = bool(quiet)


def enabled() -> bool:
    return not _quiet and sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None,
             leave: bool = False) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar when bars are enabled, else return it unchanged."""
    if not enabled():
        return iter(iterable)
    return iter(tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True))


def bar(total: int, desc: str = "", show: bool | None = None) -> tqdm:
    """A manual bar (``.update(n)``, ``.set_postfix(...)``); ``show=None`` shows it when bars
    are enabled, ``True``/``False`` force it on or off."""
    show = enabled() if show is None else show
    return tqdm(total=total, desc=desc, disable=not show, leave=False, dynamic_ncols=True)

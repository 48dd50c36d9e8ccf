"""The error tree drawn in `tradecache/errors.py` is the whole tree of the real classes."""

from __future__ import annotations

import importlib
import pkgutil
import re

import tradecache
from tradecache import errors
from tradecache.errors import TradecacheError

# Modules that need an optional extra (NautilusTrader) or run the program when imported.
SKIPPED = ("tradecache.nautilus", "tradecache.__main__")


def import_every_module() -> None:
    """So that every subclass of TradecacheError anywhere in the package exists."""
    for module in pkgutil.walk_packages(tradecache.__path__, "tradecache."):
        if not module.name.startswith(SKIPPED):
            importlib.import_module(module.name)


def drawn_tree() -> set[tuple[str, str | None]]:
    """(class, parent) for each line of the docstring's drawing."""
    assert errors.__doc__ is not None
    pairs: set[tuple[str, str | None]] = set()
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^(\s*(?:[│ ]\s*)*(?:[├└]── )?)([A-Z]\w+)(\s|$)", line)
        if match is None or not (line.strip().startswith(("├", "└", "│")) or match.group(2) == "TradecacheError"):
            continue
        depth = len(match.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        pairs.add((match.group(2), stack[-1][1] if stack else None))
        stack.append((depth, match.group(2)))
    return pairs


def real_tree() -> set[tuple[str, str | None]]:
    import_every_module()
    pairs: set[tuple[str, str | None]] = {("TradecacheError", None)}
    pending = [TradecacheError]
    while pending:
        parent = pending.pop()
        for child in parent.__subclasses__():
            if child.__module__.startswith("tradecache."):
                pairs.add((child.__name__, parent.__name__))
                pending.append(child)
    return pairs


def test_the_drawing_is_the_whole_tree() -> None:
    drawn = drawn_tree()
    assert len(drawn) >= 15  # the parse found the drawing
    assert drawn == real_tree()


def test_every_error_is_defined_in_errors_py() -> None:
    """Drawn once and defined once: other modules may re-export an error, not define one."""
    import_every_module()
    for name, _parent in real_tree():
        cls = getattr(errors, name)
        assert cls.__module__ == "tradecache.errors", name
        assert name in errors.__all__


def test_the_load_service_refusals_carry_the_wire_codes() -> None:
    from tradecache import wire

    assert (wire.BAD_REQUEST, wire.TOO_LARGE, wire.BUSY, wire.INTERNAL, wire.UNAVAILABLE) == (
        "400", "413", "429", "500", "503",
    )  # fmt: skip
    assert errors.RequestRefused("x").code == wire.INTERNAL
    assert errors.Busy("x").code == wire.BUSY

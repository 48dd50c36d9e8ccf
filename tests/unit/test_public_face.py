"""What users may import from `tradecache`: pinned here, so a change to it is a decision.

And every public method of the exported API classes says what it raises (a `Raises:` section).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from enum import Enum

import pytest

import tradecache

PUBLIC = [
    # the Python API
    "RedisCacheDatabase", "CacheDatabaseConfig", "RetentionPolicy", "SweepReport", "MsgPackSerializer",
    # the trading pod's side
    "CacheClient", "Publisher",
    # errors
    "TradecacheError", "ConfigError", "EventRejected", "PayloadError", "OrderEventRefused", "StoreUnavailable",
    "StoreRefused", "LeaseLost", "BusUnavailable", "BusRefused", "LoadError", "RebuildRefused", "RejectReason",
    # the model
    "Order", "Position", "Account", "Instrument", "Message", "Kind", "Currency", "Money", "Price", "Quantity",
    "TraderId", "StrategyId", "InstrumentId", "ClientOrderId", "PositionId", "AccountId", "OrderListId",
    "OrderEvent", "OrderInitialized", "OrderFilled", "PositionEvent", "AccountState", "SubmitOrder",
    "SubmitOrderList", "StrategyState",
    "__version__",
]  # fmt: skip

# Every exported class but the errors and enums (which add no methods of their own): each public
# method documents what it raises.
API_CLASSES = [
    name
    for name in PUBLIC
    if inspect.isclass(value := getattr(tradecache, name)) and not issubclass(value, BaseException | Enum)
]


def test_the_api_classes_are_checked() -> None:
    assert {"RedisCacheDatabase", "CacheClient", "Publisher", "MsgPackSerializer", "Order"} <= set(API_CLASSES)
    assert "TradecacheError" not in API_CLASSES


def test_all_is_pinned() -> None:
    assert sorted(tradecache.__all__) == sorted(PUBLIC)
    assert len(set(tradecache.__all__)) == len(tradecache.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(tradecache, name)
    assert value is not None
    if name != "__version__" and name != "Message":  # Message is a union of types, not a class
        assert inspect.isclass(value)
        assert value.__name__ == name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Ledger'"):
        _ = tradecache.Ledger  # type: ignore[attr-defined]


def test_importing_the_package_loads_nothing_else() -> None:
    """The names are loaded on first use: `import tradecache` stays cheap."""
    code = "import sys, tradecache; print(sorted(m for m in sys.modules if m.startswith('tradecache')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['tradecache']"


def public_methods(cls: type) -> list[str]:
    """Its public methods, those it inherits from tradecache's own classes included."""
    return sorted(
        {
            name
            for owner in cls.__mro__
            if owner.__module__.startswith("tradecache")
            for name, value in vars(owner).items()
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, classmethod | staticmethod))
        }
    )


@pytest.mark.parametrize("class_name", API_CLASSES)
def test_every_public_method_says_what_it_raises(class_name: str) -> None:
    cls = getattr(tradecache, class_name)
    methods = public_methods(cls)
    undocumented = []
    for name in methods:
        doc = inspect.getdoc(getattr(cls, name)) or ""
        lines = doc.splitlines()
        if "Raises:" not in lines or lines.index("Raises:") == len(lines) - 1:
            undocumented.append(name)
    assert undocumented == [], f"{class_name}: no 'Raises:' section in {undocumented}"

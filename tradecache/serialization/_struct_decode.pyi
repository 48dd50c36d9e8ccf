# The compiled Struct decoders (_struct_decode.c): see tradecache/serialization/msgpack.py.
from collections.abc import Callable
from typing import Any

STEP_PASS: int
STEP_DICT: int
STEP_DICT_NOSPACE: int
STEP_TIMESTAMP: int
STEP_PREDICATE: int
STEP_CALL: int
SLOT_FIELD: int
SLOT_FIXED: int
SLOT_FACTORY: int
BUILD_DICT: int
BUILD_SLOTS: int
BUILD_CALL: int

class StructDecoder:
    def __init__(
        self,
        steps: tuple[tuple[str, int, bool, Any, Callable[[Any, str], Any], str], ...],
        build: int,
        cls: type,
        new: Callable[[type], Any],
        slots: tuple[tuple[str, int, int, Any], ...],
        then: Callable[[Any], Any] | None,
    ) -> None: ...
    def __call__(self, data: Any) -> Any: ...

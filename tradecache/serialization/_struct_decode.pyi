# The compiled Struct decoders (_struct_decode.c): see tradecache/serialization/msgpack.py.
from collections.abc import Callable
from typing import Any

STEP_PASS: int
STEP_DICT: int
STEP_DICT_NOSPACE: int
STEP_TIMESTAMP: int
STEP_PREDICATE: int
STEP_CALL: int
STEP_IDENTIFIER: int
RULE_NONE: int
RULE_TEXT: int
RULE_KEY_PART: int
SLOT_FIELD: int
SLOT_FIXED: int
SLOT_FACTORY: int
BUILD_DICT: int
BUILD_SLOTS: int
BUILD_CALL: int

class StructDecoder:
    def __init__(
        self,
        steps: tuple[tuple[Any, ...], ...],  # (attr, kind, nullable, env, decode, key[, cls, rule, size])
        build: int,
        cls: type,
        new: Callable[[type], Any],
        slots: tuple[tuple[str, int, int, Any], ...],
        then: Callable[[Any], Any] | None,
    ) -> None: ...
    def __call__(self, data: Any) -> Any: ...

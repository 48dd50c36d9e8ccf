"""Building a `Config` from the YAML file and the environment: overrides, `*_file` secrets, type
conversion, and errors that name the key path."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Final, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from tradecache.config.secrets import MASK, Secret, mask_url
from tradecache.config.sections import Config, Section
from tradecache.errors import ConfigError

ENV_PREFIX: Final = "TRADECACHE_"
# Variables the tests and tools use for their own purposes, and TRADECACHE_PURE_PYTHON (the
# compiled frame reader off: `ingest/compiled.py`); never configuration keys.
_ENV_IGNORED: Final = frozenset(
    {"TRADECACHE_VECTORS", "TRADECACHE_REDIS_SERVER", "TRADECACHE_NATS_SERVER", "TRADECACHE_PURE_PYTHON"}
)
# Kubernetes "service links": a Service named `tradecache` puts TRADECACHE_PORT,
# TRADECACHE_PORT_9464_TCP_ADDR, TRADECACHE_SERVICE_HOST... into every pod of the namespace.
_ENV_IGNORED_PREFIXES: Final = ("TRADECACHE_TEST_", "TRADECACHE_PORT", "TRADECACHE_SERVICE_")
_ENV_TRUE: Final = frozenset({"true", "1", "yes"})
_ENV_FALSE: Final = frozenset({"false", "0", "no"})


# -- building from plain data ----------------------------------------------------------------

_S = TypeVar("_S", bound=Section)
_TYPE_WORDS: Final[dict[object, str]] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    Secret: "a string",
    tuple: "a list of strings",
}


def _split_optional(hint: object) -> tuple[Any, bool]:
    """`X | None` -> (X, True); `X` -> (X, False); `tuple[str, ...]` -> (tuple, False)."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [arg for arg in get_args(hint) if arg is not type(None)]
        return _split_optional(rest[0])[0], True
    return get_origin(hint) or hint, False


def _shown(value: object, secret: bool) -> str:
    """A bad value as an error message shows it: a secret as '***', a URL's password masked, even in a list."""
    if secret and value is not None:
        return repr(MASK)
    if isinstance(value, str):
        return repr(mask_url(value))
    if isinstance(value, (list, tuple)):  # e.g. a single URL where a list was expected, or the reverse
        return "[" + ", ".join(_shown(item, False) for item in value) + "]"
    return repr(value)


def _convert(value: object, hint: object, key: str, secret: bool) -> object:
    """Check that a YAML (or already parsed environment) value has the field's type."""
    base, optional = _split_optional(hint)
    if value is None and optional:
        return None
    if base is bool and isinstance(value, bool):
        return value
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value!r}")
        return float(value)
    if base is str and isinstance(value, str):
        return value
    if base is Secret and isinstance(value, (str, Secret)):
        secret_value = value if isinstance(value, Secret) else Secret(value)
        if not secret_value.reveal():
            raise ConfigError(key, "must not be empty")
        return secret_value
    if base is tuple and isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(f"{key}[{index}]", f"must be a string, got {item!r}")
        return tuple(value)
    raise ConfigError(key, f"must be {_TYPE_WORDS[base]}, got {_shown(value, secret)}")


def _from_env(text: str, hint: object, key: str, variable: str, secret: bool) -> object:
    """Parse an environment variable's text by the field's type (`_convert` checks the result)."""
    base, optional = _split_optional(hint)
    if optional and text == "":
        return None
    if base is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    if base is bool:
        word = text.strip().lower()
        if word in _ENV_TRUE | _ENV_FALSE:
            return word in _ENV_TRUE
        raise ConfigError(key, f"must be true/false/1/0/yes/no, got {_shown(text, secret)} (from {variable})")
    if base is int or base is float:
        try:
            return base(text)
        except ValueError:
            problem = f"must be {_TYPE_WORDS[base]}, got {_shown(text, secret)} (from {variable})"
            raise ConfigError(key, problem) from None
    return text


def _known_keys(cls: type[Section]) -> list[str]:
    return [f.name for f in fields(cls)] + sorted(f"{name}_file" for name in cls.secrets)


def _hint_of(cls: type[Section], key: str) -> object:
    if key.endswith("_file") and key.removesuffix("_file") in cls.secrets:
        return str
    return get_type_hints(cls)[key]


def _sections() -> dict[str, type[Section]]:
    """The section classes of `Config`, by YAML name."""
    hints = get_type_hints(Config)
    return {
        f.name: hints[f.name]
        for f in fields(Config)
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], Section)
    }


def _unknown_key(path: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return ConfigError(path, f"unknown key ({hint})")


def _as_dict(value: object, key: str) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a mapping of keys to values, got {type(value).__name__}")
    return {str(name): item for name, item in value.items()}


def _apply_environ(data: dict[str, object], environ: Mapping[str, str]) -> None:
    """Step 2: each `TRADECACHE_*` variable sets one key of `data`; an unknown one is an error."""
    sections = _sections()
    top_level = [name for name in _known_keys(Config) if name not in sections]
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable.startswith(_ENV_IGNORED_PREFIXES):
            continue
        if variable in _ENV_IGNORED:
            continue
        name = variable.removeprefix(ENV_PREFIX).lower()
        section_name, _, key = name.partition("_")
        target: dict[str, object]
        cls: type[Section]
        if name in top_level:
            target, cls, key, path = data, Config, name, name
        elif section_name in sections and key in _known_keys(sections[section_name]):
            cls = sections[section_name]
            target = _as_dict(data.get(section_name), section_name)
            data[section_name] = target
            path = f"{section_name}.{key}"
        else:
            raise ConfigError(variable, "unknown environment variable: it names no configuration key")
        target[key] = _from_env(environ[variable], _hint_of(cls, key), path, variable, key in cls.secrets)


def _read_secret_file(value: object, key: str) -> Secret:
    """Step 3: the secret held in the file `value` names, without its trailing newline."""
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a file path, got {value!r}")
    try:
        text = Path(value).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(key, f"cannot read {value!r}: {reason}") from None
    if not text:
        raise ConfigError(key, f"the file {value!r} is empty")
    return Secret(text)


def _build(cls: type[_S], raw: Mapping[str, object], prefix: str) -> _S:
    """Steps 3 and 4 for one section: refuse unknown keys, check types, read `*_file` secrets, build."""
    known = _known_keys(cls)
    for key in raw:
        if key not in known:
            raise _unknown_key(f"{prefix}.{key}" if prefix else key, key, known)
    hints = get_type_hints(cls)
    kwargs: dict[str, object] = {}
    for f in fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in raw:
            hint = hints[f.name]
            if isinstance(hint, type) and issubclass(hint, Section):
                kwargs[f.name] = _build(hint, _as_dict(raw[f.name], path), path)
            elif get_origin(hint) is dict:  # a section per name (retention.traders), YAML only
                item = get_args(hint)[1]
                kwargs[f.name] = {
                    name: _build(item, _as_dict(value, f"{path}.{name}"), f"{path}.{name}")
                    for name, value in _as_dict(raw[f.name], path).items()
                }
            else:
                kwargs[f.name] = _convert(raw[f.name], hint, path, f.name in cls.secrets)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(path, "is required")
    for name in sorted(cls.secrets):
        file_key = f"{name}_file"
        file_value = raw.get(file_key)
        if file_value is None:
            continue
        if kwargs.get(name) is not None:
            raise ConfigError(f"{prefix}.{name}", f"set either {name} or {file_key}, not both")
        kwargs[name] = _read_secret_file(file_value, f"{prefix}.{file_key}")
    return cls(**kwargs)


def parse_config(data: Mapping[str, object], environ: Mapping[str, str]) -> Config:
    """Build a `Config` from plain data (the parsed YAML) and the environment variables.

    Applies the `TRADECACHE_*` overrides, reads `*_file` secrets and runs every check.
    Raises `ConfigError` naming the key path and the problem.
    """
    merged = _as_dict(data, "config")
    _apply_environ(merged, environ)
    return _build(Config, merged, "")


def load_config(path: str | Path | None, environ: Mapping[str, str]) -> Config:
    """Read the YAML file at `path` (None: defaults and environment only) and build the `Config`.

    Raises `ConfigError`: with the file's path as key when it cannot be read or is not a YAML
    mapping, else as `parse_config` does.
    """
    data: Mapping[str, object] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(str(path), f"cannot read the file: {reason}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:  # its str() quotes lines of the file, which may hold secrets
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(str(path), f"not valid YAML: {exc.problem}{where}") from None
        except yaml.YAMLError:
            raise ConfigError(str(path), "not valid YAML") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(str(path), f"must hold a mapping at the top, got {type(loaded).__name__}")
        data = loaded or {}
    return parse_config(data, environ)


__all__ = ["ENV_PREFIX", "load_config", "parse_config"]

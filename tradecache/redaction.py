"""Secrets out of URLs and of any text: the one masking function every error and log line uses.

A URL may carry a secret in several places, and in forms that do not parse:
- user info: `redis://user:pw@host`, `rediss://:pw@host`, `nats://token@host` (a lone user part is
  a token for NATS, a username for Redis), a password holding `@`, `/`, `?` or `%40`;
- the query: `redis://host/0?password=pw` (every value is masked but those of known harmless
  keys, so a misspelt `pasword=` is masked too);
- a list of servers in one string: `nats://a:pw@h1,nats://b:pw@h2`;
- a malformed URL (`redis//u:pw@host`, `redis://u:pw@[::1`): masked by the same text rules,
  without parsing.
The rule for user info is textual and errs on the side of masking: everything between the
scheme and the last `@` is credentials. `mask_urls` applies `mask_url` to every word of a text
that holds `://` or `@` (log lines, library error messages).
"""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"
# Query keys whose values are never secrets (redis-py's URL options and ours).
SAFE_QUERY_KEYS: Final = frozenset(
    {"db", "cluster", "protocol", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname",
     "socket_timeout", "socket_connect_timeout", "health_check_interval", "client_name", "decode_responses"}
)  # fmt: skip

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?://)?")
_NEXT_URL: Final = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")
# A user name shown as it is: nothing that suggests the `@` belonged to a path or a query.
_PLAIN_USER: Final = re.compile(r"[A-Za-z0-9._~%!$'()*+-]{0,64}")
# A word of a text, as far as a URL can reach: up to white space or a quote.
_WORD: Final = re.compile(r"[^\s'\"<>`]+")


def mask_url(url: str) -> str:
    """`url` with every credential it may hold replaced by '***' (see the module docstring).

    `redis://user:pw@host/0?password=x` -> `redis://user:***@host/0?password=***`.
    """
    parts = _NEXT_URL.split(url)
    if len(parts) > 1:
        return ",".join(mask_url(part) for part in parts)
    scheme_match = _SCHEME.match(url)
    scheme = scheme_match.group(0) if scheme_match else ""
    rest = url[len(scheme) :]
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return scheme + _mask_query(rest)
    if any(char in userinfo for char in "?#&="):  # that `@` may be inside a query value
        return f"{scheme}{MASK}@{MASK}"
    return f"{scheme}{_mask_userinfo(userinfo, scheme)}@{_mask_query(hostpart)}"


def _mask_userinfo(userinfo: str, scheme: str) -> str:
    user, colon, _ = userinfo.partition(":")
    plain = _PLAIN_USER.fullmatch(user) is not None
    if colon:
        return f"{user}:{MASK}" if plain else MASK
    if scheme.lower().startswith("redis") and scheme.endswith("//") and plain and user:
        return user  # `redis://user@host`: a user name without a password
    return MASK


def _mask_query(rest: str) -> str:
    path, question, query = rest.partition("?")
    query, hash_sign, fragment = query.partition("#") if question else ("", "", "")
    if not question:
        path, hash_sign, fragment = path.partition("#")
    masked = []
    for pair in re.split(r"([&;])", query) if query else []:
        key, equals, _value = pair.partition("=")
        masked.append(pair if not equals or key.strip().lower() in SAFE_QUERY_KEYS else f"{key}={MASK}")
    return path + question + "".join(masked) + hash_sign + (MASK if fragment else "")


def mask_urls(text: str) -> str:
    """`text` with every word that holds a URL or an `@` masked by `mask_url` (a word ends at
    white space or a quote, so a URL in a JSON log line or a repr is one word)."""
    if "@" not in text and "://" not in text:
        return text
    return _WORD.sub(_mask_word, text)


def _mask_word(match: re.Match[str]) -> str:
    word = match.group(0)
    return mask_url(word) if "@" in word or "://" in word else word


__all__ = ["MASK", "SAFE_QUERY_KEYS", "mask_url", "mask_urls"]

"""Subject names (SPEC section 1): three roots under the prefix, kept apart so that no stream
captures a request or a reply.

- `<prefix>.in.<trader_id>.<kind>`   what the node publishes (consumed from JetStream)
- `<prefix>.load.<trader_id>.<name>` load requests (NATS micro service)
- `<prefix>.dead.<trader_id>`        dead letters (kept by a second stream)
"""

from __future__ import annotations

from dataclasses import dataclass

from tradecache.model.messages import Kind

_KINDS = {kind.value: kind for kind in Kind}


@dataclass(frozen=True)
class Subjects:
    prefix: str
    trader_id: str

    @property
    def inbound(self) -> str:
        """The consumer's filter: every kind for this trader."""
        return f"{self.prefix}.in.{self.trader_id}.>"

    @property
    def inbound_root(self) -> str:
        """What the inbound stream captures: every trader's messages."""
        return f"{self.prefix}.in.>"

    def inbound_for(self, kind: Kind) -> str:
        return f"{self.prefix}.in.{self.trader_id}.{kind.value}"

    def inbound_for_name(self, kind: str) -> str:
        """`inbound_for` by the kind's name (`"order"`), for producers and tools."""
        return self.inbound_for(_KINDS[kind])

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead.{self.trader_id}"

    @property
    def dead_root(self) -> str:
        return f"{self.prefix}.dead.>"

    def load(self, name: str) -> str:
        return f"{self.prefix}.load.{self.trader_id}.{name}"

    def kind_of(self, subject: str) -> Kind | None:
        """The kind a subject names (its last token), or None if it is not one of ours."""
        head, _, last = subject.rpartition(".")
        if head != f"{self.prefix}.in.{self.trader_id}":
            return None
        return _KINDS.get(last)


__all__ = ["Subjects"]

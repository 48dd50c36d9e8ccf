"""Wire formats: NautilusTrader's msgpack messages and the snapshot forms of stored state."""

from tradecache.serialization.msgpack import Message, MsgPackSerializer

__all__ = ["Message", "MsgPackSerializer"]

"""Ingest: JetStream messages in, checked, applied to the ledger, planned and committed to Redis,
then acked (or dead-lettered). `consumer` runs the pull loop; the other modules are its parts."""

__all__: list[str] = []

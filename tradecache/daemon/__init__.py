"""The sidecar daemon: ingest from JetStream, metrics and health, lifecycle, dev stack."""

__all__: list[str] = []

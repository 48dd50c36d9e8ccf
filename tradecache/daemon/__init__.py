"""The sidecar application: wires ingest, the load service, metrics, health and retention together
and runs them until told to stop; also the disaster-recovery rebuild."""

__all__: list[str] = []

"""Development tooling, never imported by the sidecar itself: local redis-server/nats-server
processes (`stack`), the `tradecache dev` command (`command`) and its demo trading feed (`demo`).
Tests, benchmarks and scripts use it too."""

__all__: list[str] = []

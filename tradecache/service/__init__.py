"""The load service: NATS request-reply access to what the sidecar stored (SPEC section 3)."""

from tradecache.service.endpoints import ENDPOINTS, Endpoint, Loader
from tradecache.service.server import SERVICE_NAME, LoadService

__all__ = ["ENDPOINTS", "SERVICE_NAME", "Endpoint", "LoadService", "Loader"]

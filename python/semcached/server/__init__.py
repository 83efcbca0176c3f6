"""The gRPC server: servicer (proto <-> engine, no logic) and the process around it."""

from semcached.server.app import serve

__all__ = ["serve"]

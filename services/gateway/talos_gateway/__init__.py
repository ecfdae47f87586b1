"""TALOS gateway: HTTP API, page, public gRPC API and the relay."""

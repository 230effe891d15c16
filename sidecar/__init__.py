"""sidecar: a mutual-TLS reverse proxy for legacy managed-file-transfer servers."""

__version__ = "0.1.0"

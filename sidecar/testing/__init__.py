"""Throwaway parts for `sidecar demo`, the test suite and the benchmark: a PKI builder and a
plaintext echo backend. Real certificates and real sockets, nothing mocked; not for production
keys (no protection beyond file modes)."""

"""Data plane: the protocol-level HTTP/1.1 proxy, its pools, health state and admin port."""

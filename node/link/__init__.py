"""The worker link (docs/PROTOCOL.md §3): its frames and the proxy endpoint format."""

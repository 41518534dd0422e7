"""Real local servers for tests and demos (loopback only)."""

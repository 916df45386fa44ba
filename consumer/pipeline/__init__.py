"""record bytes -> item -> batch sink; records that can never be written -> dead letters."""

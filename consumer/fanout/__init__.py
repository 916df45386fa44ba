"""Enhanced fan-out: SubscribeToShard over HTTP/2 (issue 15)."""

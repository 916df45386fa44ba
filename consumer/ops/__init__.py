"""Operator commands: `setup` (provision), `status`, `dlq`. A worker never runs them, and their
rights are the operator's, not the worker's task role."""

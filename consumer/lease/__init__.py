"""Leases: the model, the pure planner, the DynamoDB repository and the coordinator."""

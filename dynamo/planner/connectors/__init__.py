"""Connectors: how the planner changes replica counts (a registry by `environment`)."""

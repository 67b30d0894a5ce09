"""Automation: the snapshot policy (pure, no Dagster) and the sensors built on it."""

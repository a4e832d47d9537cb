"""Decisions computed from the catalogs (catalog/): the capacity planner (capacity.py). The stack configuration's
checks and `llmctl size` call it; nothing here reads the stack configuration."""

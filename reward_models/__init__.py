"""The reward-model bank and its plug-in registry (DESIGN.md §4)."""

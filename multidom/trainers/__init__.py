"""Trainers: thin wiring of data, model, reward bank and objective (STYLE.md §5). Import submodules directly."""

"""Objectives: losses on per-sequence scalars (DESIGN.md §3). Import submodules directly."""

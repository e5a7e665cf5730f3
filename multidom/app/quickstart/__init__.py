"""The embedded quickstart: a tiny chat model, SFT on chatterbot conversations, online dominance alignment
against four offline reward models, and a held-out evaluation against the SFT reference.

``multidom train`` with no config runs ``configs/quickstart.yaml`` through :func:`run_quickstart`.
Imports are light; the heavy stages import what they need when they run.
"""
from multidom.app.quickstart.config import QuickstartConfig
from multidom.app.quickstart.pipeline import format_table, run_quickstart, targets_met

__all__ = ["QuickstartConfig", "format_table", "run_quickstart", "targets_met"]

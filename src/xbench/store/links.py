"""Links into the MLflow UI: a suite's runs and one run, as `xbench ui`, `xbench run` and the leaderboard print them.
No MLflow import: the leaderboard uses it too."""

from __future__ import annotations

DEFAULT_UI_URL = "http://127.0.0.1:5000"  # where `xbench ui` serves a local store


def ui_base_url(tracking_uri: str, local_ui: str = DEFAULT_UI_URL) -> str:
    """Where the MLflow UI of a store is browsed: the tracking server itself, or `xbench ui`'s for a local store."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else local_ui.rstrip("/")


def runs_url(base: str, experiment_id: str) -> str:
    """A suite's runs in the MLflow UI with the model-training workspace chosen: without `workflowType` a new browser
    opens MLflow 3's GenAI overview (traces, token usage) whatever the experiment's tags say."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run (a cell, or a suite's parent run) in the MLflow UI, in the model-training workspace."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"

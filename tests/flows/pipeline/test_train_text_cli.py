"""`ebmops train --data x.csv --text-column text --label-column intent` with nothing else: held-out
intents choose the detector, the guard is registered and scores raw text through the pyfunc."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

# A real process, as a user runs it (its own temporary Prefect server): a second in-process CliRunner
# would meet Prefect's console log handler still bound to the first run's closed stdout.
pytestmark = [pytest.mark.slow]

INTENTS = {
    "balance": ["what is my balance", "how much money do i have", "show my account balance", "balance please"],
    "transfer": ["send money to mom", "transfer 20 dollars", "move cash to savings", "wire funds to john"],
    "weather": ["will it rain today", "what is the forecast", "is it sunny tomorrow", "how cold is it outside"],
    "music": ["play some jazz", "put on my playlist", "skip this song", "turn the music up"],
    "alarm": ["wake me at 7", "set an alarm for noon", "cancel my alarm", "snooze the alarm"],
}


def test_train_with_only_data_text_and_labels_registers_a_guard_chosen_by_held_out_intents(ebmops_home, tmp_path):
    rows = [
        (f"{query} {suffix}", intent)
        for intent, queries in INTENTS.items()
        for query in queries
        for suffix in ("", "now", "please", "for me", "thanks")
    ]
    pd.DataFrame(rows, columns=["text", "intent"]).to_csv(tmp_path / "train.csv", index=False)
    env = {**os.environ, "EBMOPS_HOME": str(ebmops_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli.app", "train", "--data", str(tmp_path / "train.csv"), "--text-column", "text",
         "--label-column", "intent", "--budget", "fast", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Registered ebm-guard version 1" in " ".join(result.stdout.split())
    selection = json.loads(next((ebmops_home / "runs").glob("*/selection.json")).read_text())
    assert selection["scheme"] == "held_out_classes"
    assert all(c["error"] is None for c in selection["candidates"]), [c["error"] for c in selection["candidates"]]

    from flows.guard import registry

    registry.configure_tracking()
    guard = mlflow.pyfunc.load_model("models:/ebm-guard@champion")
    scored = guard.predict(pd.DataFrame({"text": ["what is my balance", "recipe for chocolate cake with walnuts"]}))
    assert list(scored.columns) == ["energy", "p_value", "is_ood"]
    # an in-scope query scores lower than one about nothing the guard was built for
    assert np.diff(scored["energy"].to_numpy())[0] > 0

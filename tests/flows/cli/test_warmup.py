"""The demo's start-up work (issue 14): Prefect's temporary server started in the background, the
garbage collector kept off the imported modules, the stage timings of a run."""

from __future__ import annotations

import gc
import json

import pytest

from flows.cli import warmup
from flows.pipeline.train_and_register import STAGE_TIMINGS_FILE, StageClock


def test_no_temporary_server_when_an_api_url_is_set():
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert warmup.needs_temporary_server() is False
        assert warmup.start_prefect_server() is None


class _FailingServer:
    running = False

    def start(self):
        raise RuntimeError("port taken")


def test_a_failed_background_start_is_reported_as_not_started():
    start = warmup.PrefectServerStart(_FailingServer())
    assert start.wait() is False
    assert isinstance(start.error, RuntimeError)


def test_collector_paused_then_modules_frozen_until_the_flow_ends():
    gc.unfreeze()
    assert gc.isenabled()
    with warmup.collector_paused():
        assert not gc.isenabled()
        kept = [object() for _ in range(10)]
    assert gc.isenabled()  # back on as it was
    assert gc.get_freeze_count() >= len(kept)  # the imported objects are out of the collector's walks
    with warmup.modules_frozen_for_gc():
        assert gc.get_freeze_count() >= len(kept)
        # the run's own garbage is still collected
        cycle = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    assert gc.get_freeze_count() == 0  # given back after the flow


def test_collector_back_on_after_a_failure_inside():
    with pytest.raises(ValueError):
        with warmup.collector_paused():
            raise ValueError("an import failed")
    assert gc.isenabled()
    gc.unfreeze()


def test_stage_clock_splits_training_from_the_rest(tmp_path):
    clock = StageClock()
    clock.mark("load and validate")
    sum(range(200_000))
    clock.mark("selection (candidate fits)", training=True)
    clock.mark("training (the chosen detector)", training=True)
    clock.mark("evaluate")
    path = clock.write(tmp_path / STAGE_TIMINGS_FILE)
    timings = json.loads(path.read_text())
    assert list(timings["stages"]) == [
        "load and validate", "selection (candidate fits)", "training (the chosen detector)", "evaluate"
    ]
    assert timings["training_stages"] == ["selection (candidate fits)", "training (the chosen detector)"]
    expected = timings["stages"]["selection (candidate fits)"] + timings["stages"]["training (the chosen detector)"]
    assert timings["training_seconds"] == pytest.approx(expected, abs=2e-4)
    assert timings["flow_started_at"] <= timings["flow_finished_at"]
    assert set(timings["cpu_seconds"]) == set(timings["stages"])


def test_cli_timings_are_added_to_the_run_folder_file(tmp_path):
    StageClock().write(tmp_path / STAGE_TIMINGS_FILE)
    warmup.record_cli_timings(tmp_path, 1234.5, 1200.0)
    timings = json.loads((tmp_path / STAGE_TIMINGS_FILE).read_text())
    assert timings["flow_called_at"] == 1234.5
    assert timings["preloaded_at"] == 1200.0
    assert timings["process_started_at"] <= timings["flow_started_at"]
    assert "stages" in timings  # what the flow wrote is kept


def test_cli_timings_without_a_timing_file_write_nothing(tmp_path):
    warmup.record_cli_timings(tmp_path, 1.0)
    assert list(tmp_path.iterdir()) == []

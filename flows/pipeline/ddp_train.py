"""Train one EnergyDetector on N processes with torch DistributedDataParallel-style gradient averaging.

Run by `steps.train_detector(..., nproc=N)` as

    python -m torch.distributed.run --standalone --nproc_per_node N -m flows.pipeline.ddp_train --job JOB

where JOB is a JSON file the parent wrote (`steps.ddp_job`): the prepared data's split paths and feature columns, the
detector config, the seed and the staging folder. Every rank reads the train split, joins the group
(`gloo` on CPU, `nccl` for a cuda device, one GPU per rank), and fits the detector with
`EnergyDetector.fit(distributed=...)`: the same global batch order on every rank, each rank its shard,
gradients averaged across ranks, per-rank sampler noise (`ebm_core.distributed`). Rank 0 alone saves
the detector into the staging folder; the parent moves it into place only when every rank exited 0.

A rank that fails writes `rank<r>.error` (one line: `Type: message`) beside the job file and exits 1;
torchrun then stops the other ranks, and the parent raises that line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path

ERROR_FILE = "rank{rank}.error"
TRACEBACK_FILE = "rank{rank}.traceback"


def prepared_data(payload: dict):
    from flows.pipeline.steps import PreparedData

    return PreparedData(
        split_paths=dict(payload["split_paths"]),
        feature_columns=tuple(payload["feature_columns"]),
        ood_splits=tuple(payload["ood_splits"]),
        value_range=tuple(payload["value_range"]) if payload["value_range"] is not None else None,
        allowed_labels=tuple(payload["allowed_labels"]) if payload["allowed_labels"] is not None else None,
        fingerprints=dict(payload["fingerprints"]),
    )


def train_rank(job: dict) -> None:
    """This rank's part: fit with the group; rank 0 saves into the staging folder."""
    import torch.distributed as dist

    from ebm_core import DetectorConfig, EnergyDetector
    from ebm_core.distributed import context_from_env, init_from_env
    from flows import settings
    from flows.data.datasets import read_vectors
    from flows.faults import fault_point
    from flows.pipeline.steps import TqdmProgress, read_training_rows

    settings.configure_torch_threads()
    config = DetectorConfig.from_dict(job["detector_config"])
    seed = int(job["seed"])
    _, device = init_from_env(config.device)
    context = context_from_env(seed)
    data = prepared_data(job["data"])
    x_train, labels = read_training_rows(data)
    outliers = None
    if "outliers" in data.split_paths and config.objective_name == "margin":
        outliers = read_vectors(data.path("outliers"), list(data.feature_columns))
    rank_config = replace(config, device=str(device))
    callbacks = (TqdmProgress(f"training ({config.objective_name}, {context.world_size} processes)"),) if context.is_main else ()
    try:
        detector = EnergyDetector(rank_config).fit(
            x_train, labels, outliers=outliers, seed=seed, feature_names=list(data.feature_columns),
            callbacks=callbacks, distributed=context,
        )
    finally:
        for callback in callbacks:
            callback.close()
    fault_point(f"ddp_train.rank{context.rank}.after_fit")
    if context.is_main:
        detector.config = config  # the device as configured ("cuda"), not this rank's "cuda:0"
        detector.energy_.to("cpu")
        detector.save(job["staging_dir"])
    dist.barrier()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, type=Path)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    job_dir = args.job.parent
    try:
        train_rank(json.loads(args.job.read_text()))
    except BaseException as error:  # noqa: BLE001 - reported to the parent in one line
        message = " ".join(f"{type(error).__name__}: {error}".split())
        (job_dir / TRACEBACK_FILE.format(rank=rank)).write_text(traceback.format_exc())
        tmp = job_dir / (ERROR_FILE.format(rank=rank) + ".tmp")
        tmp.write_text(message[:2000])
        tmp.replace(job_dir / ERROR_FILE.format(rank=rank))
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

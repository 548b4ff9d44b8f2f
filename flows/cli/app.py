"""The `ebmops` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from typer._click import exceptions as click_exceptions  # typer's own click
from typer.core import TyperGroup

from flows.cli.summary import EXIT_BAD_INPUT, fail_unexpectedly, prefect_quiet_about, print_refusal, refuse
from flows.guard.names import DEFAULT_CHALLENGER_URI


class OneLineErrors(TyperGroup):
    """Usage errors (a missing file, an unknown option, a value out of range) as one line on stderr,
    exit status 2, instead of a boxed usage panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            result = super().main(
                args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra
            )
        except click_exceptions.NoArgsIsHelpError as error:
            if not standalone_mode:
                raise
            from typer import rich_utils

            rich_utils.rich_format_error(error)  # the help, as before
            sys.exit(error.exit_code)
        except click_exceptions.UsageError as error:
            if not standalone_mode:
                raise
            command = error.ctx.command_path if error.ctx else "ebmops"
            print_refusal(f"{error.format_message()} (see {command} --help)")
            sys.exit(EXIT_BAD_INPUT)
        except click_exceptions.ClickException as error:
            if not standalone_mode:
                raise
            print_refusal(error.format_message())
            sys.exit(error.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            print_refusal("aborted")
            sys.exit(1)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    help=(
        "ebmops: energy-based models as out-of-distribution guards.\n\n"
        "Validates data (Great Expectations), trains an energy model (PyTorch), calibrates the OOD "
        "threshold, evaluates it and registers it in MLflow, all through Prefect flows. "
        "State lives in $EBMOPS_HOME (default ./.ebmops); MLFLOW_TRACKING_URI and PREFECT_API_URL "
        "point at real servers instead."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()



@app.callback()
def main() -> None:
    """Process settings for every command (set here, not at import)."""
    # This machine may have no route out; Prefect's local server would otherwise try to send telemetry.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's temporary server gets 20 s to start by default: too little on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@app.command()
def demo(
    config: Optional[Path] = typer.Option(None, help="Pipeline YAML; default: the packaged demo config."),
    steps: Optional[int] = typer.Option(None, min=1, help="Training steps of the --objective detector."),
    objective: Optional[str] = typer.Option(
        None,
        help="Train this one objective instead of letting the selection stage choose: cd (persistent "
        "contrastive divergence), cdk (CD-k from data), dsm (denoising score matching), ssm (sliced score "
        "matching), nce (noise-contrastive estimation), ce (classifier energy trained by cross-entropy, uses "
        "labels), jem (classifier + CD hybrid, uses labels), margin (energy margins against outliers).",
    ),
    budget: Optional[str] = typer.Option(None, help="Selection budget ('fast' for the demo, 'default')."),
    sampler: Optional[str] = typer.Option(
        None, help="MCMC sampler for the negatives of cd / cdk / jem: langevin, mala or hmc (with --objective)."
    ),
    progress: bool = typer.Option(True, help="Show a training progress bar."),
    nproc: int = typer.Option(
        1, min=1, help="Train the --objective detector data-parallel on this many processes (torchrun DDP: "
        "gloo on CPU, nccl with one GPU each); same global batch and seed. The selection stage fans out with Dask instead.",
    ),
):
    """Train and register a guard on scikit-learn's bundled digits (0-5 in-distribution; 6-9, noise
    and inverted digits as OOD), then print its evaluation summary. Needs no server and no download.

    The selection stage trains every candidate of the packaged search space (kernel densities, trained
    label-free EBMs, classifier / margin / JEM energies, a contrastive head, compositions), chooses one on
    held-out digit classes (never on 6-9), refits it and registers it."""
    from flows.pipeline.config import demo_config

    pipeline_config = _configured(_load_config(config, demo_config), objective, steps, sampler, budget)
    _check_nproc(pipeline_config, nproc)
    _check_runnable(pipeline_config)
    _run_pipeline(pipeline_config, source=None, progress=progress, nproc=nproc)


@app.command()
def train(
    data: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="In-distribution training data: CSV or Parquet with a text column."
    ),
    text_column: str = typer.Option("text", help="Name of the text column in every data file."),
    label_column: Optional[str] = typer.Option(
        None, help="Label column (intents) in --data / --val-data. With labels the selection stage can "
        "choose a detector without any OOD examples (held-out classes)."
    ),
    val_data: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False,
        help="More in-distribution data, split between calibration and test (default: 30% of --data).",
    ),
    ood_val_data: list[Path] = typer.Option(
        [], exists=True, dir_okay=False,
        help="OOD validation data (repeatable): examples of what the guard must flag, used to choose the "
        "detector. Optional.",
    ),
    ood_test_data: list[Path] = typer.Option(
        [], exists=True, dir_okay=False, help="OOD data for the evaluation report only (repeatable). Optional."
    ),
    outliers_data: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False,
        help="Known-bad examples for margin-style objectives (training only, never evaluation data).",
    ),
    dataset: Optional[str] = typer.Option(None, help="A built-in dataset instead of --data: 'clinc150'."),
    data_path: Optional[Path] = typer.Option(None, help="Path of the built-in dataset's file (CLINC150's data_full.json)."),
    data_dir: Optional[Path] = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="Folder of ready Parquet splits: train, calibration, in_test, ood_*.parquet (numeric feature "
        "columns + optional label; ood_val_*.parquet are OOD validation sets).",
    ),
    config: Optional[Path] = typer.Option(
        None, exists=True, dir_okay=False, help="Pipeline YAML (default: the packaged pipeline settings)."
    ),
    objective: Optional[str] = typer.Option(None, help="Train this one objective instead of selecting (see `ebmops demo --help`)."),
    budget: Optional[str] = typer.Option(
        None, help="Selection budget: a key of the search space's `budgets` ('default'; 'fast' trains every "
        "candidate 0.3x its steps)."
    ),
    sampler: Optional[str] = typer.Option(
        None, help="MCMC sampler for the negatives of cd / cdk / jem: langevin, mala or hmc (with --objective)."
    ),
    steps: Optional[int] = typer.Option(None, min=1, help="Training steps of the --objective detector."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    nproc: int = typer.Option(
        1, min=1, help="Train the --objective detector data-parallel on this many processes (see `ebmops demo --help`).",
    ),
    feedback: bool = typer.Option(
        False, "--feedback",
        help="Also train on the feedback store of the model ($EBMOPS_HOME/feedback/<model>, filled by `ebmops "
        "monitor` from the traffic's feedback column): confirmed problems join the known outliers, confirmed-fine "
        "flagged inputs the training data, after the same checks; the newest batch is held out for promotion.",
    ),
):
    """Train a guard on your data through the train_and_register flow and register it as `challenger`.

    Text is checked (Great Expectations), embedded with the packaged all-MiniLM-L6-v2 (offline,
    cached on disk by content hash) and validated inside the flow; the registered model then accepts
    raw text (a `text` column) as well as embedding columns. Only --data is required.
    """
    from flows.data.sources import Clinc150Source, TextTablesSource, VectorDirSource
    from flows.pipeline.config import default_config

    sources = sum(x is not None for x in (data, dataset, data_dir))
    if sources != 1:
        raise typer.BadParameter("give exactly one of --data, --dataset or --data-dir")
    if data is None:
        table_only = {
            "--val-data": val_data, "--ood-val-data": ood_val_data, "--ood-test-data": ood_test_data,
            "--outliers-data": outliers_data, "--label-column": label_column,
        }
        given = [name for name, value in table_only.items() if value]
        if given:
            raise typer.BadParameter(f"{', '.join(given)} go with --data (CSV/Parquet files), not --dataset or --data-dir")
    pipeline_config = _configured(_load_config(config, default_config), objective, steps, sampler, budget)
    if feedback:
        pipeline_config = pipeline_config.with_feedback(True)
    _check_nproc(pipeline_config, nproc)
    if data_dir is not None:
        source = VectorDirSource(str(data_dir))
    elif dataset is not None:
        if dataset != "clinc150":
            raise typer.BadParameter(f"unknown dataset {dataset!r}; known: clinc150")
        from flows.data.text_data import default_clinc150_path

        source = Clinc150Source(str(data_path or default_clinc150_path()))
    else:
        source = TextTablesSource(
            train=str(data),
            text_column=text_column,
            label_column=label_column,
            val=str(val_data) if val_data else None,
            ood_val=tuple(str(p) for p in ood_val_data),
            ood_test=tuple(str(p) for p in ood_test_data),
            outliers=str(outliers_data) if outliers_data else None,
        )
        if label_column is None and not pipeline_config.selection.enabled:
            if pipeline_config.detector.objective.labels == "required":
                raise typer.BadParameter(
                    f"objective {pipeline_config.detector.objective_name!r} trains on labels: give --label-column"
                )
    _check_runnable(pipeline_config)
    _check_data_before_flow(pipeline_config, source)
    _run_pipeline(pipeline_config, source=source, progress=progress, nproc=nproc)


@app.command()
def evaluate(
    model: str = typer.Option(DEFAULT_CHALLENGER_URI, help="Model URI to evaluate."),
    data: Path = typer.Option(..., exists=True, dir_okay=False, help="Held-out in-distribution data (CSV/Parquet)."),
    ood_data: list[Path] = typer.Option(..., exists=True, dir_okay=False, help="OOD data (repeat for several sets)."),
    text_column: Optional[str] = typer.Option(None, help="Text column (for a text guard); else vector columns."),
    vector_columns: Optional[str] = typer.Option(None, help="Vector columns as a glob, e.g. 'emb_*' or 'pixel_*'."),
    report: Path = typer.Option(Path("report.json"), help="Where to write the report JSON (HTML beside it)."),
):
    """Score in-distribution and OOD data with a registered guard and write a full evaluation report."""
    from flows.cli.summary import print_evaluation
    from flows.ops.evaluate_model import evaluate_model

    from flows.guard import registry

    if (text_column is None) == (vector_columns is None):
        raise typer.BadParameter("give exactly one of --text-column or --vector-columns")
    try:
        result = evaluate_model(model, data, list(ood_data), text_column, vector_columns, report)
    except (ValueError, LookupError, OSError, registry.RegistryError, registry.IntegrityError) as error:
        refuse(error, "Evaluation refused")  # bad input: a data file, a model URI, a tampered version
    except Exception as error:  # noqa: BLE001 - one clear line for the user
        fail_unexpectedly(error, "Evaluation failed")
    print_evaluation(result, model, data, report, console)


def _with_objective(pipeline_config, objective: str):
    from ebm_core import OBJECTIVES

    if objective not in OBJECTIVES:
        raise typer.BadParameter(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return pipeline_config.with_objective(objective)


def _load_config(path: Optional[Path], packaged):
    """The pipeline YAML at `path` (or the packaged one); a bad file is one line and exit 2."""
    from flows.pipeline.config import PipelineConfig

    try:
        return PipelineConfig.from_yaml(path) if path else packaged()
    except (TypeError, ValueError) as error:
        refuse(error, "Bad config")


def _check_runnable(pipeline_config) -> None:
    """The whole config, before anything is loaded or trained: what only the selection stage or the
    registration would find (a missing search space, an unknown budget, a model name MLflow refuses)."""
    try:
        pipeline_config.check_runnable()
    except (TypeError, ValueError) as error:
        refuse(error, "Bad config")


def _check_data_before_flow(pipeline_config, source) -> None:
    """Load the data and run the data / text checks before the flow (and Prefect's server) starts, so a
    bad file is refused in one line within seconds; the flow checks the same again. A failed check is
    kept as the flow keeps it: the result under $EBMOPS_HOME/runs and a FAILED MLflow run."""
    import tempfile

    from flows.data.data_checks import ChecksFailed
    from flows.data.sources import TEXT_SOURCES, VectorDirSource

    try:
        with tempfile.TemporaryDirectory(prefix="ebmops-check-") as tmp:
            if isinstance(source, TEXT_SOURCES):
                from flows.data import text_splits

                files = text_splits.write_text_splits(source, Path(tmp) / "text", pipeline_config.seed, pipeline_config.alpha)
                try:
                    text_splits.check_text_splits(files, Path(tmp) / text_splits.TEXT_CHECK_FILE, pipeline_config.alpha)
                except ChecksFailed as failure:
                    _keep_failed_checks(failure, pipeline_config)
            elif isinstance(source, VectorDirSource):
                from flows.pipeline import steps

                data = steps.load_data(pipeline_config, Path(tmp), source)
                try:
                    steps.validate_data(data, Path(tmp), pipeline_config.alpha)
                except ChecksFailed as failure:
                    _keep_failed_checks(failure, pipeline_config)
    except ChecksFailed as failure:
        refuse(failure.one_line(), "Stopped before training (the model registry was not changed)")
    except _refusal_types() as error:
        refuse(error, "Stopped before training (the model registry was not changed)")


def _refusal_types(loading: bool = True) -> tuple[type[BaseException], ...]:
    """What bad input raises while loading or checking: exit 2, one line, no traceback. While loading
    (before the flow) any ValueError is about the input; inside the flow only the named kinds are."""
    from flows.data.data_checks import ChecksFailed, DataValidationError
    from flows.data.text_data import DataSourceError

    named = (ChecksFailed, DataValidationError, DataSourceError, FileNotFoundError, IsADirectoryError,
             NotADirectoryError, PermissionError, UnicodeDecodeError)
    return named + (ValueError,) if loading else named


def _keep_failed_checks(failure, pipeline_config) -> None:
    """Move the failed result into a run folder of its own, log it as a FAILED MLflow run (no model
    version), and raise the failure again naming the kept file."""
    import shutil
    import uuid
    from datetime import datetime, timezone

    from flows import settings
    from flows.guard import registry

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run_dir = settings.runs_dir() / f"{stamp}-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True, exist_ok=False)
    kept = run_dir / Path(failure.result_path).name
    shutil.move(str(failure.result_path), kept)
    kept_failure = type(failure)(failure.results, kept)
    # MLflow's INFO lines (creating the tables of a new database) would add lines to a one-line refusal
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        registry.log_failed_validation(
            pipeline_config.experiment_name, pipeline_config.to_params(), kept, str(kept_failure)
        )
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    raise kept_failure from None


def _configured(pipeline_config, objective, steps, sampler, budget):
    """The pipeline config with the command line's --objective / --steps / --sampler / --budget applied."""
    _check_single_detector_options(objective, steps, sampler, budget)
    if steps is not None:
        pipeline_config = pipeline_config.with_training_steps(steps)
    if objective is not None:
        pipeline_config = _with_objective(pipeline_config, objective)
    if budget is not None:
        pipeline_config = pipeline_config.with_selection_budget(budget)
    if sampler is not None:
        pipeline_config = _with_sampler(pipeline_config, sampler)
    return pipeline_config


def _check_single_detector_options(objective, steps, sampler, budget) -> None:
    """--steps and --sampler configure the one detector --objective trains; --budget scales the selection."""
    if objective is None and (steps is not None or sampler is not None):
        raise typer.BadParameter(
            "--steps and --sampler configure the detector that --objective trains; without --objective the "
            "selection stage trains its candidates: use --budget (fast | default) to scale their training"
        )
    if objective is not None and budget is not None:
        raise typer.BadParameter("--budget scales the selection stage, which --objective turns off")


def _check_nproc(pipeline_config, nproc: int) -> None:
    """--nproc > 1 trains the one detector --objective names; the selection stage fans out with Dask."""
    if nproc > 1 and pipeline_config.selection.enabled:
        raise typer.BadParameter(
            "--nproc trains the one --objective detector on several processes (torchrun DDP); the selection "
            "stage fans its candidates out with Dask instead (EBMOPS_DASK_ADDRESS): give --objective or drop --nproc"
        )
    if nproc > pipeline_config.detector.train.batch_size:
        raise typer.BadParameter(
            f"--nproc {nproc} exceeds the global batch size {pipeline_config.detector.train.batch_size}"
        )


def _with_sampler(pipeline_config, sampler: str):
    from dataclasses import replace

    from ebm_core import SAMPLERS

    if sampler not in SAMPLERS:
        raise typer.BadParameter(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return replace(pipeline_config, detector=pipeline_config.detector.with_sampler(sampler))


def _run_pipeline(pipeline_config, source, progress: bool, nproc: int = 1) -> None:
    import time

    from flows.cli import warmup

    # Prefect's temporary server (when the flow would start one) starts in its own process while this
    # one imports the pipeline and opens the tracking store, without garbage collections walking the
    # imported modules again and again (flows/cli/warmup.py).
    with warmup.collector_paused():
        server = warmup.start_prefect_server()
        from flows import settings
        from flows.cli.summary import print_pipeline_summary
        from flows.data.text_splits import TextCheckFailed
        from flows.pipeline.steps import DataCheckFailed
        from flows.pipeline.train_and_register import train_and_register

        if server is not None:
            warmup.preload_pipeline_modules()
            warmup.warm_tracking_store(pipeline_config.experiment_name)
            ready_before_wait_at = time.time()
            server.wait()
    refusals = _refusal_types(loading=False)
    flow_called_at = time.time()
    try:
        with prefect_quiet_about(refusals), warmup.modules_frozen_for_gc():
            result = train_and_register(pipeline_config, source=source, progress=progress, nproc=nproc)
    except (DataCheckFailed, TextCheckFailed) as failure:
        refuse(failure.one_line(), "Stopped before training (the model registry was not changed)")
    except refusals as error:
        refuse(error, "Stopped (the model registry was not changed)")
    except Exception as error:  # noqa: BLE001 - the CLI reports any failure in one line
        fail_unexpectedly(error, "Pipeline failed")
    warmup.record_cli_timings(
        result.run_dir, flow_called_at, None if server is None else ready_before_wait_at
    )
    print_pipeline_summary(result, settings.tracking_uri(), console)


def _register_commands() -> None:
    from flows.cli.compare import compare_command
    from flows.cli.ops import deploy_command, history_command, promote_command, rollback_command, serve_command

    app.command("compare")(compare_command)
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    app.command("history")(history_command)
    app.command("serve")(serve_command)
    app.command("deploy")(deploy_command)
    from flows.cli.monitor import monitor_command

    app.command("monitor")(monitor_command)
    from flows.cli.score import score_command

    app.command("score")(score_command)
    from flows.cli.monitor_report import monitor_report_command

    app.command("monitor-report")(monitor_report_command)


_register_commands()

if __name__ == "__main__":
    app()

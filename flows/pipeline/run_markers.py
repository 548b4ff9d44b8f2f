"""Names of the files that say how a pipeline run folder (`$EBMOPS_HOME/runs/<id>/`) ended. Promotion
reads its default evaluation data only from folders with the complete marker."""

RUN_STARTED_MARKER = "run_started.json"
RUN_COMPLETE_MARKER = "run_complete.json"
RUN_FAILED_MARKER = "run_failed.json"

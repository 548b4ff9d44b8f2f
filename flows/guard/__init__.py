"""guard stage: the registered guard and everything that touches MLflow.

- `names`: the model name and URIs (no MLflow import);
- `registry`: the MLflow adapter (runs, versions, aliases, tags, artifacts), the only caller of mlflow
  besides the pyfunc files;
- `guard`: `Guard.load(uri)`, the one way the rest of the code reaches a registered model;
- `pyfunc`, `pyfunc_entry`, `input_checks`: what MLflow serves and the checks on its input;
- `serving`: `mlflow models serve` as a process.
"""

"""Names of the registered guard and its model URIs. Plain strings, no MLflow import: the command
line's option defaults use them without paying for MLflow at start-up."""

from __future__ import annotations

DEFAULT_MODEL_NAME = "ebm-guard"
CHALLENGER = "challenger"
CHAMPION = "champion"


def alias_uri(alias: str, model_name: str = DEFAULT_MODEL_NAME) -> str:
    """models:/<name>@<alias>"""
    return f"models:/{model_name}@{alias}"


def version_uri(model_name: str, version: str) -> str:
    """models:/<name>/<version>: one fixed version."""
    return f"models:/{model_name}/{version}"


DEFAULT_CHAMPION_URI = alias_uri(CHAMPION)
DEFAULT_CHALLENGER_URI = alias_uri(CHALLENGER)


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """models:/<name>@<alias> -> (name, alias, None); models:/<name>/<version> -> (name, None, version).
    Any other form raises ValueError."""
    if not model_uri.startswith("models:/"):
        raise ValueError(
            f"model_uri must look like models:/<name>@<alias> or models:/<name>/<version>, got {model_uri!r}"
        )
    rest = model_uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        if not name or not alias:
            raise ValueError(f"cannot read a model name and alias from {model_uri!r}")
        return name, alias, None
    name, _, version = rest.partition("/")
    if not name or not version.isdigit():
        raise ValueError(f"cannot read a model version from {model_uri!r}")
    return name, None, version

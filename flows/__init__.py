"""Prefect flows, the MLflow registry adapter, configuration and the `ebmops` command line.

Importing this package has no side effects: no directories are made and no tracking URI is set.
"""

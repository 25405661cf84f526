"""Kubernetes glue at the infrastructure layer: SparkApplication objects, their launcher, schedules.

Everything here builds plain dicts (rendered to YAML once) and talks to the API server through the
official ``kubernetes`` client; nothing imports the stages, so any layer above may use it.
"""

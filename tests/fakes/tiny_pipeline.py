"""A two-parameter pipeline for client tests (no ``from __future__ import annotations``: kfp reads the types)."""

from kfp import compiler, dsl


@dsl.container_component
def echo(workdir: str, seed: int):
    return dsl.ContainerSpec(image="ghcr.io/batchrl/batchrl-runtime:0.1.0", command=["echo"], args=[workdir, seed])


@dsl.pipeline(name="batch-rl-test")
def tiny(workdir: str, seed: int = 1):
    echo(workdir=workdir, seed=seed)


def compile_to(path: str) -> str:
    compiler.Compiler().compile(tiny, path)
    return path

"""The Kubeflow Pipelines layer: one component per stage, the batch-RL pipeline, and their compilation.

Components are thin typed shells over the engine (each imports the engine inside its function and
calls one stage function), so the same definitions run under ``kfp.local`` and on a cluster whose
image has ``batchrl`` installed. Nothing here is needed to use the engine or the ``batchrl`` CLI stages.

:data:`MIN_KFP_BACKEND`: the oldest KFP backend the compiled pipeline runs on; :data:`FULL_KFP_BACKEND`:
the oldest that honours every feature it uses (:mod:`batchrl.kfp.backend`).
"""

from batchrl.kfp.backend import FULL_KFP_BACKEND, MIN_KFP_BACKEND

__all__ = ["FULL_KFP_BACKEND", "MIN_KFP_BACKEND"]

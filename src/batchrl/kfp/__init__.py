"""The Kubeflow Pipelines layer: one component per stage, the batch-RL pipeline, and their compilation.

Components are thin typed shells over the engine (each imports the engine inside its function and
calls one stage function), so the same definitions run under ``kfp.local`` and on a cluster whose
image has ``batchrl`` installed. Nothing here is needed to use the engine or the ``batchrl`` CLI stages.
"""

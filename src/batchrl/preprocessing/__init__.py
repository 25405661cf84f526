"""Normalization identification (``identify``), its parameters and JSON (``normalization``) and the torch
``Preprocessor`` (``preprocessor``). Import the submodules directly; only ``preprocessor`` needs torch."""

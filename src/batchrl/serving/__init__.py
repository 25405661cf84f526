"""Serving: TorchScript export of trained models (spec section 8) and loading them back."""

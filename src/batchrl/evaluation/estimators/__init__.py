"""Counterfactual policy evaluation estimators: one small pure function (or statistic) each."""

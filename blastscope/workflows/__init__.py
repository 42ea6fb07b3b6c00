"""Pipelines over several runs: ``compare`` trains, evaluates and reports a set of models on one split."""

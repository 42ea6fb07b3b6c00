"""The inference core: runners, batching, test-time augmentation, probabilities and the decision rule."""

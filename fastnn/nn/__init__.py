"""Keras-style models: Sequential, Dense, Conv2D, ... (see issue 5)."""

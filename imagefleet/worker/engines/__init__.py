"""Inference engines: the code that turns a model file and a request into images."""

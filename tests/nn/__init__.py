"""Tests of the layer library ``eqxllm.nn`` against NumPy references written from the papers."""

"""Tests of ``eqxllm.train``: loss, optimizer, step, precision, sharding, multi-process training."""

"""Tests of the data pipeline ``eqxllm.data``: stories, tokenizers, the token cache, batches."""

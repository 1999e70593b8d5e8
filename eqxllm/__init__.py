"""eqxllm."""

"""Bottleneck embedding: backbones, fast runtime, content-addressed cache and the batch pipeline."""

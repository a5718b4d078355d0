"""Serving side of seqlstm: an onnxruntime runner (predict, http, bench) that never imports torch.

Only `predict --verify` and `bench --torch` import torch, lazily, to compare against the artifact.
"""

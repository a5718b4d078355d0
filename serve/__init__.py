"""Serving side of seqlstm: an onnxruntime runner (predict, http, bench, ray) that never imports torch.

Commands: `predict` (predict.py), `bench` (bench.py), `http` (the serve.http package: cli.py is its command
line), `ray` (the serve.ray package: job.py). Only `predict --verify` and `bench --torch` import torch,
through serve.torch_check, the one module that may, imported only for those flags.
"""

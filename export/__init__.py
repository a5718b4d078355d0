"""Checkpoint -> ONNX, validated against torch before it is allowed to exist.

`python -m export --model RUN_DIR/model --out EXPORT_DIR` (see `export.__main__`):
`onnx_export` writes the graph and `model.json`, `validate` is the acceptance step
(torch vs onnxruntime vs onnx's reference evaluator), `quantize` adds the optional int8 model.
"""

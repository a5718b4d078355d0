"""The torch-free core that training, export and serving share.

Everything here imports numpy at most, never torch or onnxruntime, so `pip install .[serve]` can use
it: the error types and exit statuses (`errors`, `cli`), the configs with their limits (`config`),
text to padded arrays (`preprocess`), the dataset readers (`examples`, `corpora`, `data`) and the
registry fetcher (`fetch`).
"""

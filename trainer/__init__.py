"""Training side of seqlstm. Importing the package imports no torch: the text-to-arrays path
(`trainer.preprocess`), the configs and the data readers are shared with the torch-free server."""

"""Small typed exceptions whose one-line message is what the user sees (see `trainer.__main__`)."""


class SeqLSTMError(Exception):
    """Base class: the CLI prints `error: <message>` and exits 2 instead of a traceback."""


class DataError(SeqLSTMError):
    """Malformed, missing or unusable data: the message names the file, line and field."""


class FetchError(SeqLSTMError):
    """A registry download failed or its checksum did not match."""


class ConfigError(SeqLSTMError):
    """An unknown config key, a wrong type or a bad value."""


class ArtifactError(SeqLSTMError):
    """A missing, corrupt or mismatched model artifact or export directory."""


class ValidationError(SeqLSTMError):
    """Exported model outputs disagree with torch beyond the tolerance."""


class TrainingError(SeqLSTMError):
    """Training cannot go on (e.g. too many non-finite losses in a row); the last checkpoint is intact."""

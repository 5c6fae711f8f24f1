"""One error family: every failure a user can cause or meet is a ``SpeechdumpError``.

A pyscript catches ``SpeechdumpError`` once and prints ``ERROR: <message>``; each message
already names what it is about (the utterance and its file, the scp and line, the option, the
model file, the patched package). Subclasses that were ``ValueError`` or ``OSError`` before stay
so, for callers that catch those.
"""

from __future__ import annotations


class SpeechdumpError(Exception):
    """Base of every error speechdump raises on purpose; its message is for the user."""


class OptionError(SpeechdumpError, ValueError):
    """An option is unknown to the chosen toolkit, has a bad value, or cannot apply."""


class ModelError(SpeechdumpError, ValueError):
    """A model path does not hold what its toolkit loads, or its weights do not fit the model."""


class DataDirError(SpeechdumpError, ValueError):
    """A data dir file is malformed; the message names the file and line."""


class UtteranceError(SpeechdumpError):
    """An utterance cannot be used (unreadable, empty, too short...): says which, its file, and
    why."""

    def __init__(self, utt_id: str, source: str, reason: str):
        super().__init__(f"utterance '{utt_id}' ({source.strip()}): {reason}")
        self.utt_id = utt_id
        self.source = source.strip()
        self.reason = reason


class WriteError(SpeechdumpError):
    """An output file cannot be written; the message names it and says why."""

    def __init__(self, path: str, cause: OSError):
        # Errno and text only: the cause's own filename may be a temporary name or absent.
        reason = f"[Errno {cause.errno}] {cause.strerror}" if cause.errno else str(cause)
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.cause = cause


class ArkFormatError(SpeechdumpError, ValueError):
    """An scp line does not point at a readable record of its key."""


class ScpReadError(SpeechdumpError, OSError):
    """An scp entry could not be read: names the utterance, the scp and the entry."""


class AlignmentError(SpeechdumpError):
    """The outputs do not line up with the data dir; the message names the ids."""


class TokenError(SpeechdumpError):
    """Bad input or output of the token stages; the message names the file (and id)."""


class DeviceError(SpeechdumpError, ValueError):
    """The job sees no device of the kind ``--device`` names."""


class PrecisionError(SpeechdumpError, FloatingPointError):
    """A forward pass at reduced ``--precision`` gave NaN or inf (float16 overflow)."""


class CompatError(SpeechdumpError):
    """A patched internal of a third-party package is missing or did not take effect; the
    message names the package, its version and the patch."""


class ShardError(SpeechdumpError, ValueError):
    """A token or feature shard set is malformed or its files disagree; the message names the
    file (and the utterance where one is concerned)."""


class TrialError(SpeechdumpError, ValueError):
    """A trial list, the embeddings it names, a cohort or a back-end model do not fit; the
    message names the file (and the line or the ids)."""

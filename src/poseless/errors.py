"""Errors that carry a message meant for the user (no traceback needed)."""


class PoselessError(Exception):
    """Base class: the message names the file/key and the problem."""


class BadItemError(PoselessError):
    """One input item (image, mask, annotation) is unusable."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class TrainingError(PoselessError):
    """Training cannot go on (NaN loss, collapse, ...); the message says what to try."""

"""User-facing errors.

An `EdgeNASError` means the user gave us something we cannot work with. Its message is
one sentence that says what was wrong and what to do; the CLI prints it without a
traceback and exits with status 2. Anything else that is raised is a bug.
"""


class EdgeNASError(Exception):
    """A user error: bad input, a missing file, an impossible request."""


class ConfigError(EdgeNASError):
    """A config, space, or profile file has an unknown key, a wrong type, or a missing field."""


class ArchError(EdgeNASError):
    """An architecture is not valid in its search space."""


class CheckpointError(EdgeNASError):
    """A checkpoint is corrupt, missing, or belongs to another search space."""


class DataError(EdgeNASError):
    """A dataset path or format is not what was expected."""


class DeviceError(EdgeNASError):
    """A device cannot be reached or lacks what is needed to run there."""


class MissingDependencyError(EdgeNASError):
    """An optional dependency is not installed; the message says which extra to install."""


def require(module: str, extra: str):
    """Import an optional dependency or raise a MissingDependencyError naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'edgenas[{extra}]'"
        ) from exc

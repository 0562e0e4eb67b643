"""The package's one error tree, and one-line messages from library exceptions.

Every error a user can cause (a config, data set, weights file, device, run folder, output
file or launch that does not fit) is a ReIDError; the command lines catch ReIDError alone and
print its one-line message."""


class ReIDError(Exception):
    """Base of every error raised for a user's input or environment."""


class ConfigError(ReIDError):
    """A config file or override names an unknown key or gives a wrong value."""


class LaunchError(ConfigError):
    """The job cannot be started as asked (no command, a program that is not found)."""


class DatasetError(ReIDError):
    """A dataset file or folder is missing or is not what its layout has."""


class ModelError(ReIDError):
    """The model cannot be built or its weights cannot be loaded."""


class ParityError(ModelError):
    """An exported model does not reproduce MXNet's features."""


class CheckpointError(ReIDError):
    """A checkpoint is missing, damaged, cannot be written or does not fit the model."""


class NonFiniteParameters(CheckpointError):
    """The parameters hold NaN or infinity: nothing is written."""


class DeviceError(ReIDError):
    """The requested devices are not usable with the installed MXNet."""


class RunDirError(ReIDError):
    """OUTPUT_DIR does not fit the request (a new run over an old one, --resume without one)
    or cannot be written."""


class TrainingDiverged(ReIDError):
    """The loss became NaN, infinite or exploded, or the weights did; nothing from the
    diverged state is saved."""


class OutputError(ReIDError):
    """An output path cannot be used: a folder where a file is expected, a missing parent
    folder, or an existing file the package did not write (and no --overwrite)."""


def install_hint(*extras):
    """The one form of every install command the package prints, the README's: from the
    repository, with the pinned set, `pip install -c constraints.txt -e '.[EXTRA,...]'`
    (`-e .` with no extra: the package and its plain requirements)."""
    target = "'.[%s]'" % ",".join(extras) if extras else "."
    return "pip install -c constraints.txt -e %s" % target


def error_line(exc):
    """The line of an exception's text that says what failed.

    MXNet 1.9's errors start with "Traceback (most recent call last):" and a C++ file name and
    end with the check that failed, so their last line is taken, without the class prefix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line[len("MXNetError: "):] if line.startswith("MXNetError: ") else line

"""One-line messages from library exceptions."""


def error_line(exc):
    """The line of an exception's text that says what failed.

    MXNet 1.9's errors start with "Traceback (most recent call last):" and a C++ file name and
    end with the check that failed, so their last line is taken, without the class prefix."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line[len("MXNetError: "):] if line.startswith("MXNetError: ") else line

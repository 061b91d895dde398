"""The package's one error type for bad input."""


class SuperpositionError(Exception):
    """Invalid input (a config value, a CLI flag, a file).

    The message is one line that names the offending field and what is allowed; the CLI prints it
    without a traceback and exits with code 2.
    """


class TrainingDiverged(SuperpositionError):
    """A loss became NaN or infinite (usually a learning rate too high for the settings)."""


class Reported(Exception):
    """A command failed and has already said why (each torchrun worker prints its own line): the CLI
    exits with `code` and prints nothing more."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exit code {code}")
        self.code = code

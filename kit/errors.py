"""The one base of the kit's errors. Standard library only: kit.notebook, which runs before anything is
installed, raises one too."""


class KitError(Exception):
    """An error the kit raises with a message meant for the user (what is wrong, and what to do): every kit
    error subclasses it, and the command line prints its message and exits with status 2."""

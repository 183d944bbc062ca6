"""Output files of the CLI (--plot, --save, --json, --markdown) and its figures.

The figures use matplotlib's object API, not pyplot, so the calling process's backend,
open figures and windows are left alone (`fastnn.cli.main` may run inside a notebook or
a GUI program). The checks run before any training or timing, so that a path that
cannot be written fails in a second, not after minutes of work."""
import os
import tempfile
from pathlib import Path


def check_writable(path, replace=False):
    """``path`` with ``~`` expanded (the writers get this path), or ValueError saying why it
    cannot be written as a file. ``replace``: it is written as a new file in its directory
    and renamed over the old one (Sequential.save), so the directory must take a new file
    (a read-only old file does not matter); else it is opened for writing."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{path} is a directory")
    parent = target.resolve().parent
    if not parent.is_dir():
        raise ValueError(f"directory {parent} does not exist")
    try:
        if target.exists() and not replace:
            with open(target, "ab"):
                pass
        else:
            # os.access cannot tell (root passes it on read-only file systems): try for real
            with tempfile.TemporaryFile(dir=parent):
                pass
    except OSError as exc:
        raise ValueError(f"{path} cannot be written ({exc.strerror or exc})") from None
    return str(target)


def matplotlib_error():
    """None when matplotlib imports, else why not (missing, or broken)."""
    try:
        import matplotlib.figure  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything
        return f"{type(exc).__name__}: {exc}"
    return None


def plot_path(path):
    """The file a figure saved to ``path`` lands in (matplotlib adds its default format's
    extension to a name without one); ValueError if matplotlib cannot write that format.
    Call after matplotlib_error() returned None."""
    import matplotlib
    from matplotlib.figure import Figure
    path = os.path.expanduser(os.fspath(path))
    if Path(path).is_dir():
        raise ValueError(f"{path} is a directory")
    extension = os.path.splitext(path)[1][1:].lower()
    if not extension:
        extension = str(matplotlib.rcParams["savefig.format"]).lower()
        path = f"{path}.{extension}"
    formats = Figure().canvas.get_supported_filetypes()
    if extension not in formats:
        raise ValueError(f"{path}: matplotlib cannot write .{extension} files (it writes "
                         f"{', '.join('.' + f for f in sorted(formats))})")
    return check_writable(path)


def figure(width, height):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")

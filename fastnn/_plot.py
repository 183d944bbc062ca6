"""Figures for the CLI's --plot options. They use matplotlib's object API, not
pyplot, so the calling process's backend, open figures and windows are left alone
(`fastnn.cli.main` may run inside a notebook or a GUI program)."""


def figure(width, height):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height))


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")

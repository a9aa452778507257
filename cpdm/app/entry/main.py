"""Streamlit's main script under ``cpdm serve``: runs the app file that $CPDM_APP names, on every run.

It lives apart from ``app.py`` so that no ``pages/`` folder sits beside the
main script: the first request after a start, whatever its path, then goes
through the app's sign-in and routing instead of Streamlit's automatic pages.
"""

import os
from pathlib import Path

from cpdm.app.entry import APP_ENV


def run_app_file(app: str | os.PathLike | None = None) -> None:
    """Run the app file (default: $CPDM_APP) as this Streamlit script run, with its own ``__file__``.

    Read on every run, so an edited app file takes effect at the next rerun.
    """
    path = Path(app if app is not None else os.environ[APP_ENV])
    code = compile(path.read_bytes(), str(path), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(path)})  # noqa: S102


run_app_file()

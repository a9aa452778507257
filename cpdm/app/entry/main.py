"""Streamlit's main script under ``cpdm serve``: runs the app file that $CPDM_APP names, on every run.

It lives apart from ``app.py`` so that no ``pages/`` folder sits beside the
main script: the first request after a start, whatever its path, then goes
through the app's sign-in and routing instead of Streamlit's automatic pages.
"""

from cpdm.app.serve import run_app_file

run_app_file()

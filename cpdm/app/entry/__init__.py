"""The folder of the Streamlit main script that ``cpdm serve`` runs (``main.py``), and the variable it reads.

Streamlit turns on its automatic page list, which runs page files without the
app's sign-in, whenever its main script has a ``pages/`` folder beside it.
This folder never has one, so every request goes through ``app.py``.
"""

APP_ENV = "CPDM_APP"  # the app file main.py runs; cpdm serve sets it

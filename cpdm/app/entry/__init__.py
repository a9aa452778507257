"""The folder of the Streamlit main script that ``cpdm serve`` runs (``main.py``); nothing else lives here.

Streamlit turns on its automatic page list, which runs page files without the
app's sign-in, whenever its main script has a ``pages/`` folder beside it.
This folder never has one, so every request goes through ``app.py``.
"""

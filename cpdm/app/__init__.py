"""The app's wing: everything that runs in or starts the Streamlit app; the only wing that imports Streamlit.

* :mod:`cpdm.app.ui`: what the pages share (the auth gate, images inside the page).
* :mod:`cpdm.app.answer_panel`: the rating page's answer panel (a browser component).
* :mod:`cpdm.app.entry`: the folder of Streamlit's main script under ``cpdm serve`` (runs ``app.py``).
* :mod:`cpdm.app.serve`: serving the app; :mod:`cpdm.app.process`: its server process, which dies with
  the command that started it.

``app.py`` and ``pages/`` stay at the top of the repository, thin: they call this wing and the library.
"""

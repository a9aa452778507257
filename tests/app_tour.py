"""A researcher's tour of the app: every page rendered, every Jobs form submitted with good and bad values.

Run it in a fresh interpreter, so that what it finds in ``sys.modules`` and
the process's resident memory are what the app's own process would hold,
not what other tests loaded before:

    CPDM_WORKSPACE=WS python tests/app_tour.py TOKEN [APP]

TOKEN is a researcher's invite token; APP defaults to this checkout's
``app.py``. The tour runs the pages through Streamlit's AppTest, which
executes them in this process as the server would. It prints one JSON line:
the pages visited, each form submission with what the page answered, any
exception a page raised, the heavy modules loaded (:data:`HEAVY`), and
VmRSS/VmHWM in KiB at the end and (``after_pages``) once every page was
shown, before the forms were submitted. It changes the workspace (it queues jobs): give it a copy.

The tour names widgets by the keys the pages give them, and nothing else of
the library, so it also runs on an older checkout (for before/after figures).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

HEAVY = ("torch", "diffusers", "open_clip", "transformers")
CHECKOUT = Path(__file__).resolve().parent.parent
DEFAULT_APP = CHECKOUT / "app.py"
TIMEOUT_S = 300


def heavy_modules() -> list[str]:
    """The loaded modules of the model libraries (top-level names only)."""
    return sorted({name.split(".")[0] for name in sys.modules if name.split(".")[0] in HEAVY})


def memory_kib() -> dict[str, int]:
    """This process's resident memory now (VmRSS) and at its peak (VmHWM), in KiB, from /proc."""
    figures = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0])
    return figures


def shown(at) -> dict[str, list[str]]:
    """The success and error messages the page shows now."""
    return {"success": [str(e.value) for e in at.success], "error": [str(e.value) for e in at.error]}


class Tour:
    """One AppTest session of the app, signed in with a token, and a log of what happened."""

    def __init__(self, app: Path, token: str):
        self.at = AppTest.from_file(str(app), default_timeout=TIMEOUT_S)
        self.at.query_params["token"] = token
        self.pages: list[str] = []
        self.submissions: list[dict] = []
        self.exceptions: list[str] = []
        self._check(self.at.run(), "sign in")

    def _check(self, at, where: str) -> None:
        self.exceptions += [f"{where}: {exception.value}" for exception in at.exception]

    def visit(self, page: str) -> None:
        self.at.switch_page(page).run()
        self.pages.append(page)
        self._check(self.at, page)

    def submit(self, form: str, expect: str, fill=None) -> None:
        """Fill a form (``fill(at)``), press its submit button and record what the page answered."""
        if fill is not None:
            fill(self.at)
        self.at.button(key=f"{form}_submit").click().run()
        self._check(self.at, f"{form} form")
        self.submissions.append({"form": form, "expect": expect, **shown(self.at)})

    def report(self) -> dict:
        return {"pages": self.pages, "submissions": self.submissions, "exceptions": self.exceptions,
                "heavy": heavy_modules(), **memory_kib()}


def researcher_pages(app: Path) -> list[str]:
    """The researcher pages' files, relative to the app, in menu order (read from app.py's RESEARCHER_PAGES)."""
    text = app.read_text(encoding="utf-8")
    menu = text[text.index("RESEARCHER_PAGES = ["):]
    menu = menu[: menu.index("\n]")]
    return [f"pages/{name}" for name in re.findall(r'PAGES_DIR / "([^"]+)"', menu)]


def first_option(at, kind: str, key: str):
    """The first choice a selectbox or multiselect offers."""
    widget = getattr(at, kind)(key=key)
    return widget.proto.options[0]


# --- the Jobs page's forms -------------------------------------------------------------------------

def tour_jobs_forms(tour: Tour) -> None:
    """Submit each form of the Jobs page once with values it must queue, and with values it must refuse."""
    at = tour.at
    for form in ("gen", "score", "unlearn", "chain"):  # jobs for the tiny models: any CPU worker could run them
        at.checkbox(key=f"{form}_offline_tiny").check()

    tour.submit("gen", "error", lambda at: at.number_input(key="gen_height").set_value(30))
    tour.submit("gen", "success", lambda at: at.number_input(key="gen_height").set_value(None))

    tour.submit("score", "error", lambda at: at.text_input(key="score_semantic").input("no-such-model"))
    tour.submit("score", "success", lambda at: at.text_input(key="score_semantic").input("ViT-L-14/openai"))

    artist = first_option(at, "multiselect", "unlearn_concepts")
    methods = [label.split(":")[0] for label in at.selectbox(key="unlearn_method").proto.options]  # "name: summary"
    tour.submit("unlearn", "error")  # no concept
    for method in methods:
        at.selectbox(key="unlearn_method").set_value(method).run()
        at.multiselect(key="unlearn_concepts").set_value([artist])
        at.text_input(key="unlearn_variant_name").input(f"tour-{method}")
        tour.submit("unlearn", "error" if method == "gradient-ascent" else "success")  # it trains on images: none given
    at.selectbox(key="unlearn_method").set_value("uce").run()
    tour.submit("unlearn", "error", lambda at: (at.text_input(key="unlearn_variant_name").input("tour-bad-lamb"),
                                                at.number_input(key="unlearn_hp_uce_lamb").set_value(-1.0)))

    tour.submit("chain", "error")  # no concept
    at.selectbox(key="chain_method").set_value("uce").run()
    at.selectbox(key="chain_concept").set_value(artist)
    tour.submit("chain", "error", lambda at: at.number_input(key="chain_hp_uce_lamb").set_value(-1.0))
    tour.submit("chain", "success", lambda at: at.number_input(key="chain_hp_uce_lamb").set_value(0.5))


def run_tour(app: Path, token: str) -> dict:
    """Visit every researcher page, then submit the Jobs page's forms; memory is read after each half."""
    tour = Tour(app, token)
    pages = researcher_pages(app)
    for page in pages:
        tour.visit(page)
    after_pages = memory_kib()
    jobs_page = next(page for page in pages if page.endswith("jobs.py"))
    if tour.pages[-1] != jobs_page:
        tour.visit(jobs_page)
    tour_jobs_forms(tour)
    return {**tour.report(), "after_pages": after_pages}


def tour_in_fresh_process(workspace: Path, token: str, checkout: Path = CHECKOUT, timeout_s: float = 900) -> dict:
    """Run the tour in a new interpreter on ``checkout``'s code and app (this one's by default); return its report."""
    env = {**os.environ, "CPDM_WORKSPACE": str(workspace),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, token, str(checkout / "app.py")], env=env, cwd=checkout,
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"the tour failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    app_path = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_APP
    print(json.dumps(run_tour(app_path.resolve(), sys.argv[1])))

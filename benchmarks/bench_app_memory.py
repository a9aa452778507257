"""Resident memory of the app's process after a researcher visits every page and submits every Jobs form.

Builds the offline demo workspace, then runs :mod:`tests.app_tour` in a
fresh interpreter: Streamlit's AppTest runs the app's pages in that process
as the server would, signed in as the demo researcher. Reported from
/proc/self/status, in MiB: VmRSS once every page was shown, VmRSS after the
Jobs forms were submitted (good and bad values, every method), and the peak
(VmHWM); and which model libraries (torch, diffusers, open_clip,
transformers) the process had loaded. Each repeat is a new process on a
fresh copy of the workspace; figures are medians.

``--checkout DIR`` tours another checkout's code and app (an older commit
unpacked with ``git archive``) over the same workspace, for before/after
figures.

    python benchmarks/bench_app_memory.py --quick    # one tour
    python benchmarks/bench_app_memory.py            # three tours
    python benchmarks/bench_app_memory.py --checkout /tmp/old
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpdm.demo.build import build_demo  # noqa: E402
from tests.app_tour import tour_in_fresh_process  # noqa: E402

KIB_PER_MIB = 1024


def one_tour(demo: Path, token: str, checkout: Path, scratch: Path, index: int) -> dict:
    """A tour on a fresh copy of the demo workspace (a tour queues jobs); its figures in MiB."""
    workspace = scratch / f"tour-{index}"
    shutil.copytree(demo, workspace)
    report = tour_in_fresh_process(workspace, token, checkout)
    if report["exceptions"]:
        raise SystemExit(f"a page failed during the tour: {report['exceptions'][0]}")
    return {"after_pages": report["after_pages"]["VmRSS"] / KIB_PER_MIB, "after_forms": report["VmRSS"] / KIB_PER_MIB,
            "peak": report["VmHWM"] / KIB_PER_MIB, "heavy": report["heavy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one tour instead of three")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose app is toured (default: this)")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    checkout = args.checkout.resolve()

    with tempfile.TemporaryDirectory(prefix="cpdm-bench-app-memory-") as folder:
        scratch = Path(folder)
        demo = build_demo(scratch / "demo")
        tours = []
        for index in range(repeats):
            tour = one_tour(demo.workspace, demo.researcher_link.token, checkout, scratch, index)
            print(f"tour {index + 1}: after pages {tour['after_pages']:.0f} MiB, after forms {tour['after_forms']:.0f} "
                  f"MiB, peak {tour['peak']:.0f} MiB, model libraries loaded: {', '.join(tour['heavy']) or 'none'}")
            tours.append(tour)

    median = {key: statistics.median(tour[key] for tour in tours) for key in ("after_pages", "after_forms", "peak")}
    heavy = sorted({name for tour in tours for name in tour["heavy"]})
    print(f"checkout: {checkout}")
    print(f"RESULT rss_after_pages_mib={median['after_pages']:.0f} rss_after_forms_mib={median['after_forms']:.0f} "
          f"peak_rss_mib={median['peak']:.0f} model_libraries_loaded={len(heavy)}")


if __name__ == "__main__":
    main()

"""The rating page in a real browser: key press to answer shown, Enter to next pair drawn, cold load, server CPU;
the same for the 2AFC page (the original and two AI images).

Starts the app (Streamlit, no file watcher) on a temporary demo-like
workspace of 512x512 PNG pairs and drives one rater in headless chromium
(Debian's /usr/bin/chromium through Playwright). Everything is timed in the
page, on the browser's own clock:

- key press → answer shown: from the digit's keydown event to the first
  animation frame in which its button shows as chosen;
- Enter → next pair drawn: from the Enter keydown to the first animation
  frame in which the panel shows a new pair with both images loaded
  (``img.complete`` and ``naturalWidth > 0``);
- cold load: a fresh browser context (empty cache, new session) opening the
  rater's link, from navigation start to the panel ready with its images;
- server CPU: user + system CPU seconds of the Streamlit process over the
  rated pairs, per pair (read from /proc).

On a phone (390x844, touch emulation), the same rater taps instead:

- tap → answer shown: from a scale button's touchstart to the first frame in
  which it shows as chosen;
- tap on Submit → next pair drawn: from Submit's touchstart to the next pair
  ready with both images, as for Enter.

The 2AFC page (a 2afc campaign on a workspace of its own, three 512x512
images per set) is measured the same way: keys 1, 2, 0, ← and → (and taps on
a phone) → answer shown, Enter (or Submit) → next set drawn with its three
images loaded, a cold load, and server CPU per set.

Goals: a key or tap shows within 50 ms, the next pair or set within 300 ms
at p95 (desktop and phone, rating and 2AFC alike).

    python benchmarks/bench_browser.py            # 50 pairs and 50 sets (25 of each on the phone), 5 cold loads
    python benchmarks/bench_browser.py --quick    # 12 pairs and 12 sets (6 of each on the phone), 3 cold loads
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpdm.store.workspace import init_workspace  # noqa: E402
from tests.browser_support import (  # noqa: E402
    app_server, launch_chromium, rater_world, shown_pair, shown_triplet, triplet_world,
)

QUESTIONS = 3
KEY_GAP_S = 0.06  # a fast typist
# The keys that answer a 2AFC question, and the answer each shows as chosen (panel.js, KEY_CHOICES).
CHOICE_KEYS = {"1": "left", "ArrowLeft": "left", "2": "right", "ArrowRight": "right", "0": "cant_tell"}
CHOICE_VALUES = ("left", "cant_tell", "right")

# Installed once per page: records each answer key's and each Enter's latency in window.__bench. `answers` maps
# each answering key to the value its button shows (a rating page's digits are their own values).
PROBE_JS = """(answers) => {
  const panel = () => document.querySelector('[data-testid=stBidiComponentIsolated]')
      ?.shadowRoot?.querySelector('.cpdm-panel');
  const bench = window.__bench = {keys: [], pairs: [], waiting: 0};
  window.addEventListener('keydown', (event) => {
    const start = event.timeStamp;
    const root = panel();
    const value = answers ? answers[event.key] : (/^[0-9]$/.test(event.key) ? event.key : undefined);
    if (value !== undefined) {
      const row = root.querySelector('.question.current');
      bench.waiting++;
      const check = () => {
        const chosen = row && row.querySelector(`button.selected[data-value="${value}"]`);
        if (chosen) { bench.keys.push(performance.now() - start); bench.waiting--; }
        else requestAnimationFrame(check);
      };
      requestAnimationFrame(check);
    } else if (event.key === 'Enter') {
      const before = root.dataset.item;
      const count = root.querySelectorAll('.images .image').length;
      bench.waiting++;
      const check = () => {
        const now = panel();
        const images = now ? [...now.querySelectorAll('.images img')] : [];
        if (now && now.dataset.item !== before && now.dataset.state === 'answering' && images.length === count
            && images.every((img) => img.complete && img.naturalWidth > 0)) {
          bench.pairs.push(performance.now() - start); bench.waiting--;
        } else requestAnimationFrame(check);
      };
      requestAnimationFrame(check);
    }
  }, {capture: true});
}"""

# The same on a touch screen: a tap's touchstart on a scale button or on Submit starts the clock.
TOUCH_PROBE_JS = """() => {
  const panel = () => document.querySelector('[data-testid=stBidiComponentIsolated]')
      ?.shadowRoot?.querySelector('.cpdm-panel');
  const bench = window.__bench = {taps: [], pairs: [], waiting: 0};
  window.addEventListener('touchstart', (event) => {
    const start = event.timeStamp;
    const button = event.composedPath()[0].closest?.('button');
    const root = panel();
    if (button && button.classList.contains('value')) {
      bench.waiting++;
      const check = () => {
        if (button.classList.contains('selected')) { bench.taps.push(performance.now() - start); bench.waiting--; }
        else requestAnimationFrame(check);
      };
      requestAnimationFrame(check);
    } else if (button && button.classList.contains('submit')) {
      const before = root.dataset.item;
      const count = root.querySelectorAll('.images .image').length;
      bench.waiting++;
      const check = () => {
        const now = panel();
        const images = now ? [...now.querySelectorAll('.images img')] : [];
        if (now && now.dataset.item !== before && now.dataset.state === 'answering' && images.length === count
            && images.every((img) => img.complete && img.naturalWidth > 0)) {
          bench.pairs.push(performance.now() - start); bench.waiting--;
        } else requestAnimationFrame(check);
      };
      requestAnimationFrame(check);
    }
  }, {capture: true});
}"""
PHONE = {"width": 390, "height": 844}

READY_JS = """() => {
  const root = document.querySelector('[data-testid=stBidiComponentIsolated]')?.shadowRoot?.querySelector('.cpdm-panel');
  const images = root ? [...root.querySelectorAll('.images img')] : [];
  return root && root.dataset.state === 'answering' && images.length >= 2
      && images.length === root.querySelectorAll('.images .image').length
      && images.every((img) => img.complete && img.naturalWidth > 0) ? performance.now() : null;
}"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1), linear between ranks."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def cold_load(browser, url: str) -> float:
    """Milliseconds from navigation start to the panel ready with both images, in a fresh context."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        page = context.new_page()
        page.goto(url)
        return page.wait_for_function(READY_JS, polling="raf", timeout=60_000).json_value()
    finally:
        context.close()


def rate_pairs(page, n_pairs: int, rng: random.Random, triplets: bool = False) -> dict:
    """Answer ``n_pairs`` pairs (or, with ``triplets``, 2AFC sets) by keyboard; return the page's measurements."""
    shown = shown_triplet if triplets else shown_pair
    page.evaluate(PROBE_JS, CHOICE_KEYS if triplets else None)
    item = shown(page)
    for _ in range(n_pairs):
        for _ in range(QUESTIONS):
            page.keyboard.press(rng.choice(list(CHOICE_KEYS)) if triplets else str(rng.randint(1, 5)))
            time.sleep(KEY_GAP_S)
        page.keyboard.press("Enter")
        page.wait_for_function("() => window.__bench.waiting === 0", timeout=60_000)
        item = shown(page, item)
    return page.evaluate("() => window.__bench")


def tap_pairs(page, n_pairs: int, rng: random.Random, triplets: bool = False) -> dict:
    """Answer ``n_pairs`` pairs (or, with ``triplets``, 2AFC sets) by tapping, as on a phone; return the page's
    measurements."""
    shown = shown_triplet if triplets else shown_pair
    page.evaluate(TOUCH_PROBE_JS)
    item = shown(page)
    for _ in range(n_pairs):
        for question in page.locator(".cpdm-panel .question").all():
            value = rng.choice(CHOICE_VALUES) if triplets else rng.randint(1, 5)
            question.locator(f'button[data-value="{value}"]').tap()
            time.sleep(KEY_GAP_S)
        page.locator(".cpdm-panel button.submit").tap()
        page.wait_for_function("() => window.__bench.waiting === 0", timeout=60_000)
        item = shown(page, item)
    return page.evaluate("() => window.__bench")


def measure(browser, server, url: str, n_items: int, n_phone: int, n_cold: int, triplets: bool) -> dict:
    """Cold loads, then ``n_items`` items by keyboard at 1280x720 and ``n_phone`` by tapping on a phone."""
    shown = shown_triplet if triplets else shown_pair
    cold_load(browser, url)  # the first run imports the app's modules: not what a rater's load costs
    cold = [cold_load(browser, url) for _ in range(n_cold)]
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.goto(url)
    shown(page)
    cpu_before = cpu_seconds(server.process.pid)
    measured = rate_pairs(page, n_items, random.Random(1), triplets)
    cpu_per_item = (cpu_seconds(server.process.pid) - cpu_before) / n_items
    page.context.close()
    phone = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True).new_page()
    phone.goto(url)
    shown(phone)
    touched = tap_pairs(phone, n_phone, random.Random(2), triplets)
    phone.context.close()
    return {"cold": cold, "keys": measured["keys"], "next": measured["pairs"], "taps": touched["taps"],
            "phone_next": touched["pairs"], "cpu": cpu_per_item}


def report(m: dict, item: str, prefix: str = "") -> None:
    """Print one page's figures (``item``: what is answered, "pair" or "set")."""
    print(f"{prefix}key press -> answer shown: p50 {percentile(m['keys'], 0.5):.1f} ms, "
          f"p95 {percentile(m['keys'], 0.95):.1f} ms (goal: 50 ms)")
    print(f"{prefix}Enter -> next {item} drawn:  p50 {percentile(m['next'], 0.5):.1f} ms, "
          f"p95 {percentile(m['next'], 0.95):.1f} ms (goal: p95 300 ms)")
    print(f"{prefix}phone: tap -> answer shown: p50 {percentile(m['taps'], 0.5):.1f} ms, "
          f"p95 {percentile(m['taps'], 0.95):.1f} ms (goal: 50 ms)")
    print(f"{prefix}phone: Submit -> next {item}: p50 {percentile(m['phone_next'], 0.5):.1f} ms, "
          f"p95 {percentile(m['phone_next'], 0.95):.1f} ms (goal: p95 300 ms)")
    print(f"{prefix}cold load of the page:     p50 {percentile(m['cold'], 0.5):.1f} ms, "
          f"p95 {percentile(m['cold'], 0.95):.1f} ms")
    print(f"{prefix}server CPU per {item}:       {m['cpu']:.3f} s")


def summary(name: str, values: list[float]) -> str:
    return f"{name}_p50_ms={percentile(values, 0.5):.1f} {name}_p95_ms={percentile(values, 0.95):.1f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 pairs, 12 sets and 3 cold loads each (a few minutes)")
    parser.add_argument("--pairs", type=int, help="pairs to rate, and 2AFC sets to judge (default 50; quick 12)")
    parser.add_argument("--cold-loads", type=int, help="cold loads to time (default 5; quick 3)")
    args = parser.parse_args(argv)
    n_pairs = args.pairs or (12 if args.quick else 50)
    n_cold = args.cold_loads or (3 if args.quick else 5)
    n_phone = max(1, n_pairs // 2)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="cpdm-bench-browser-") as tmp, sync_playwright() as p:
        browser = launch_chromium(p)
        ws = init_workspace(Path(tmp) / "ws")
        rater, token = rater_world(ws, n_anchors=(n_pairs + n_phone + 1) // 2 + 2, image_size=512)
        with app_server(ws.root) as server:
            rating = measure(browser, server, f"{server.url}/?token={token}", n_pairs, n_phone, n_cold, False)
        saved = ws.conn.execute("SELECT COUNT(DISTINCT pair) FROM ratings WHERE rater = ?", (rater.id,)).fetchone()[0]
        ws.close()
        # The 2AFC page on a workspace of its own: three generations per anchor, every set of two of them.
        ws = init_workspace(Path(tmp) / "ws-2afc")
        rater, token, _ = triplet_world(ws, n_anchors=(n_pairs + n_phone) // 3 + 2, image_size=512)
        with app_server(ws.root) as server:
            two_afc = measure(browser, server, f"{server.url}/?token={token}", n_pairs, n_phone, n_cold, True)
        judged = ws.conn.execute("SELECT COUNT(DISTINCT triplet) FROM judgments WHERE rater = ?",
                                 (rater.id,)).fetchone()[0]
        ws.close()
        browser.close()
    print(f"pairs rated: {n_pairs} by keyboard, {n_phone} by tapping on a phone (saved: {saved}), "
          f"key presses timed: {len(rating['keys'])}, taps timed: {len(rating['taps'])}, cold loads: {n_cold}")
    report(rating, "pair")
    print(f"2AFC sets judged: {n_pairs} by keyboard, {n_phone} by tapping on a phone (saved: {judged}), "
          f"key presses timed: {len(two_afc['keys'])}, taps timed: {len(two_afc['taps'])}, cold loads: {n_cold}")
    report(two_afc, "set", "2AFC ")
    print(f"RESULT {summary('key', rating['keys'])} {summary('next_pair', rating['next'])} "
          f"{summary('cold_load', rating['cold'])} {summary('phone_tap', rating['taps'])} "
          f"{summary('phone_next_pair', rating['phone_next'])} server_cpu_s_per_pair={rating['cpu']:.3f} "
          f"{summary('afc_key', two_afc['keys'])} {summary('afc_next_set', two_afc['next'])} "
          f"{summary('afc_cold_load', two_afc['cold'])} {summary('afc_phone_tap', two_afc['taps'])} "
          f"{summary('afc_phone_next_set', two_afc['phone_next'])} afc_server_cpu_s_per_set={two_afc['cpu']:.3f} "
          f"pairs={n_pairs} phone_pairs={n_phone} saved={saved} sets={n_pairs} phone_sets={n_phone} "
          f"afc_saved={judged}")


if __name__ == "__main__":
    main()

"""The rating page in a real browser: key press to answer shown, Enter to next pair drawn, cold load, server CPU.

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

Goals: a key or tap shows within 50 ms, the next pair within 300 ms at p95
(desktop and phone alike).

    python benchmarks/bench_browser.py            # 50 pairs (and 25 on the phone), 5 cold loads
    python benchmarks/bench_browser.py --quick    # 12 pairs (and 6 on the phone), 3 cold loads
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
from tests.browser_support import app_server, launch_chromium, rater_world, shown_pair  # noqa: E402

QUESTIONS = 3
KEY_GAP_S = 0.06  # a fast typist

# Installed once per page: records each digit's and each Enter's latency in window.__bench.
PROBE_JS = """() => {
  const panel = () => document.querySelector('[data-testid=stBidiComponentIsolated]')
      ?.shadowRoot?.querySelector('.cpdm-panel');
  const bench = window.__bench = {keys: [], pairs: [], waiting: 0};
  window.addEventListener('keydown', (event) => {
    const start = event.timeStamp;
    const root = panel();
    if (/^[0-9]$/.test(event.key)) {
      const row = root.querySelector('.question.current');
      bench.waiting++;
      const check = () => {
        const chosen = row && row.querySelector(`button.selected[data-value="${event.key}"]`);
        if (chosen) { bench.keys.push(performance.now() - start); bench.waiting--; }
        else requestAnimationFrame(check);
      };
      requestAnimationFrame(check);
    } else if (event.key === 'Enter') {
      const before = root.dataset.pair;
      bench.waiting++;
      const check = () => {
        const now = panel();
        const images = now ? [...now.querySelectorAll('.images img')] : [];
        if (now && now.dataset.pair !== before && now.dataset.state === 'answering' && images.length === 2
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
      const before = root.dataset.pair;
      bench.waiting++;
      const check = () => {
        const now = panel();
        const images = now ? [...now.querySelectorAll('.images img')] : [];
        if (now && now.dataset.pair !== before && now.dataset.state === 'answering' && images.length === 2
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
  return root && root.dataset.state === 'answering' && images.length === 2
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


def rate_pairs(page, n_pairs: int, rng: random.Random) -> dict:
    """Answer ``n_pairs`` pairs by keyboard; return the page's measurements."""
    page.evaluate(PROBE_JS)
    pair = shown_pair(page)
    for _ in range(n_pairs):
        for _ in range(QUESTIONS):
            page.keyboard.press(str(rng.randint(1, 5)))
            time.sleep(KEY_GAP_S)
        page.keyboard.press("Enter")
        page.wait_for_function("() => window.__bench.waiting === 0", timeout=60_000)
        pair = shown_pair(page, not_pair=pair)
    return page.evaluate("() => window.__bench")


def tap_pairs(page, n_pairs: int, rng: random.Random) -> dict:
    """Answer ``n_pairs`` pairs by tapping, as on a phone; return the page's measurements."""
    page.evaluate(TOUCH_PROBE_JS)
    pair = shown_pair(page)
    for _ in range(n_pairs):
        for question in page.locator(".cpdm-panel .question").all():
            question.locator(f'button[data-value="{rng.randint(1, 5)}"]').tap()
            time.sleep(KEY_GAP_S)
        page.locator(".cpdm-panel button.submit").tap()
        page.wait_for_function("() => window.__bench.waiting === 0", timeout=60_000)
        pair = shown_pair(page, not_pair=pair)
    return page.evaluate("() => window.__bench")


def summary(name: str, values: list[float]) -> str:
    return f"{name}_p50_ms={percentile(values, 0.5):.1f} {name}_p95_ms={percentile(values, 0.95):.1f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 pairs and 3 cold loads (under a minute)")
    parser.add_argument("--pairs", type=int, help="pairs to rate (default 50; quick 12)")
    parser.add_argument("--cold-loads", type=int, help="cold loads to time (default 5; quick 3)")
    args = parser.parse_args(argv)
    n_pairs = args.pairs or (12 if args.quick else 50)
    n_cold = args.cold_loads or (3 if args.quick else 5)
    n_phone = max(1, n_pairs // 2)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="cpdm-bench-browser-") as tmp:
        ws = init_workspace(Path(tmp) / "ws")
        rater, token = rater_world(ws, n_anchors=(n_pairs + n_phone + 1) // 2 + 2, image_size=512)
        with app_server(ws.root) as server, sync_playwright() as p:
            browser = launch_chromium(p)
            url = f"{server.url}/?token={token}"
            cold_load(browser, url)  # the first run imports the app's modules: not what a rater's load costs
            cold = [cold_load(browser, url) for _ in range(n_cold)]
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            page.goto(url)
            shown_pair(page)
            cpu_before = cpu_seconds(server.process.pid)
            measured = rate_pairs(page, n_pairs, random.Random(1))
            cpu_per_pair = (cpu_seconds(server.process.pid) - cpu_before) / n_pairs
            phone = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True).new_page()
            phone.goto(url)
            shown_pair(phone)
            touched = tap_pairs(phone, n_phone, random.Random(2))
            browser.close()
        saved = ws.conn.execute("SELECT COUNT(DISTINCT pair) FROM ratings WHERE rater = ?", (rater.id,)).fetchone()[0]
        ws.close()
    keys, pairs = measured["keys"], measured["pairs"]
    taps, tapped_pairs = touched["taps"], touched["pairs"]
    print(f"pairs rated: {n_pairs} by keyboard, {n_phone} by tapping on a phone (saved: {saved}), "
          f"key presses timed: {len(keys)}, taps timed: {len(taps)}, cold loads: {n_cold}")
    print(f"key press -> answer shown: p50 {percentile(keys, 0.5):.1f} ms, p95 {percentile(keys, 0.95):.1f} ms "
          f"(goal: 50 ms)")
    print(f"Enter -> next pair drawn:  p50 {percentile(pairs, 0.5):.1f} ms, p95 {percentile(pairs, 0.95):.1f} ms "
          f"(goal: p95 300 ms)")
    print(f"phone: tap -> answer shown: p50 {percentile(taps, 0.5):.1f} ms, p95 {percentile(taps, 0.95):.1f} ms "
          f"(goal: 50 ms)")
    print(f"phone: Submit -> next pair: p50 {percentile(tapped_pairs, 0.5):.1f} ms, "
          f"p95 {percentile(tapped_pairs, 0.95):.1f} ms (goal: p95 300 ms)")
    print(f"cold load of the page:     p50 {percentile(cold, 0.5):.1f} ms, p95 {percentile(cold, 0.95):.1f} ms")
    print(f"server CPU per pair:       {cpu_per_pair:.3f} s")
    print(f"RESULT {summary('key', keys)} {summary('next_pair', pairs)} {summary('cold_load', cold)} "
          f"{summary('phone_tap', taps)} {summary('phone_next_pair', tapped_pairs)} "
          f"server_cpu_s_per_pair={cpu_per_pair:.3f} pairs={n_pairs} phone_pairs={n_phone} saved={saved}")


if __name__ == "__main__":
    main()

// The rating panel: the images, the protocol's questions and Submit, answered in the browser.
//
// One panel, two modes (data.mode, see MODES): "rating" shows a pair (the
// original beside one AI image, each question on a scale of numbers) and
// "2afc" a triplet (the original and AI images 1 and 2, each question
// answered by a side or "can't tell"). Everything else is shared.
//
// Answers and keys are handled here, synchronously, so what a rater presses is
// what the page shows at once and what is sent: one complete answer set per
// item, with the item's nonce, through setTriggerValue("submit", ...).
// Streamlit calls the default export again whenever the data changes (a new
// pair, or a notice after a refused submit); what the rater chose for a pair
// is kept in `drafts` (this module lives as long as the page) so a notice
// never wipes it. Streamlit runs the cleanup a call returns only when the
// component unmounts, not before the next call, so each call first tears
// down the panel drawn before it: otherwise that panel's key listener, timers
// and "sending" state would live on and act on the item shown now (resend an
// old item on Enter, refuse keys as "Saving…").
//
// The panel is given bytes (cpdm.app.answer_panel.model.panel_message): the length
// of a JSON part, the JSON, then the images' bytes as stored. Each image
// becomes a blob: URL, which exists only inside this page.

const drafts = new Map(); // nonce -> {answers, current, skipOpen, skipText}
const teardowns = new WeakMap(); // the element a panel is drawn in -> that panel's teardown
const RESEND_AFTER_MS = 10000; // no answer from the server by then: let the rater send again
const FLASH_MS = 450;
// The least height an image row gets, however little room the window leaves (then the page scrolls): one row,
// or each of two (a triplet on a phone, where the two rows together still get more than one).
const MIN_IMAGE_PX = [120, 90];
const TOUCH_ONLY = "(hover: none) and (pointer: coarse)"; // the same query panel.css hides the key hints under

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

const HEADER_SIZE_BYTES = 4; // the JSON part's length, big-endian

// The panel's data from its message, each image with a blob: URL of its bytes (url null for a missing one).
function readMessage(message) {
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const headerSize = view.getUint32(0);
  const data = JSON.parse(new TextDecoder().decode(message.subarray(HEADER_SIZE_BYTES, HEADER_SIZE_BYTES + headerSize)));
  let offset = HEADER_SIZE_BYTES + headerSize;
  for (const image of data.images) {
    image.url = null;
    if (image.length === null) continue;
    const bytes = message.subarray(offset, offset + image.length);
    image.url = URL.createObjectURL(new Blob([bytes], { type: image.mime }));
    offset += image.length;
  }
  return data;
}

function draftFor(data) {
  if (!drafts.has(data.nonce)) {
    drafts.set(data.nonce, { answers: {}, current: 0, skipOpen: false, skipText: "" });
  }
  return drafts.get(data.nonce);
}

// The next question without an answer, searching forward from `from` and wrapping; null when all are answered.
function nextUnanswered(questions, answers, from) {
  for (let step = 0; step < questions.length; step++) {
    const index = (from + step) % questions.length;
    if (!(questions[index].id in answers)) return index;
  }
  return null;
}

// What differs between a pair and a triplet: the item's name, its question rows, and what a key answers.
const MODES = {
  rating: {
    target: (data) => ({ pair: data.pair }),
    noun: "pair",
    // One button per value of the question's scale, between its end labels.
    row(question, index, choose) {
      const buttons = question.values.map((value) => valueButton(value, String(value), null, index, choose));
      return [el("span", { class: "low", text: question.low }), el("div", { class: "scale" }, ...buttons),
              el("span", { class: "high", text: question.high })];
    },
    valid: (question, value) => question.values.includes(value),
    // A digit answers the highlighted question with that value.
    keyValue: (key) => (/^[0-9]$/.test(key) ? Number(key) : undefined),
    outOfRange(question, value) {
      const low = question.values[0], high = question.values[question.values.length - 1];
      return `${value} is not on this scale (${low} to ${high}).`;
    },
    hint: "a number answers the highlighted question",
  },
  "2afc": {
    target: (data) => ({ triplet: data.triplet }),
    noun: "set",
    // AI image 1 on the left, "can't tell" between, AI image 2 on the right: where the images stand.
    row(question, index, choose) {
      const buttons = question.choices.map((choice) =>
        valueButton(choice.value, choice.label, CHOICE_KEYS[choice.value], index, choose));
      return [el("div", { class: "choices" }, ...buttons)];
    },
    valid: (question, value) => question.choices.some((choice) => choice.value === value),
    keyValue: (key) => KEY_CHOICES[key],
    outOfRange: () => "Press 1 or ← for AI image 1, 2 or → for AI image 2, 0 if you can't tell.",
    hint: "1 or ← AI image 1 · 2 or → AI image 2 · 0 can't tell",
  },
};
// 2AFC keys: each answer's keys (the first is shown on its button), and the answer of every key.
const CHOICE_KEYS = { left: ["1", "←"], cant_tell: ["0"], right: ["2", "→"] };
const KEY_CHOICES = { 1: "left", ArrowLeft: "left", 2: "right", ArrowRight: "right", 0: "cant_tell" };

// An answer's button: `keys` (2AFC) are shown beside its label, hidden on touch screens like every key hint.
function valueButton(value, label, keys, index, choose) {
  return el("button", { type: "button", class: "value", "data-value": value, tabindex: -1,
                        onmousedown: (event) => event.preventDefault(),
                        onclick: (event) => { event.stopPropagation(); choose(index, value, "click"); } },
            keys ? el("span", { class: "choice-label", text: label }) : label,
            keys ? el("kbd", { text: keys.join(" ") }) : null);
}

function isTyping(event) {
  const target = event.composedPath()[0];
  return target instanceof HTMLElement && (target.tagName === "TEXTAREA" || target.tagName === "INPUT");
}

export default function (component) {
  const { parentElement, setTriggerValue } = component;
  teardowns.get(parentElement)?.();
  const data = readMessage(component.data);
  const root = parentElement.querySelector(".cpdm-panel");
  const host = parentElement instanceof ShadowRoot ? parentElement.host : parentElement;
  const scroller = host.closest('[data-testid="stMain"]');
  const questions = data.questions;
  const mode = MODES[data.mode || "rating"];
  const itemId = data.pair ?? data.triplet;
  const draft = draftFor(data);
  let sending = false;
  let resendTimer = null;
  let flashTimer = null;

  root.replaceChildren();
  root.dataset.mode = data.mode || "rating";
  for (const name of ["pair", "triplet"]) {
    if (data[name] === undefined) delete root.dataset[name];
    else root.dataset[name] = String(data[name]);
  }
  root.dataset.item = String(itemId);
  root.dataset.campaign = String(data.campaign);
  root.dataset.state = "answering";

  // --- the images (two or three), each one click (or its key) from a full-window view ---
  const overlayImage = el("img", { class: "overlay-image", alt: "" });
  const overlayCaption = el("div", { class: "overlay-caption" });
  const overlay = el("div", { class: "overlay", hidden: true, role: "dialog", "aria-label": "Large view",
                              onclick: () => closeOverlay() }, overlayImage, overlayCaption);
  const imageRow = el("div", { class: `images images-${data.images.length}` });
  for (const image of data.images) {
    const img = image.url
      ? el("img", { src: image.url, alt: image.label, "data-image": image.key, draggable: "false" })
      : el("div", { class: "missing", "data-image": image.key,
                    text: `This image cannot be shown. Please skip this ${mode.noun} (Skip: cannot judge).` });
    const figure = el("figure", { class: "image", "data-slot": image.key,
                                   title: `Click or press ${image.shortcut.toUpperCase()} to enlarge`,
                                   onclick: () => openOverlay(image) },
      el("figcaption", {}, el("span", { class: "label", text: image.label }),
         el("kbd", { text: image.shortcut.toUpperCase() })),
      el("div", { class: "frame" }, img));
    imageRow.append(figure);
  }

  function openOverlay(image) {
    if (!image.url) return refuse(`${image.label}: this image cannot be shown.`);
    overlayImage.src = image.url;
    overlayImage.alt = image.label;
    overlay.dataset.image = image.key;
    // On a touch screen there are no keys to name; the browser's own pinch-zoom enlarges further.
    overlayCaption.textContent = window.matchMedia(TOUCH_ONLY).matches
      ? `${image.label} · pinch to zoom · tap to close`
      : `${image.label} · Esc or click to close · ` +
        data.images.map((i) => `${i.shortcut.toUpperCase()}: ${i.label}`).join(" · ");
    overlay.hidden = false;
  }

  function closeOverlay() {
    overlay.hidden = true;
  }

  // --- progress ---
  const progress = data.progress;
  const percent = progress.total ? Math.min(100, (100 * progress.done) / progress.total) : 100;
  const progressBar = el("div", { class: "progress" },
    el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": progress.total,
                "aria-valuenow": progress.done }, el("div", { class: "fill", style: `width:${percent}%` })),
    el("span", { class: "progress-text", text: `${progress.done} of ${progress.total} ${mode.noun}s done` }));

  // --- the questions: text, then the mode's buttons (a scale between its labels, or the choices) ---
  const rows = questions.map((question, index) =>
    el("div", { class: "question", "data-question": question.id, role: "group",
                "aria-label": question.text, onclick: () => highlight(index) },
      el("div", { class: "text" }, el("span", { class: "marker", "aria-hidden": "true", text: "▶" }),
         el("span", { text: `${index + 1}. ${question.text}` })),
      ...mode.row(question, index, choose)));

  // --- submit, status line, skip ---
  const submitButton = el("button", { type: "button", class: "submit", tabindex: -1,
                                      onmousedown: (event) => event.preventDefault(),
                                      onclick: () => trySubmit() });
  const status = el("div", { class: "status", role: "status", "aria-live": "polite" });
  const skipToggle = el("button", { type: "button", class: "skip-toggle", tabindex: -1,
                                    onclick: () => { draft.skipOpen = !draft.skipOpen; renderSkip(); } },
                        "Skip: cannot judge");
  const skipText = el("textarea", { class: "skip-reason", rows: 2, placeholder: `Why can you not judge this ${mode.noun}?`,
                                    "aria-label": `Why can you not judge this ${mode.noun}?`,
                                    oninput: () => { draft.skipText = skipText.value; renderSkip(); } });
  const skipCounter = el("span", { class: "skip-counter" });
  const skipButton = el("button", { type: "button", class: "skip", onclick: () => trySkip() }, `Skip this ${mode.noun}`);
  const skipBox = el("div", { class: "skip-box", hidden: true }, skipText,
                     el("div", { class: "skip-actions" }, skipCounter, skipButton));
  const footer = el("div", { class: "footer" }, submitButton, status, skipToggle);

  root.append(progressBar, imageRow, el("div", { class: "questions" }, ...rows), footer, skipBox, overlay);
  skipText.value = draft.skipText;

  function render() {
    questions.forEach((question, index) => {
      const row = rows[index];
      const chosen = draft.answers[question.id];
      row.classList.toggle("current", index === draft.current);
      row.classList.toggle("answered", chosen !== undefined);
      for (const button of row.querySelectorAll("button.value")) {
        const selected = chosen !== undefined && button.dataset.value === String(chosen);
        button.classList.toggle("selected", selected);
        button.setAttribute("aria-pressed", selected ? "true" : "false");
      }
    });
    const missing = questions.filter((q) => !(q.id in draft.answers)).length;
    submitButton.textContent = sending ? "Saving…" : missing ? `Submit (answer ${missing} more)` : "Submit ⏎";
    submitButton.classList.toggle("ready", !missing && !sending);
    submitButton.setAttribute("aria-disabled", missing || sending ? "true" : "false");
    root.dataset.state = sending ? "sending" : "answering";
  }

  function renderSkip() {
    skipBox.hidden = !draft.skipOpen;
    skipToggle.setAttribute("aria-expanded", draft.skipOpen ? "true" : "false");
    const length = draft.skipText.length;
    const over = length - data.max_skip_reason;
    skipCounter.textContent = over > 0
      ? `${length} / ${data.max_skip_reason} characters: ${over} too many, shorten it to skip`
      : `${length} / ${data.max_skip_reason}`;
    skipCounter.classList.toggle("over", over > 0);
    fit();
  }

  // With nothing to report, the status line says how to work the panel from the keyboard.
  function say(text, kind) {
    status.textContent = text || `Keys: ${mode.hint} · Enter submits · ` +
      "↑↓ or a click picks a question · " + data.images.map((i) => i.shortcut.toUpperCase()).join("/") + " enlarges";
    status.dataset.kind = text ? kind : "hint";
  }

  // A key or click that cannot be applied: shake the row it was meant for and say why.
  function refuse(text, row = null) {
    say(text, "refused");
    const target = row || root.querySelector(".questions");
    target.classList.remove("refused");
    void target.offsetWidth; // restart the animation when refusals come quickly
    target.classList.add("refused");
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => target.classList.remove("refused"), FLASH_MS);
  }

  function highlight(index) {
    if (sending) return refuse(`Saving… the next ${mode.noun} comes in a moment.`);
    draft.current = index;
    say("", "");
    render();
  }

  function choose(index, value, how) {
    const question = questions[index];
    if (sending) return refuse(`Saving… the next ${mode.noun} comes in a moment.`);
    if (!mode.valid(question, value)) return refuse(mode.outOfRange(question, value), rows[index]);
    draft.answers[question.id] = value;
    draft.current = nextUnanswered(questions, draft.answers, index + 1);
    const allAnswered = window.matchMedia(TOUCH_ONLY).matches
      ? "All answered: tap Submit." : "All answered: press Enter or Submit.";
    say(draft.current === null ? allAnswered : "", how === "key" ? "typed" : "");
    render();
  }

  function send(payload) {
    sending = true;
    render();
    setTriggerValue("submit", { campaign: data.campaign, ...mode.target(data), nonce: data.nonce, ...payload });
    clearTimeout(resendTimer);
    resendTimer = setTimeout(() => {
      sending = false;
      render();
      say("Not confirmed by the server yet: press Submit or Enter to send again.", "error");
    }, RESEND_AFTER_MS);
  }

  function trySubmit() {
    if (sending) return refuse(`Saving… the next ${mode.noun} comes in a moment.`);
    const missing = nextUnanswered(questions, draft.answers, draft.current ?? 0);
    if (missing !== null) {
      draft.current = missing;
      render();
      return refuse(`Answer question ${missing + 1} first.`, rows[missing]);
    }
    send({ answers: { ...draft.answers } });
  }

  function trySkip() {
    if (sending) return refuse(`Saving… the next ${mode.noun} comes in a moment.`);
    const reason = draft.skipText.trim();
    if (!reason) return refuse(`Say why you cannot judge this ${mode.noun}, then press Skip.`, skipBox);
    if (draft.skipText.length > data.max_skip_reason) {
      return refuse(`The reason is ${draft.skipText.length} characters; shorten it to ${data.max_skip_reason}.`, skipBox);
    }
    send({ skip_reason: draft.skipText });
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event)) return;
    const key = event.key;
    if (key === "Escape" && !overlay.hidden) {
      event.preventDefault();
      return closeOverlay();
    }
    const image = data.images.find((i) => i.shortcut === key.toLowerCase());
    if (image) {
      event.preventDefault();
      return openOverlay(image);
    }
    const value = mode.keyValue(key);
    if (value !== undefined || /^[0-9]$/.test(key)) {
      event.preventDefault();
      if (event.repeat) return; // a held key is one answer, never several
      if (!overlay.hidden) return refuse("Close the large view (Esc) to answer.");
      if (draft.current === null) {
        return refuse("Every question is answered: press Enter to submit, or click a question to change it.");
      }
      if (value === undefined) return refuse(mode.outOfRange(questions[draft.current], key), rows[draft.current]);
      return choose(draft.current, value, "key");
    }
    if (key === "Enter") {
      event.preventDefault();
      if (event.repeat) return;
      if (!overlay.hidden) closeOverlay();
      return trySubmit();
    }
    if ((key === "ArrowDown" || key === "ArrowUp") && overlay.hidden) {
      event.preventDefault();
      const count = questions.length, step = key === "ArrowDown" ? 1 : -1;
      const from = draft.current ?? (step > 0 ? -1 : count); // from nothing: down picks the first, up the last
      return highlight((from + step + count) % count);
    }
  }

  // The images take the height the rest of the panel leaves in the window, so nothing needs scrolling.
  // On a phone a triplet's images stand in two rows (the original above the two AI images): each row
  // gets its share.
  function fit() {
    const top = root.getBoundingClientRect().top + (scroller ? scroller.scrollTop : window.scrollY);
    const frames = [...imageRow.querySelectorAll(".frame")];
    const imageRows = new Set(frames.map((frame) => frame.offsetTop)).size;
    const rest = root.offsetHeight - imageRows * frames[0].offsetHeight;
    const room = Math.max(MIN_IMAGE_PX[Math.min(imageRows, 2) - 1],
                          Math.floor((window.innerHeight - top - rest - 12) / imageRows));
    const value = `${room}px`;
    if (root.style.getPropertyValue("--image-height") !== value) root.style.setProperty("--image-height", value);
  }

  say(data.notice ? data.notice.text : "", data.notice ? data.notice.kind : "");
  render();
  renderSkip();
  fit();
  const refit = () => requestAnimationFrame(fit);
  // Streamlit scrolls its main section, not the window; anything above the panel changing size moves it.
  const layoutObserver = new ResizeObserver(refit);
  layoutObserver.observe(root);
  if (scroller) layoutObserver.observe(scroller.firstElementChild || scroller);
  window.addEventListener("resize", refit);
  document.addEventListener("keydown", onKey);
  for (const oldNonce of drafts.keys()) if (oldNonce !== data.nonce) drafts.delete(oldNonce);

  function teardown() {
    for (const image of data.images) if (image.url) URL.revokeObjectURL(image.url);
    document.removeEventListener("keydown", onKey);
    window.removeEventListener("resize", refit);
    layoutObserver.disconnect();
    clearTimeout(resendTimer);
    clearTimeout(flashTimer);
    if (teardowns.get(parentElement) === teardown) teardowns.delete(parentElement);
  }
  teardowns.set(parentElement, teardown);
  return teardown;
}

"""Researcher page: queue unlearning, generation and scoring jobs, and watch workers run them.

The page never runs a job: it writes to the queue, and ``cpdm worker``
processes (one per GPU) claim and run the jobs. The list of jobs refreshes
itself every few seconds in a fragment, so the forms keep what was typed;
each refresh and each Cancel or Retry passes the auth gate first, so a revoked
researcher's open page stops at its next refresh (``cpdm.app.ui.gated_fragment``).
"""

import streamlit as st

from cpdm.curation.anchors import list_anchors
from cpdm.curation.prompts import prompt_rows
from cpdm.errors import CpdmError
from cpdm.diffusion.settings import BASELINE_VARIANT
from cpdm.jobs import forms, queue
from cpdm.rating.campaigns import list_campaigns
from cpdm.store.rows import list_variants
from cpdm.app.ui import gated_callback, gated_fragment, plain, require_researcher
from cpdm.unlearning import REGISTRY as UNLEARNING_METHODS

ws, rater = require_researcher()

REFRESH_SECONDS = 2
LOG_TAIL_LINES = 40
NEWEST_CHOICES = (20, 50, 200)
DEVICE_HELP = "auto: a CUDA worker, or any CPU worker with the offline tiny models"


def field_input(field: forms.Field, key: str):
    """One widget for a form field; returns its value."""
    common = {"label": field.label, "help": field.help or None, "key": key}
    if field.widget == "checkbox":
        return st.checkbox(value=field.value, **common)
    if field.widget == "select":
        return st.selectbox(options=field.options, index=field.options.index(field.value),
                            format_func=lambda value: "default" if value is None else str(value), **common)
    if field.widget in ("int", "float"):
        cast = int if field.widget == "int" else float
        bounds = {name: cast(limit) for name, limit in (("min_value", field.minimum), ("max_value", field.maximum))
                  if limit is not None}
        number_format = "%d" if field.widget == "int" else "%g"
        return st.number_input(value=field.value, step=cast(1), format=number_format, **bounds, **common)
    return st.text_input(value=field.value, **common)


def field_inputs(fields: list[forms.Field], prefix: str, columns: int = 3) -> dict:
    """Widgets for fields, laid out in columns; returns their values by name."""
    values = {}
    slots = st.columns(columns)
    for index, field in enumerate(fields):
        with slots[index % columns]:
            values[field.name] = field_input(field, f"{prefix}_{field.name}")
    return values


def queue_request(request) -> None:
    """Run an enqueue request; say which jobs were queued, or why nothing was."""
    try:
        ids = request()
    except CpdmError as exc:
        st.error(plain(exc), icon=":material/error:")
        return
    ids = ids if isinstance(ids, list) else [ids]
    several = len(ids) > 1
    st.success(f"Queued job{'s' if several else ''} {', '.join(f'#{job_id}' for job_id in ids)}: "
               f"{'they show' if several else 'it shows'} in the list below.", icon=":material/check:")


def artists() -> list[str]:
    return sorted({anchor["artist"] for anchor in list_anchors(ws) if anchor["artist"]})


def generate_form() -> None:
    names = [variant.name for variant in list_variants(ws) if variant.status == "ready"]
    variants = [BASELINE_VARIANT] + [name for name in names if name != BASELINE_VARIANT]
    prompts = {row.id: row.text for row in prompt_rows(ws)}
    with st.form("generate_form"):
        variant = st.selectbox("Variant", variants, key="gen_variant",
                               help="the model to generate with ('original' is created when missing)")
        which = st.radio("Prompts", list(forms.PROMPT_CHOICES), format_func=forms.PROMPT_CHOICES.get,
                         horizontal=True, key="gen_prompts")
        chosen = st.multiselect("Chosen prompts", list(prompts), key="gen_chosen",
                                format_func=lambda prompt_id: f"{prompt_id}: {prompts[prompt_id][:90]}")
        values = field_inputs(forms.form_fields("generate", ("per_prompt", "steps", "guidance", "seed")), "gen",
                              columns=4)
        with st.expander("More settings"):
            values |= field_inputs(forms.form_fields(
                "generate", ("scheduler", "negative", "height", "width", "batch_size", "dtype", "base_model")), "gen")
        left, middle, right = st.columns(3)
        with left:
            values |= field_inputs(forms.form_fields("generate", ("offline_tiny",)), "gen", columns=1)
        score_after = middle.checkbox("Score the new pairs when done", value=True, key="gen_score_after",
                                      help="queue a score job for the variant's pairs that runs after this one")
        device = right.selectbox("Device", forms.DEVICE_CHOICES, key="gen_device", help=DEVICE_HELP)
        submitted = st.form_submit_button("Queue generation", type="primary", key="gen_submit")
    if submitted:
        queue_request(lambda: forms.enqueue_generation(
            ws, {**values, "variant": variant, "prompt_ids": forms.prompt_selection(ws, which, chosen)},
            score_after=score_after, device=forms.job_device(device, values["offline_tiny"])))


def score_form() -> None:
    scope = st.radio("Score", list(forms.SCORE_SCOPES), format_func=forms.SCORE_SCOPES.get, horizontal=True,
                     key="score_scope")
    with st.form("score_form"):
        target = None
        if scope == "variant":
            target = st.selectbox("Variant", [variant.name for variant in list_variants(ws)], key="score_variant")
        elif scope == "campaign":
            target = st.selectbox("Campaign", [campaign["name"] for campaign in list_campaigns(ws)],
                                  key="score_campaign")
        values = field_inputs(forms.form_fields("score", skip=("variant", "campaign", "pair_ids")), "score")
        device = st.selectbox("Device", forms.DEVICE_CHOICES, key="score_device", help=DEVICE_HELP)
        submitted = st.form_submit_button("Queue scoring", type="primary", key="score_submit")
    if submitted:
        queue_request(lambda: forms.enqueue_scoring(ws, scope, target, values,
                                                    forms.job_device(device, values["offline_tiny"])))


def method_choice(key: str) -> str:
    summaries = {method.name: method.summary for method in UNLEARNING_METHODS}
    return st.selectbox("Method", list(summaries), key=key, format_func=lambda name: f"{name}: {summaries[name]}")


def hyperparameter_inputs(method: str, prefix: str) -> dict:
    """The method's hyperparameters in an expander; returns only those changed from the method's defaults."""
    fields = forms.hyperparameter_fields(method)
    with st.expander(f"Hyperparameters of {method} (the method's defaults)"):
        values = field_inputs(fields, f"{prefix}_{method}")
    return forms.changed_values(fields, values)


def unlearn_form() -> None:
    method = method_choice("unlearn_method")
    with st.form("unlearn_form"):
        left, right = st.columns(2)
        concepts = left.multiselect("Concepts to erase", artists(), key="unlearn_concepts", accept_new_options=True,
                                    help="an artist's name as the anchors give it, or any concept (type it)")
        preserve = right.multiselect("Concepts to preserve", artists(), key="unlearn_preserve",
                                     accept_new_options=True, help="concepts the model should keep as they are")
        variant_name = left.text_input("Variant name", key="unlearn_variant_name", placeholder="METHOD-CONCEPT",
                                       help="name of the new variant (empty: METHOD-CONCEPT)")
        values = field_inputs(forms.form_fields(
            "unlearn", ("base", "images_dir", "seed", "precision", "checkpoint_every", "offline_tiny")), "unlearn")
        hyperparameters = hyperparameter_inputs(method, "unlearn_hp")
        device = st.selectbox("Device", forms.DEVICE_CHOICES, key="unlearn_device", help=DEVICE_HELP)
        submitted = st.form_submit_button("Queue unlearning", type="primary", key="unlearn_submit")
    if submitted:
        params = {**values, "concepts": concepts, "preserve": preserve, "variant_name": variant_name}
        queue_request(lambda: forms.enqueue_unlearning(ws, method, params, hyperparameters,
                                                       forms.job_device(device, values["offline_tiny"])))


def chain_form() -> None:
    st.caption("Unlearn the concept, generate from its prompts and the retain prompts, score the new pairs, and "
               "write the unlearning report against the baseline: four jobs, each after the one before.")
    method = method_choice("chain_method")
    with st.form("chain_form"):
        left, right = st.columns(2)
        concept = left.selectbox("Concept to erase", artists(), key="chain_concept", accept_new_options=True,
                                 index=None, placeholder="an artist of the anchors")
        preserve = right.multiselect("Concepts to preserve", artists(), key="chain_preserve", accept_new_options=True)
        values = field_inputs(forms.chain_fields(), "chain")
        hyperparameters = hyperparameter_inputs(method, "chain_hp")
        device = st.selectbox("Device", forms.DEVICE_CHOICES, key="chain_device", help=DEVICE_HELP)
        submitted = st.form_submit_button("Queue the chain", type="primary", key="chain_submit")
    if submitted:
        queue_request(lambda: forms.enqueue_chain(
            ws, concept or "", method, preserve=preserve, hyperparameters=hyperparameters,
            device=forms.job_device(device, values["offline_tiny"]), **values))


def act_on_job(action, job_id: int) -> None:
    """Cancel or retry a job (a button's callback); a refusal is shown above the list."""
    try:
        action(ws, job_id)
    except CpdmError as exc:
        st.session_state["jobs_refusal"] = str(exc)


def job_card(job: queue.Job) -> None:
    with st.container(border=True, key=f"job_{job.id}"):
        head, buttons = st.columns([6, 1], vertical_alignment="center")
        label, colour, icon = forms.status_badge(job)
        head.markdown(f"**#{job.id} {plain(job.label)}** :{colour}-badge[{icon} {label}]")
        if forms.can_cancel(job):
            buttons.button("Cancel", key=f"cancel_{job.id}", icon=":material/stop_circle:",
                           on_click=gated_callback(act_on_job), args=(queue.cancel, job.id))
        elif forms.can_retry(job):
            buttons.button("Retry", key=f"retry_{job.id}", icon=":material/replay:",
                           on_click=gated_callback(act_on_job), args=(queue.retry, job.id))
        st.progress(job.progress, text=plain(forms.progress_text(job)))
        st.caption(plain(" · ".join(forms.job_facts(job))))
        if job.status == "failed":
            st.error(plain(forms.error_summary(job)), icon=":material/error:")
            with st.expander("Error and traceback"):
                st.code(job.error, language=None)
        if job.result:
            with st.expander("Result"):
                st.json(job.result)
        with st.expander("Log"):
            st.code(queue.read_log(ws, job.id, tail_lines=LOG_TAIL_LINES) or "nothing logged yet", language=None)


@gated_fragment(run_every=REFRESH_SECONDS)
def worker_notice() -> None:
    """Whether jobs wait with no worker to run them, and how to start one; rerun on its own."""
    stalled = forms.stalled_queue(ws)
    if stalled is not None:
        count = len(stalled.waiting)
        st.warning(f"{count} job{'s wait' if count > 1 else ' waits'} to run, but no worker has been seen in the "
                   "last minute. Start one in a terminal (one per GPU):", icon=":material/warning:")
        st.code("\n".join(stalled.commands), language="bash")


@gated_fragment(run_every=REFRESH_SECONDS)
def watch() -> None:
    """The queue as it stands, rerun every few seconds on its own."""
    refusal = st.session_state.pop("jobs_refusal", None)
    if refusal:
        st.error(plain(refusal), icon=":material/block:")
    left, right = st.columns([3, 1])
    statuses = left.multiselect("Status", queue.JOB_STATUSES, key="jobs_status", placeholder="every status")
    newest = right.selectbox("Newest", NEWEST_CHOICES, key="jobs_newest")
    jobs = queue.list_jobs(ws, status=statuses or None, limit=newest)
    if not jobs:
        st.info("No jobs" + (" with this status." if statuses else " yet: queue one above."))
    for job in jobs:
        job_card(job)


st.title("Jobs")
st.caption("Queue long work here; `cpdm worker` processes (one per GPU) run it. This page only writes to the queue.")
worker_notice()
st.header("Queue a job")
generate_tab, score_tab, unlearn_tab, chain_tab = st.tabs(["Generate", "Score", "Unlearn", "Unlearning chain"])
with generate_tab:
    generate_form()
with score_tab:
    score_form()
with unlearn_tab:
    unlearn_form()
with chain_tab:
    chain_form()
st.header("Jobs, newest first")
watch()

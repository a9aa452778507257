"""Job commands: ``cpdm worker`` runs queued jobs; ``cpdm jobs ...`` adds, watches, cancels and retries them.

Nothing here imports torch: listing or cancelling jobs stays quick, and only
the worker, when it runs a job, loads what that job needs.
"""

from __future__ import annotations

import json

import click

from cpdm.cli.options import cpdm_command, open_ws, workspace_option
from cpdm.errors import CpdmError
from cpdm.jobs import queue
from cpdm.jobs.queue import JOB_STATUSES, Job
from cpdm.store.time import parse_time, utc_now

EXECUTORS = ("local", "ray")


def _make_executor(name: str, address: str | None, ray_gpus: float = 1.0):
    """The executor a worker hands to its jobs: None runs batches in the worker's process."""
    if name == "local":
        if address or ray_gpus != 1.0:
            raise click.UsageError("--address and --ray-gpus are for --executor ray")
        return None
    try:
        from cpdm.jobs.ray_executor import RayExecutor
    except ImportError as exc:
        raise CpdmError(f"the Ray executor is not available ({exc}); install cpdm[ray] "
                        "(pip install 'cpdm[ray]')") from exc
    return RayExecutor(address=address, num_gpus=ray_gpus)


def _split_kinds(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [kind.strip() for kind in text.split(",") if kind.strip()]


@click.command("worker")
@workspace_option
@click.option("--device", default="cpu", show_default=True,
              help="Where this worker runs jobs: cpu, cuda, cuda:0, ... It takes jobs that ask for no device, "
                   "for this device, or for its type (a cuda:0 worker takes 'cuda' jobs).")
@click.option("--kinds", help="Only claim these job kinds, comma-separated (e.g. generate,score). Default: all.")
@click.option("--once", is_flag=True, help="Run at most one job, then exit.")
@click.option("--until-idle", is_flag=True, help="Exit once no job is left to claim (instead of waiting for more).")
@click.option("--name", help="The worker's name in the queue (default: host:pid). Must differ from other workers'.")
@click.option("--lease", "lease_seconds", type=click.FloatRange(min=0.1), default=queue.LEASE_SECONDS,
              show_default=True,
              help="Seconds a claimed job stays this worker's without a heartbeat; after that, another worker "
                   "takes it over.")
@click.option("--idle", "idle_seconds", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Seconds to wait before looking again when no job is queued.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="Where generation and scoring batches and unlearning runs go: this process, or a Ray cluster.")
@click.option("--address", help="The Ray cluster's address (with --executor ray), e.g. ray://head:10001.")
@click.option("--ray-gpus", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="GPUs each Ray task asks for (with --executor ray); 0 on a cluster of CPU machines.")
@cpdm_command
def worker_cmd(workspace, device, kinds, once, until_idle, name, lease_seconds, idle_seconds, executor, address,
           ray_gpus):
    """Run queued jobs (unlearning, generation, scoring, ...) from the workspace's queue.

    Start one worker per GPU; they share the workspace and never run a job
    twice. A job whose worker dies is taken over by another once its lease
    expires. SIGTERM or Ctrl-C lets the current step finish, puts the job
    back in the queue and exits; a second one stops at once.

    \b
    Examples:
      cpdm worker --device cuda:0
      cpdm worker --device cuda:1 --kinds generate,score
      cpdm worker --once                      run one job, then exit
      cpdm worker --executor ray --address ray://head:10001 --device cuda

    With --executor ray the worker is the cluster's driver: it claims jobs
    (--device cuda takes the GPU jobs), sends their generation and scoring
    batches and their unlearning runs to the cluster, and alone writes to
    the workspace: it registers each variant, stores its checkpoints as they
    come, and resumes a run whose node died from the last one.
    """
    from cpdm.jobs.worker import Worker

    with open_ws(workspace) as ws:
        root = ws.root
    runner = Worker(root, name=name, device=device, kinds=_split_kinds(kinds),
                    executor=_make_executor(executor, address, ray_gpus), lease_seconds=lease_seconds)
    with runner, runner.handle_signals():
        click.echo(f"worker {runner.name} on {device}: waiting for jobs", err=True)
        if once:
            job = runner.run_once()
            count = 0 if job is None else 1
            if job is not None:
                click.echo(f"job {job.id} ({job.kind}): {job.status}", err=True)
        else:
            count = runner.run_forever(idle_seconds, stop_when_idle=until_idle)
        click.echo(f"worker {runner.name}: ran {count} job{'s' if count != 1 else ''}", err=True)


@click.group("jobs")
def jobs_cmd():
    """The job queue: add, watch, cancel and retry jobs that `cpdm worker` runs.

    \b
    Examples:
      cpdm jobs add noop --param steps=5
      cpdm jobs list --status running
      cpdm jobs log 12 --follow
    """


def _age(moment_text: str | None) -> str:
    """How long ago a stored moment was, in one short unit (5s, 3m, 2h, 4d)."""
    if not moment_text:
        return ""
    seconds = max(0, int((utc_now() - parse_time(moment_text)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _device_shown(job: Job) -> str:
    """The device a job ran on, or what it asks for while queued."""
    return job.ran_on or job.device or "any"


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [header, *rows]]


@jobs_cmd.command("list")
@workspace_option
@click.option("--status", type=click.Choice(JOB_STATUSES), multiple=True,
              help="Only jobs in this status (repeat for several).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the newest N jobs.")
@cpdm_command
def list_cmd(workspace, status, limit):
    """List jobs, newest first: kind, title, status, progress, worker, device, attempts and age.

    \b
    Examples:
      cpdm jobs list
      cpdm jobs list --status queued --status running
    """
    found = queue.list_jobs(open_ws(workspace), status=list(status) or None, limit=limit)
    if not found:
        click.echo("no jobs" + (f" with status {', '.join(status)}" if status else ""))
        return
    rows = [[job.id, job.kind, job.title or "", job.status, f"{job.progress * 100:.0f}%", job.worker or "",
             _device_shown(job), f"{job.attempts}/{job.max_attempts}", _age(job.created_at)] for job in found]
    for line in _table(rows, ["id", "kind", "title", "status", "progress", "worker", "device", "attempts", "age"]):
        click.echo(line)


def _job_lines(job: Job) -> list[str]:
    """Every field of a job, one per line, for `cpdm jobs show`."""
    eta = "" if job.eta_seconds is None else f"{job.eta_seconds:.0f} s"
    fields = [
        ("kind", job.kind), ("title", job.title), ("status", job.status),
        ("cancel requested", "yes" if job.cancel_requested else None),
        ("progress", f"{job.progress * 100:.0f}%"), ("message", job.message), ("eta", eta or None),
        ("params", json.dumps(job.params, sort_keys=True)),
        ("parents", ", ".join(str(parent) for parent in job.parents) or None),
        ("device", job.device or "any"), ("ran on", job.ran_on), ("worker", job.worker),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("created", job.created_at), ("started", job.started_at), ("finished", job.finished_at),
        ("heartbeat", job.heartbeat_at), ("lease until", job.lease_expires_at),
        ("result", None if job.result is None else json.dumps(job.result, sort_keys=True)),
    ]
    width = max(len(name) for name, _ in fields) + 2
    lines = [f"job {job.id}"] + [f"  {name:<{width}}{value}" for name, value in fields if value not in (None, "")]
    if job.error:
        lines += ["  error:"] + [f"    {line}" for line in job.error.rstrip().splitlines()]
    return lines


@jobs_cmd.command("show")
@workspace_option
@click.argument("job_id", type=int)
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@cpdm_command
def show_cmd(workspace, job_id, output_format):
    """Show everything about one job: params, parents, progress, worker, result, and the error with its traceback.

    \b
    Examples:
      cpdm jobs show 12
      cpdm jobs show 12 --format json
    """
    job = queue.get_job(open_ws(workspace), job_id)
    if output_format == "json":
        click.echo(json.dumps(vars(job), sort_keys=True))
        return
    for line in _job_lines(job):
        click.echo(line)


@jobs_cmd.command("cancel")
@workspace_option
@click.argument("job_id", type=int)
@cpdm_command
def cancel_cmd(workspace, job_id):
    """Cancel a job: a queued one at once, a running one at its next step (what it stored stays).

    Jobs waiting for it fail, naming it.

    \b
    Example:
      cpdm jobs cancel 12
    """
    job = queue.cancel(open_ws(workspace), job_id)
    if job.status == "cancelled":
        click.echo(f"job {job.id} cancelled")
    else:
        click.echo(f"job {job.id}: cancel requested; worker {job.worker} stops it at its next step")


@jobs_cmd.command("retry")
@workspace_option
@click.argument("job_id", type=int)
@cpdm_command
def retry_cmd(workspace, job_id):
    """Queue a failed or cancelled job again (and the jobs that failed because it did).

    Refused once the job has used all its attempts.

    \b
    Example:
      cpdm jobs retry 12
    """
    job = queue.retry(open_ws(workspace), job_id)
    click.echo(f"job {job.id} queued again (attempts so far: {job.attempts} of {job.max_attempts})")


@jobs_cmd.command("log")
@workspace_option
@click.argument("job_id", type=int)
@click.option("--tail", "tail_lines", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job has finished.")
@cpdm_command
def log_cmd(workspace, job_id, tail_lines, follow):
    """Print a job's log: what the worker and the job wrote (prints, log records, tracebacks).

    \b
    Examples:
      cpdm jobs log 12 --tail 20
      cpdm jobs log 12 --follow
    """
    ws = open_ws(workspace)
    chunks = queue.follow_log(ws, job_id, tail_lines=tail_lines) if follow else [queue.read_log(ws, job_id, tail_lines)]
    for chunk in chunks:
        click.echo(chunk, nl=False)


def _parse_param(text: str) -> tuple[str, object]:
    """``key=value``: the value read as JSON when it is JSON (numbers, true, lists), else as text."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise click.BadParameter(f"{text!r} is not key=value", param_hint="--param")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


@jobs_cmd.command("add")
@workspace_option
@click.argument("kind")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the job (repeat); values are read as JSON when they are JSON (5, 0.1, true, "
                   "[1, 2]), else as text.")
@click.option("--after", type=int, multiple=True, help="Wait for this job to be done first (repeat for several).")
@click.option("--device", help="What the job needs: cpu, cuda, cuda:0 ... (default: the kind's; cuda for GPU kinds).")
@click.option("--title", help="A short label shown in job lists.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=queue.DEFAULT_MAX_ATTEMPTS, show_default=True,
              help="How many times a worker may claim the job (retries and lost workers included).")
@cpdm_command
def add_cmd(workspace, kind, params, after, device, title, max_attempts):
    """Add a job of any kind to the queue; a worker picks it up.

    The parameters are checked now: a bad one is refused and nothing is
    queued. `cpdm jobs kinds` lists the kinds.

    \b
    Examples:
      cpdm jobs add noop --param steps=5 --param seconds=2
      cpdm jobs add score --after 12 --title "score after ESD"
    """
    parsed = dict(_parse_param(text) for text in params)
    ws = open_ws(workspace)
    job_id = queue.enqueue(ws, kind, parsed, title=title, after=after, device=device, max_attempts=max_attempts)
    job = queue.get_job(ws, job_id)
    waits = f", after job{'s' if len(job.parents) > 1 else ''} {', '.join(map(str, job.parents))}" if job.parents else ""
    click.echo(f"job {job_id} queued ({kind} on {job.device or 'any device'}{waits})")


@jobs_cmd.command("kinds")
@workspace_option
@cpdm_command
def kinds_cmd(workspace):
    """List the job kinds a worker can run, with what each does and whether it wants a GPU.

    \b
    Example:
      cpdm jobs kinds
    """
    from cpdm.jobs.registry import all_kinds

    for kind in all_kinds():
        click.echo(f"{kind.name:<12}{'gpu  ' if kind.wants_gpu else '     '}{kind.summary}")

# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (worker_cmd, jobs_cmd)

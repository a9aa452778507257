"""Long work as jobs: a queue in the workspace database, workers that claim and run jobs, and their progress.

* :mod:`cpdm.progress` (outside this wing, on the lowest floor): what a running job sees (progress, log, cancel).
* :mod:`cpdm.jobs.queue`: enqueue, claim with a lease, heartbeat, finish,
  cancel, retry, dependencies.
* :mod:`cpdm.jobs.registry`: what a job kind is, and the one registry of them;
  :mod:`cpdm.jobs.parameters`: a kind's parameters and how values are checked.
* :mod:`cpdm.jobs.kinds`: the job kinds, one module each (generate, unlearn,
  score, interrogate, refine, analyze, report, noop), each calling the
  library function its CLI command calls.
* :mod:`cpdm.jobs.chain`: chains of jobs (``cpdm pipeline``).
* :mod:`cpdm.jobs.worker`: ``cpdm worker``'s loop.
* :mod:`cpdm.jobs.forms`: the Jobs page's forms and how it describes jobs.
"""

"""The library's job kinds: each runs the function its CLI command runs, reporting through the job's context."""

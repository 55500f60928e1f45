"""Entry points for ``ray job submit``: the same commands as the CLI, run as a Ray job's driver."""

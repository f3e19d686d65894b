"""The training loop and what it owns: checkpoints, distributed runs, pre-flight checks, restoring a run."""

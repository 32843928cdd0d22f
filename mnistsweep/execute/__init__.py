"""How cells reach a machine: the plan, local and SLURM submission, what one job runs."""

#!/bin/bash

# Parameters
#SBATCH --array=0-1%2
#SBATCH --comment='mnistsweep sweep golden'
#SBATCH --cpus-per-task=1
#SBATCH --error=SWEEP/submitit/%A/%A_%a_0_log.err
#SBATCH --gpus-per-node=2
#SBATCH --job-name=mnistsweep-golden
#SBATCH --mem=2048MB
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=SWEEP/submitit/%A/%A_%a_0_log.out
#SBATCH --partition=debug
#SBATCH --signal=USR2@120
#SBATCH --time=10
#SBATCH --wckey=submitit

# setup
if ! eval 'module load cuda'; then printf '%s\n' 'mnistsweep: setup line failed: module load cuda' >&2; exit 1; fi
export PYTHONPATH=SWEEP/code/YYYYmmdd-HHMMSS-ffffff${PYTHONPATH:+:$PYTHONPATH}
export PYTHONSAFEPATH=1
cd SWEEP/code/YYYYmmdd-HHMMSS-ffffff || { printf '%s\n' 'mnistsweep: the code snapshot SWEEP/code/YYYYmmdd-HHMMSS-ffffff is gone' >&2; exit 1; }

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output SWEEP/submitit/%A/%A_%a_%t_log.out --error SWEEP/submitit/%A/%A_%a_%t_log.err PYTHON -u -m submitit.core._submit SWEEP/submitit/%A

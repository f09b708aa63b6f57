#!/bin/bash
# SLURM: 2 nodes x 4 GPUs, one task per GPU; Lightning reads SLURM_* itself (no torchrun needed).
# Requeue-safe: --ckpt_path last resumes from runs/pretrain_base/checkpoints/last.ckpt after preemption.
#SBATCH --job-name=hicmae-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=12
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --signal=SIGUSR1@120
set -euo pipefail
export OMP_NUM_THREADS=1 WANDB_MODE=${WANDB_MODE:-offline}
# Global batch = 40 x 8 GPUs = 320 -> peak lr 3e-4 x 320 / 256, computed automatically.
srun python pretrain.py fit --config configs/pretrain/base.yaml \
    --trainer.num_nodes 2 --trainer.devices 4 --data.num_workers 10 \
    --data.train_manifest /data/voxceleb2/train.csv --ckpt_path last

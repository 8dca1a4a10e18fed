#!/bin/bash
# Multi-node istpan training under SLURM: one torchrun agent per node, c10d rendezvous on the first node.
# torchrun starts one process per GPU on its node; DDP, samplers and checkpoints are istpan's usual ones
# (docs/scale.md). Submit with:
#
#   sbatch --nodes 4 scripts/slurm_train.sh configs/kinetics.yaml data.format=webdataset \
#       data.train_annotations=/shards/k400/train.json data.val_annotations=/shards/k400/val.json
#
# A node that dies makes the whole job fail (--max-restarts 0: a restarted node could not rejoin mid-epoch);
# resubmit the same command and training resumes from <train.out_dir>/last.pt, written at the end of every epoch
# (so a job killed mid-epoch repeats that epoch's done steps). `#SBATCH --requeue` lets SLURM resubmit it for you.
#
#SBATCH --job-name=istpan
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun agent per node; it spawns the per-GPU processes
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64           # DataLoader workers decode video: give them the node's cores
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_train.sh CONFIG [key=value ...]}
shift
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-${GPUS_PER_NODE:-8}}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${ISTPAN_RDZV_PORT:-29500}

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
# NCCL over the cluster's fabric; set NCCL_SOCKET_IFNAME / NCCL_IB_HCA here if your site needs them.

srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_JOB_NUM_NODES" \
    --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-backend c10d \
    --rdzv-endpoint "$HEAD_NODE:$PORT" \
    --rdzv-id "istpan-$SLURM_JOB_ID" \
    --max-restarts 0 \
    -m istpan.cli.main train --config "$CONFIG" --no-progress "$@"

#!/bin/bash
# torchrun on one node with 4 GPUs (Lightning detects the torchelastic environment).
# Multi-node: add --nnodes N --node_rank R --rdzv_endpoint host:port and --trainer.num_nodes N.
set -euo pipefail
CKPT=${CKPT:-runs/pretrain_base/checkpoints/last.ckpt}
torchrun --standalone --nproc_per_node 4 finetune.py fit --config configs/finetune/crema_d.yaml \
    --trainer.devices 4 --model.init_checkpoint "$CKPT" \
    --data.train_manifest /data/crema-d/manifest.csv --data.test_manifest /data/crema-d/manifest.csv --data.fold 1

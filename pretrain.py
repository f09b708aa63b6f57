#!/usr/bin/env python
"""Self-supervised HiCMAE pretraining: ``python pretrain.py fit --config configs/pretrain/base.yaml``."""

from hicmae.training.cli import pretrain_main

if __name__ == "__main__":
    pretrain_main()

#!/usr/bin/env python
"""HiCMAE fine-tuning, linear probing and evaluation: ``python finetune.py fit --config configs/finetune/crema_d.yaml``."""

from hicmae.training.cli import finetune_main

if __name__ == "__main__":
    finetune_main()

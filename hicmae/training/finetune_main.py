"""``python -m hicmae.training.finetune_main``: finetune.py as a module (used by ``hicmae kfold``)."""

from hicmae.training.cli import finetune_main

if __name__ == "__main__":
    finetune_main()

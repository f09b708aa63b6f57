"""HiCMAE: hierarchical contrastive masked autoencoder for audio-visual emotion recognition."""

__version__ = "0.1.0"

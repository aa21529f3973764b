"""Small reproducible studies of the tokenizer's behaviour, each runnable as ``python -m medvq.experiments.<name>``.

``toy_shrinkage``: the 10-mode toy of "Early Quantization Shrinks Codebook" (arXiv 2603.17052) comparing the
``standard``, ``kmeans_at_start`` and ``deferred`` quantization schedules on one small MLP autoencoder.
"""

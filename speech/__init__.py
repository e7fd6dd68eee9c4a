"""Speech front end: audio loading, log-mel features, augmentation and data modules.

A clip becomes tokens in two steps: ``data`` yields fixed-length waveforms and the model turns
them into a log-mel spectrogram (``features``), a one-channel image whose patches are the tokens of
the core ViT (``model``).
"""

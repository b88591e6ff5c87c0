"""Readers and writers for the signals the tasks fit (audio, video, ...)."""

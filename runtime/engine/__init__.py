"""The engines: onnxruntime sessions, the LLM generator, ASR and VAD, driven in steps.

Imports only numpy, onnxruntime, tokenizers and the stdlib (the device image carries nothing
else). Each engine opens an artifact folder (`artifact.py`: manifest checked, files verified),
builds its sessions through one factory (`session.py`: threads, affinity, spinning, arena and
an optimized-graph cache from the board profile) and does one unit of work per call.
"""

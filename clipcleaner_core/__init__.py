"""clipcleaner core: find mislabelled images with CLIP (CLIPCleaner, ACM MM 2024) — no Streamlit here.

Stages, one module each: dataset → embeddings (encoders) → scores (scoring, baselines, detectors) → decisions →
export. The CLI (``clipcleaner``) and the Streamlit app call the functions re-exported here.
"""
__version__ = "0.1.0"

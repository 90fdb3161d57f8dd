"""Synthetic PTB-XL-layout demo data (make_demo_data.py); not part of the pipeline."""

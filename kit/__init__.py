"""Notebook-first kit for fine-tuning medical reasoning LLMs with Unsloth.

Outputs are not medical advice and are not validated for clinical use.
"""

__version__ = "0.1.0"

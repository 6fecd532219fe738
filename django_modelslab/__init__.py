"""AI-generated images as managed Django assets, copied into permanent storage."""

__version__ = "0.1.0"

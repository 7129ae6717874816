"""distilled-shufflenet: label-free dual-teacher distillation of a real-time (2+1)D ShuffleNet."""

__version__ = "0.1.0"

"""Training: the loop, its schedule and weight averaging, resume, memory and data parallelism."""

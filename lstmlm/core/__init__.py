"""What every room shares: errors, params checking, safe files, checkpoints, the machine."""

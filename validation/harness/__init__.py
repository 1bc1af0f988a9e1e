"""The training harness every task shares: flags, the train loop, checkpoints, atomic records."""

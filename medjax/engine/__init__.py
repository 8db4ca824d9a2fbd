"""The training engine: state, pure steps, sharding, checkpoints and the loop."""

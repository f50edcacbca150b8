"""One training run: its configuration, model, data, training engine and loop, checkpoint and results store.

Owns: `RunConfig` (the one declaration of a run's settings), `train(config) -> result` (the one entry into
training, used by the CLI, both executors and the tests), and the run directory's files. May import
`cmx.errors`, `cmx.cifar` and `cmx.augment`; never `sweep`, `analysis`, `bench` or `cli`.
"""

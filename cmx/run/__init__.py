"""Computing one run: the model (`model.py`, `depthwise.py`), the data (`data.py`) and its training batches
(`batches.py`), where and how it computes (the engine, the CPU settings probe), and `train(config) -> result`
(`train.py`), the one entry into training, used by the CLI, both executors and the tests. What a run
writes goes through `cmx.store`; what it is, is `cmx.config.RunConfig`.

May import: cmx.store, cmx.augment, the bottom layer
"""

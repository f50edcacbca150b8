"""cmx: reproduce (and go past) the CIFAR-10 study of "Patches Are All You Need?" (ConvMixer, Appendix C).

The package is a stack of layers (ARCHITECTURE.md draws it): cli → bench → sweep / analysis → run → store,
augment → the bottom layer of facts and small utilities that every layer shares. Each subpackage's
`__init__` states what it may import; the bottom layer imports only itself (tests/test_layering.py holds
both to the code).

Bottom layer: cmx.cifar, cmx.config, cmx.paper, cmx.errors, cmx.files, cmx.cache, cmx.yamlfile, cmx.roles, cmx.machine
"""

__version__ = "0.1.0"

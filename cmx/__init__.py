"""cmx: reproduce (and go past) the CIFAR-10 study of "Patches Are All You Need?" (ConvMixer, Appendix C)."""

__version__ = "0.1.0"

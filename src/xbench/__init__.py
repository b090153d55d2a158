"""xbench: how does pruning a vision model change how explainable it is?"""

__version__ = "0.1.0"

from xbench.cli import entry_point

entry_point()

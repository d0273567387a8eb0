"""The `billing` command line: thin commands over the close, finance and email services."""

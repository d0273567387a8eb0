"""The finance console: server-rendered pages and forms over the CLI's service functions."""

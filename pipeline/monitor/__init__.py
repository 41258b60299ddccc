"""Watching what is published: drift between releases and of the published rows."""

"""The Jupyter widget: the message protocol, the live updater and :class:`IlastikWidget`."""

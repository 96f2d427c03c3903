"""Kept thin on purpose: the umdbench plugin is loaded through its pytest11 entry point.

Listing it in ``pytest_plugins`` too would make pytest refuse to register it twice.
"""

# pytester drives the plugin as a user would in tests/test_plugin.py.
pytest_plugins = ["pytester"]

"""nyx_plugins_native (in progress)."""

"""nyx_plugins_cni (in progress)."""

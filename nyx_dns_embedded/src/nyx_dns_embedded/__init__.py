"""nyx_dns_embedded (in progress)."""

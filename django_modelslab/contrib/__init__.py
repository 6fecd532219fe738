"""Optional integrations with other Django applications (each installed on its own)."""

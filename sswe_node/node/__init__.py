"""node subpackage."""

"""outputs subpackage."""

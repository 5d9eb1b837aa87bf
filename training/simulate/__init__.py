"""Phantom archive simulator: tissue, B-mode, SWE and scanner renderings."""

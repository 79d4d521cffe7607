"""Closed-form rules, one module per family; each module names its seed sections.

The public names are re-exported from `mdc_jax`; this package only holds the modules.
"""
